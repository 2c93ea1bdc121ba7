//! The watcher's picture of the kernel: relevant routes, nexthop objects,
//! links and addresses. Every netlink change is applied here first and only
//! real differences become `model::Event`s; a re-dump (after an overrun or on
//! the resync interval) is reconciled by diffing a fresh view against this one.
//!
//! The kernel changes some state without telling anyone: when an interface
//! goes administratively down it flushes IPv4 routes and nexthop objects
//! through it and marks multipath next hops dead; on carrier loss it marks
//! next hops RTNH_F_LINKDOWN. `link_upsert` and `link_delete` reproduce that
//! so the engine does not keep counting a route through a dead interface.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{
    AddressInfo, Event, InterfaceInfo, NextHop, NexthopObject, OperState, Route, RouteKey,
    RTNH_F_DEAD, RTNH_F_LINKDOWN,
};

use super::routes::RouteChange;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelView {
    pub routes: HashMap<RouteKey, Route>,
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

impl KernelView {
    pub fn apply_route(&mut self, change: RouteChange, out: &mut Vec<Event>) {
        match change {
            RouteChange::New {
                route,
                replace,
                append: _,
            } => {
                let merged = match self.routes.get(&route.key) {
                    Some(old)
                        if !replace
                            && old.kind == route.kind
                            && old.nh_id.is_none()
                            && route.nh_id.is_none() =>
                    {
                        // IPv6 multipath next hops added one at a time
                        // (NLM_F_APPEND or an implicit ECMP sibling), IPv4
                        // `ip route append/prepend` aliases, and a dump that
                        // lists a key twice: the route is the union.
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
                self.put_route(merged, out);
            }
            RouteChange::Del { route } => {
                let Some(old) = self.routes.get(&route.key) else {
                    return;
                };
                if route.nexthops.is_empty() || old.nh_id.is_some() || route.nh_id.is_some() {
                    self.remove_route(&route.key, out);
                    return;
                }
                let remaining: Vec<NextHop> = old
                    .nexthops
                    .iter()
                    .filter(|h| !route.nexthops.iter().any(|d| same_hop(h, d)))
                    .cloned()
                    .collect();
                if remaining.is_empty() || remaining.len() == old.nexthops.len() {
                    // All next hops gone, or the message names next hops this
                    // view does not know: the kernel removed the route.
                    self.remove_route(&route.key, out);
                } else {
                    // One next hop of a multipath route (IPv6 deletes siblings
                    // one at a time) or one IPv4 alias.
                    let mut r = old.clone();
                    r.nexthops = remaining;
                    self.put_route(r, out);
                }
            }
        }
    }

    fn put_route(&mut self, route: Route, out: &mut Vec<Event>) {
        if self.routes.get(&route.key) != Some(&route) {
            self.routes.insert(route.key.clone(), route.clone());
            out.push(Event::RouteUpsert(route));
        }
    }

    fn remove_route(&mut self, key: &RouteKey, out: &mut Vec<Event>) {
        if self.routes.remove(key).is_some() {
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

    /// Applies the next-hop flags the kernel sets without a notification when
    /// `ifindex` changes state (`flags` = DEAD|LINKDOWN for admin down or
    /// gone, LINKDOWN for carrier loss, 0 for up).
    fn sync_link_state(&mut self, ifindex: u32, flags: u32, out: &mut Vec<Event>) {
        let dead = flags & RTNH_F_DEAD != 0;
        if dead {
            let gone: Vec<u32> = self
                .nexthops
                .values()
                .filter(|n| n.ifindex == Some(ifindex))
                .map(|n| n.id)
                .collect();
            for id in gone {
                self.nexthop_delete(id, out);
            }
        } else {
            let ids: Vec<u32> = self
                .nexthops
                .values()
                .filter(|n| {
                    n.ifindex == Some(ifindex) && n.flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != flags
                })
                .map(|n| n.id)
                .collect();
            for id in ids {
                if let Some(mut nh) = self.nexthops.get(&id).cloned() {
                    nh.flags = (nh.flags & !(RTNH_F_DEAD | RTNH_F_LINKDOWN)) | flags;
                    self.nexthop_upsert(nh, out);
                }
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
                self.put_route(r, out);
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
            out.push(Event::AddressDelete(a));
            if v4
                && !self
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
