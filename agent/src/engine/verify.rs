//! Verifying a backup link before steering to it (a link's `verify`).
//!
//! A link whose interface is ready may still lead nowhere (a modem attached
//! but its provider dead). With `verify`, a group that would steer to a
//! ready link first has the edge send one echo request to the target out of
//! the link's interface (`Action::Probe`, bound to that interface). The
//! group stays `activating` meanwhile. An answer marks the link verified for
//! this session (every group waiting for it steers; later groups steer at
//! once); no answer within `timeout` (`Timer::Verify`, or the edge's own
//! not-ok report) fails the attempt like a driver failure: the link is
//! taken down, its `last_error` says "verify probe to T via IF got no
//! answer", and the group tries its next link. A session that ends (failure,
//! release) needs a new verification next time.

use crate::model::{Action, GroupId, LinkId, Millis, Timer};

use super::Engine;

impl Engine {
    /// The group's active link is ready: steer, or verify it first.
    pub(super) fn link_ready_for(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let Some(link) = self.groups.get(g).and_then(|gr| gr.active) else {
            return;
        };
        let ifindex = self
            .links
            .get(link)
            .and_then(|l| self.net.ifindex_of(&l.interface));
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        let (Some(verify), false, Some(ifindex)) = (l.verify, l.verified, ifindex) else {
            // No verify, already verified, or (defensive: ready implies it)
            // no interface, which `enter_backup` handles.
            self.enter_backup(now, g, out);
            return;
        };
        if l.verifying.is_some() {
            // Under way for another group: its result serves this one too.
            return;
        }
        self.last_probe_seq += 1;
        let seq = self.last_probe_seq;
        l.verifying = Some((seq, ifindex));
        let text = format!(
            "link {} is up; verifying it: probe to {} via {}",
            l.name, verify.target, l.interface
        );
        self.notice(g, text, out);
        out.push(Action::Probe {
            group: g,
            target: verify.target,
            ifindex,
            gateway: None,
            seq,
            timeout: verify.timeout,
        });
        out.push(Action::ArmTimer {
            timer: Timer::Verify(link),
            after: verify.timeout,
        });
    }

    /// A probe result that answers a link's verification. Returns false when
    /// it is not one (it is then about the group's primary probing).
    pub(super) fn on_verify_result(
        &mut self,
        now: Millis,
        ifindex: u32,
        seq: u64,
        ok: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(link) = self
            .links
            .iter()
            .find(|(_, l)| l.verifying == Some((seq, ifindex)))
            .map(|(link, _)| link)
        else {
            return false;
        };
        if ok {
            self.verified(now, link, out);
        } else {
            self.verify_failed(now, link, out);
        }
        true
    }

    /// `Timer::Verify`: no answer in time.
    pub(super) fn on_verify_timeout(&mut self, now: Millis, link: LinkId, out: &mut Vec<Action>) {
        if self.links.get(link).is_some_and(|l| l.verifying.is_some()) {
            self.verify_failed(now, link, out);
        }
    }

    fn verified(&mut self, now: Millis, link: LinkId, out: &mut Vec<Action>) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.verifying = None;
        l.verified = true;
        out.push(Action::CancelTimer {
            timer: Timer::Verify(link),
        });
        for g in self.groups_activating(link) {
            self.enter_backup(now, g, out);
        }
    }

    fn verify_failed(&mut self, now: Millis, link: LinkId, out: &mut Vec<Action>) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.verifying = None;
        let target = l.verify.map(|v| v.target.to_string()).unwrap_or_default();
        let error = format!("verify probe to {target} via {} got no answer", l.interface);
        out.push(Action::CancelTimer {
            timer: Timer::Verify(link),
        });
        self.attempt_failed(now, link, &error, out);
    }

    /// The link's session ended (failed, released): verify it again next
    /// time; a verification under way is void.
    pub(super) fn forget_verification(&mut self, link: LinkId, out: &mut Vec<Action>) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.verified = false;
        if l.verifying.take().is_some() {
            out.push(Action::CancelTimer {
                timer: Timer::Verify(link),
            });
        }
    }
}
