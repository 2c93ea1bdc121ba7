//! Backup links: readiness, attempts (`LinkUp` → ready or `up_timeout` /
//! `LinkFailed`), drops while in use, and release when no group needs them.

use ipnet::IpNet;

use crate::model::{
    Action, AddressInfo, GroupId, GroupState, LinkId, LinkState, Millis, Notice, OperState,
    SteerTarget, Timer,
};

use super::{gateway, Engine};

/// Whether a link can carry traffic, or why not.
pub(super) enum Readiness {
    Ready,
    NotReady(String),
}

impl Engine {
    pub(super) fn readiness(&self, link: LinkId) -> Readiness {
        let Some(l) = self.links.get(link) else {
            return Readiness::NotReady(format!("no link #{link}"));
        };
        let Some(ifindex) = self.net.ifindex_of(&l.interface) else {
            return Readiness::NotReady(format!("interface {} does not exist", l.interface));
        };
        let Some(info) = self.net.iface(ifindex) else {
            return Readiness::NotReady(format!("interface {} does not exist", l.interface));
        };
        if !info.admin_up {
            return Readiness::NotReady(format!(
                "interface {} is administratively down",
                l.interface
            ));
        }
        if !matches!(info.oper, OperState::Up | OperState::Unknown) {
            return Readiness::NotReady(format!(
                "interface {} has no carrier (operstate down)",
                l.interface
            ));
        }
        if l.require_address {
            let addrs = self.net.addresses(ifindex);
            let in_family = |a: &AddressInfo| match a.local {
                IpNet::V4(_) => l.families.v4,
                IpNet::V6(_) => l.families.v6,
            };
            // Tentative IPv6 addresses never get here: the kernel announces
            // an address once duplicate address detection passed, and the
            // decoder drops the ones a dump lists before that.
            if !addrs.iter().any(in_family) {
                let family = match (l.families.v4, l.families.v6) {
                    (true, false) => "IPv4 ",
                    (false, true) => "IPv6 ",
                    _ => "",
                };
                let why = format!("interface {} has no {family}address", l.interface);
                return Readiness::NotReady(why);
            }
        }
        Readiness::Ready
    }

    pub(super) fn link_ready(&self, link: LinkId) -> bool {
        matches!(self.readiness(link), Readiness::Ready)
    }

    pub(super) fn link_name(&self, link: LinkId) -> String {
        self.links
            .get(link)
            .map_or_else(|| format!("#{link}"), |l| l.name.clone())
    }

    /// Groups that hold `link`: trying it, steering to it or holding it.
    pub(super) fn link_users(&self, link: LinkId) -> usize {
        self.groups
            .values()
            .filter(|g| {
                g.active == Some(link)
                    && matches!(
                        g.state,
                        GroupState::Activating | GroupState::Backup | GroupState::Holding
                    )
            })
            .count()
    }

    /// Where a group steering to `link` sends its traffic, if the link's interface exists.
    pub(super) fn steer_target(&self, link: LinkId) -> Option<SteerTarget> {
        let l = self.links.get(link)?;
        let ifindex = self.net.ifindex_of(&l.interface)?;
        let info = self.net.iface(ifindex)?;
        let (gateway_v4, gateway_v6) = gateway::derive(
            info.l3,
            l.gateway_v4,
            l.gateway_v6,
            self.net.addresses(ifindex),
        );
        Some(SteerTarget {
            link,
            ifindex,
            l3: info.l3,
            gateway_v4,
            gateway_v6,
        })
    }

    /// Asks for `link` on behalf of a group. Returns true when it is ready
    /// now. A link still being released is brought up again once its `down`
    /// has finished (`on_link_released`).
    pub(super) fn request_link(&mut self, link: LinkId, out: &mut Vec<Action>) -> bool {
        let why = match self.readiness(link) {
            Readiness::Ready => None,
            Readiness::NotReady(why) => Some(why),
        };
        let attempt = self.last_attempt + 1;
        let Some(l) = self.links.get_mut(link) else {
            return false;
        };
        match l.state {
            LinkState::Up => true,
            LinkState::Connecting | LinkState::Releasing => false,
            LinkState::Down | LinkState::Failed => {
                // A link that failed or that we took down may still look
                // ready (pppd exited and ppp0 not yet gone; a `command`
                // link's interface outliving its process): redial it and
                // wait until its interface has been seen not ready and then
                // ready again.
                let distrust = (l.state == LinkState::Failed || l.ended) && !l.always_up;
                let why = match why {
                    None if !distrust => {
                        l.state = LinkState::Up;
                        return true;
                    }
                    None => {
                        l.stale_ready = true;
                        "its interface still looks up after the failure".to_string()
                    }
                    Some(why) => why,
                };
                l.state = LinkState::Connecting;
                if l.always_up {
                    out.push(Action::Notice(Notice::link(
                        &l.name,
                        format!(
                            "always-up link is not ready ({why}); waiting up to {}",
                            humantime::format_duration(l.up_timeout)
                        ),
                    )));
                } else {
                    l.attempt = attempt;
                    self.last_attempt = attempt;
                    out.push(Action::LinkUp { link, attempt });
                }
                out.push(Action::ArmTimer {
                    timer: Timer::UpTimeout(link),
                    after: l.up_timeout,
                });
                false
            }
        }
    }

    /// Reacts to interface/address changes: connecting links that became
    /// ready, links in use that dropped, steering targets that moved.
    pub(super) fn links_changed(&mut self, now: Millis, out: &mut Vec<Action>) {
        if !self.synced {
            return;
        }
        for link in self.links.all_ids() {
            let state = self.links.get(link).map(|l| l.state);
            let stale = self.links.get(link).is_some_and(|l| l.stale_ready);
            match (state, self.readiness(link)) {
                (Some(LinkState::Connecting), Readiness::Ready) if stale => {}
                (Some(LinkState::Connecting), Readiness::NotReady(_)) if stale => {
                    if let Some(l) = self.links.get_mut(link) {
                        l.stale_ready = false;
                    }
                }
                (Some(LinkState::Connecting), Readiness::Ready) => {
                    self.link_became_ready(now, link, out);
                }
                (Some(LinkState::Up), Readiness::NotReady(why)) => {
                    self.link_dropped(now, link, &why, out);
                }
                _ => {}
            }
        }
        self.refresh_steering(out);
    }

    fn link_became_ready(&mut self, now: Millis, link: LinkId, out: &mut Vec<Action>) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.state = LinkState::Up;
        l.stale_ready = false;
        l.ended = false;
        out.push(Action::CancelTimer {
            timer: Timer::UpTimeout(link),
        });
        for g in self.groups_activating(link) {
            self.link_ready_for(now, g, out);
        }
        if self.link_users(link) == 0 {
            // Nobody waits any more (e.g. primary came back meanwhile).
            self.release_link(link, out);
        }
    }

    /// The groups waiting in `activating` for `link` to come up.
    pub(super) fn groups_activating(&self, link: LinkId) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, gr)| gr.state == GroupState::Activating && gr.active == Some(link))
            .map(|(g, _)| g)
            .collect()
    }

    /// Marks `link` failed with `why` and says so ("link X: {what}: {why}").
    /// Returns whether the link is `always-up` (never taken down), or None
    /// for an unknown link.
    fn record_failure(
        &mut self,
        link: LinkId,
        why: &str,
        what: &str,
        out: &mut Vec<Action>,
    ) -> Option<bool> {
        let l = self.links.get_mut(link)?;
        l.state = LinkState::Failed;
        l.ended = true;
        l.attempts = l.attempts.saturating_add(1);
        l.last_error = Some(why.to_owned());
        out.push(Action::Notice(Notice::link(
            &l.name,
            format!("{what}: {why}"),
        )));
        let always_up = l.always_up;
        self.forget_verification(link, out);
        Some(always_up)
    }

    /// The current attempt on `link` failed (`up_timeout` or driver error).
    pub(super) fn attempt_failed(
        &mut self,
        now: Millis,
        link: LinkId,
        error: &str,
        out: &mut Vec<Action>,
    ) {
        if let Some(l) = self.links.get_mut(link) {
            l.stale_ready = false;
        }
        let Some(always_up) = self.record_failure(link, error, "attempt failed", out) else {
            return;
        };
        out.push(Action::CancelTimer {
            timer: Timer::UpTimeout(link),
        });
        if !always_up {
            self.link_down(link, out);
        }
        for g in self.groups_activating(link) {
            let entry = format!("{}: {error}", self.link_name(link));
            if let Some(gr) = self.groups.get_mut(g) {
                gr.round_errors.push(entry);
            }
            self.advance_round(now, g, out);
        }
    }

    /// A link in use stopped being usable.
    pub(super) fn link_dropped(
        &mut self,
        now: Millis,
        link: LinkId,
        why: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(always_up) = self.record_failure(link, why, "dropped while in use", out) else {
            return;
        };
        if !always_up {
            self.link_down(link, out);
        }
        for g in self.groups.all_ids() {
            let Some(gr) = self.groups.get(g) else {
                continue;
            };
            if gr.active != Some(link) {
                continue;
            }
            match gr.state {
                GroupState::Backup => self.restart_after_drop(now, g, link, out),
                GroupState::Holding => self.holding_link_gone(now, g, out),
                GroupState::Activating => self.advance_round(now, g, out),
                GroupState::Primary | GroupState::Pending | GroupState::Failed => {}
            }
        }
    }

    /// Sends `LinkDown` for `link`, counting it until its `LinkReleased`.
    fn link_down(&mut self, link: LinkId, out: &mut Vec<Action>) {
        if let Some(l) = self.links.get_mut(link) {
            l.downs_in_flight = l.downs_in_flight.saturating_add(1);
            out.push(Action::LinkDown { link });
        }
    }

    /// Drops `link` if no group holds it any more. A link with a driver
    /// stays `releasing` until the driver reports its `down` finished.
    pub(super) fn release_link(&mut self, link: LinkId, out: &mut Vec<Action>) {
        if self.link_users(link) > 0 {
            return;
        }
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        match l.state {
            LinkState::Up | LinkState::Connecting => {
                if l.state == LinkState::Connecting {
                    out.push(Action::CancelTimer {
                        timer: Timer::UpTimeout(link),
                    });
                }
                l.stale_ready = false;
                if l.always_up {
                    l.state = LinkState::Down;
                } else {
                    l.state = LinkState::Releasing;
                    l.ended = true;
                    self.link_down(link, out);
                }
                self.forget_verification(link, out);
            }
            LinkState::Down | LinkState::Releasing | LinkState::Failed => {}
        }
    }

    /// The driver finished a `down` of `link`. When it was the last one of a
    /// release, the link is down; a group that asked for it meanwhile gets
    /// it brought up again.
    pub(super) fn on_link_released(&mut self, now: Millis, link: LinkId, out: &mut Vec<Action>) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.downs_in_flight = l.downs_in_flight.saturating_sub(1);
        if l.downs_in_flight > 0 || l.state != LinkState::Releasing {
            return;
        }
        l.state = LinkState::Down;
        let waiting = self.groups_activating(link);
        if waiting.is_empty() || !self.synced {
            return;
        }
        out.push(Action::Notice(Notice::link(
            self.link_name(link),
            "down finished; bringing it up again for the group waiting for it",
        )));
        if self.request_link(link, out) {
            for g in waiting {
                self.link_ready_for(now, g, out);
            }
        }
    }

    pub(super) fn on_link_failed(
        &mut self,
        now: Millis,
        link: LinkId,
        attempt: u64,
        error: String,
        out: &mut Vec<Action>,
    ) {
        let Some(l) = self.links.get_mut(link) else {
            out.push(Action::Notice(Notice::agent(format!(
                "driver reported a failure for unknown link #{link}: {error}"
            ))));
            return;
        };
        if attempt != l.attempt {
            // A process of an earlier attempt exiting late (its attempt
            // already timed out or was taken down): not about the current one.
            out.push(Action::Notice(Notice::link(
                &l.name,
                format!(
                    "ignoring a report of attempt {attempt} (current: {}): {error}",
                    l.attempt
                ),
            )));
            return;
        }
        if !self.synced {
            l.last_error = Some(error);
            return;
        }
        match l.state {
            LinkState::Connecting => self.attempt_failed(now, link, &error, out),
            LinkState::Up => self.link_dropped(now, link, &error, out),
            LinkState::Down | LinkState::Releasing | LinkState::Failed => {
                out.push(Action::Notice(Notice::link(
                    &l.name,
                    format!("driver reports: {error}"),
                )));
                l.last_error = Some(error);
            }
        }
    }

    /// Re-sends `Steer` for groups whose target changed (new gateway, new ifindex).
    fn refresh_steering(&mut self, out: &mut Vec<Action>) {
        for g in self.groups.all_ids() {
            let Some(gr) = self.groups.get(g) else {
                continue;
            };
            let Some(cur) = &gr.steer else { continue };
            let Some(new) = self.steer_target(cur.link) else {
                continue;
            };
            if &new != cur {
                out.push(Action::Notice(Notice::group(
                    &gr.name,
                    format!(
                        "steering target on link {} changed; updating",
                        self.link_name(cur.link)
                    ),
                )));
                let action = steer_action(g, &gr.segments, &new);
                out.push(action);
                if let Some(gr) = self.groups.get_mut(g) {
                    gr.steer = Some(new);
                }
            }
        }
    }
}

pub(super) fn steer_action(group: GroupId, segments: &[IpNet], t: &SteerTarget) -> Action {
    Action::Steer {
        group,
        target: *t,
        segments: segments.to_vec(),
    }
}
