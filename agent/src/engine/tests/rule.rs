//! Tests of the covering rule (the kernel's longest match per table) and of
//! the reasons `status` gives per segment.

use super::*;
use crate::model::*;

/// Group 1 ("branch"): one covering segment, no delays.
const BRANCH: &str = r#"
[[group]]
name = "branch"
segments = ["10.30.0.0/16"]
links = ["hot"]
match = "covering"
activate_delay = "0s"
deactivate_delay = "0s"
"#;

fn branch() -> H {
    let h = H::standard_with(
        &format!("{BASE}{BRANCH}"),
        vec![iface(ETH0, "eth0", true), via("10.0.0.0/8", ETH0)],
    );
    assert_eq!(h.up(1), vec![true]);
    h
}

fn unicast(table: u32, prefix: &str, metric: u32, hops: Vec<NextHop>) -> Event {
    let mut r = route(table, prefix, hops);
    r.key.metric = metric;
    Event::RouteUpsert(r)
}

fn typed(prefix: &str, metric: u32, kind: RouteKind) -> Event {
    let mut r = route(254, prefix, vec![]);
    r.key.metric = metric;
    r.kind = kind;
    Event::RouteUpsert(r)
}

fn seg(h: &H, g: usize) -> SegmentStatus {
    h.group(g).segments[0].clone()
}

#[test]
fn a_more_specific_blackhole_shadows_a_shorter_primary_route() {
    for (kind, name) in [
        (RouteKind::Blackhole, "blackhole"),
        (RouteKind::Unreachable, "unreachable"),
        (RouteKind::Prohibit, "prohibit"),
    ] {
        let mut h = branch();
        let out = h.b(typed("10.30.0.0/15", 0, kind));
        assert_eq!(h.up(1), vec![false], "{name}");
        assert_eq!(out, vec!["steer g1 l2 if12"], "{name}");
        assert_eq!(
            seg(&h, 1).why_not.as_deref(),
            Some(format!("{name} route 10.30.0.0/15 (table 254)").as_str())
        );
        // The shorter route holds it again once the blackhole is gone.
        h.ev(Event::RouteDelete(key(254, "10.30.0.0/15")));
        assert_eq!(h.up(1), vec![true], "{name}");
        let held = seg(&h, 1).held_by.expect("held");
        assert_eq!(
            (held.prefix, held.dev.as_str(), held.table, held.metric),
            (net("10.0.0.0/8"), "eth0", 254, 0)
        );
    }
}

#[test]
fn a_more_specific_route_via_a_backup_interface_shadows_the_primary() {
    let mut h = branch();
    h.ev(via("10.30.0.0/16", WG0));
    assert_eq!(h.up(1), vec![false]);
    assert_eq!(
        seg(&h, 1).why_not.as_deref(),
        Some("only via backup interface wg0: 10.30.0.0/16 (table 254)")
    );
    // A more specific route with carrier lost is what the kernel uses too.
    let linkdown = NextHop {
        flags: RTNH_F_LINKDOWN,
        ..nh(ETH1)
    };
    h.ev(unicast(254, "10.30.0.0/16", 0, vec![linkdown]));
    assert_eq!(h.up(1), vec![false]);
    assert_eq!(
        seg(&h, 1).why_not.as_deref(),
        Some("linkdown on eth1: 10.30.0.0/16 (table 254)")
    );
}

#[test]
fn dead_routes_are_passed_over_as_the_kernel_does() {
    let mut h = branch();
    let dead = NextHop {
        flags: RTNH_F_DEAD,
        ..nh(ETH1)
    };
    h.ev(unicast(254, "10.30.0.0/16", 0, vec![dead]));
    assert_eq!(h.up(1), vec![true]);
    assert_eq!(seg(&h, 1).held_by.expect("held").prefix, net("10.0.0.0/8"));
    // Dead next hops only: the reason names them.
    h.ev(Event::RouteDelete(key(254, "10.0.0.0/8")));
    assert_eq!(
        seg(&h, 1).why_not.as_deref(),
        Some("dead next hop: 10.30.0.0/16 (table 254)")
    );
    h.ev(Event::RouteDelete(key(254, "10.30.0.0/16")));
    assert_eq!(seg(&h, 1).why_not.as_deref(), Some("no route"));
}

#[test]
fn the_lowest_metric_of_the_longest_prefix_decides() {
    let mut h = branch();
    // Lowest metric unreachable, higher metric primary: the kernel uses the
    // unreachable one.
    h.ev(typed("10.30.0.0/16", 10, RouteKind::Unreachable));
    h.ev(unicast(254, "10.30.0.0/16", 20, vec![nh(ETH1)]));
    assert_eq!(h.up(1), vec![false]);
    h.ev(Event::RouteDelete(RouteKey {
        metric: 10,
        ..key(254, "10.30.0.0/16")
    }));
    assert_eq!(h.up(1), vec![true]);
    let held = seg(&h, 1).held_by.expect("held");
    assert_eq!((held.prefix, held.metric), (net("10.30.0.0/16"), 20));
    // A lower-metric route via the backup takes over.
    h.ev(unicast(254, "10.30.0.0/16", 5, vec![nh(WG0)]));
    assert_eq!(h.up(1), vec![false]);
}

#[test]
fn any_watched_table_whose_longest_match_is_primary_holds_the_segment() {
    let mut h = branch();
    h.ev(typed("10.30.0.0/15", 0, RouteKind::Blackhole));
    assert_eq!(h.up(1), vec![false]);
    h.ev(unicast(100, "10.0.0.0/8", 0, vec![nh(ETH1)]));
    assert_eq!(h.up(1), vec![true]);
    let held = seg(&h, 1).held_by.expect("held");
    assert_eq!((held.table, held.dev.as_str()), (100, "eth1"));
    // Routes of an unwatched table never shadow anything.
    let mut h = branch();
    let mut r = route(200, "10.30.0.0/15", vec![]);
    r.kind = RouteKind::Blackhole;
    h.ev(Event::RouteUpsert(r));
    assert_eq!(h.up(1), vec![true]);
}

#[test]
fn a_tos_route_does_not_decide_for_all_traffic() {
    let mut h = branch();
    let mut r = route(254, "10.30.0.0/15", vec![]);
    r.kind = RouteKind::Blackhole;
    r.key.tos = 0x10;
    h.ev(Event::RouteUpsert(r));
    assert_eq!(h.up(1), vec![true]);
}

#[test]
fn exact_keeps_the_vendor_rule_any_usable_route_for_the_prefix() {
    let mut h = H::standard(BASE);
    // A blackhole alias beside the unicast route (lower metric): exact still
    // counts the unicast one.
    h.ev(typed("10.20.0.0/16", 0, RouteKind::Blackhole));
    h.ev(unicast(254, "10.20.0.0/16", 10, vec![nh(ETH0)]));
    assert_eq!(h.up(0), vec![true, true, true]);
    let held = h.group(0).segments[0].held_by.clone().expect("held");
    assert_eq!(
        (held.prefix, held.metric, held.proto.as_str()),
        (net("10.20.0.0/16"), 10, "bgp")
    );
    // A covering route does not count for exact; the reason says so.
    h.ev(via("10.0.0.0/8", ETH0));
    h.ev(Event::RouteDelete(RouteKey {
        metric: 10,
        ..key(254, "10.20.0.0/16")
    }));
    assert_eq!(h.up(0), vec![false, true, true]);
    assert_eq!(
        h.group(0).segments[0].why_not.as_deref(),
        Some("blackhole route 10.20.0.0/16 (table 254)")
    );
}

#[test]
fn status_names_the_gateway_of_the_holding_route() {
    let mut h = branch();
    let hop = NextHop {
        gateway: Some("10.0.1.2".parse().unwrap()),
        ..nh(ETH0)
    };
    h.ev(unicast(254, "10.30.0.0/16", 7, vec![hop]));
    let held = seg(&h, 1).held_by.expect("held");
    assert_eq!(held.via, Some("10.0.1.2".parse().unwrap()));
    assert_eq!((held.dev.as_str(), held.metric), ("eth0", 7));
    assert!(seg(&h, 1).why_not.is_none());
}
