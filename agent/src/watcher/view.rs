//! The watcher's picture of the kernel: relevant routes, nexthop objects,
//! links and addresses. Every netlink change is applied here first and only
//! real differences become `model::Event`s; a re-dump (after an overrun or on
//! the resync interval) is reconciled by diffing a fresh view against this one.
//!
//! Routes are kept apart as the kernel keeps them (see `model::RouteAlias`):
//! `ip route append blackhole P` beside a unicast `P` is a second route, and
//! a replace or delete touches the one the kernel touches.
//!
//! The kernel changes some state without telling anyone, and this view
//! reproduces it so the engine does not keep counting a route that is gone:
//! - an interface going administratively down (or deleted) flushes IPv4
//!   routes through it and marks multipath next hops dead (fib_sync_down_dev,
//!   fib_flush); carrier loss marks next hops RTNH_F_LINKDOWN;
//! - admin down, deletion and carrier loss remove every nexthop object
//!   through the interface, with the routes using them (nexthop_flush_dev);
//! - an interface losing its last IPv4 address flushes the IPv4 routes
//!   through it (fib_disable_ip), and an IPv4 address disappearing flushes
//!   the main-table routes using it as preferred source (fib_sync_down_addr;
//!   announced by 6.18, silent on older kernels);
//! - VRF enslavement (moving an interface's routes to the VRF's table) is not
//!   reproduced: the kernels this is tested on have no VRF support, and an
//!   untested mirror would be a guess. The periodic re-dump corrects it.

use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::IpNet;

use crate::model::{
    AddressInfo, Event, InterfaceInfo, NextHop, NexthopObject, OperState, Route, RouteAlias,
    RouteKey, RTNH_F_DEAD, RTNH_F_LINKDOWN,
};

use super::routes::RouteChange;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelView {
    pub routes: HashMap<RouteKey, Route>,
    /// The keys of `routes` per slot, in the kernel's order (which alias an
    /// NLM_F_REPLACE replaces).
    order: HashMap<Slot, Vec<RouteKey>>,
    pub nexthops: BTreeMap<u32, NexthopObject>,
    pub links: BTreeMap<u32, InterfaceInfo>,
    pub addresses: HashSet<AddressInfo>,
}

fn same_hop(a: &NextHop, b: &NextHop) -> bool {
    a.ifindex == b.ifindex && a.gateway == b.gateway
}

/// RTNH_F_* flags the kernel keeps on next hops through an interface in this state.
fn link_flags(link: Option<&InterfaceInfo>) -> u32 {
    match link {
        None => RTNH_F_DEAD | RTNH_F_LINKDOWN,
        Some(l) if !l.admin_up => RTNH_F_DEAD | RTNH_F_LINKDOWN,
        Some(l) if !matches!(l.oper, OperState::Up | OperState::Unknown) => RTNH_F_LINKDOWN,
        Some(_) => 0,
    }
}

/// The routes the kernel keeps under one (table, prefix, metric, tos).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Slot {
    table: u32,
    prefix: IpNet,
    metric: u32,
    tos: u8,
}

impl Slot {
    fn of(key: &RouteKey) -> Slot {
        Slot {
            table: key.table,
            prefix: key.prefix,
            metric: key.metric,
            tos: key.tos,
        }
    }
}

/// Where a new alias goes among the others of its slot.
#[derive(Clone, Copy)]
enum At {
    Front,
    End,
    Index(usize),
}

impl KernelView {
    pub fn apply_route(&mut self, change: RouteChange, out: &mut Vec<Event>) {
        match change {
            RouteChange::New {
                route,
                replace,
                append: _,
                prepend,
            } => {
                let ecmp6 = route.key.alias == RouteAlias::Ipv6Ecmp;
                if replace {
                    self.replace_route(route, out);
                    return;
                }
                let route = match self.routes.get(&route.key) {
                    Some(old) if ecmp6 && old.kind == route.kind => {
                        // IPv6 multipath next hops added one at a time
                        // (NLM_F_APPEND or an implicit ECMP sibling) and a
                        // dump that lists a key twice: the route is the union.
                        let mut m = old.clone();
                        for hop in route.nexthops {
                            match m.nexthops.iter_mut().find(|h| same_hop(h, &hop)) {
                                Some(h) => h.flags = hop.flags,
                                None => m.nexthops.push(hop),
                            }
                        }
                        m
                    }
                    _ => route,
                };
                // fib_table_insert puts an alias added without NLM_F_APPEND
                // before the others of its slot; IPv6 (fib6_add_rt2node)
                // always inserts after the routes of the same metric.
                let at = if prepend && route.key.prefix.addr().is_ipv4() {
                    At::Front
                } else {
                    At::End
                };
                self.put_route(route, at, out);
            }
            RouteChange::Del { route } => {
                let Some(old) = self.routes.get(&route.key) else {
                    return;
                };
                if route.key.alias != RouteAlias::Ipv6Ecmp || route.nexthops.is_empty() {
                    // The notification names exactly the alias the kernel
                    // deleted (fib_table_delete → rtmsg_fib of fa_to_delete).
                    self.remove_route(&route.key, out);
                    return;
                }
                let remaining: Vec<NextHop> = old
                    .nexthops
                    .iter()
                    .filter(|h| !route.nexthops.iter().any(|d| same_hop(h, d)))
                    .cloned()
                    .collect();
                if remaining.len() == old.nexthops.len() {
                    // Siblings this view no longer has: a deletion applied
                    // twice (events queued during a dump replayed on it).
                } else if remaining.is_empty() {
                    self.remove_route(&route.key, out);
                } else {
                    // One sibling of an IPv6 multipath route (deleted one at
                    // a time).
                    let mut r = old.clone();
                    r.nexthops = remaining;
                    self.put_route(r, At::End, out);
                }
            }
        }
    }

    /// NLM_F_REPLACE: IPv4 replaces the first alias of the slot, whatever its
    /// type (fib_table_insert: `fa_first`); IPv6 the first route of the slot
    /// that is, like the new one, an ECMP route or not (fib6_add_rt2node:
    /// `rt_can_ecmp == rt6_qualify_for_ecmp(iter)`), else the first route of
    /// the slot. In an empty slot it is an add.
    ///
    /// A replace whose route is already in the slot is a re-announcement: a
    /// real one with an existing alias changes nothing and is not notified
    /// (fib_table_insert: `fa_match`), but replacing a nexthop object
    /// re-announces every route using it with NLM_F_REPLACE
    /// (nexthop_replace_notify → fib_info_notify_update).
    fn replace_route(&mut self, route: Route, out: &mut Vec<Event>) {
        if self.routes.contains_key(&route.key) {
            self.put_route(route, At::End, out);
            return;
        }
        let v4 = route.key.prefix.addr().is_ipv4();
        let ecmp6 = route.key.alias == RouteAlias::Ipv6Ecmp;
        let victim = self.order.get(&Slot::of(&route.key)).and_then(|keys| {
            keys.iter()
                .enumerate()
                .find(|(_, k)| v4 || (k.alias == RouteAlias::Ipv6Ecmp) == ecmp6)
                // fib6_add_rt2node: "No matching route with same
                // ecmp-able-ness found, replace first matching route".
                .or_else(|| keys.iter().enumerate().next())
                .map(|(i, k)| (i, k.clone()))
        });
        match victim {
            Some((i, old)) if old != route.key => {
                // The new route first, so the engine never sees the slot empty.
                self.put_route(route, At::Index(i), out);
                self.remove_route(&old, out);
            }
            _ => self.put_route(route, At::End, out),
        }
    }

    /// Inserts or updates `route`; a new key goes to `at` among its slot.
    fn put_route(&mut self, route: Route, at: At, out: &mut Vec<Event>) {
        if self.routes.get(&route.key) == Some(&route) {
            return;
        }
        if !self.routes.contains_key(&route.key) {
            let keys = self.order.entry(Slot::of(&route.key)).or_default();
            let i = match at {
                At::Front => 0,
                At::End => keys.len(),
                At::Index(i) => i.min(keys.len()),
            };
            // A slot holds one route or a few: grow by one, not to four.
            keys.reserve_exact(1);
            keys.insert(i, route.key.clone());
        }
        self.routes.insert(route.key.clone(), route.clone());
        out.push(Event::RouteUpsert(route));
    }

    fn remove_route(&mut self, key: &RouteKey, out: &mut Vec<Event>) {
        if self.routes.remove(key).is_some() {
            let slot = Slot::of(key);
            if let Some(keys) = self.order.get_mut(&slot) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.order.remove(&slot);
                }
            }
            out.push(Event::RouteDelete(key.clone()));
        }
    }

    pub fn nexthop_upsert(&mut self, nh: NexthopObject, out: &mut Vec<Event>) {
        if self.nexthops.get(&nh.id) != Some(&nh) {
            self.nexthops.insert(nh.id, nh.clone());
            out.push(Event::NexthopUpsert(nh));
        }
    }

    /// A nexthop object went away: routes using it go too (the kernel
    /// removes them, IPv4 ones silently) and groups lose the member.
    pub fn nexthop_delete(&mut self, id: u32, out: &mut Vec<Event>) {
        if self.nexthops.remove(&id).is_none() {
            return;
        }
        out.push(Event::NexthopDelete(id));
        let keys: Vec<RouteKey> = self
            .routes
            .values()
            .filter(|r| r.nh_id == Some(id))
            .map(|r| r.key.clone())
            .collect();
        for k in keys {
            self.remove_route(&k, out);
        }
        let groups: Vec<u32> = self
            .nexthops
            .values()
            .filter(|n| n.group.contains(&id))
            .map(|n| n.id)
            .collect();
        for g in groups {
            let Some(mut nh) = self.nexthops.get(&g).cloned() else {
                continue;
            };
            nh.group.retain(|m| *m != id);
            if nh.group.is_empty() {
                self.nexthop_delete(g, out);
            } else {
                self.nexthop_upsert(nh, out);
            }
        }
    }

    pub fn link_upsert(&mut self, link: InterfaceInfo, out: &mut Vec<Event>) {
        let old = self.links.get(&link.ifindex).cloned();
        if old.as_ref() == Some(&link) {
            return;
        }
        let ifindex = link.ifindex;
        let before = old.as_ref().map(|o| link_flags(Some(o)));
        let after = link_flags(Some(&link));
        self.links.insert(ifindex, link.clone());
        out.push(Event::InterfaceUpsert(link));
        if before.is_some() && before != Some(after) {
            self.sync_link_state(ifindex, after, out);
        }
    }

    pub fn link_delete(&mut self, ifindex: u32, out: &mut Vec<Event>) {
        if self.links.contains_key(&ifindex) {
            self.sync_link_state(ifindex, RTNH_F_DEAD | RTNH_F_LINKDOWN, out);
        }
        if self.links.remove(&ifindex).is_some() {
            out.push(Event::InterfaceDelete(ifindex));
        }
    }

    /// Applies the changes the kernel makes without a notification when
    /// `ifindex` changes state (`flags` = DEAD|LINKDOWN for admin down or
    /// gone, LINKDOWN for carrier loss, 0 for up).
    fn sync_link_state(&mut self, ifindex: u32, flags: u32, out: &mut Vec<Event>) {
        if flags != 0 {
            // nh_netdev_event → nexthop_flush_dev on NETDEV_DOWN,
            // NETDEV_UNREGISTER and on NETDEV_CHANGE without IFF_RUNNING or
            // IFF_LOWER_UP (carrier loss): every nexthop object through the
            // device is removed (remove_nexthop with no nlinfo, so no
            // RTM_DELNEXTHOP), with the routes using it and its place in
            // groups. Nexthop objects never carry LINKDOWN: `ip nexthop add`
            // through a device without carrier is refused.
            let gone: Vec<u32> = self
                .nexthops
                .values()
                .filter(|n| n.ifindex == Some(ifindex))
                .map(|n| n.id)
                .collect();
            for id in gone {
                self.nexthop_delete(id, out);
            }
        }
        self.update_hops_via(
            ifindex,
            false,
            |f| (f & !(RTNH_F_DEAD | RTNH_F_LINKDOWN)) | flags,
            out,
        );
    }

    /// Rewrites the flags of the inline next hops through `ifindex` (of IPv4
    /// routes only, with `ipv4_only`). IPv4 routes left without a live next
    /// hop vanish, as fib_flush removes them; IPv6 routes stay.
    fn update_hops_via(
        &mut self,
        ifindex: u32,
        ipv4_only: bool,
        update: impl Fn(u32) -> u32,
        out: &mut Vec<Event>,
    ) {
        let affected: Vec<RouteKey> = self
            .routes
            .values()
            .filter(|r| {
                (!ipv4_only || r.key.prefix.addr().is_ipv4())
                    && r.nexthops.iter().any(|h| h.ifindex == Some(ifindex))
            })
            .map(|r| r.key.clone())
            .collect();
        for key in affected {
            let Some(mut r) = self.routes.get(&key).cloned() else {
                continue;
            };
            for h in r.nexthops.iter_mut().filter(|h| h.ifindex == Some(ifindex)) {
                h.flags = update(h.flags);
            }
            let all_dead = r.nexthops.iter().all(|h| h.flags & RTNH_F_DEAD != 0);
            if all_dead && r.key.prefix.addr().is_ipv4() {
                self.remove_route(&key, out);
            } else {
                self.put_route(r, At::End, out);
            }
        }
    }

    pub fn address_add(&mut self, a: AddressInfo, out: &mut Vec<Event>) {
        let (ifindex, v4) = (a.ifindex, a.local.addr().is_ipv4());
        if self.addresses.insert(a.clone()) {
            out.push(Event::AddressAdd(a));
            if v4 && self.links.get(&ifindex).is_some_and(|l| l.admin_up) {
                // fib_sync_up on NETDEV_UP: dead multipath next hops revive.
                self.set_ipv4_dead(ifindex, false, out);
            }
        }
    }

    pub fn address_delete(&mut self, a: AddressInfo, out: &mut Vec<Event>) {
        let (ifindex, v4) = (a.ifindex, a.local.addr().is_ipv4());
        if self.addresses.remove(&a) {
            let local = a.local.addr();
            out.push(Event::AddressDelete(a));
            if !v4 {
                return;
            }
            if !self.addresses.iter().any(|x| x.local.addr() == local) {
                self.flush_prefsrc(local, out);
            }
            if !self
                .addresses
                .iter()
                .any(|x| x.ifindex == ifindex && x.local.addr().is_ipv4())
            {
                // fib_disable_ip: the interface lost its last IPv4 address;
                // IPv4 routes through it are flushed without a notification.
                self.set_ipv4_dead(ifindex, true, out);
            }
        }
    }

    /// fib_del_ifaddr: once an IPv4 address is on no interface any more
    /// (inet_addr_type_dev_table is no longer RTN_LOCAL), fib_sync_down_addr
    /// marks dead every route whose preferred source (RTA_PREFSRC) it was and
    /// fib_flush removes them, without a notification. Only routes in the
    /// device's table are flushed: `l3mdev_fib_table(dev) ?: RT_TABLE_MAIN`,
    /// the main table for a device outside a VRF. (A VRF slave's address
    /// would flush its VRF's table instead; VRF devices are not mirrored.)
    /// Kernel 6.18 does announce these deletions (an RTM_DELROUTE each, seen
    /// with `ip monitor`), which then find nothing left to delete here; older
    /// kernels flush them silently in fib_flush.
    fn flush_prefsrc(&mut self, local: std::net::IpAddr, out: &mut Vec<Event>) {
        const RT_TABLE_MAIN: u32 = 254;
        let mut gone: Vec<RouteKey> = self
            .routes
            .keys()
            .filter(|k| {
                k.table == RT_TABLE_MAIN
                    && matches!(&k.alias, RouteAlias::Ipv4 { prefsrc: Some(p), .. } if std::net::IpAddr::V4(*p) == local)
            })
            .cloned()
            .collect();
        gone.sort();
        for k in gone {
            self.remove_route(&k, out);
        }
    }

    /// Sets or clears RTNH_F_DEAD on inline IPv4 next hops through `ifindex`;
    /// routes left without a live next hop are removed (fib_flush).
    fn set_ipv4_dead(&mut self, ifindex: u32, dead: bool, out: &mut Vec<Event>) {
        let update = |f: u32| {
            if dead {
                f | RTNH_F_DEAD
            } else {
                f & !RTNH_F_DEAD
            }
        };
        self.update_hops_via(ifindex, true, update, out);
    }

    /// Where this view and `fresh` (a re-dump brought up to the same
    /// moment) disagree, one line per route, nexthop object, link or
    /// address: "view: …, kernel: …". Empty when they agree.
    pub fn divergences(&self, fresh: &KernelView) -> Vec<String> {
        fn differ<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
            what: &str,
            mine: impl Fn(&K) -> Option<V>,
            theirs: impl Fn(&K) -> Option<V>,
            keys: impl IntoIterator<Item = K>,
            out: &mut Vec<String>,
        ) {
            let mut keys: Vec<K> = keys.into_iter().collect();
            keys.sort();
            keys.dedup_by(|a, b| a == b);
            for k in keys {
                let (a, b) = (mine(&k), theirs(&k));
                if a != b {
                    out.push(format!("{what} {k:?}: view {a:?}, kernel {b:?}"));
                }
            }
        }
        let mut out = Vec::new();
        differ(
            "route",
            |k: &RouteKey| self.routes.get(k).cloned(),
            |k| fresh.routes.get(k).cloned(),
            self.routes.keys().chain(fresh.routes.keys()).cloned(),
            &mut out,
        );
        differ(
            "nexthop",
            |k: &u32| self.nexthops.get(k).cloned(),
            |k| fresh.nexthops.get(k).cloned(),
            self.nexthops.keys().chain(fresh.nexthops.keys()).copied(),
            &mut out,
        );
        differ(
            "link",
            |k: &u32| self.links.get(k).cloned(),
            |k| fresh.links.get(k).cloned(),
            self.links.keys().chain(fresh.links.keys()).copied(),
            &mut out,
        );
        let mut addrs: Vec<String> = self
            .addresses
            .symmetric_difference(&fresh.addresses)
            .map(|a| {
                let side = if self.addresses.contains(a) {
                    "view only"
                } else {
                    "kernel only"
                };
                format!("address {} on ifindex {}: {side}", a.local, a.ifindex)
            })
            .collect();
        addrs.sort();
        out.extend(addrs);
        out
    }

    /// Replaces this view with `fresh` (a complete re-dump) and returns the
    /// events that turn the old picture into the new one: additions and
    /// changes first (links, addresses, nexthops, routes), then removals in
    /// the reverse order.
    pub fn reconcile(&mut self, fresh: KernelView) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, l) in &fresh.links {
            if self.links.get(i) != Some(l) {
                out.push(Event::InterfaceUpsert(l.clone()));
            }
        }
        for a in &fresh.addresses {
            if !self.addresses.contains(a) {
                out.push(Event::AddressAdd(a.clone()));
            }
        }
        for (i, n) in &fresh.nexthops {
            if self.nexthops.get(i) != Some(n) {
                out.push(Event::NexthopUpsert(n.clone()));
            }
        }
        let mut upserts: Vec<&Route> = fresh
            .routes
            .iter()
            .filter(|(k, r)| self.routes.get(*k) != Some(*r))
            .map(|(_, r)| r)
            .collect();
        upserts.sort_by(|a, b| a.key.cmp(&b.key));
        out.extend(upserts.into_iter().map(|r| Event::RouteUpsert(r.clone())));
        let mut deletes: Vec<&RouteKey> = self
            .routes
            .keys()
            .filter(|k| !fresh.routes.contains_key(*k))
            .collect();
        deletes.sort();
        out.extend(deletes.into_iter().map(|k| Event::RouteDelete(k.clone())));
        for i in self.nexthops.keys() {
            if !fresh.nexthops.contains_key(i) {
                out.push(Event::NexthopDelete(*i));
            }
        }
        for a in &self.addresses {
            if !fresh.addresses.contains(a) {
                out.push(Event::AddressDelete(a.clone()));
            }
        }
        for i in self.links.keys() {
            if !fresh.links.contains_key(i) {
                out.push(Event::InterfaceDelete(*i));
            }
        }
        *self = fresh;
        out
    }
}
