//! Pre-arming scenarios (see `prearm`): which segments get a kernel route
//! via the backup while the primary is up, at which metric, and when the
//! routes go.

use super::{del, iface, net, nh, route, via, BASE, ETH0, ETH3, H, PPP0};
use crate::engine::prearm::PREARM_METRIC_FLOOR as FLOOR;
use crate::model::*;

/// `hq` on the always-up link `hot` (eth3, gateway 10.99.0.1), pre-arming
/// unless `extra_link` says otherwise (on by default for always-up links).
fn hot(extra_link: &str, extra_group: &str) -> String {
    BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        &format!("links = [\"hot\"]\n{extra_group}"),
    )
    .replace(
        "driver = \"always-up\"",
        &format!("driver = \"always-up\"\ngateway = \"10.99.0.1\"\n{extra_link}"),
    )
}

const SEGS: [&str; 3] = ["10.20.0.0/16", "10.21.0.0/16", "10.22.0.0/16"];

fn armed(metric: u32) -> Vec<(ipnet::IpNet, u32)> {
    SEGS.iter().map(|s| (net(s), metric)).collect()
}

/// (installed, removed) segments of the Prearm/Disarm actions in `acts`.
fn changes(acts: &[Action]) -> (Vec<(String, u32)>, Vec<String>) {
    let mut ins = Vec::new();
    let mut rem = Vec::new();
    for a in acts {
        match a {
            Action::Prearm { target, routes, .. } => {
                assert_eq!(target.link, super::HOT);
                ins.extend(routes.iter().map(|(p, m)| (p.to_string(), *m)));
            }
            Action::Disarm { segments, .. } => rem.extend(segments.iter().map(ToString::to_string)),
            _ => {}
        }
    }
    (ins, rem)
}

fn bgp(prefix: &str, metric: u32) -> Event {
    let mut r = route(254, prefix, vec![nh(ETH0)]);
    r.key.metric = metric;
    Event::RouteUpsert(r)
}

#[test]
fn an_always_up_link_is_prearmed_behind_the_primary_and_stays_through_the_outage() {
    let mut h = H::standard(&hot("", ""));
    assert_eq!(h.e.prearmed(GroupId(0)), armed(FLOOR));
    // Losing the primary keeps the routes: the kernel forwards over them.
    for s in SEGS {
        let (ins, rem) = changes(&h.ev(del(s)));
        assert!(ins.is_empty() && rem.is_empty(), "{s}: {ins:?} {rem:?}");
    }
    assert_eq!(h.group(0).state, GroupState::Backup);
    assert_eq!(h.e.prearmed(GroupId(0)), armed(FLOOR));
    // And the way back.
    let (ins, rem) = changes(&h.ev(via(SEGS[0], ETH0)));
    assert!(ins.is_empty() && rem.is_empty());
    assert_eq!(h.group(0).state, GroupState::Holding);
    assert_eq!(h.e.prearmed(GroupId(0)), armed(FLOOR));
}

#[test]
fn the_metric_is_worse_than_every_other_route_to_the_prefix() {
    let mut h = H::standard(&hot("", ""));
    // Below the floor, the floor; above it, one worse than the worst.
    let (ins, rem) = changes(&h.ev(bgp(SEGS[0], 5000)));
    assert!(ins.is_empty() && rem.is_empty(), "{ins:?} {rem:?}");
    let (ins, rem) = changes(&h.ev(bgp(SEGS[0], FLOOR + 5)));
    assert_eq!(ins, vec![(SEGS[0].to_string(), FLOOR + 6)]);
    assert!(rem.is_empty());
    // A metric nothing can be worse than: not pre-armed.
    let (ins, rem) = changes(&h.ev(bgp(SEGS[1], u32::MAX)));
    assert!(ins.is_empty());
    assert_eq!(rem, vec![SEGS[1].to_string()]);
    // Our own route (proto 252 via the backup) is no primary and does not
    // push the metric up.
    let mut ours = route(254, SEGS[2], vec![nh(ETH3)]);
    ours.key.metric = FLOOR;
    ours.protocol = RTPROT_ROUTEBACKUP;
    let (ins, rem) = changes(&h.ev(Event::RouteUpsert(ours)));
    assert!(ins.is_empty() && rem.is_empty(), "{ins:?} {rem:?}");
    assert_eq!(h.up(0), vec![true, true, true]);
}

#[test]
fn the_link_going_down_disarms_and_coming_back_rearms() {
    let mut h = H::standard(&hot("", ""));
    let (ins, rem) = changes(&h.ev(iface(ETH3, "eth3", false)));
    assert!(ins.is_empty());
    assert_eq!(rem, SEGS.to_vec());
    assert!(h.e.prearmed(GroupId(0)).is_empty());
    let (ins, _) = changes(&h.ev(iface(ETH3, "eth3", true)));
    assert_eq!(ins.len(), 3);
    assert_eq!(h.e.prearmed(GroupId(0)), armed(FLOOR));
}

#[test]
fn prearm_false_turns_it_off() {
    let mut h = H::standard(&hot("prearm = false", ""));
    assert!(h.e.prearmed(GroupId(0)).is_empty());
    assert!(changes(&h.ev(bgp(SEGS[0], 7))).0.is_empty());
}

#[test]
fn a_segment_held_by_a_covering_route_is_not_prearmed() {
    let mut h = H::standard(&hot("", "match = \"covering\""));
    h.ev(via("10.0.0.0/8", ETH0));
    // 10.20/16 goes; the /8 holds it now: a /16 via the backup would be
    // more specific than the primary, so it goes too.
    let (ins, rem) = changes(&h.ev(del(SEGS[0])));
    assert!(ins.is_empty());
    assert_eq!(rem, vec![SEGS[0].to_string()]);
    assert_eq!(h.up(0), vec![true, true, true]);
    assert_eq!(h.e.prearmed(GroupId(0)).len(), 2);
}

#[test]
fn a_primary_in_another_table_only_is_not_prearmed() {
    let mut h = H::standard(&hot("", ""));
    h.ev(Event::RouteUpsert(route(100, SEGS[0], vec![nh(ETH0)])));
    let (_, rem) = changes(&h.ev(del(SEGS[0])));
    assert_eq!(rem, vec![SEGS[0].to_string()]);
    assert_eq!(h.up(0), vec![true, true, true]);
}

#[test]
fn a_dial_link_is_prearmed_only_while_held() {
    let text = BASE.replace("name = \"lte\"\n", "name = \"lte\"\nprearm = true\n");
    assert_ne!(text, BASE);
    let mut h = H::standard(&text);
    assert!(h.e.prearmed(GroupId(0)).is_empty(), "lte is not up");
    h.lose_all();
    h.ppp_up();
    assert_eq!(h.group(0).state, GroupState::Backup);
    // Every segment was lost before the link came: none has a primary to
    // stand behind, so nothing is armed until one returns.
    assert!(h.e.prearmed(GroupId(0)).is_empty());
    let acts = h.ev(via(SEGS[0], ETH0));
    assert_eq!(h.group(0).state, GroupState::Holding);
    let arm: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Prearm { target, routes, .. } => Some((target.ifindex, routes.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(arm, vec![(PPP0, vec![(net(SEGS[0]), FLOOR)])]);
    // Hold over: the link goes down, the route with it.
    let acts = h.ev(Event::TimerFired(Timer::Deactivate(GroupId(0))));
    assert!(acts.contains(&Action::Disarm {
        group: GroupId(0),
        segments: vec![net(SEGS[0])]
    }));
    assert!(h.e.prearmed(GroupId(0)).is_empty());
}

#[test]
fn a_reload_that_removes_the_group_disarms_it() {
    let text = hot("", "");
    let mut h = H::standard(&text);
    assert_eq!(h.e.prearmed(GroupId(0)), armed(FLOOR));
    let running = super::config(&text);
    let without = text.replace("[[group]]\nname = \"hq\"", "[[group]]\nname = \"other\"");
    let new = crate::engine::slotted(&running, &super::config(&without));
    let acts = h.e.reconfigure(h.now + 100, &new);
    assert!(
        acts.contains(&Action::Disarm {
            group: GroupId(0),
            segments: SEGS.iter().map(|s| net(s)).collect()
        }),
        "{acts:?}"
    );
}
