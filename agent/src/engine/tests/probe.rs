//! Probing the primary path: rounds, counts, status, with a fake clock.

use super::{brief, config, del, iface, notices, via, BASE, ETH0, ETH1, LTE};
use crate::engine::*;
use crate::model::*;

/// BASE with a probe on group hq (down after 3 failed rounds, up after 2).
fn probed(targets: &str) -> String {
    BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        &format!(
            "links = [\"lte\", \"dsl\"]\nactivate_delay = \"0s\"\nprobe = {{ targets = [{targets}], interval = \"1s\", timeout = \"1s\", down_after = 3, up_after = 2 }}"
        ),
    )
}

struct P {
    e: Engine,
    now: Millis,
}

impl P {
    /// Segments up via eth0, synced: the first round goes out at once.
    fn new(targets: &str) -> (P, Vec<String>) {
        let mut p = P {
            e: Engine::new(&config(&probed(targets))),
            now: 1_000,
        };
        for ev in [
            iface(ETH0, "eth0", true),
            iface(ETH1, "eth1", true),
            via("10.20.0.0/16", ETH0),
            via("10.21.0.0/16", ETH0),
            via("10.22.0.0/16", ETH0),
        ] {
            assert!(p.b(ev).is_empty());
        }
        let first = p.b(Event::Synced);
        (p, first)
    }

    fn ev(&mut self, ev: Event) -> Vec<Action> {
        self.now += 10;
        self.e.handle(self.now, ev)
    }

    fn b(&mut self, ev: Event) -> Vec<String> {
        brief(&self.ev(ev))
    }

    fn result(&mut self, target: &str, seq: u64, ok: bool) -> Vec<Action> {
        self.ev(Event::ProbeResult {
            group: GroupId(0),
            ifindex: ETH0,
            target: target.parse().unwrap(),
            seq,
            ok,
        })
    }

    /// The round timer fires (one interval later).
    fn tick(&mut self) -> Vec<String> {
        self.now += 1_000;
        brief(
            &self
                .e
                .handle(self.now, Event::TimerFired(Timer::ProbeRound(GroupId(0)))),
        )
    }

    /// Three failed rounds: the path through eth0 is down, lte is dialled.
    fn probed_down() -> P {
        let (mut p, _) = P::new("\"198.51.100.1\"");
        for seq in 1..=3 {
            p.result("198.51.100.1", seq, false);
            p.tick();
        }
        assert_eq!(p.state(), GroupState::Activating);
        p
    }

    fn state(&self) -> GroupState {
        self.e.status().groups[0].state
    }
}

fn round(seq: u64) -> Vec<String> {
    vec![
        format!("probe g0 198.51.100.1 if{ETH0} #{seq}"),
        "arm ProbeRound(0) 1s".into(),
    ]
}

#[test]
fn failed_rounds_take_the_path_down_and_answers_bring_it_back() {
    let (mut p, first) = P::new("\"198.51.100.1\"");
    // One path (all three segments are held via eth0): one probe per round.
    assert_eq!(first, round(1));
    for seq in 1..=2 {
        assert!(brief(&p.result("198.51.100.1", seq, false)).is_empty());
        assert_eq!(p.tick(), round(seq + 1));
        assert_eq!(p.state(), GroupState::Primary);
    }
    // The third failed round in a row: every segment held via eth0 counts
    // as down, the group is lost and tries its first link.
    let a = p.result("198.51.100.1", 3, false);
    assert_eq!(
        brief(&a),
        vec![format!("up {LTE}"), "arm UpTimeout(0) 30s".into()]
    );
    let n = notices(&a);
    assert!(
        n.iter().any(|n| n.contains(
            "probe to 198.51.100.1 via eth0 failed 3 times; the path through eth0 counts as down"
        )),
        "{n:?}"
    );
    assert_eq!(p.state(), GroupState::Activating);
    let seg = &p.e.status().groups[0].segments[0];
    assert!(!seg.primary_up);
    assert_eq!(seg.held_by, None);
    assert_eq!(
        seg.why_not.as_deref(),
        Some("probe to 198.51.100.1 via eth0 failed 3 times")
    );
    // The route is still there: probing goes on through eth0.
    assert_eq!(p.tick(), round(4));
    assert!(brief(&p.result("198.51.100.1", 4, true)).is_empty());
    assert_eq!(
        p.e.status().groups[0].segments[0].why_not.as_deref(),
        Some("probe to 198.51.100.1 via eth0 failed 3 times; answered 1 of the 2 rounds in a row needed")
    );
    assert_eq!(p.tick(), round(5));
    // Up after 2 good rounds in a row: primary back, the attempt released.
    let a = p.result("198.51.100.1", 5, true);
    assert_eq!(
        brief(&a),
        vec!["cancel UpTimeout(0)".to_string(), format!("down {LTE}")]
    );
    assert!(
        notices(&a).iter().any(
            |n| n.contains("probes via eth0 answered 2 rounds in a row; the path counts again")
        ),
        "{:?}",
        notices(&a)
    );
    assert_eq!(p.state(), GroupState::Primary);
    assert!(p.e.status().groups[0].segments[0].primary_up);
}

#[test]
fn a_round_not_reported_by_the_next_tick_failed_and_late_reports_are_ignored() {
    let (mut p, _) = P::new("\"198.51.100.1\"");
    assert_eq!(p.tick(), round(2)); // round 1: no report, failed
    assert_eq!(p.tick(), round(3)); // round 2: no report, failed
                                    // A late answer to round 1 counts for nothing.
    assert!(brief(&p.result("198.51.100.1", 1, true)).is_empty());
    let a = p.tick(); // round 3 failed too: down
    assert_eq!(
        a,
        vec![
            format!("probe g0 198.51.100.1 if{ETH0} #4"),
            "arm ProbeRound(0) 1s".into(),
            format!("up {LTE}"),
            "arm UpTimeout(0) 30s".into()
        ]
    );
}

#[test]
fn the_path_is_up_while_any_target_answers() {
    let (mut p, first) = P::new("\"198.51.100.1\", \"2001:db8::1\"");
    assert_eq!(
        first,
        vec![
            format!("probe g0 198.51.100.1 if{ETH0} #1"),
            format!("probe g0 2001:db8::1 if{ETH0} #1"),
            "arm ProbeRound(0) 1s".into(),
        ]
    );
    for seq in 1..=5 {
        assert!(brief(&p.result("198.51.100.1", seq, false)).is_empty());
        assert!(brief(&p.result("2001:db8::1", seq, true)).is_empty());
        p.tick();
    }
    assert_eq!(p.state(), GroupState::Primary);
    // Both fail three rounds: down.
    let mut all = Vec::new();
    for seq in 6..=8 {
        all.extend(brief(&p.result("198.51.100.1", seq, false)));
        all.extend(brief(&p.result("2001:db8::1", seq, false)));
        if seq < 8 {
            p.tick();
        }
    }
    assert_eq!(
        all,
        vec![format!("up {LTE}"), "arm UpTimeout(0) 30s".into()]
    );
    assert_eq!(
        p.e.status().groups[0].segments[0].why_not.as_deref(),
        Some("probes to 198.51.100.1, 2001:db8::1 via eth0 failed 3 times")
    );
}

#[test]
fn no_probes_without_a_primary_route_and_again_when_one_is_back() {
    let (mut p, _) = P::new("\"198.51.100.1\"");
    assert!(p.b(del("10.20.0.0/16")).is_empty());
    assert!(p.b(del("10.21.0.0/16")).is_empty());
    // The last route gone: the group is lost by its routes; the round timer
    // stops at its next fire (nothing to probe).
    let a = p.b(del("10.22.0.0/16"));
    assert_eq!(a, vec![format!("up {LTE}"), "arm UpTimeout(0) 30s".into()]);
    assert!(p.tick().is_empty(), "no route: no probe, no timer");
    // A route through eth1 is back: primary back, and probing starts at once
    // through eth1 (the interface of the route that holds the segment).
    let a = p.b(via("10.20.0.0/16", ETH1));
    assert_eq!(
        a,
        vec![
            "cancel UpTimeout(0)".to_string(),
            format!("down {LTE}"),
            format!("probe g0 198.51.100.1 if{ETH1} #2"),
            "arm ProbeRound(0) 1s".into()
        ]
    );
    // A result for the old path (eth0) is ignored.
    assert!(brief(&p.result("198.51.100.1", 1, false)).is_empty());
}

#[test]
fn a_path_that_was_down_starts_over_when_its_route_comes_back() {
    let mut p = P::probed_down();
    for s in ["10.20.0.0/16", "10.21.0.0/16", "10.22.0.0/16"] {
        p.b(del(s));
    }
    assert!(p.tick().is_empty());
    // The route is re-added (e.g. the modem redialled): it counts again at
    // once, and probing decides anew.
    let a = p.b(via("10.20.0.0/16", ETH0));
    assert!(
        a.contains(&format!("probe g0 198.51.100.1 if{ETH0} #5")),
        "{a:?}"
    );
    assert_eq!(p.state(), GroupState::Primary);
}

#[test]
fn a_reload_that_drops_the_probe_brings_a_probed_down_path_back() {
    let mut p = P::probed_down();
    let c = config(&BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\nactivate_delay = \"0s\"",
    ));
    let a = brief(&p.e.reconfigure(p.now, &c));
    assert!(a.contains(&"cancel ProbeRound(0)".to_string()), "{a:?}");
    assert_eq!(p.state(), GroupState::Primary);
    assert!(p.tick().is_empty(), "no probe configured any more");
}
