//! Scenario tests for the engine: each feeds events and compares the actions
//! (Notices aside, which are checked separately) with what the rules demand.

// Topics with helpers of their own, on this file's harness (`H`, the events).
mod link;
mod prearm;
mod probe;
mod proptests;
mod rule;
mod verify;

use std::time::Duration;

use ipnet::IpNet;

use super::group::retry_backoff;
use super::*;
use crate::config::TableNames;
use crate::model::*;

pub(super) const ETH0: u32 = 2;
pub(super) const ETH1: u32 = 3;
pub(super) const PPP0: u32 = 10;
pub(super) const ETH2: u32 = 11;
pub(super) const ETH3: u32 = 12;
pub(super) const WG0: u32 = 13;

pub(super) const LTE: LinkId = LinkId(0);
pub(super) const DSL: LinkId = LinkId(1);
pub(super) const HOT: LinkId = LinkId(2);

pub(super) const BASE: &str = r#"
[agent]
tables = ["main", 100]
backup_interfaces = ["wg0"]

[fastpath]
interfaces = ["lan0"]

[[link]]
name = "lte"
interface = "ppp0"
driver = "pppd"
peer = "lte"

[[link]]
name = "dsl"
interface = "eth2"
driver = "interface"

[[link]]
name = "hot"
interface = "eth3"
driver = "always-up"

[[group]]
name = "hq"
segments = ["10.20.0.0/16", "10.21.0.0/16", "10.22.0.0/16"]
links = ["lte", "dsl"]
"#;

pub(super) fn config(text: &str) -> Config {
    let mut t = TableNames::builtin();
    t.insert("isp2", 100);
    Config::parse_with_tables(text, "test.toml", &t).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(super) fn key(table: u32, prefix: &str) -> RouteKey {
    RouteKey {
        table,
        prefix: net(prefix),
        metric: 0,
        tos: 0,
        alias: RouteAlias::default(),
    }
}

pub(super) fn nh(ifindex: u32) -> NextHop {
    NextHop {
        ifindex: Some(ifindex),
        gateway: None,
        flags: 0,
    }
}

pub(super) fn route(table: u32, prefix: &str, nexthops: Vec<NextHop>) -> Route {
    Route {
        key: key(table, prefix),
        protocol: 186,
        kind: RouteKind::Unicast,
        nexthops,
        nh_id: None,
    }
}

pub(super) fn via(prefix: &str, ifindex: u32) -> Event {
    Event::RouteUpsert(route(254, prefix, vec![nh(ifindex)]))
}

pub(super) fn del(prefix: &str) -> Event {
    Event::RouteDelete(key(254, prefix))
}

pub(super) fn iface(ifindex: u32, name: &str, up: bool) -> Event {
    let l3 = name.starts_with("ppp") || name.starts_with("wg");
    Event::InterfaceUpsert(InterfaceInfo {
        ifindex,
        name: name.into(),
        admin_up: up,
        oper: if !up {
            OperState::Down
        } else if l3 {
            OperState::Unknown
        } else {
            OperState::Up
        },
        l3,
    })
}

pub(super) fn addr(ifindex: u32, local: &str, peer: Option<&str>) -> AddressInfo {
    AddressInfo {
        ifindex,
        local: net(local),
        peer: peer.map(|p| p.parse().unwrap()),
    }
}

/// The actions without Notices, as short strings.
pub(super) fn brief(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            // Pre-arming has its own tests (tests/prearm.rs).
            Action::Notice(_) | Action::Prearm { .. } | Action::Disarm { .. } => None,
            Action::LinkUp { link, .. } => Some(format!("up {link}")),
            Action::LinkDown { link } => Some(format!("down {link}")),
            Action::Steer { group, target, .. } => Some(format!(
                "steer g{group} l{} if{}",
                target.link, target.ifindex
            )),
            Action::Unsteer { group, .. } => Some(format!("unsteer g{group}")),
            Action::ArmTimer { timer, after } => Some(format!("arm {timer:?} {after:?}")),
            Action::CancelTimer { timer } => Some(format!("cancel {timer:?}")),
            Action::Probe {
                group,
                target,
                ifindex,
                seq,
                ..
            } => Some(format!("probe g{group} {target} if{ifindex} #{seq}")),
        })
        .collect()
}

pub(super) fn notices(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notice(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

pub(super) struct H {
    pub e: Engine,
    pub now: Millis,
    pub last: Vec<Action>,
}

impl H {
    pub fn new(text: &str) -> H {
        H {
            e: Engine::new(&config(text)),
            now: 1_000,
            last: Vec::new(),
        }
    }

    /// Primary interfaces and the three segments up via eth0, synced.
    pub fn standard(text: &str) -> H {
        H::standard_with(text, vec![])
    }

    pub fn standard_with(text: &str, extra: Vec<Event>) -> H {
        let mut h = H::new(text);
        for ev in extra {
            h.ev(ev);
        }
        for ev in [
            iface(ETH0, "eth0", true),
            iface(ETH1, "eth1", true),
            iface(ETH2, "eth2", false),
            iface(ETH3, "eth3", true),
            iface(WG0, "wg0", true),
            via("10.20.0.0/16", ETH0),
            via("10.21.0.0/16", ETH0),
            via("10.22.0.0/16", ETH0),
            Event::Synced,
        ] {
            assert_eq!(brief(&h.ev(ev)), Vec::<String>::new());
        }
        h
    }

    pub fn ev(&mut self, ev: Event) -> Vec<Action> {
        self.now += 100;
        self.last = self.e.handle(self.now, ev);
        for a in &self.last {
            if let Action::Notice(n) = a {
                assert!(
                    !n.to_string().contains('\n'),
                    "notice must be one line: {n}"
                );
            }
        }
        self.last.clone()
    }

    pub fn b(&mut self, ev: Event) -> Vec<String> {
        let a = self.ev(ev);
        brief(&a)
    }

    pub fn group(&self, g: usize) -> GroupStatus {
        self.e.status().groups[g].clone()
    }

    /// Link `l`'s status row (rows are in slot order; no slot is vacant
    /// here).
    pub fn link(&self, l: LinkId) -> LinkStatus {
        self.e.status().links[l.index()].clone()
    }

    pub fn up(&self, g: usize) -> Vec<bool> {
        self.group(g)
            .segments
            .iter()
            .map(|s| s.primary_up)
            .collect()
    }

    /// Loses all three segments of group 0.
    pub fn lose_all(&mut self) -> Vec<String> {
        assert!(self.b(del("10.20.0.0/16")).is_empty());
        assert!(self.b(del("10.21.0.0/16")).is_empty());
        self.b(del("10.22.0.0/16"))
    }

    /// ppp0 appears with an address (lte ready).
    pub fn ppp_up(&mut self) -> Vec<String> {
        let mut out = self.b(iface(PPP0, "ppp0", true));
        out.extend(self.b(Event::AddressAdd(addr(
            PPP0,
            "10.64.0.1/32",
            Some("10.64.0.2"),
        ))));
        out
    }
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

#[test]
fn no_actions_before_synced() {
    let mut h = H::new(BASE);
    let events = vec![
        iface(ETH0, "eth0", true),
        via("10.20.0.0/16", ETH0),
        del("10.20.0.0/16"),
        iface(PPP0, "ppp0", true),
        Event::AddressAdd(addr(PPP0, "10.64.0.1/32", None)),
        Event::TimerFired(Timer::UpTimeout(LTE)),
        Event::TimerFired(Timer::Activate(GroupId(0))),
        Event::LinkFailed {
            link: LTE,
            attempt: h.e.current_attempt(LTE),
            error: "boom".into(),
        },
        Event::AdoptSteering {
            group: GroupId(0),
            link: DSL,
        },
        Event::InterfaceDelete(PPP0),
    ];
    for ev in events {
        let out = h.ev(ev.clone());
        assert!(out.is_empty(), "{ev:?} produced {out:?}");
    }
    assert!(!h.e.status().synced);
    // On Synced: adoption refused (dsl not ready), then the lost group acts.
    assert_eq!(
        h.b(Event::Synced),
        v(&["unsteer g0", "up 0", "arm UpTimeout(0) 30s"])
    );
    assert_eq!(h.group(0).state, GroupState::Activating);
    assert_eq!(h.link(LTE).last_error.as_deref(), Some("boom"));
}

#[test]
fn all_segments_must_fail() {
    let mut h = H::standard(BASE);
    assert_eq!(h.up(0), vec![true, true, true]);
    assert!(h.b(del("10.20.0.0/16")).is_empty());
    assert!(h.b(del("10.22.0.0/16")).is_empty());
    assert_eq!(h.up(0), vec![false, true, false]);
    assert_eq!(h.group(0).state, GroupState::Primary);
    let out = h.ev(del("10.21.0.0/16"));
    assert_eq!(brief(&out), v(&["up 0", "arm UpTimeout(0) 30s"]));
    let n = notices(&out).join(" | ");
    assert!(
        n.contains("group hq: primary lost (0 of 3 segments have a primary route)"),
        "{n}"
    );
    assert!(n.contains("bringing up link lte"), "{n}");
}

#[test]
fn match_rules() {
    // (match, allow_default, route prefix, expected primary_up of 10.20.0.0/16)
    let cases: &[(&str, bool, &str, bool)] = &[
        ("exact", false, "10.20.0.0/16", true),
        ("exact", false, "10.0.0.0/8", false),
        ("exact", false, "10.20.1.0/24", false),
        ("exact", false, "0.0.0.0/0", false),
        ("exact", true, "0.0.0.0/0", false),
        ("covering", false, "10.20.0.0/16", true),
        ("covering", false, "10.0.0.0/8", true),
        ("covering", false, "10.16.0.0/12", true),
        ("covering", false, "10.20.1.0/24", false),
        ("covering", false, "11.0.0.0/8", false),
        ("covering", false, "0.0.0.0/0", false),
        ("covering", true, "0.0.0.0/0", true),
        ("covering", true, "::/0", false),
    ];
    for (mode, allow_default, prefix, expected) in cases {
        let text = BASE.replace(
            "links = [\"lte\", \"dsl\"]",
            &format!(
                "links = [\"lte\", \"dsl\"]\nmatch = \"{mode}\"\nallow_default = {allow_default}"
            ),
        );
        let mut h = H::new(&text);
        h.ev(iface(ETH0, "eth0", true));
        h.ev(via(prefix, ETH0));
        assert_eq!(
            h.up(0)[0],
            *expected,
            "{mode} allow_default={allow_default} route {prefix}"
        );
        h.ev(del(prefix));
        assert!(!h.up(0)[0], "{mode} {prefix}: deleting the route clears it");
    }
}

#[test]
fn next_hop_rules() {
    let dead = NextHop {
        ifindex: Some(ETH0),
        gateway: None,
        flags: RTNH_F_DEAD,
    };
    let linkdown = NextHop {
        ifindex: Some(ETH0),
        gateway: None,
        flags: RTNH_F_LINKDOWN,
    };
    let no_oif = NextHop {
        ifindex: None,
        gateway: Some("192.0.2.1".parse().unwrap()),
        flags: 0,
    };
    let onlink = NextHop {
        ifindex: Some(ETH0),
        gateway: None,
        flags: 4,
    };
    // (name, table, kind, next hops, expected)
    let cases: Vec<(&str, u32, RouteKind, Vec<NextHop>, bool)> = vec![
        (
            "plain primary",
            254,
            RouteKind::Unicast,
            vec![nh(ETH0)],
            true,
        ),
        (
            "second watched table",
            100,
            RouteKind::Unicast,
            vec![nh(ETH0)],
            true,
        ),
        (
            "unwatched table",
            200,
            RouteKind::Unicast,
            vec![nh(ETH0)],
            false,
        ),
        (
            "via link interface only",
            254,
            RouteKind::Unicast,
            vec![nh(PPP0)],
            false,
        ),
        (
            "via extra backup interface",
            254,
            RouteKind::Unicast,
            vec![nh(WG0)],
            false,
        ),
        (
            "multipath, one backup next hop",
            254,
            RouteKind::Unicast,
            vec![nh(PPP0), nh(ETH1)],
            true,
        ),
        (
            "multipath, all backup",
            254,
            RouteKind::Unicast,
            vec![nh(PPP0), nh(ETH2)],
            false,
        ),
        (
            "dead next hop",
            254,
            RouteKind::Unicast,
            vec![dead.clone()],
            false,
        ),
        (
            "linkdown next hop",
            254,
            RouteKind::Unicast,
            vec![linkdown.clone()],
            false,
        ),
        (
            "dead and a live one",
            254,
            RouteKind::Unicast,
            vec![dead, nh(ETH1)],
            true,
        ),
        (
            "other flags are fine",
            254,
            RouteKind::Unicast,
            vec![onlink],
            true,
        ),
        (
            "no outgoing interface",
            254,
            RouteKind::Unicast,
            vec![no_oif],
            false,
        ),
        ("no next hop", 254, RouteKind::Unicast, vec![], false),
        (
            "unknown ifindex counts",
            254,
            RouteKind::Unicast,
            vec![nh(99)],
            true,
        ),
        ("blackhole", 254, RouteKind::Blackhole, vec![], false),
        (
            "unreachable",
            254,
            RouteKind::Unreachable,
            vec![nh(ETH0)],
            false,
        ),
        ("prohibit", 254, RouteKind::Prohibit, vec![], false),
        (
            "local/other",
            254,
            RouteKind::Other(2),
            vec![nh(ETH0)],
            false,
        ),
    ];
    for (name, table, kind, hops, expected) in cases {
        let mut h = H::new(BASE);
        for (i, n) in [
            (ETH0, "eth0"),
            (ETH1, "eth1"),
            (PPP0, "ppp0"),
            (ETH2, "eth2"),
            (WG0, "wg0"),
        ] {
            h.ev(iface(i, n, true));
        }
        let mut r = route(table, "10.20.0.0/16", hops);
        r.kind = kind;
        h.ev(Event::RouteUpsert(r));
        assert_eq!(h.up(0)[0], expected, "{name}");
    }
}

#[test]
fn interface_names_arrive_in_any_order() {
    let mut h = H::new(BASE);
    h.ev(via("10.20.0.0/16", PPP0));
    assert!(
        h.up(0)[0],
        "an ifindex with no known name is not a backup interface"
    );
    h.ev(iface(PPP0, "ppp0", true));
    assert!(!h.up(0)[0], "once named ppp0 it is a backup interface");
    h.ev(iface(PPP0, "lan9", true));
    assert!(h.up(0)[0], "renamed to a non-backup name");
    h.ev(Event::InterfaceDelete(PPP0));
    assert!(!h.up(0)[0], "a deleted interface carries nothing");
    h.ev(iface(PPP0, "eth9", true));
    assert!(h.up(0)[0], "the ifindex is back under a primary name");
}

#[test]
fn nexthop_objects() {
    let obj = |id: u32, ifindex: Option<u32>, group: Vec<u32>, blackhole: bool| {
        Event::NexthopUpsert(NexthopObject {
            id,
            ifindex,
            gateway: None,
            blackhole,
            group,
            flags: 0,
        })
    };
    let mut h = H::new(BASE);
    h.ev(iface(ETH0, "eth0", true));
    h.ev(iface(PPP0, "ppp0", true));
    let mut r = route(254, "10.20.0.0/16", vec![]);
    r.nh_id = Some(7);
    h.ev(Event::RouteUpsert(r));
    assert!(!h.up(0)[0], "unknown nexthop object does not count");
    h.ev(obj(5, Some(PPP0), vec![], false));
    h.ev(obj(6, Some(ETH0), vec![], false));
    h.ev(obj(7, None, vec![5], false));
    assert!(!h.up(0)[0], "group of backup next hops only");
    h.ev(obj(7, None, vec![5, 6], false));
    assert!(h.up(0)[0], "group with one primary member");
    h.ev(obj(6, Some(PPP0), vec![], false));
    assert!(
        !h.up(0)[0],
        "member update re-evaluates the route through the group"
    );
    h.ev(obj(6, Some(ETH0), vec![], false));
    assert!(h.up(0)[0]);
    h.ev(Event::NexthopDelete(6));
    assert!(!h.up(0)[0], "member deleted");
    h.ev(obj(6, Some(ETH0), vec![], false));
    assert!(h.up(0)[0]);
    h.ev(obj(7, None, vec![], true));
    assert!(!h.up(0)[0], "blackhole nexthop");
    h.ev(obj(7, Some(ETH0), vec![], false));
    assert!(h.up(0)[0], "single nexthop object via eth0");
    let dead = NexthopObject {
        id: 7,
        ifindex: Some(ETH0),
        gateway: None,
        blackhole: false,
        group: vec![],
        flags: RTNH_F_DEAD,
    };
    h.ev(Event::NexthopUpsert(dead));
    assert!(!h.up(0)[0], "dead nexthop object");
    h.ev(obj(7, Some(ETH0), vec![], false));
    h.ev(Event::RouteDelete(key(254, "10.20.0.0/16")));
    assert!(!h.up(0)[0], "route deleted");
}

#[test]
fn full_cycle_with_hold() {
    let mut h = H::standard(BASE);
    assert_eq!(h.lose_all(), v(&["up 0", "arm UpTimeout(0) 30s"]));
    assert_eq!(h.group(0).state, GroupState::Activating);
    assert_eq!(h.group(0).active_link.as_deref(), Some("lte"));
    assert_eq!(h.link(LTE).state, LinkState::Connecting);
    // ppp0 without an address is not ready (pppd requires one).
    assert!(h.b(iface(PPP0, "ppp0", true)).is_empty());
    let out = h.ev(Event::AddressAdd(addr(
        PPP0,
        "10.64.0.1/32",
        Some("10.64.0.2"),
    )));
    assert_eq!(brief(&out), v(&["cancel UpTimeout(0)", "steer g0 l0 if10"]));
    match out.iter().find(|a| matches!(a, Action::Steer { .. })) {
        Some(Action::Steer {
            target, segments, ..
        }) => {
            assert!(target.l3);
            assert_eq!(
                (target.gateway_v4, target.gateway_v6),
                (None, None),
                "l3 links get no gateway"
            );
            assert_eq!(segments.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    let st = h.group(0);
    assert_eq!(st.state, GroupState::Backup);
    assert!(st.segments.iter().all(|s| s.steered && !s.primary_up));
    assert_eq!(h.link(LTE).state, LinkState::Up);
    assert_eq!(h.link(LTE).ifindex, Some(PPP0));

    // One segment back: Unsteer at once, hold the link.
    let out = h.ev(via("10.21.0.0/16", ETH0));
    assert_eq!(brief(&out), v(&["unsteer g0", "arm Deactivate(0) 20s"]));
    let n = notices(&out).join(" | ");
    assert!(
        n.contains("group hq: primary back (10.21.0.0/16 via eth0, proto bgp); steering stopped, holding link lte for 20s"),
        "{n}"
    );
    assert_eq!(h.group(0).state, GroupState::Holding);
    assert!(h.group(0).segments.iter().all(|s| !s.steered));
    // A stale timer of another kind does nothing.
    assert!(h.b(Event::TimerFired(Timer::UpTimeout(LTE))).is_empty());
    assert_eq!(
        h.b(Event::TimerFired(Timer::Deactivate(GroupId(0)))),
        v(&["down 0"])
    );
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert_eq!(h.group(0).active_link, None);
    // Down once its driver says the `down` finished.
    assert_eq!(h.link(LTE).state, LinkState::Releasing);
    assert!(h.b(Event::LinkReleased { link: LTE }).is_empty());
    assert_eq!(h.link(LTE).state, LinkState::Down);
    assert!(
        h.b(Event::TimerFired(Timer::Deactivate(GroupId(0))))
            .is_empty(),
        "stale fire ignored"
    );
}

#[test]
fn holding_then_lost_again_does_not_redial() {
    let mut h = H::standard(BASE);
    h.lose_all();
    h.ppp_up();
    assert_eq!(
        h.b(via("10.20.0.0/16", ETH0)),
        v(&["unsteer g0", "arm Deactivate(0) 20s"])
    );
    let out = h.ev(del("10.20.0.0/16"));
    assert_eq!(
        brief(&out),
        v(&["cancel Deactivate(0)", "steer g0 l0 if10"])
    );
    assert!(notices(&out)
        .join(" ")
        .contains("resuming steering on link lte"));
    assert_eq!(h.group(0).state, GroupState::Backup);
}

#[test]
fn zero_deactivate_delay_takes_link_down_at_once() {
    let text = BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\ndeactivate_delay = \"0s\"",
    );
    let mut h = H::standard(&text);
    h.lose_all();
    h.ppp_up();
    assert_eq!(h.b(via("10.20.0.0/16", ETH0)), v(&["unsteer g0", "down 0"]));
    assert_eq!(h.group(0).state, GroupState::Primary);
}

#[test]
fn activate_delay_filters_a_flap() {
    let text = BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\nactivate_delay = \"10s\"",
    );
    let mut h = H::standard(&text);
    assert_eq!(h.lose_all(), v(&["arm Activate(0) 10s"]));
    // Waiting out the delay is a state of its own: no link is tried yet.
    assert_eq!(h.group(0).state, GroupState::Pending);
    assert_eq!(h.group(0).active_link, None);
    assert_eq!(h.b(via("10.22.0.0/16", ETH0)), v(&["cancel Activate(0)"]));
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert!(
        h.b(Event::TimerFired(Timer::Activate(GroupId(0))))
            .is_empty(),
        "late fire of a cancelled timer"
    );
    assert_eq!(h.b(del("10.22.0.0/16")), v(&["arm Activate(0) 10s"]));
    assert_eq!(
        h.b(Event::TimerFired(Timer::Activate(GroupId(0)))),
        v(&["up 0", "arm UpTimeout(0) 30s"])
    );
    assert_eq!(h.group(0).state, GroupState::Activating);
    assert_eq!(h.group(0).active_link.as_deref(), Some("lte"));
}

#[test]
fn giving_up_a_connecting_link_when_primary_returns() {
    let mut h = H::standard(BASE);
    h.lose_all();
    assert_eq!(
        h.b(via("10.20.0.0/16", ETH0)),
        v(&["cancel UpTimeout(0)", "down 0"])
    );
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert_eq!(h.link(LTE).state, LinkState::Releasing);
    assert!(h.b(Event::LinkReleased { link: LTE }).is_empty());
    assert_eq!(h.link(LTE).state, LinkState::Down);
    // ppp0 coming up late changes nothing.
    assert!(h.ppp_up().is_empty());
}

#[test]
fn up_timeout_then_next_link_then_failed_with_backoff() {
    let mut h = H::standard(BASE);
    h.lose_all();
    assert_eq!(
        h.b(Event::TimerFired(Timer::UpTimeout(LTE))),
        v(&[
            "cancel UpTimeout(0)",
            "down 0",
            "up 1",
            "arm UpTimeout(1) 30s"
        ])
    );
    assert_eq!(h.link(LTE).state, LinkState::Failed);
    assert_eq!(h.link(LTE).attempts, 1);
    assert_eq!(h.link(LTE).last_error.as_deref(), Some("not up within 30s"));
    assert_eq!(h.group(0).active_link.as_deref(), Some("dsl"));
    let out = h.ev(Event::LinkFailed {
        link: DSL,
        attempt: h.e.current_attempt(DSL),
        error: "ip link set eth2 up: No such device".into(),
    });
    assert_eq!(
        brief(&out),
        v(&["cancel UpTimeout(1)", "down 1", "arm Retry(0) 5s"])
    );
    let n = notices(&out).join(" | ");
    assert!(n.contains("all 2 links failed (lte: not up within 30s; dsl: ip link set eth2 up: No such device); retrying in 5s"), "{n}");
    assert_eq!(h.group(0).state, GroupState::Failed);
    assert_eq!(
        h.link(DSL).last_error.as_deref(),
        Some("ip link set eth2 up: No such device")
    );

    // Every further failed round doubles the wait, capped at 5 minutes.
    let mut waits = Vec::new();
    for _ in 0..8 {
        assert_eq!(
            h.b(Event::TimerFired(Timer::Retry(GroupId(0)))),
            v(&["up 0", "arm UpTimeout(0) 30s"])
        );
        h.ev(Event::LinkFailed {
            link: LTE,
            attempt: h.e.current_attempt(LTE),
            error: "pppd exited with status 8".into(),
        });
        let out = h.ev(Event::TimerFired(Timer::UpTimeout(DSL)));
        match out.last() {
            Some(Action::ArmTimer {
                timer: Timer::Retry(GroupId(0)),
                after,
            }) => waits.push(after.as_secs()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);

    // Primary back while failed: stop retrying.
    assert_eq!(h.b(via("10.20.0.0/16", ETH0)), v(&["cancel Retry(0)"]));
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert!(h.b(Event::TimerFired(Timer::Retry(GroupId(0)))).is_empty());
}

#[test]
fn success_resets_backoff() {
    let mut h = H::standard(BASE);
    h.lose_all();
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    h.ev(Event::TimerFired(Timer::UpTimeout(DSL)));
    h.ev(Event::TimerFired(Timer::Retry(GroupId(0))));
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    assert_eq!(
        h.b(Event::TimerFired(Timer::UpTimeout(DSL))),
        v(&["cancel UpTimeout(1)", "down 1", "arm Retry(0) 10s"])
    );
    h.ev(Event::TimerFired(Timer::Retry(GroupId(0))));
    assert_eq!(h.ppp_up(), v(&["cancel UpTimeout(0)", "steer g0 l0 if10"]));
    h.ev(Event::LinkFailed {
        link: LTE,
        attempt: h.e.current_attempt(LTE),
        error: "pppd exited".into(),
    });
    h.ev(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(
        h.b(Event::TimerFired(Timer::UpTimeout(LTE))),
        v(&["cancel UpTimeout(0)", "down 0", "arm Retry(0) 5s"])
    );
}

#[test]
fn retry_backoff_values() {
    let s = Duration::from_secs;
    assert_eq!(retry_backoff(s(5), 1), s(5));
    assert_eq!(retry_backoff(s(5), 2), s(10));
    assert_eq!(retry_backoff(s(5), 7), s(300));
    assert_eq!(retry_backoff(s(5), 1000), s(300));
    assert_eq!(
        retry_backoff(s(600), 3),
        s(600),
        "a base above the cap stays"
    );
}

#[test]
fn link_dropping_while_in_use() {
    // (name, event that breaks lte while steering, expected actions)
    let cases: Vec<(&str, Event, Vec<String>)> = vec![
        (
            "address lost",
            Event::AddressDelete(addr(PPP0, "10.64.0.1/32", Some("10.64.0.2"))),
            v(&["down 0", "unsteer g0", "up 1", "arm UpTimeout(1) 30s"]),
        ),
        (
            "interface gone",
            Event::InterfaceDelete(PPP0),
            v(&["down 0", "unsteer g0", "up 1", "arm UpTimeout(1) 30s"]),
        ),
        (
            "interface down",
            iface(PPP0, "ppp0", false),
            v(&["down 0", "unsteer g0", "up 1", "arm UpTimeout(1) 30s"]),
        ),
        (
            "driver failure",
            Event::LinkFailed {
                link: LTE,
                // The first LinkUp of a fresh engine.
                attempt: 1,
                error: "pppd exited with status 16".into(),
            },
            v(&["down 0", "unsteer g0", "up 1", "arm UpTimeout(1) 30s"]),
        ),
    ];
    for (name, ev, expected) in cases {
        let mut h = H::standard(BASE);
        h.lose_all();
        h.ppp_up();
        assert_eq!(h.group(0).state, GroupState::Backup, "{name}");
        let out = h.ev(ev);
        assert_eq!(brief(&out), expected, "{name}");
        assert_eq!(h.group(0).state, GroupState::Activating, "{name}");
        assert_eq!(h.group(0).active_link.as_deref(), Some("dsl"), "{name}");
        assert_eq!(h.link(LTE).state, LinkState::Failed, "{name}");
        assert_eq!(h.link(LTE).attempts, 1, "{name}");
        assert!(
            notices(&out).join(" ").contains("link lte dropped"),
            "{name}"
        );
    }
}

#[test]
fn single_link_group_redials_at_once() {
    let text = BASE.replace("links = [\"lte\", \"dsl\"]", "links = [\"lte\"]");
    let mut h = H::standard(&text);
    h.lose_all();
    h.ppp_up();
    let out = h.b(Event::LinkFailed {
        link: LTE,
        attempt: h.e.current_attempt(LTE),
        error: "modem hung up".into(),
    });
    assert_eq!(
        out,
        v(&["down 0", "unsteer g0", "up 0", "arm UpTimeout(0) 30s"])
    );
    assert_eq!(h.link(LTE).state, LinkState::Connecting);
    // ppp0 still looks ready: not trusted until it went away and came back.
    assert!(h.b(iface(ETH1, "eth1", true)).is_empty());
    assert!(h.b(Event::InterfaceDelete(PPP0)).is_empty());
    assert_eq!(h.ppp_up(), v(&["cancel UpTimeout(0)", "steer g0 l0 if10"]));
}

#[test]
fn two_groups_share_a_link() {
    let text = format!(
        "{BASE}\n[[group]]\nname = \"branch\"\nsegments = [\"10.30.0.0/16\"]\nlinks = [\"lte\"]\ndeactivate_delay = \"0s\"\n"
    )
    .replace("links = [\"lte\", \"dsl\"]", "links = [\"lte\", \"dsl\"]\ndeactivate_delay = \"0s\"");
    let mut h = H::standard_with(&text, vec![via("10.30.0.0/16", ETH1)]);
    assert_eq!(h.lose_all(), v(&["up 0", "arm UpTimeout(0) 30s"]));
    assert!(
        h.b(del("10.30.0.0/16")).is_empty(),
        "no second LinkUp for a link being brought up"
    );
    assert_eq!(h.group(1).state, GroupState::Activating);
    assert_eq!(
        h.ppp_up(),
        v(&[
            "cancel UpTimeout(0)",
            "steer g0 l0 if10",
            "steer g1 l0 if10"
        ])
    );
    assert_eq!(
        h.b(via("10.20.0.0/16", ETH0)),
        v(&["unsteer g0"]),
        "link stays up for branch"
    );
    assert_eq!(h.link(LTE).state, LinkState::Up);
    // hq loses again: link still up, no LinkUp.
    assert_eq!(h.b(del("10.20.0.0/16")), v(&["steer g0 l0 if10"]));
    assert_eq!(h.b(via("10.30.0.0/16", ETH1)), v(&["unsteer g1"]));
    assert_eq!(h.b(via("10.21.0.0/16", ETH0)), v(&["unsteer g0", "down 0"]));
}

#[test]
fn always_up_link_is_never_dialled_or_taken_down() {
    let text = BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"hot\"]\ndeactivate_delay = \"0s\"",
    );
    let mut h = H::standard(&text);
    assert_eq!(
        h.link(HOT).state,
        LinkState::Up,
        "idle always-up link shows its readiness"
    );
    assert!(h
        .b(Event::AddressAdd(addr(ETH3, "192.0.2.1/30", None)))
        .is_empty());
    let out = h.ev(del("10.20.0.0/16"));
    assert!(out.is_empty());
    h.ev(del("10.21.0.0/16"));
    let out = h.ev(del("10.22.0.0/16"));
    assert_eq!(brief(&out), v(&["steer g0 l2 if12"]));
    match out.iter().find(|a| matches!(a, Action::Steer { .. })) {
        Some(Action::Steer { target, .. }) => {
            assert!(!target.l3);
            assert_eq!(
                target.gateway_v4,
                Some("192.0.2.2".parse().unwrap()),
                "the other end of the /30"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.b(via("10.20.0.0/16", ETH0)),
        v(&["unsteer g0"]),
        "no LinkDown for always-up"
    );
    // Not ready: wait for it, no LinkUp; time out without LinkDown.
    h.ev(iface(ETH3, "eth3", false));
    assert_eq!(h.b(del("10.20.0.0/16")), v(&["arm UpTimeout(2) 30s"]));
    assert_eq!(
        h.b(Event::TimerFired(Timer::UpTimeout(HOT))),
        v(&["cancel UpTimeout(2)", "arm Retry(0) 5s"])
    );
}

#[test]
fn gateway_changes_resteer() {
    let text = BASE.replace("links = [\"lte\", \"dsl\"]", "links = [\"dsl\"]");
    let mut h = H::standard(&text);
    h.lose_all();
    assert_eq!(
        h.b(iface(ETH2, "eth2", true)),
        v(&["cancel UpTimeout(1)", "steer g0 l1 if11"])
    );
    let out = h.ev(Event::AddressAdd(addr(ETH2, "198.51.100.5/31", None)));
    assert_eq!(brief(&out), v(&["steer g0 l1 if11"]));
    assert!(matches!(
        out.iter().find(|a| matches!(a, Action::Steer { .. })),
        Some(Action::Steer { target: SteerTarget { gateway_v4: Some(g), .. }, .. }) if *g == "198.51.100.4".parse::<Ipv4Addr>().unwrap()
    ));
    // configured gateway wins over derivation
    let text = BASE.replace(
        "driver = \"interface\"",
        "driver = \"interface\"\ngateway = \"203.0.113.1\"",
    );
    let mut h = H::standard(&text.replace("links = [\"lte\", \"dsl\"]", "links = [\"dsl\"]"));
    h.ev(Event::AddressAdd(addr(ETH2, "198.51.100.5/31", None)));
    h.lose_all();
    let out = h.ev(iface(ETH2, "eth2", true));
    assert!(matches!(
        out.iter().find(|a| matches!(a, Action::Steer { .. })),
        Some(Action::Steer { target: SteerTarget { gateway_v4: Some(g), .. }, .. }) if *g == "203.0.113.1".parse::<Ipv4Addr>().unwrap()
    ));
}

#[test]
fn adoption_after_restart() {
    let boot = |h: &mut H, primary: bool, ppp: bool| {
        h.ev(Event::AdoptSteering {
            group: GroupId(0),
            link: LTE,
        });
        h.ev(iface(ETH0, "eth0", true));
        if primary {
            h.ev(via("10.20.0.0/16", ETH0));
        }
        if ppp {
            h.ev(iface(PPP0, "ppp0", true));
            h.ev(Event::AddressAdd(addr(
                PPP0,
                "10.64.0.1/32",
                Some("10.64.0.2"),
            )));
        }
    };
    // Lost and ready: straight to backup, no dial.
    let mut h = H::new(BASE);
    boot(&mut h, false, true);
    let out = h.ev(Event::Synced);
    assert_eq!(brief(&out), v(&["steer g0 l0 if10"]));
    assert!(notices(&out)
        .join(" ")
        .contains("adopting steering to link lte"));
    assert_eq!(h.group(0).state, GroupState::Backup);
    assert_eq!(h.link(LTE).state, LinkState::Up);
    // ...and it is released normally later.
    assert_eq!(
        h.b(via("10.20.0.0/16", ETH0)),
        v(&["unsteer g0", "arm Deactivate(0) 20s"])
    );

    // Primary up: clear the stale steering.
    let mut h = H::new(BASE);
    boot(&mut h, true, true);
    assert_eq!(h.b(Event::Synced), v(&["unsteer g0"]));
    assert_eq!(h.group(0).state, GroupState::Primary);

    // Lost but link not ready: clear, then activate normally.
    let mut h = H::new(BASE);
    boot(&mut h, false, false);
    assert_eq!(
        h.b(Event::Synced),
        v(&["unsteer g0", "up 0", "arm UpTimeout(0) 30s"])
    );

    // Adoption after Synced is ignored.
    let mut h = H::standard(BASE);
    assert!(h
        .b(Event::AdoptSteering {
            group: GroupId(0),
            link: LTE
        })
        .is_empty());
}

#[test]
fn deleting_a_primary_interface_loses_its_routes() {
    let mut h = H::standard(BASE);
    h.ev(Event::InterfaceDelete(ETH0));
    assert_eq!(h.up(0), vec![false, false, false]);
    assert_eq!(h.group(0).state, GroupState::Activating);
}

#[test]
fn status_reports_groups_and_links() {
    let mut h = H::standard(BASE);
    let st = h.e.status();
    assert!(st.synced);
    assert_eq!(st.groups.len(), 1);
    assert_eq!(st.groups[0].name, "hq");
    assert_eq!(st.groups[0].segments[0].prefix, net("10.20.0.0/16"));
    assert_eq!(st.links.len(), 3);
    assert_eq!(st.links[LTE.index()].interface, "ppp0");
    assert_eq!(st.links[LTE.index()].ifindex, None);
    assert_eq!(st.links[DSL.index()].ifindex, Some(ETH2));
    assert_eq!(st.links[DSL.index()].state, LinkState::Down);
    h.lose_all();
    let st = h.e.status();
    assert_eq!(st.groups[0].since_ms, h.now);
    let json = serde_json::to_string(&st).unwrap();
    assert!(json.contains("\"state\":\"activating\""), "{json}");
}

#[test]
fn covering_index_reevaluates_only_contained_segments() {
    let text = BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\nmatch = \"covering\"",
    );
    let mut h = H::new(&text);
    h.ev(iface(ETH0, "eth0", true));
    h.ev(via("10.20.0.0/15", ETH0));
    assert_eq!(
        h.up(0),
        vec![true, true, false],
        "10.20.0.0/15 covers 10.20/16 and 10.21/16"
    );
    h.ev(via("10.22.0.0/24", ETH0));
    assert_eq!(
        h.up(0),
        vec![true, true, false],
        "a more specific route does not cover"
    );
    h.ev(via("10.0.0.0/8", ETH0));
    assert_eq!(h.up(0), vec![true, true, true]);
    h.ev(del("10.20.0.0/15"));
    assert_eq!(h.up(0), vec![true, true, true], "still covered by the /8");
    h.ev(del("10.0.0.0/8"));
    assert_eq!(h.up(0), vec![false, false, false]);
}

#[test]
fn many_segments() {
    let segs: Vec<String> = (0..4000u32)
        .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
        .collect();
    let text = BASE.replace(
        "segments = [\"10.20.0.0/16\", \"10.21.0.0/16\", \"10.22.0.0/16\"]",
        &format!("segments = [{}]\nmatch = \"covering\"", segs.join(", ")),
    );
    let mut h = H::new(&text);
    h.ev(iface(ETH0, "eth0", true));
    h.ev(Event::Synced);
    assert_eq!(h.group(0).state, GroupState::Activating);
    h.ev(via("10.3.0.0/16", ETH0));
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert_eq!(h.up(0).iter().filter(|u| **u).count(), 256);
}
