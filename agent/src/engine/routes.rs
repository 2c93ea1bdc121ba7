//! The kernel state the engine needs (routes, nexthop objects, interfaces,
//! addresses) and the primary-up rule evaluated over it.
//!
//! Routes are stored by prefix; which prefixes can make a segment primary-up
//! (and which segments a route can affect) is `crate::segments`' rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::IpNet;

use crate::config::MatchMode;
use crate::model::{
    AddressInfo, InterfaceInfo, NexthopObject, Route, RouteKey, RouteKind, RTNH_F_DEAD,
    RTNH_F_LINKDOWN,
};
use crate::segments::MatchRule;

/// Why a segment is primary-up: the route that qualifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryRoute {
    pub prefix: IpNet,
    pub ifindex: u32,
    pub protocol: u8,
}

/// Interfaces, addresses, routes and nexthop objects as last reported.
#[derive(Default)]
pub struct Net {
    ifaces: HashMap<u32, InterfaceInfo>,
    by_name: HashMap<String, u32>,
    /// Interfaces deleted (RTM_DELLINK) and not seen again: a next hop through
    /// one of them cannot carry traffic, whatever its name was.
    gone: HashSet<u32>,
    addrs: HashMap<u32, Vec<AddressInfo>>,
    routes: HashMap<IpNet, BTreeMap<RouteKey, Route>>,
    nexthops: HashMap<u32, NexthopObject>,
    /// nexthop id → prefixes of routes that reference it (with a count of routes).
    nh_users: HashMap<u32, HashMap<IpNet, usize>>,
    /// Backup-enabled interface names.
    backup_names: HashSet<String>,
}

fn flags_ok(flags: u32) -> bool {
    flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) == 0
}

impl Net {
    pub fn new(backup_names: impl IntoIterator<Item = String>) -> Net {
        Net {
            backup_names: backup_names.into_iter().collect(),
            ..Net::default()
        }
    }

    /// Replaces the backup-enabled interface names (a reload); returns
    /// whether they changed.
    pub fn set_backup_names(&mut self, names: impl IntoIterator<Item = String>) -> bool {
        let names: HashSet<String> = names.into_iter().collect();
        let changed = names != self.backup_names;
        self.backup_names = names;
        changed
    }

    pub fn iface(&self, ifindex: u32) -> Option<&InterfaceInfo> {
        self.ifaces.get(&ifindex)
    }

    pub fn ifindex_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn iface_name(&self, ifindex: u32) -> String {
        self.ifaces
            .get(&ifindex)
            .map_or_else(|| format!("ifindex {ifindex}"), |l| l.name.clone())
    }

    pub fn addresses(&self, ifindex: u32) -> &[AddressInfo] {
        self.addrs.get(&ifindex).map_or(&[], Vec::as_slice)
    }

    /// Whether a next hop leaving through `ifindex` can be a primary next hop:
    /// the interface is not (known to be) a backup interface and not deleted.
    pub fn ifindex_counts(&self, ifindex: u32) -> bool {
        if ifindex == 0 || self.gone.contains(&ifindex) {
            return false;
        }
        match self.ifaces.get(&ifindex) {
            Some(l) => !self.backup_names.contains(&l.name),
            // Name not known (yet): not a backup interface.
            None => true,
        }
    }

    /// Records a link; returns true when the primary-eligibility of its
    /// ifindex changed (the caller re-evaluates every segment then).
    pub fn upsert_link(&mut self, info: InterfaceInfo) -> bool {
        let before = self.ifindex_counts(info.ifindex);
        self.gone.remove(&info.ifindex);
        if let Some(old) = self.ifaces.get(&info.ifindex) {
            if old.name != info.name && self.by_name.get(&old.name) == Some(&info.ifindex) {
                self.by_name.remove(&old.name);
            }
        }
        self.by_name.insert(info.name.clone(), info.ifindex);
        let ifindex = info.ifindex;
        self.ifaces.insert(ifindex, info);
        before != self.ifindex_counts(ifindex)
    }

    /// Forgets a link; returns true when primary-eligibility changed.
    pub fn delete_link(&mut self, ifindex: u32) -> bool {
        let before = self.ifindex_counts(ifindex);
        if let Some(old) = self.ifaces.remove(&ifindex) {
            if self.by_name.get(&old.name) == Some(&ifindex) {
                self.by_name.remove(&old.name);
            }
        }
        self.addrs.remove(&ifindex);
        self.gone.insert(ifindex);
        before != self.ifindex_counts(ifindex)
    }

    pub fn add_address(&mut self, a: AddressInfo) {
        let list = self.addrs.entry(a.ifindex).or_default();
        if let Some(old) = list.iter_mut().find(|o| o.local == a.local) {
            *old = a;
        } else {
            list.push(a);
        }
    }

    pub fn delete_address(&mut self, a: &AddressInfo) {
        if let Some(list) = self.addrs.get_mut(&a.ifindex) {
            list.retain(|o| o.local != a.local);
        }
    }

    fn add_nh_user(&mut self, id: u32, prefix: IpNet) {
        *self
            .nh_users
            .entry(id)
            .or_default()
            .entry(prefix)
            .or_insert(0) += 1;
    }

    fn remove_nh_user(&mut self, id: u32, prefix: IpNet) {
        if let Some(users) = self.nh_users.get_mut(&id) {
            if let Some(n) = users.get_mut(&prefix) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    users.remove(&prefix);
                }
            }
            if users.is_empty() {
                self.nh_users.remove(&id);
            }
        }
    }

    pub fn upsert_route(&mut self, route: Route) {
        let prefix = route.key.prefix;
        if let Some(id) = route.nh_id {
            self.add_nh_user(id, prefix);
        }
        let old = self
            .routes
            .entry(prefix)
            .or_default()
            .insert(route.key.clone(), route);
        if let Some(id) = old.and_then(|o| o.nh_id) {
            self.remove_nh_user(id, prefix);
        }
    }

    pub fn delete_route(&mut self, key: &RouteKey) {
        let Some(at) = self.routes.get_mut(&key.prefix) else {
            return;
        };
        let old = at.remove(key);
        if at.is_empty() {
            self.routes.remove(&key.prefix);
        }
        if let Some(id) = old.and_then(|o| o.nh_id) {
            self.remove_nh_user(id, key.prefix);
        }
    }

    /// Stores a nexthop object; returns the prefixes whose routes may change meaning.
    pub fn upsert_nexthop(&mut self, nh: NexthopObject) -> Vec<IpNet> {
        let id = nh.id;
        self.nexthops.insert(id, nh);
        self.nexthop_dependents(id)
    }

    pub fn delete_nexthop(&mut self, id: u32) -> Vec<IpNet> {
        let out = self.nexthop_dependents(id);
        self.nexthops.remove(&id);
        out
    }

    /// Prefixes of routes using `id` directly or through a group containing it.
    fn nexthop_dependents(&self, id: u32) -> Vec<IpNet> {
        let mut ids = vec![id];
        ids.extend(
            self.nexthops
                .values()
                .filter(|n| n.group.contains(&id))
                .map(|n| n.id),
        );
        let mut out: Vec<IpNet> = ids
            .iter()
            .filter_map(|i| self.nh_users.get(i))
            .flat_map(|users| users.keys().copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The outgoing interface that makes `route` a primary route, if any.
    fn route_primary_ifindex(&self, route: &Route) -> Option<u32> {
        if route.kind != RouteKind::Unicast {
            return None;
        }
        match route.nh_id {
            Some(id) => self.nexthop_primary_ifindex(id, true),
            None => route
                .nexthops
                .iter()
                .filter(|nh| flags_ok(nh.flags))
                .filter_map(|nh| nh.ifindex)
                .find(|i| self.ifindex_counts(*i)),
        }
    }

    fn nexthop_primary_ifindex(&self, id: u32, allow_group: bool) -> Option<u32> {
        let nh = self.nexthops.get(&id)?;
        if nh.blackhole || !flags_ok(nh.flags) {
            return None;
        }
        if !nh.group.is_empty() {
            // The kernel does not nest groups; neither do we.
            if !allow_group {
                return None;
            }
            return nh
                .group
                .iter()
                .find_map(|m| self.nexthop_primary_ifindex(*m, false));
        }
        nh.ifindex.filter(|i| self.ifindex_counts(*i))
    }

    fn prefix_primary(&self, prefix: &IpNet) -> Option<PrimaryRoute> {
        let routes = self.routes.get(prefix)?;
        routes.values().find_map(|r| {
            self.route_primary_ifindex(r).map(|ifindex| PrimaryRoute {
                prefix: *prefix,
                ifindex,
                protocol: r.protocol,
            })
        })
    }

    /// The route that makes `segment` primary-up under the group's match rule.
    pub fn segment_primary(
        &self,
        segment: &IpNet,
        mode: MatchMode,
        allow_default: bool,
    ) -> Option<PrimaryRoute> {
        MatchRule::new(mode, allow_default)
            .route_prefixes(*segment)
            .find_map(|prefix| self.prefix_primary(&prefix))
    }
}
