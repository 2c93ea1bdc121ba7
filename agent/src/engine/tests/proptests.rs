//! Random event sequences replayed against the engine and a small,
//! deliberately naive reference model of the primary-up rules (a linear scan
//! over every route, no indexes; for `covering`, the kernel's longest match
//! per watched table), plus group-level invariants.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use proptest::prelude::*;

use super::{config, BASE, DSL, ETH0, ETH1, ETH2, ETH3, HOT, LTE, PPP0, WG0};
use crate::config::{Config, MatchMode};
use crate::engine::Engine;
use crate::model::*;

const PREFIXES: &[&str] = &[
    "10.20.0.0/16",
    "10.21.0.0/16",
    "10.22.0.0/16",
    "10.30.0.0/16",
    "10.30.0.0/15",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "10.20.1.0/24",
    "2001:db8:20::/48",
    "::/0",
];
const IFINDEXES: &[u32] = &[ETH0, ETH1, PPP0, ETH2, ETH3, WG0, 99];
const NAMES: &[&str] = &["eth0", "eth1", "ppp0", "eth2", "eth3", "wg0", "lan9"];
const TABLES: &[u32] = &[254, 100, 200];
const WATCHED: &[u32] = &[254, 100];
const BACKUP_NAMES: &[&str] = &["ppp0", "eth2", "eth3", "wg0"];

fn test_config() -> Config {
    let text = format!(
        "{BASE}\n[[group]]\nname = \"branch\"\nsegments = [\"10.30.0.0/16\", \"2001:db8:20::/48\"]\nlinks = [\"hot\", \"lte\"]\nmatch = \"covering\"\nallow_default = true\nactivate_delay = \"5s\"\ndeactivate_delay = \"0s\"\n"
    );
    config(&text)
}

fn prefix() -> impl Strategy<Value = IpNet> {
    prop::sample::select(PREFIXES).prop_map(|p| p.parse().unwrap())
}

fn ifindex() -> impl Strategy<Value = u32> {
    prop::sample::select(IFINDEXES)
}

fn flags() -> impl Strategy<Value = u32> {
    prop_oneof![4 => Just(0u32), 1 => Just(RTNH_F_DEAD), 1 => Just(RTNH_F_LINKDOWN)]
}

fn route_key() -> impl Strategy<Value = RouteKey> {
    (prop::sample::select(TABLES), prefix(), 0u32..2).prop_map(|(table, prefix, metric)| RouteKey {
        table,
        prefix,
        metric,
        tos: 0,
        alias: RouteAlias::default(),
    })
}

fn kind() -> impl Strategy<Value = RouteKind> {
    prop_oneof![
        8 => Just(RouteKind::Unicast),
        1 => Just(RouteKind::Blackhole),
        1 => Just(RouteKind::Unreachable),
        1 => Just(RouteKind::Prohibit),
        1 => Just(RouteKind::Other(2)),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let hop =
        (prop::option::weighted(0.9, ifindex()), flags()).prop_map(|(ifindex, flags)| NextHop {
            ifindex,
            gateway: None,
            flags,
        });
    let route = (
        route_key(),
        kind(),
        prop::collection::vec(hop, 0..3),
        prop::option::weighted(0.25, 1u32..5),
    )
        .prop_map(|(key, kind, nexthops, nh_id)| {
            let nexthops = if nh_id.is_some() {
                Vec::new()
            } else {
                nexthops
            };
            Event::RouteUpsert(Route {
                key,
                protocol: 186,
                kind,
                nexthops,
                nh_id,
            })
        });
    let nexthop = (
        1u32..5,
        prop::option::of(ifindex()),
        prop::bool::weighted(0.15),
        prop::collection::vec(1u32..5, 0..3),
        flags(),
    )
        .prop_map(|(id, ifindex, blackhole, group, flags)| {
            // The kernel never lets a group contain itself or another group;
            // members that are groups are ignored by both models anyway.
            let group: Vec<u32> = group.into_iter().filter(|m| *m != id).collect();
            Event::NexthopUpsert(NexthopObject {
                id,
                ifindex,
                gateway: None,
                blackhole,
                group,
                flags,
            })
        });
    let link = (
        ifindex(),
        prop::sample::select(NAMES),
        any::<bool>(),
        prop::sample::select(&[OperState::Up, OperState::Unknown, OperState::Down][..]),
    )
        .prop_map(|(ifindex, name, admin_up, oper)| {
            Event::InterfaceUpsert(InterfaceInfo {
                ifindex,
                name: name.to_string(),
                admin_up,
                oper,
                l3: name.starts_with("ppp"),
            })
        });
    // Interfaces under their usual names going up and down (renames above).
    let canonical = (
        0usize..6,
        any::<bool>(),
        prop::sample::select(&[OperState::Up, OperState::Unknown, OperState::Down][..]),
    )
        .prop_map(|(i, admin_up, oper)| {
            let name = NAMES[i];
            Event::InterfaceUpsert(InterfaceInfo {
                ifindex: IFINDEXES[i],
                name: name.to_string(),
                admin_up,
                oper,
                l3: name.starts_with("ppp"),
            })
        });
    let address = (
        prop::sample::select(&[PPP0, ETH2, ETH3][..]),
        any::<bool>(),
        prop::sample::select(&["192.0.2.1/30", "2001:db8::1/64", "fe80::1/64"][..]),
    )
        .prop_map(|(ifindex, add, local)| {
            let a = AddressInfo {
                ifindex,
                local: local.parse().unwrap(),
                peer: None,
            };
            if add {
                Event::AddressAdd(a)
            } else {
                Event::AddressDelete(a)
            }
        });
    let timer = prop_oneof![
        (0usize..2).prop_map(|g| Timer::Activate(GroupId(g))),
        (0usize..2).prop_map(|g| Timer::Deactivate(GroupId(g))),
        (0usize..3).prop_map(|l| Timer::UpTimeout(LinkId(l))),
        (0usize..2).prop_map(|g| Timer::Retry(GroupId(g))),
    ]
    .prop_map(Event::TimerFired);
    prop_oneof![
        10 => route,
        6 => route_key().prop_map(Event::RouteDelete),
        3 => nexthop,
        1 => (1u32..5).prop_map(Event::NexthopDelete),
        2 => link,
        6 => canonical,
        1 => ifindex().prop_map(Event::InterfaceDelete),
        3 => address,
        2 => Just(Event::Synced),
        5 => timer,
        // attempt: how many attempts old the report is (0: the current
        // one); `run` turns it into an id.
        2 => (0usize..3, prop_oneof![3 => Just(0u64), 1 => Just(1u64)]).prop_map(|(link, attempt)| Event::LinkFailed { link: LinkId(link), attempt, error: "driver says no".into() }),
        3 => (0usize..3).prop_map(|link| Event::LinkReleased { link: LinkId(link) }),
        1 => (0usize..2, 0usize..3).prop_map(|(group, link)| Event::AdoptSteering { group: GroupId(group), link: LinkId(link) }),
    ]
}

/// The rules, written as directly as possible.
#[derive(Default)]
struct Reference {
    routes: HashMap<RouteKey, Route>,
    nexthops: HashMap<u32, NexthopObject>,
    names: HashMap<u32, String>,
    links: HashMap<u32, InterfaceInfo>,
    gone: HashSet<u32>,
    /// (ifindex, address).
    addrs: HashSet<(u32, IpNet)>,
}

impl Reference {
    fn apply(&mut self, ev: &Event) {
        match ev {
            Event::RouteUpsert(r) => {
                self.routes.insert(r.key.clone(), r.clone());
            }
            Event::RouteDelete(k) => {
                self.routes.remove(k);
            }
            Event::NexthopUpsert(n) => {
                self.nexthops.insert(n.id, n.clone());
            }
            Event::NexthopDelete(id) => {
                self.nexthops.remove(id);
            }
            Event::InterfaceUpsert(l) => {
                self.names.insert(l.ifindex, l.name.clone());
                self.links.insert(l.ifindex, l.clone());
                self.gone.remove(&l.ifindex);
            }
            Event::InterfaceDelete(i) => {
                self.names.remove(i);
                self.links.remove(i);
                self.gone.insert(*i);
                self.addrs.retain(|(a, _)| a != i);
            }
            Event::AddressAdd(a) => {
                self.addrs.insert((a.ifindex, a.local));
            }
            Event::AddressDelete(a) => {
                self.addrs.remove(&(a.ifindex, a.local));
            }
            _ => {}
        }
    }

    fn oif_counts(&self, i: u32) -> bool {
        !self.gone.contains(&i)
            && !self
                .names
                .get(&i)
                .is_some_and(|n| BACKUP_NAMES.contains(&n.as_str()))
    }

    fn hop_counts(&self, ifindex: Option<u32>, flags: u32) -> bool {
        flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) == 0 && ifindex.is_some_and(|i| self.oif_counts(i))
    }

    /// What one route means: Some(true) a primary route, Some(false) a route
    /// the kernel uses but not over the primary, None a route the kernel
    /// passes over (no next hop alive).
    fn route_state(&self, r: &Route) -> Option<bool> {
        if r.kind != RouteKind::Unicast {
            return Some(false);
        }
        let hops: Vec<(Option<u32>, u32)> = match r.nh_id {
            None => r.nexthops.iter().map(|h| (h.ifindex, h.flags)).collect(),
            Some(id) => match self.nexthops.get(&id) {
                None => Vec::new(),
                Some(o) if o.group.is_empty() && o.blackhole => return Some(false),
                Some(o) if o.group.is_empty() => vec![(o.ifindex, o.flags)],
                Some(o) => o
                    .group
                    .iter()
                    .filter_map(|m| self.nexthops.get(m))
                    .filter(|m| m.group.is_empty() && !m.blackhole)
                    .map(|m| (m.ifindex, m.flags | o.flags))
                    .collect(),
            },
        };
        if hops.iter().any(|(i, f)| self.hop_counts(*i, *f)) {
            return Some(true);
        }
        let alive = hops.iter().any(|(i, f)| {
            f & RTNH_F_DEAD == 0 && i.is_some_and(|i| i != 0 && !self.gone.contains(&i))
        });
        alive.then_some(false)
    }

    /// `exact`: some primary route for exactly the segment. `covering`: in
    /// some watched table, the kernel's choice (longest prefix, then lowest
    /// metric, among TOS-0 routes it does not pass over) is a primary route.
    fn primary_up(&self, seg: &IpNet, mode: MatchMode, allow_default: bool) -> bool {
        match mode {
            MatchMode::Exact => self.routes.values().any(|r| {
                WATCHED.contains(&r.key.table)
                    && r.key.prefix == *seg
                    && self.route_state(r) == Some(true)
            }),
            MatchMode::Covering => WATCHED.iter().any(|t| {
                self.routes
                    .values()
                    .filter(|r| {
                        let p = &r.key.prefix;
                        r.key.table == *t
                            && r.key.tos == 0
                            && p.contains(seg)
                            && (p.prefix_len() > 0 || allow_default)
                            && self.route_state(r).is_some()
                    })
                    .max_by_key(|r| (r.key.prefix.prefix_len(), std::cmp::Reverse(r.key.metric)))
                    .is_some_and(|r| self.route_state(r) == Some(true))
            }),
        }
    }

    fn ifindex_of(&self, name: &str) -> Option<u32> {
        let mut found: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.name == name)
            .map(|l| l.ifindex)
            .collect();
        found.sort_unstable();
        found.pop()
    }

    fn ready(&self, c: &Config, link: LinkId) -> bool {
        let Some(lc) = c.links.get(link) else {
            return false;
        };
        let Some(i) = self.ifindex_of(&lc.interface) else {
            return false;
        };
        let Some(l) = self.links.get(&i) else {
            return false;
        };
        // The families the link carries: its gateways', else its groups'.
        let mut fams: Vec<bool> = Vec::new(); // true = IPv4
        if lc.gateway_v4.is_some() || lc.gateway_v6.is_some() {
            if lc.gateway_v4.is_some() {
                fams.push(true);
            }
            if lc.gateway_v6.is_some() {
                fams.push(false);
            }
        } else {
            for g in c.groups.values().filter(|g| g.links.contains(&link)) {
                for s in &g.segments {
                    fams.push(matches!(s, IpNet::V4(_)));
                }
            }
        }
        if fams.is_empty() {
            fams = vec![true, false];
        }
        l.admin_up
            && matches!(l.oper, OperState::Up | OperState::Unknown)
            && (!lc.require_address
                || self
                    .addrs
                    .iter()
                    .any(|(a, net)| *a == i && fams.contains(&matches!(net, IpNet::V4(_)))))
    }
}

/// Replays `events`; returns how many steps had a group in `backup`.
fn run(events: Vec<Event>) -> Result<usize, TestCaseError> {
    let mut backup_steps = 0;
    let cfg = test_config();
    let mut engine = Engine::new(&cfg);
    let mut reference = Reference::default();
    let mut steered: HashMap<GroupId, (LinkId, u32)> = HashMap::new();
    let mut synced = false;
    let always_up = cfg.links.map(|l| l.driver.profile().always_up);
    // The kernel keeps interface names unique: free a name before reusing it.
    let mut expanded = Vec::new();
    let mut live: HashMap<u32, String> = HashMap::new();
    for ev in events {
        match &ev {
            Event::InterfaceUpsert(l) => {
                let holder = live
                    .iter()
                    .find(|(i, n)| **i != l.ifindex && **n == l.name)
                    .map(|(i, _)| *i);
                if let Some(i) = holder {
                    live.remove(&i);
                    expanded.push(Event::InterfaceDelete(i));
                }
                live.insert(l.ifindex, l.name.clone());
            }
            Event::InterfaceDelete(i) => {
                live.remove(i);
            }
            _ => {}
        }
        expanded.push(ev);
    }
    // Per link: the last LinkUp's attempt id, and LinkDowns not yet answered.
    let mut attempt_of: HashMap<LinkId, u64> = HashMap::new();
    let mut downs: HashMap<LinkId, u32> = HashMap::new();
    for (step, mut ev) in expanded.into_iter().enumerate() {
        match &mut ev {
            Event::LinkFailed { link, attempt, .. } => {
                let current = attempt_of.get(link).copied().unwrap_or(0);
                *attempt = current.saturating_sub(*attempt);
            }
            // A driver answers each LinkDown once; never out of the blue.
            Event::LinkReleased { link } => match downs.get_mut(link) {
                Some(n) if *n > 0 => *n -= 1,
                _ => continue,
            },
            _ => {}
        }
        reference.apply(&ev);
        let was_synced = synced;
        if ev == Event::Synced {
            synced = true;
        }
        let actions = engine.handle(1000 + step as u64 * 10, ev.clone());
        if !was_synced && !synced {
            prop_assert!(
                actions.is_empty(),
                "step {step}: {ev:?} before Synced produced {actions:?}"
            );
        }
        for a in &actions {
            match a {
                Action::Steer {
                    group,
                    target,
                    segments,
                } => {
                    prop_assert_eq!(segments, &cfg.groups[*group].segments);
                    steered.insert(*group, (target.link, target.ifindex));
                }
                Action::Unsteer { group, .. } => {
                    steered.remove(group);
                }
                Action::LinkUp { link, attempt } => {
                    prop_assert!(
                        !always_up[*link],
                        "step {step}: {a:?} for an always-up link"
                    );
                    let last = attempt_of.values().copied().max().unwrap_or(0);
                    prop_assert!(*attempt > last, "step {step}: attempt ids must grow");
                    attempt_of.insert(*link, *attempt);
                }
                Action::LinkDown { link } => {
                    prop_assert!(
                        !always_up[*link],
                        "step {step}: {a:?} for an always-up link"
                    );
                    *downs.entry(*link).or_default() += 1;
                }
                _ => {}
            }
        }
        let st = engine.status();
        if st.groups.iter().any(|g| g.state == GroupState::Backup) {
            backup_steps += 1;
        }
        prop_assert_eq!(st.synced, synced);
        for (gs, (g, gc)) in st.groups.iter().zip(cfg.groups.iter()) {
            let mut lost = true;
            for (s, seg) in gs.segments.iter().zip(&gc.segments) {
                let want = reference.primary_up(seg, gc.match_mode, gc.allow_default);
                prop_assert_eq!(
                    s.primary_up,
                    want,
                    "step {}: {:?}: group {} segment {}",
                    step,
                    ev,
                    g,
                    seg
                );
                lost &= !want;
                prop_assert_eq!(
                    s.steered,
                    steered.contains_key(&g),
                    "step {}: steered flag of group {}",
                    step,
                    g
                );
            }
            if !synced {
                prop_assert_eq!(gs.state, GroupState::Primary);
                continue;
            }
            if lost {
                prop_assert!(
                    !matches!(gs.state, GroupState::Primary | GroupState::Holding),
                    "step {step}: {ev:?}: group {g} lost but {:?}",
                    gs.state
                );
            } else {
                prop_assert!(
                    matches!(gs.state, GroupState::Primary | GroupState::Holding),
                    "step {step}: {ev:?}: group {g} has a primary but {:?}",
                    gs.state
                );
            }
            prop_assert_eq!(gs.state == GroupState::Backup, steered.contains_key(&g));
            if let Some((link, ifindex)) = steered.get(&g) {
                prop_assert!(lost, "step {step}: group {g} steered while primary up");
                prop_assert!(
                    reference.ready(&cfg, *link),
                    "step {step}: {ev:?}: group {g} steered to link {link} which is not ready"
                );
                let name = &cfg.links[*link].interface;
                prop_assert_eq!(
                    reference.ifindex_of(name),
                    Some(*ifindex),
                    "step {}: steer ifindex",
                    step
                );
                prop_assert!(gc.links.contains(link));
                prop_assert!(
                    !matches!(st.links[link.index()].state, LinkState::Releasing),
                    "step {step}: {ev:?}: group {g} steered to link {link} still being released"
                );
            }
        }
    }
    Ok(backup_steps)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_reference(events in prop::collection::vec(event(), 1..80)) {
        run(events)?;
    }

    /// Starts synced with the primary interfaces named, so more of the run
    /// exercises the state machines.
    #[test]
    fn engine_matches_reference_synced(events in prop::collection::vec(event(), 1..80)) {
        let mut all = vec![
            Event::InterfaceUpsert(InterfaceInfo { ifindex: ETH0, name: "eth0".into(), admin_up: true, oper: OperState::Up, l3: false }),
            Event::InterfaceUpsert(InterfaceInfo { ifindex: PPP0, name: "ppp0".into(), admin_up: true, oper: OperState::Unknown, l3: true }),
            Event::Synced,
        ];
        all.extend(events);
        run(all)?;
    }
}

/// The generator must actually drive groups into `backup`, or the
/// invariants above check little.
#[test]
fn random_runs_reach_backup() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let backup = AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    runner
        .run(&prop::collection::vec(event(), 1..80), |e| {
            backup.fetch_add(run(e)?, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    assert!(
        backup.load(Ordering::Relaxed) > 100,
        "only {} steps in backup",
        backup.load(Ordering::Relaxed)
    );
}

#[test]
fn constants_are_consistent() {
    let cfg = test_config();
    assert_eq!(cfg.links[LTE].interface, "ppp0");
    assert_eq!(cfg.links[DSL].interface, "eth2");
    assert_eq!(cfg.links[HOT].interface, "eth3");
    let mut names = cfg.backup_interfaces();
    names.sort();
    let mut want: Vec<String> = BACKUP_NAMES.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(names, want);
}
