//! The kernel state the engine needs (routes, nexthop objects, interfaces,
//! addresses) and the primary-up rule evaluated over it.
//!
//! Routes are stored by prefix; which prefixes can make a segment primary-up
//! (and which segments a route can affect) is `crate::segments`' rule.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::MatchMode;
use crate::model::{
    AddressInfo, InterfaceInfo, NexthopObject, Route, RouteKey, RouteKind, RTNH_F_DEAD,
    RTNH_F_LINKDOWN,
};
use crate::segments::MatchRule;

/// Why a segment is primary-up: the route that qualifies, and its next hop
/// over the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryRoute {
    pub prefix: IpNet,
    pub table: u32,
    pub metric: u32,
    pub protocol: u8,
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
}

/// Where a route is: (prefix, table).
pub type RouteAt = (IpNet, u32);

/// Why a segment is not primary-up: what the deciding route is (or that
/// there is none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoPrimary {
    NoRoute,
    /// An unreachable, blackhole, prohibit (or other non-unicast) route.
    Type {
        at: RouteAt,
        kind: RouteKind,
    },
    /// Every usable next hop leaves through a backup interface.
    BackupOnly {
        at: RouteAt,
        dev: String,
    },
    /// The next hops have no carrier.
    LinkDown {
        at: RouteAt,
        dev: String,
    },
    /// Every next hop is dead, gone or missing (the kernel skips such routes).
    DeadNextHop {
        at: RouteAt,
    },
}

impl std::fmt::Display for NoPrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |(p, t): &RouteAt| format!("{p} (table {t})");
        match self {
            NoPrimary::NoRoute => f.write_str("no route"),
            NoPrimary::Type { at: a, kind } => {
                let kind = match kind {
                    RouteKind::Blackhole => "blackhole".to_string(),
                    RouteKind::Unreachable => "unreachable".to_string(),
                    RouteKind::Prohibit => "prohibit".to_string(),
                    RouteKind::Unicast => "unicast".to_string(),
                    RouteKind::Other(t) => format!("type {t}"),
                };
                write!(f, "{kind} route {}", at(a))
            }
            NoPrimary::BackupOnly { at: a, dev } => {
                write!(f, "only via backup interface {dev}: {}", at(a))
            }
            NoPrimary::LinkDown { at: a, dev } => write!(f, "linkdown on {dev}: {}", at(a)),
            NoPrimary::DeadNextHop { at: a } => write!(f, "dead next hop: {}", at(a)),
        }
    }
}

/// The routes at one prefix, in key order: table, then metric, tos and alias,
/// the order `segment_primary` walks them (the first primary route wins; the
/// first blocking one is the reason given). A sorted `Vec`, not a `BTreeMap`:
/// a prefix holds one route or a few, and a `BTreeMap`'s first leaf has room
/// for eleven, which cost 2.2 KiB per route: 22 MB of the agent's heap for
/// the 10,000 monitored routes of `bench-routes`.
#[derive(Default)]
struct PrefixRoutes(Vec<Route>);

impl PrefixRoutes {
    /// Inserts `route`, or replaces the one with its key (returned).
    fn insert(&mut self, route: Route) -> Option<Route> {
        match self.0.binary_search_by(|r| r.key.cmp(&route.key)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], route)),
            Err(i) => {
                // Grow by one, not to four: most prefixes keep one route.
                self.0.reserve_exact(1);
                self.0.insert(i, route);
                None
            }
        }
    }

    fn remove(&mut self, key: &RouteKey) -> Option<Route> {
        let i = self.0.binary_search_by(|r| r.key.cmp(key)).ok()?;
        Some(self.0.remove(i))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }
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
    routes: HashMap<IpNet, PrefixRoutes>,
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
    /// ifindex changed, or it was deleted before (next hops through it were
    /// passed over): the caller re-evaluates every segment then.
    pub fn upsert_link(&mut self, info: InterfaceInfo) -> bool {
        let before = self.ifindex_counts(info.ifindex);
        let was_gone = self.gone.remove(&info.ifindex);
        if let Some(old) = self.ifaces.get(&info.ifindex) {
            if old.name != info.name && self.by_name.get(&old.name) == Some(&info.ifindex) {
                self.by_name.remove(&old.name);
            }
        }
        self.by_name.insert(info.name.clone(), info.ifindex);
        let ifindex = info.ifindex;
        self.ifaces.insert(ifindex, info);
        was_gone || before != self.ifindex_counts(ifindex)
    }

    /// Forgets a link; returns true when that can change a segment (it was
    /// not deleted already).
    pub fn delete_link(&mut self, ifindex: u32) -> bool {
        let before = self.ifindex_counts(ifindex);
        if let Some(old) = self.ifaces.remove(&ifindex) {
            if self.by_name.get(&old.name) == Some(&ifindex) {
                self.by_name.remove(&old.name);
            }
        }
        self.addrs.remove(&ifindex);
        let newly_gone = self.gone.insert(ifindex);
        newly_gone || before != self.ifindex_counts(ifindex)
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
        let old = self.routes.entry(prefix).or_default().insert(route);
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

    /// For pre-arming `prefix`: `None` unless `table` has a primary route at
    /// exactly `prefix` (a route that may take over there is then never more
    /// specific than the primary); else the highest metric of the routes at
    /// `prefix` in any watched table, leaving out the agent's own
    /// (`protocol` `ours`).
    pub fn exact_primary_metric(&self, prefix: &IpNet, table: u32, ours: u8) -> Option<u32> {
        let routes = self.routes.get(prefix)?;
        let primary = routes.values().any(|r| {
            r.key.table == table
                && r.key.tos == 0
                && matches!(self.route_verdict(r), RouteVerdict::Primary(_))
        });
        if !primary {
            return None;
        }
        routes
            .values()
            .filter(|r| r.protocol != ours)
            .map(|r| r.key.metric)
            .max()
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

    /// The next hops of a unicast route, inline or resolved through its
    /// nexthop object (a group's own flags apply to every member). `Err`
    /// for a route through a blackhole nexthop object.
    fn hops(&self, route: &Route) -> Result<Vec<Hop>, ()> {
        let Some(id) = route.nh_id else {
            return Ok(route
                .nexthops
                .iter()
                .map(|nh| Hop {
                    ifindex: nh.ifindex,
                    gateway: nh.gateway,
                    flags: nh.flags,
                })
                .collect());
        };
        let Some(obj) = self.nexthops.get(&id) else {
            return Ok(Vec::new());
        };
        if obj.group.is_empty() {
            if obj.blackhole {
                return Err(());
            }
            return Ok(vec![Hop {
                ifindex: obj.ifindex,
                gateway: obj.gateway,
                flags: obj.flags,
            }]);
        }
        // The kernel does not nest groups, and allows a blackhole member
        // only as a group's single path: neither carries traffic here.
        Ok(obj
            .group
            .iter()
            .filter_map(|m| self.nexthops.get(m))
            .filter(|m| m.group.is_empty() && !m.blackhole)
            .map(|m| Hop {
                ifindex: m.ifindex,
                gateway: m.gateway,
                flags: m.flags | obj.flags,
            })
            .collect())
    }

    /// What one route means for the segments it matches.
    fn route_verdict(&self, route: &Route) -> RouteVerdict {
        let at = (route.key.prefix, route.key.table);
        let kind = match route.kind {
            RouteKind::Unicast => None,
            other => Some(other),
        };
        let hops = match (kind, self.hops(route)) {
            (Some(kind), _) => {
                return RouteVerdict::Blocks(NoPrimary::Type { at, kind });
            }
            (None, Err(())) => {
                return RouteVerdict::Blocks(NoPrimary::Type {
                    at,
                    kind: RouteKind::Blackhole,
                });
            }
            (None, Ok(hops)) => hops,
        };
        if let Some(h) = hops
            .iter()
            .find(|h| flags_ok(h.flags) && h.ifindex.is_some_and(|i| self.ifindex_counts(i)))
        {
            return RouteVerdict::Primary(PrimaryRoute {
                prefix: route.key.prefix,
                table: route.key.table,
                metric: route.key.metric,
                protocol: route.protocol,
                ifindex: h.ifindex.unwrap_or(0),
                gateway: h.gateway,
            });
        }
        // Next hops the kernel can still send to (fib_lookup_good_nhc: not
        // dead; link-down ones too, unless ignore_routes_with_linkdown is set).
        let live: Vec<(u32, &Hop)> = hops
            .iter()
            .filter(|h| h.flags & RTNH_F_DEAD == 0)
            .filter_map(|h| h.ifindex.map(|i| (i, h)))
            .filter(|(i, _)| *i != 0 && !self.gone.contains(i))
            .collect();
        if let Some((i, _)) = live.iter().find(|(_, h)| h.flags & RTNH_F_LINKDOWN != 0) {
            return RouteVerdict::Blocks(NoPrimary::LinkDown {
                at,
                dev: self.iface_name(*i),
            });
        }
        if let Some((i, _)) = live.first() {
            return RouteVerdict::Blocks(NoPrimary::BackupOnly {
                at,
                dev: self.iface_name(*i),
            });
        }
        RouteVerdict::Skipped(NoPrimary::DeadNextHop { at })
    }

    /// Whether `segment` is primary-up under the group's match rule: the
    /// route that holds it, or why none does.
    ///
    /// - `exact`: any route for exactly the segment's prefix that has a
    ///   usable next hop (not dead, not link-down, not via a backup interface).
    /// - `covering`: per watched table, the kernel's longest match decides:
    ///   the most specific prefix covering the segment that has a route the
    ///   kernel would use (one with a next hop not marked dead; unreachable,
    ///   blackhole and prohibit routes always), and among its routes the one
    ///   with the lowest metric. The segment is primary-up when that route is
    ///   a primary route in at least one watched table. Routes with a TOS
    ///   only match packets with that TOS and are left out.
    pub fn segment_primary(
        &self,
        segment: &IpNet,
        mode: MatchMode,
        allow_default: bool,
    ) -> Result<PrimaryRoute, NoPrimary> {
        let mut blocked: Option<NoPrimary> = None;
        let mut skipped: Option<NoPrimary> = None;
        // Tables whose longest match is already known (covering only).
        let mut decided: Vec<u32> = Vec::new();
        for prefix in MatchRule::new(mode, allow_default).route_prefixes(*segment) {
            let Some(routes) = self.routes.get(&prefix) else {
                continue;
            };
            for r in routes.values() {
                let covering = mode == MatchMode::Covering;
                if covering && (r.key.tos != 0 || decided.contains(&r.key.table)) {
                    continue;
                }
                match self.route_verdict(r) {
                    RouteVerdict::Primary(p) => return Ok(p),
                    RouteVerdict::Blocks(why) => {
                        if covering {
                            decided.push(r.key.table);
                        }
                        blocked.get_or_insert(why);
                    }
                    RouteVerdict::Skipped(why) => {
                        skipped.get_or_insert(why);
                    }
                }
            }
        }
        Err(blocked.or(skipped).unwrap_or(NoPrimary::NoRoute))
    }
}

/// One next hop of a route, resolved.
struct Hop {
    ifindex: Option<u32>,
    gateway: Option<IpAddr>,
    flags: u32,
}

enum RouteVerdict {
    /// A primary route.
    Primary(PrimaryRoute),
    /// The kernel would use this route, but not over the primary.
    Blocks(NoPrimary),
    /// The kernel passes over this route (every next hop dead or gone) and
    /// goes on to the next one, or to a shorter prefix.
    Skipped(NoPrimary),
}

#[cfg(test)]
mod tests {
    use super::PrefixRoutes;
    use crate::engine::tests::{nh, route};

    fn keyed(table: u32, metric: u32) -> crate::model::Route {
        let mut r = route(table, "10.20.0.0/16", vec![nh(2)]);
        r.key.metric = metric;
        r
    }

    #[test]
    fn routes_stay_in_key_order_and_replace_by_key() {
        let mut at = PrefixRoutes::default();
        for (table, metric) in [(254, 20), (100, 5), (254, 10), (100, 50)] {
            assert!(at.insert(keyed(table, metric)).is_none());
        }
        let order: Vec<(u32, u32)> = at.values().map(|r| (r.key.table, r.key.metric)).collect();
        assert_eq!(order, [(100, 5), (100, 50), (254, 10), (254, 20)]);
        let mut again = keyed(254, 10);
        again.protocol = 2;
        let old = at.insert(again).expect("same key: replaced");
        assert_eq!(old.protocol, 186);
        assert!(at.values().any(|r| r.protocol == 2));
        assert_eq!(at.values().count(), 4);
        assert!(at.remove(&keyed(100, 5).key).is_some());
        assert!(at.remove(&keyed(100, 5).key).is_none());
        assert_eq!(at.values().next().map(|r| r.key.metric), Some(50));
        for (table, metric) in [(100, 50), (254, 10), (254, 20)] {
            at.remove(&keyed(table, metric).key);
        }
        assert!(at.is_empty());
    }
}
