//! The systemd notify protocol (`Type=notify`, sd_notify(3)) through the
//! `sd-notify` crate; every call is a no-op without `NOTIFY_SOCKET`.
//!
//! - `READY=1` once the initial route dump went through the engine, which is
//!   after the fast path was attached (the action sink opens before the
//!   daemon loop): from then on the agent protects the box.
//! - `STATUS=` with a summary of the groups (as `systemctl status` shows it),
//!   sent again whenever it changes.
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` when the unit sets
//!   `WatchdogSec=`. The pings come from the daemon loop itself, so a loop
//!   that is stuck stops pinging and systemd restarts the agent.
//! - `STOPPING=1` when a stop begins.

use std::fmt::Write as _;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

use crate::model::{EngineStatus, GroupState};

/// How many groups the status line names one by one.
const NAMED_GROUPS: usize = 4;

/// The agent's side of the notify protocol.
#[derive(Debug, Default)]
pub struct Notifier {
    ready: bool,
    last_status: String,
    /// Half the watchdog timeout, when systemd wants pings.
    watchdog_every: Option<Duration>,
    /// One warning for failed sends, not one per event.
    send_failed: bool,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog_every: sd_notify::watchdog_enabled().map(|t| t / 2),
            ..Notifier::default()
        }
    }

    /// How often the daemon loop must call [`Notifier::watchdog`].
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            if !self.send_failed {
                self.send_failed = true;
                warn!(
                    "cannot notify systemd through NOTIFY_SOCKET (Type=notify units will time \
                     out): {}",
                    crate::error::Report(&e)
                );
            }
        }
    }

    /// After an event went through the engine: `READY=1` after the initial
    /// sync, `STATUS=` when the summary `status` makes changed. `status` is
    /// only called when something may have changed (`changed`) or before
    /// the first READY.
    pub fn after_event(
        &mut self,
        synced: bool,
        changed: bool,
        status: impl FnOnce() -> EngineStatus,
    ) {
        if !synced || (self.ready && !changed) {
            return;
        }
        let line = summary(&status());
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(&line)]);
        } else if line != self.last_status {
            self.send(&[NotifyState::Status(&line)]);
        }
        self.last_status = line;
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1` with the reason.
    pub fn stopping(&mut self, reason: &str) {
        let line = format!("stopping ({reason})");
        self.send(&[NotifyState::Stopping, NotifyState::Status(&line)]);
    }
}

/// "2 groups: 1 primary, 1 backup; dmz: backup via lte" (groups not in
/// `primary` are named, with their link).
pub fn summary(status: &EngineStatus) -> String {
    let n = status.groups.len();
    let mut out = format!("{n} group{}:", if n == 1 { "" } else { "s" });
    let mut first = true;
    for state in GroupState::ALL {
        let count = status.groups.iter().filter(|g| g.state == state).count();
        if count > 0 {
            let _ = write!(
                out,
                "{} {count} {}",
                if first { "" } else { "," },
                state.name()
            );
            first = false;
        }
    }
    let others: Vec<_> = status
        .groups
        .iter()
        .filter(|g| g.state != GroupState::Primary)
        .collect();
    for (i, g) in others.iter().take(NAMED_GROUPS).enumerate() {
        let _ = write!(
            out,
            "{} {}: {}",
            if i == 0 { ";" } else { "," },
            g.name,
            g.state.name()
        );
        if let Some(link) = &g.active_link {
            let _ = write!(out, " via {link}");
        }
    }
    if others.len() > NAMED_GROUPS {
        let _ = write!(out, ", {} more", others.len() - NAMED_GROUPS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupStatus;

    fn group(name: &str, state: GroupState, link: Option<&str>) -> GroupStatus {
        GroupStatus {
            name: name.into(),
            state,
            active_link: link.map(Into::into),
            since_ms: 0,
            segments: Vec::new(),
        }
    }

    #[test]
    fn summary_counts_states_and_names_the_groups_off_primary() {
        let s = EngineStatus {
            synced: true,
            groups: vec![
                group("a", GroupState::Primary, None),
                group("dmz", GroupState::Backup, Some("lte")),
                group("c", GroupState::Failed, None),
            ],
            links: Vec::new(),
        };
        assert_eq!(
            summary(&s),
            "3 groups: 1 primary, 1 backup, 1 failed; dmz: backup via lte, c: failed"
        );
        let one = EngineStatus {
            synced: true,
            groups: vec![group("a", GroupState::Primary, None)],
            links: Vec::new(),
        };
        assert_eq!(summary(&one), "1 group: 1 primary");
    }
}
