//! The per-group state machine:
//!
//! ```text
//! primary ──lost──▶ pending ──activate_delay over──▶ activating ──link ready──▶ backup ──primary back──▶ holding ──hold over──▶ primary
//!    ▲  (no delay: straight to activating, LinkUp)      │  ▲                    │                        │
//!    │                                                  │  └──link dropped──────┘       lost again: ◀────┘ backup (no redial)
//!    │                                                  └─every link failed──▶ failed ──Retry──▶ activating
//!    └──────────── primary back (from pending / activating / failed: at once) ────────┘
//! ```
//!
//! Every return to `primary` ends the outage: the next one starts with an
//! immediate attempt and the retry backoff from `retry_interval` again.

use std::time::Duration;

use crate::model::{Action, GroupId, GroupState, LinkId, LinkState, Millis, Notice, Timer};

use super::links::steer_action;
use super::{Engine, MAX_RETRY_BACKOFF};

/// Names for common rtm_protocol values.
pub(super) fn protocol_name(p: u8) -> String {
    match p {
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        8 => "gated".into(),
        9 => "ra".into(),
        11 => "zebra".into(),
        12 => "bird".into(),
        16 => "dhcp".into(),
        42 => "babel".into(),
        186 => "bgp".into(),
        187 => "isis".into(),
        188 => "ospf".into(),
        189 => "rip".into(),
        192 => "eigrp".into(),
        n => format!("proto {n}"),
    }
}

fn dur(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

impl Engine {
    fn set_state(&mut self, now: Millis, g: GroupId, state: GroupState) {
        if let Some(gr) = self.groups.get_mut(g) {
            if gr.state != state {
                gr.state = state;
                gr.since = now;
            }
            if state == GroupState::Primary {
                // The outage is over: the next one backs off from scratch.
                gr.failed_rounds = 0;
            }
        }
    }

    pub(super) fn notice(&self, g: GroupId, text: impl AsRef<str>, out: &mut Vec<Action>) {
        let name = self.groups.get(g).map_or("?", |gr| gr.name.as_str());
        out.push(Action::Notice(Notice::group(name, text.as_ref())));
    }

    /// "(0 of 2 segments have a primary route)"
    fn lost_summary(&self, g: GroupId) -> String {
        let Some(gr) = self.groups.get(g) else {
            return String::new();
        };
        let n = gr.segments.len();
        let plural = if n == 1 {
            "segment has"
        } else {
            "segments have"
        };
        format!("({} of {n} {plural} a primary route)", gr.up_count)
    }

    /// "(10.20.0.0/16 via eth0, proto bgp)"
    fn back_summary(&self, g: GroupId) -> String {
        let Some(gr) = self.groups.get(g) else {
            return String::new();
        };
        let found = gr
            .segments
            .iter()
            .zip(&gr.primary_up)
            .filter(|(_, up)| **up)
            .find_map(|(s, _)| {
                self.net
                    .segment_primary(s, gr.match_mode, gr.allow_default)
                    .ok()
                    .map(|r| (*s, r))
            });
        match found {
            Some((seg, r)) => {
                let via = self.net.iface_name(r.ifindex);
                let proto = protocol_name(r.protocol);
                let proto = if proto.starts_with("proto ") {
                    proto
                } else {
                    format!("proto {proto}")
                };
                if r.prefix == seg {
                    format!("({seg} via {via}, {proto})")
                } else {
                    format!("({seg} covered by {} via {via}, {proto})", r.prefix)
                }
            }
            None => String::from("(a primary route is back)"),
        }
    }

    /// Brings the group's state in line with its segments' primary-up state.
    pub(super) fn evaluate_group(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        if !self.synced {
            return;
        }
        let Some(gr) = self.groups.get(g) else { return };
        let lost = gr.lost();
        match (gr.state, lost) {
            (GroupState::Primary, true) => self.primary_lost(now, g, out),
            (GroupState::Holding, true) => self.lost_while_holding(now, g, out),
            (
                GroupState::Pending
                | GroupState::Activating
                | GroupState::Backup
                | GroupState::Failed,
                false,
            ) => {
                self.primary_back(now, g, out);
            }
            _ => {}
        }
    }

    fn primary_lost(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let Some(gr) = self.groups.get(g) else { return };
        let summary = self.lost_summary(g);
        let delay = gr.activate_delay;
        if gr.links.is_empty() {
            self.notice(
                g,
                format!("primary lost {summary}; the group has no links"),
                out,
            );
            self.set_state(now, g, GroupState::Failed);
            return;
        }
        if delay.is_zero() {
            self.notice(g, format!("primary lost {summary}"), out);
            self.start_round(now, g, 0, out);
        } else {
            let first = gr
                .links
                .first()
                .map(|l| self.link_name(*l))
                .unwrap_or_default();
            self.notice(
                g,
                format!(
                    "primary lost {summary}; bringing up link {first} in {} unless it returns",
                    dur(delay)
                ),
                out,
            );
            self.set_state(now, g, GroupState::Pending);
            if let Some(gr) = self.groups.get_mut(g) {
                gr.active = None;
            }
            out.push(Action::ArmTimer {
                timer: Timer::Activate(g),
                after: delay,
            });
        }
    }

    /// Starts trying the group's links at position `start` (wrapping around).
    pub(super) fn start_round(
        &mut self,
        now: Millis,
        g: GroupId,
        start: usize,
        out: &mut Vec<Action>,
    ) {
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        gr.round_start = start;
        gr.round_tried = 0;
        gr.round_errors.clear();
        self.try_current(now, g, out);
    }

    fn try_current(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let Some(gr) = self.groups.get(g) else { return };
        let n = gr.links.len();
        if n == 0 {
            return;
        }
        let Some(&link) = gr.links.get((gr.round_start + gr.round_tried) % n) else {
            return;
        };
        let was = self.links.get(link).map(|l| l.state);
        self.set_state(now, g, GroupState::Activating);
        if let Some(gr) = self.groups.get_mut(g) {
            gr.active = Some(link);
        }
        let mut actions = Vec::new();
        let ready = self.request_link(link, &mut actions);
        let name = self.link_name(link);
        let what = match (ready, was) {
            (true, Some(LinkState::Up)) => format!("using link {name}, already up"),
            (true, _) => format!("link {name} is already ready; using it"),
            (false, Some(LinkState::Connecting)) => {
                format!("waiting for link {name}, already being brought up")
            }
            (false, Some(LinkState::Releasing)) => {
                format!("waiting for link {name} to finish going down, then bringing it up")
            }
            (false, _) => format!("bringing up link {name}"),
        };
        self.notice(g, what, out);
        out.extend(actions);
        if ready {
            self.link_ready_for(now, g, out);
        }
    }

    /// The active link is ready: steer.
    pub(super) fn enter_backup(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let Some(link) = self.groups.get(g).and_then(|gr| gr.active) else {
            return;
        };
        let Some(target) = self.steer_target(link) else {
            // Ready implies the interface exists; be defensive anyway.
            self.advance_round(now, g, out);
            return;
        };
        self.set_state(now, g, GroupState::Backup);
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        gr.failed_rounds = 0;
        gr.round_errors.clear();
        let n = gr.segments.len();
        let action = steer_action(g, &gr.segments, &target);
        gr.steer = Some(target);
        let iface = self.net.iface_name(target.ifindex);
        let mut gw = String::new();
        if let Some(a) = target.gateway_v4 {
            gw.push_str(&format!(", gateway {a}"));
        }
        if let Some(a) = target.gateway_v6 {
            gw.push_str(&format!(", gateway {a}"));
        }
        let plural = if n == 1 { "" } else { "s" };
        self.notice(
            g,
            format!(
                "link {} is up ({iface}{gw}); steering {n} segment{plural} to it",
                self.link_name(link)
            ),
            out,
        );
        out.push(action);
    }

    /// The current link of the round failed: try the next one, or give up
    /// this round.
    pub(super) fn advance_round(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        gr.round_tried += 1;
        gr.active = None;
        if gr.round_tried < gr.links.len() {
            self.try_current(now, g, out);
        } else {
            self.round_failed(now, g, out);
        }
    }

    fn round_failed(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        self.set_state(now, g, GroupState::Failed);
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        gr.active = None;
        gr.failed_rounds = gr.failed_rounds.saturating_add(1);
        let backoff = retry_backoff(gr.retry_base, gr.failed_rounds);
        let errors = gr.round_errors.join("; ");
        let n = gr.links.len();
        let what = if n == 1 {
            "the only link".to_string()
        } else {
            format!("all {n} links")
        };
        self.notice(
            g,
            format!("{what} failed ({errors}); retrying in {}", dur(backoff)),
            out,
        );
        out.push(Action::ArmTimer {
            timer: Timer::Retry(g),
            after: backoff,
        });
    }

    fn primary_back(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let Some(gr) = self.groups.get(g) else { return };
        let summary = self.back_summary(g);
        let state = gr.state;
        let active = gr.active;
        let hold = gr.deactivate_delay;
        match state {
            GroupState::Pending => {
                self.set_state(now, g, GroupState::Primary);
                self.notice(
                    g,
                    format!("primary back {summary} within activate_delay; nothing to do"),
                    out,
                );
                out.push(Action::CancelTimer {
                    timer: Timer::Activate(g),
                });
            }
            GroupState::Activating => {
                self.set_state(now, g, GroupState::Primary);
                if let Some(gr) = self.groups.get_mut(g) {
                    gr.active = None;
                }
                match active {
                    None => {}
                    Some(link) => {
                        self.notice(
                            g,
                            format!(
                                "primary back {summary}; giving up on link {}",
                                self.link_name(link)
                            ),
                            out,
                        );
                        self.release_link(link, out);
                    }
                }
            }
            GroupState::Failed => {
                self.set_state(now, g, GroupState::Primary);
                self.notice(
                    g,
                    format!("primary back {summary}; no longer retrying the backup"),
                    out,
                );
                out.push(Action::CancelTimer {
                    timer: Timer::Retry(g),
                });
            }
            GroupState::Backup => {
                let segments = self
                    .groups
                    .get(g)
                    .map(|gr| gr.segments.clone())
                    .unwrap_or_default();
                if let Some(gr) = self.groups.get_mut(g) {
                    gr.steer = None;
                }
                let name = active.map(|l| self.link_name(l)).unwrap_or_default();
                if hold.is_zero() {
                    self.set_state(now, g, GroupState::Primary);
                    if let Some(gr) = self.groups.get_mut(g) {
                        gr.active = None;
                    }
                    let still = active.is_some_and(|l| self.link_users(l) > 0);
                    let tail = if still {
                        format!("link {name} stays up for other groups")
                    } else {
                        format!("taking link {name} down")
                    };
                    self.notice(
                        g,
                        format!("primary back {summary}; steering stopped, {tail}"),
                        out,
                    );
                    out.push(Action::Unsteer { group: g, segments });
                    if let Some(l) = active {
                        self.release_link(l, out);
                    }
                } else {
                    self.set_state(now, g, GroupState::Holding);
                    self.notice(
                        g,
                        format!(
                            "primary back {summary}; steering stopped, holding link {name} for {}",
                            dur(hold)
                        ),
                        out,
                    );
                    out.push(Action::Unsteer { group: g, segments });
                    out.push(Action::ArmTimer {
                        timer: Timer::Deactivate(g),
                        after: hold,
                    });
                }
            }
            GroupState::Primary | GroupState::Holding => {}
        }
    }

    fn lost_while_holding(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let summary = self.lost_summary(g);
        out.push(Action::CancelTimer {
            timer: Timer::Deactivate(g),
        });
        let active = self.groups.get(g).and_then(|gr| gr.active);
        match active {
            Some(link)
                if self
                    .links
                    .get(link)
                    .is_some_and(|l| l.state == LinkState::Up)
                    && self.link_ready(link) =>
            {
                self.notice(
                    g,
                    format!(
                        "primary lost again {summary}; resuming steering on link {} (still up)",
                        self.link_name(link)
                    ),
                    out,
                );
                self.enter_backup(now, g, out);
            }
            _ => {
                self.notice(g, format!("primary lost again {summary}"), out);
                self.start_round(now, g, 0, out);
            }
        }
    }

    /// The link of a group in `backup` dropped: stop steering, try again.
    pub(super) fn restart_after_drop(
        &mut self,
        now: Millis,
        g: GroupId,
        link: LinkId,
        out: &mut Vec<Action>,
    ) {
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        gr.steer = None;
        gr.active = None;
        let segments = gr.segments.clone();
        let links = gr.links.clone();
        let n = links.len().max(1);
        let next = links
            .iter()
            .position(|l| *l == link)
            .map_or(0, |p| (p + 1) % n);
        let next_name = links
            .get(next)
            .map(|l| self.link_name(*l))
            .unwrap_or_default();
        self.notice(
            g,
            format!(
                "link {} dropped; steering stopped, trying link {next_name}",
                self.link_name(link)
            ),
            out,
        );
        out.push(Action::Unsteer { group: g, segments });
        self.set_state(now, g, GroupState::Activating);
        self.start_round(now, g, next, out);
    }

    /// The held link went away during the hold: the hold is over.
    pub(super) fn holding_link_gone(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        out.push(Action::CancelTimer {
            timer: Timer::Deactivate(g),
        });
        self.set_state(now, g, GroupState::Primary);
        if let Some(gr) = self.groups.get_mut(g) {
            gr.active = None;
        }
        self.notice(g, "held link dropped; hold ended", out);
    }

    pub(super) fn on_timer(&mut self, now: Millis, timer: Timer, out: &mut Vec<Action>) {
        match timer {
            Timer::ProbeRound(g) => self.probe_round(now, g, out),
            Timer::Verify(link) => self.on_verify_timeout(now, link, out),
            Timer::Activate(g) => {
                let Some(gr) = self.groups.get(g) else { return };
                if gr.state == GroupState::Pending && gr.lost() {
                    self.notice(
                        g,
                        format!("primary still lost after {}", dur(gr.activate_delay)),
                        out,
                    );
                    self.start_round(now, g, 0, out);
                }
            }
            Timer::Deactivate(g) => {
                let Some(gr) = self.groups.get(g) else { return };
                if gr.state != GroupState::Holding {
                    return;
                }
                let active = gr.active;
                self.set_state(now, g, GroupState::Primary);
                if let Some(gr) = self.groups.get_mut(g) {
                    gr.active = None;
                }
                if let Some(link) = active {
                    let name = self.link_name(link);
                    let always = self.links.get(link).is_some_and(|l| l.always_up);
                    let text = if self.link_users(link) > 0 {
                        format!("hold over; link {name} stays up for other groups")
                    } else if always {
                        format!("hold over; releasing always-up link {name}")
                    } else {
                        format!("hold over; taking link {name} down")
                    };
                    self.notice(g, text, out);
                    self.release_link(link, out);
                }
            }
            Timer::UpTimeout(link) => {
                let Some(l) = self.links.get(link) else {
                    return;
                };
                if l.state == LinkState::Connecting {
                    let error = format!("not up within {}", dur(l.up_timeout));
                    self.attempt_failed(now, link, &error, out);
                }
            }
            Timer::Retry(g) => {
                let Some(gr) = self.groups.get(g) else { return };
                if gr.state == GroupState::Failed && gr.lost() {
                    self.notice(g, "retrying the backup links", out);
                    self.start_round(now, g, 0, out);
                }
            }
        }
    }

    pub(super) fn on_synced(&mut self, now: Millis, out: &mut Vec<Action>) {
        let first = !self.synced;
        self.synced = true;
        if !first {
            // A later full re-dump: bring every group up to date.
            self.reevaluate_all(now, out);
            self.links_changed(now, out);
            return;
        }
        for g in self.groups.all_ids() {
            if let Some(gr) = self.groups.get_mut(g) {
                gr.since = now;
            }
            let adopt = self.groups.get_mut(g).and_then(|gr| gr.adopt.take());
            if let Some(link) = adopt {
                self.adopt(now, g, link, out);
            }
            self.evaluate_group(now, g, out);
        }
    }

    fn adopt(&mut self, now: Millis, g: GroupId, link: LinkId, out: &mut Vec<Action>) {
        let Some(gr) = self.groups.get(g) else { return };
        let lost = gr.lost();
        let pos = gr.links.iter().position(|l| *l == link);
        let segments = gr.segments.clone();
        let name = self.link_name(link);
        match pos {
            Some(pos) if lost && self.link_ready(link) => {
                self.notice(
                    g,
                    format!("primary still lost {}; adopting steering to link {name} from the previous run", self.lost_summary(g)),
                    out,
                );
                if let Some(l) = self.links.get_mut(link) {
                    l.state = LinkState::Up;
                }
                if let Some(gr) = self.groups.get_mut(g) {
                    gr.active = Some(link);
                    gr.round_start = pos;
                    gr.round_tried = 0;
                }
                self.enter_backup(now, g, out);
            }
            _ => {
                let why = if pos.is_none() {
                    format!("link {name} is not one of the group's links")
                } else if !lost {
                    "the primary is up".to_string()
                } else {
                    format!("link {name} is not ready")
                };
                self.notice(
                    g,
                    format!("not adopting steering to link {name} from the previous run: {why}"),
                    out,
                );
                out.push(Action::Unsteer { group: g, segments });
            }
        }
    }
}

/// `base` doubled per failed round after the first, capped at 5 minutes
/// (or at `base` if that is longer).
pub(super) fn retry_backoff(base: Duration, failed_rounds: u32) -> Duration {
    let cap = MAX_RETRY_BACKOFF.max(base);
    let shift = failed_rounds.saturating_sub(1).min(20);
    base.checked_mul(1u32 << shift).unwrap_or(cap).min(cap)
}
