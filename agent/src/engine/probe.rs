//! Probing the primary path (a group's `probe`).
//!
//! Routes are blind to a dead far side: a static route over a modem whose
//! provider stopped forwarding stays in the table. With `probe`, the engine
//! also asks the path: every `interval` it has the edge send one echo
//! request per target out of the interface of each route that holds one of
//! the group's segments primary-up (`Action::Probe`), and counts the answers
//! (`Event::ProbeResult`). A round through an interface succeeds when any
//! target answers. `down_after` failed rounds in a row take that interface's
//! path down: the segments it holds count as not primary-up (their status
//! says why), which the group treats as any other loss; `up_after` good
//! rounds in a row bring it back. So a path changes state at most once per
//! `min(down_after, up_after)` rounds, however the probes flap.
//!
//! Probing runs only while some segment has a primary route (no route, no
//! probe: the loss is already known); it starts again at once when a route
//! comes back. A path whose route goes away forgets its counters: the next
//! route through that interface starts as up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::config::ProbeConfig;
use crate::model::{Action, GroupId, Millis, Timer};

use super::Engine;

/// Consecutive results of one path, with the down/up decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Hysteresis {
    /// The path counts as down.
    pub(super) down: bool,
    /// Failed rounds in a row (since the last good one).
    pub(super) fails: u32,
    /// Good rounds in a row (since the last failed one).
    pub(super) oks: u32,
}

impl Hysteresis {
    /// Records one round; returns true when `down` changed.
    pub(super) fn record(&mut self, ok: bool, down_after: u32, up_after: u32) -> bool {
        if ok {
            self.fails = 0;
            self.oks = self.oks.saturating_add(1);
            if self.down && self.oks >= up_after {
                self.down = false;
                return true;
            }
        } else {
            self.oks = 0;
            self.fails = self.fails.saturating_add(1);
            if !self.down && self.fails >= down_after {
                self.down = true;
                return true;
            }
        }
        false
    }
}

/// The round in flight through one interface.
#[derive(Clone, Copy, Debug)]
struct Round {
    seq: u64,
    /// Targets that have not answered nor failed yet.
    waiting: usize,
}

/// Probing through one interface.
#[derive(Clone, Debug)]
struct PathProbe {
    counts: Hysteresis,
    round: Option<Round>,
}

/// A group's probing state.
#[derive(Clone, Debug)]
pub(super) struct ProbeRt {
    pub(super) config: ProbeConfig,
    /// `Timer::ProbeRound` is armed.
    ticking: bool,
    /// The last round's sequence number (per group, increasing).
    seq: u64,
    /// By outgoing interface of a route that holds a segment primary-up.
    paths: BTreeMap<u32, PathProbe>,
}

impl ProbeRt {
    pub(super) fn new(config: ProbeConfig) -> ProbeRt {
        ProbeRt {
            config,
            ticking: false,
            seq: 0,
            paths: BTreeMap::new(),
        }
    }

    /// Whether probes through `ifindex` failed often enough to take it down.
    pub(super) fn down(&self, ifindex: u32) -> bool {
        self.paths.get(&ifindex).is_some_and(|p| p.counts.down)
    }

    /// "probe to 198.51.100.1 via wan0 failed 3 times" for a path that is
    /// down (`dev`: the interface's name).
    pub(super) fn why_down(&self, ifindex: u32, dev: &str) -> Option<String> {
        let p = self.paths.get(&ifindex).filter(|p| p.counts.down)?;
        let c = &self.config;
        let targets: Vec<String> = c.targets.iter().map(ToString::to_string).collect();
        let what = if targets.len() == 1 {
            "probe to"
        } else {
            "probes to"
        };
        let mut s = format!("{what} {} via {dev}", targets.join(", "));
        if p.counts.oks > 0 {
            let _ = write!(
                s,
                " failed {} times; answered {} of the {} rounds in a row needed",
                c.down_after, p.counts.oks, c.up_after
            );
        } else {
            let _ = write!(s, " failed {} times", p.counts.fails);
        }
        Some(s)
    }
}

impl Engine {
    /// Starts a group's probe rounds if it probes, is idle, and some segment
    /// has a route to probe. Called after every event (cheap for groups that
    /// do not probe or already tick).
    pub(super) fn kick_probes(&mut self, now: Millis, out: &mut Vec<Action>) {
        if !self.synced {
            return;
        }
        for g in self.groups.all_ids() {
            let idle = self.groups.get(g).is_some_and(|gr| {
                !gr.awaiting_routes && gr.probe.as_ref().is_some_and(|p| !p.ticking)
            });
            if idle && !self.probe_paths(g).is_empty() {
                self.probe_round(now, g, out);
            }
        }
    }

    /// (ifindex, gateway) of the routes that hold the group's segments
    /// primary-up by their routes alone (probe results left out).
    fn probe_paths(&self, g: GroupId) -> BTreeMap<u32, Option<IpAddr>> {
        let mut paths = BTreeMap::new();
        let Some(gr) = self.groups.get(g) else {
            return paths;
        };
        for s in &gr.segments {
            if let Ok(r) = self.net.segment_primary(s, gr.match_mode, gr.allow_default) {
                paths.entry(r.ifindex).or_insert(r.gateway);
            }
        }
        paths
    }

    /// `Timer::ProbeRound`: closes the round in flight (a probe not reported
    /// by now failed) and starts the next, or stops when nothing is left to
    /// probe.
    pub(super) fn probe_round(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let paths = self.probe_paths(g);
        let Some(probe) = self.groups.get_mut(g).and_then(|gr| gr.probe.as_mut()) else {
            return;
        };
        let c = probe.config.clone();
        let mut changed = false;
        for p in probe.paths.values_mut() {
            if p.round.take().is_some() {
                changed |= p.counts.record(false, c.down_after, c.up_after);
            }
        }
        probe.paths.retain(|ifindex, _| paths.contains_key(ifindex));
        if paths.is_empty() {
            probe.ticking = false;
        } else {
            probe.seq += 1;
            let seq = probe.seq;
            for (ifindex, gateway) in &paths {
                let p = probe.paths.entry(*ifindex).or_insert(PathProbe {
                    counts: Hysteresis::default(),
                    round: None,
                });
                p.round = Some(Round {
                    seq,
                    waiting: c.targets.len(),
                });
                for target in &c.targets {
                    out.push(Action::Probe {
                        group: g,
                        target: *target,
                        ifindex: *ifindex,
                        gateway: *gateway,
                        seq,
                        timeout: c.timeout,
                    });
                }
            }
            probe.ticking = true;
            out.push(Action::ArmTimer {
                timer: Timer::ProbeRound(g),
                after: c.interval,
            });
        }
        if changed {
            self.probe_verdict_changed(now, g, out);
        }
    }

    /// One probe's outcome. Reports of an earlier round are ignored.
    pub(super) fn on_probe_result(
        &mut self,
        now: Millis,
        g: GroupId,
        ifindex: u32,
        seq: u64,
        ok: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(probe) = self.groups.get_mut(g).and_then(|gr| gr.probe.as_mut()) else {
            return;
        };
        let (down_after, up_after) = (probe.config.down_after, probe.config.up_after);
        let Some(p) = probe.paths.get_mut(&ifindex) else {
            return;
        };
        let Some(round) = p.round.as_mut().filter(|r| r.seq == seq) else {
            return;
        };
        let decided = if ok {
            Some(true)
        } else {
            round.waiting = round.waiting.saturating_sub(1);
            (round.waiting == 0).then_some(false)
        };
        let Some(result) = decided else { return };
        p.round = None;
        let was_down = p.counts.down;
        if p.counts.record(result, down_after, up_after) {
            let dev = self.net.iface_name(ifindex);
            let why = if was_down {
                format!(
                    "probes via {dev} answered {up_after} rounds in a row; the path counts again"
                )
            } else {
                let reason = self
                    .groups
                    .get(g)
                    .and_then(|gr| gr.probe.as_ref())
                    .and_then(|p| p.why_down(ifindex, &dev))
                    .unwrap_or_default();
                format!("{reason}; the path through {dev} counts as down")
            };
            self.notice(g, why, out);
            self.probe_verdict_changed(now, g, out);
        }
    }

    /// A path's verdict changed: recompute the group's segments and react.
    fn probe_verdict_changed(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let n = self.groups.get(g).map_or(0, |gr| gr.segments.len());
        for i in 0..n {
            self.update_segment(g, i);
        }
        if self.groups.get(g).is_some_and(|gr| !gr.awaiting_routes) {
            self.evaluate_group(now, g, out);
        }
    }

    /// Whether probes took the path through `ifindex` down for group `g`.
    pub(super) fn probe_down(&self, g: GroupId, ifindex: u32) -> bool {
        self.groups
            .get(g)
            .and_then(|gr| gr.probe.as_ref())
            .is_some_and(|p| p.down(ifindex))
    }

    /// A reload changed (or removed) a group's probe: start over with the
    /// new settings (paths count as up again until probes say otherwise).
    pub(super) fn set_probe(
        &mut self,
        now: Millis,
        g: GroupId,
        config: Option<&ProbeConfig>,
        out: &mut Vec<Action>,
    ) {
        let synced = self.synced;
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        if gr.probe.as_ref().map(|p| &p.config) == config {
            return;
        }
        if synced && gr.probe.as_ref().is_some_and(|p| p.ticking) {
            out.push(Action::CancelTimer {
                timer: Timer::ProbeRound(g),
            });
        }
        let any_down = gr
            .probe
            .as_ref()
            .is_some_and(|p| p.paths.values().any(|p| p.counts.down));
        gr.probe = config.cloned().map(ProbeRt::new);
        if any_down && synced {
            self.probe_verdict_changed(now, g, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Hysteresis;

    #[test]
    fn counts_in_a_row() {
        let mut h = Hysteresis::default();
        // down_after 3: two failures, one success, two failures: still up.
        for ok in [false, false, true, false, false] {
            assert!(!h.record(ok, 3, 2));
        }
        assert!(h.record(false, 3, 2), "third failure in a row");
        assert!(h.down);
        assert!(!h.record(false, 3, 2), "already down");
        assert!(!h.record(true, 3, 2));
        assert!(!h.record(false, 3, 2), "a failure resets the good streak");
        assert!(!h.record(true, 3, 2));
        assert!(h.record(true, 3, 2), "second success in a row");
        assert!(!h.down);
    }

    proptest! {
        /// Whatever the results, the path goes down exactly when the last
        /// `down_after` rounds failed (and it was up), comes back exactly
        /// when the last `up_after` rounds succeeded (and it was down), and
        /// so never changes twice within `min(down_after, up_after)` rounds.
        #[test]
        fn never_flaps_faster_than_the_counts(
            results in proptest::collection::vec(any::<bool>(), 0..200),
            down_after in 1u32..6,
            up_after in 1u32..6,
        ) {
            let mut h = Hysteresis::default();
            let mut last_change: Option<usize> = None;
            for (i, ok) in results.iter().enumerate() {
                let was = h.down;
                let changed = h.record(*ok, down_after, up_after);
                prop_assert_eq!(changed, was != h.down);
                let need = if was { up_after } else { down_after } as usize;
                let streak = results[..=i].iter().rev().take_while(|r| **r == *ok).count();
                let since = last_change.map_or(usize::MAX, |c| i - c);
                let expect = if was { *ok } else { !*ok } && streak >= need && since >= need;
                prop_assert_eq!(changed, expect, "round {} ok={} streak={}", i, ok, streak);
                if changed {
                    if let Some(c) = last_change {
                        prop_assert!(i - c >= down_after.min(up_after) as usize);
                    }
                    last_change = Some(i);
                }
            }
        }
    }
}
