//! Reload: applying a new config to a running engine as a diff.
//!
//! # Ids stay stable: slots
//!
//! `GroupId` and `LinkId` are slot positions, and much outside the engine is
//! keyed by them: the fast path's entries carry the group id and count into
//! that group's `stats` slot, the daemon's pending timers are `Timer(id)`,
//! the data plane keeps per-group steering and per-link drivers (a running
//! pppd belongs to a link id). Renumbering on reload would mean rewriting
//! entries and moving counters, timers and processes of groups the reload
//! did not touch. So ids do not move: [`slotted`] lays the new config out so
//! that every group and link keeps the id it had (matched by name), a
//! removed one leaves its slot *vacant* (`None` in the config's and the
//! engine's [`Slots`](crate::ids::Slots), which nothing steers, evaluates or
//! shows in `status`), and a new one takes the lowest vacant slot or is
//! appended. The engine, the data plane and the daemon all see that slotted
//! config, so id `n` means the same thing to each of them before and after
//! the reload.
//!
//! - A group slot may be vacated and taken by a new group in one reload
//!   (group slots are bounded by the size of the `stats` map): the engine
//!   cleans up the old group (unsteer, timers cancelled, link released)
//!   before the new one appears, and the data plane resets the slot's
//!   counters.
//! - A link slot is never reused in the reload that vacated it: the old
//!   link's `LinkDown` and a new link's `LinkUp` must reach different
//!   drivers.
//! - A link is the same link when its name, interface and driver are the
//!   same; changing its interface or driver replaces it (new slot: the old
//!   one is taken down once its groups moved on, the new one is dialled when
//!   a group needs it). Other link settings (gateways, timeouts,
//!   `require_address`, kernel routes) change in place.
//!
//! # What `Engine::reconfigure` does
//!
//! Unchanged groups and links: nothing (no action at all). A removed group:
//! its steering goes (`Unsteer`), its timers are cancelled and its link is
//! released (`LinkDown` when no other group holds it). A kept group whose
//! active link was removed (or left its list) moves on: steering stops and
//! it starts a new round on its new list; then the removed link goes down.
//! Segments added to a steered group are steered at once (only them);
//! removed ones are unsteered. A link whose next hop changed (`gateway`) is
//! re-steered (`Steer` with the new target, no `LinkDown`/`LinkUp`).
//!
//! New groups, and groups whose segments or match rule changed, wait for
//! routes: the watcher only reported routes that matched the old segments,
//! so the engine does not evaluate them (which could start a backup for a
//! segment whose route simply was not reported yet) until the watcher's
//! re-dump with the new filter ends with `Event::Synced`.

use std::collections::HashSet;

use crate::config::{Config, GroupConfig, LinkConfig};
use crate::model::{Action, GroupId, GroupState, LinkId, Millis, Notice, Timer};

use super::links::steer_action;
use super::prearm::prearm_table;
use super::{Engine, GroupRt, LinkRt};

fn same_link(a: &LinkConfig, b: &LinkConfig) -> bool {
    a.name == b.name && a.interface == b.interface && a.driver == b.driver
}

/// Lays `new` (a config as loaded) out on the slots of `current` (the
/// slotted config running now): see the module doc.
pub fn slotted(current: &Config, new: &Config) -> Config {
    // Links: kept ones keep their slot; new ones take a slot that was
    // already vacant before this reload, else go at the end.
    let mut links: Vec<Option<LinkConfig>> = vec![None; current.links.slot_count()];
    let mut link_slot = vec![LinkId(0); new.links.slot_count()];
    let mut placed = vec![false; new.links.slot_count()];
    for (i, l) in new.links.iter() {
        if let Some((s, _)) = current.links.iter().find(|(_, c)| same_link(c, l)) {
            link_slot[i.index()] = s;
            placed[i.index()] = true;
            links[s.index()] = Some(l.clone());
        }
    }
    let mut free_links = current
        .links
        .all_ids()
        .filter(|s| current.links.is_vacant(*s));
    for (i, l) in new.links.iter() {
        if placed[i.index()] {
            continue;
        }
        let s = free_links.next().unwrap_or_else(|| {
            links.push(None);
            LinkId(links.len() - 1)
        });
        link_slot[i.index()] = s;
        links[s.index()] = Some(l.clone());
    }

    // Groups: kept by name; new ones take the lowest slot free after the
    // removals (including one vacated now), else go at the end.
    let mut groups: Vec<Option<GroupConfig>> = vec![None; current.groups.slot_count()];
    let mut pending = Vec::new();
    for g in new.groups.values() {
        let mut g = g.clone();
        g.links = g
            .links
            .iter()
            .filter_map(|l| link_slot.get(l.index()).copied())
            .collect();
        match current.groups.iter().find(|(_, c)| c.name == g.name) {
            Some((s, _)) => groups[s.index()] = Some(g),
            None => pending.push(g),
        }
    }
    for g in pending {
        match groups.iter().position(Option::is_none) {
            Some(s) => groups[s] = Some(g),
            None => groups.push(Some(g)),
        }
    }

    let mut out = new.clone();
    out.links = links.into_iter().collect();
    out.groups = groups.into_iter().collect();
    // Trailing vacant slots serve no one.
    out.links.trim();
    out.groups.trim();
    out
}

/// Whether the engine keeps link slot `i` as the same link.
fn keeps_link(old: &LinkRt, new: Option<&LinkConfig>) -> bool {
    new.is_some_and(|n| {
        n.name == old.name
            && n.interface == old.interface
            && n.driver.profile().always_up == old.always_up
    })
}

impl Engine {
    /// Applies a reloaded config (laid out by [`slotted`]) as a diff and
    /// returns the actions that carries out (see the module doc). A group
    /// or link found at an id with another name than before is handled as
    /// removed there and added there.
    pub fn reconfigure(&mut self, now: Millis, config: &Config) -> Vec<Action> {
        let mut out = Vec::new();
        let removed_links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(i, l)| !keeps_link(l, config.links.get(*i)))
            .map(|(i, _)| i)
            .collect();

        // New links take their (vacant or appended) slots now, so that
        // groups moving on can ask for them; removed ones stay until their
        // groups moved on.
        for (i, l) in config.links.iter() {
            let Some(rt) = self.links.get_mut(i) else {
                self.links.set(i, Some(LinkRt::new(l)));
                continue;
            };
            if keeps_link(rt, Some(l)) {
                rt.require_address = l.require_address;
                rt.up_timeout = l.up_timeout;
                rt.gateway_v4 = l.gateway_v4;
                rt.gateway_v6 = l.gateway_v6;
                if rt.verify != l.verify {
                    // A new target or timeout: the next use verifies anew.
                    rt.verify = l.verify;
                    rt.verified = false;
                }
                rt.prearm = l.prearm;
                rt.route_metric = l.route_metric;
            }
        }

        let mut held: Vec<LinkId> = Vec::new();
        let mut moving_on = Vec::new();
        let slots = self.groups.slot_count().max(config.groups.slot_count());
        for g in (0..slots).map(GroupId) {
            let new = config.groups.get(g);
            let old_name = self.groups.get(g).map(|gr| gr.name.clone());
            match (old_name, new) {
                (Some(old), Some(new)) if old == new.name => {
                    if self.change_group(g, new, config, &removed_links, &mut out) {
                        moving_on.push(g);
                    }
                    self.set_probe(now, g, new.probe.as_ref(), &mut out);
                }
                (old, new) => {
                    if let Some(old) = old {
                        if let Some(l) = self.remove_group(g, &old, &mut out) {
                            held.push(l);
                        }
                    }
                    let rt = new.map(|new| {
                        let mut rt = GroupRt::new(new, config, config.links.slot_count());
                        rt.since = now;
                        rt.awaiting_routes = self.synced;
                        out.push(Action::Notice(Notice::group(
                            &new.name,
                            "added by the reload",
                        )));
                        rt
                    });
                    self.groups.set(g, rt);
                }
            }
        }

        for g in moving_on {
            self.move_on(now, g, &mut out);
        }
        for l in removed_links.iter().chain(&held) {
            self.release_link(*l, &mut out);
        }
        for l in &removed_links {
            if let Some(name) = self.links.get(*l).map(|rt| rt.name.clone()) {
                out.push(Action::Notice(Notice::link(name, "removed by the reload")));
            }
            self.links.set(*l, config.links.get(*l).map(LinkRt::new));
        }
        self.groups.truncate(config.groups.slot_count());
        self.links.truncate(config.links.slot_count());

        let tables: HashSet<u32> = config.agent.tables.iter().copied().collect();
        if tables != self.tables || self.net.set_backup_names(config.backup_interfaces()) {
            // Which routes count changed: every group waits for the re-dump.
            self.tables = tables;
            for gr in self.groups.values_mut() {
                gr.awaiting_routes = self.synced;
            }
        }
        self.rebuild_index();
        self.refresh_families(config);
        if self.synced {
            // Readiness (`require_address`) and next hops (`gateway`) of
            // kept links may have changed: re-steer where the target moved.
            self.links_changed(now, &mut out);
        }
        self.prearm_table = prearm_table(config);
        // Removed groups (vacant slots) and links that no longer pre-arm
        // lose their routes here; changed groups are brought up to date.
        self.prearm_all(&mut out);
        out
    }

    /// Whether a group waits for the watcher's re-dump after a reload.
    pub fn awaiting_routes(&self) -> bool {
        self.groups.values().any(|g| g.awaiting_routes)
    }

    /// A removed group: stop its steering and timers. Returns the link it
    /// held, to release once every group is updated.
    fn remove_group(&mut self, g: GroupId, name: &str, out: &mut Vec<Action>) -> Option<LinkId> {
        let synced = self.synced;
        let gr = self.groups.get_mut(g)?;
        out.push(Action::Notice(Notice::group(name, "removed by the reload")));
        if gr.steer.take().is_some() {
            out.push(Action::Unsteer {
                group: g,
                segments: gr.segments.clone(),
            });
        }
        if synced {
            for timer in [Timer::Activate(g), Timer::Deactivate(g), Timer::Retry(g)] {
                out.push(Action::CancelTimer { timer });
            }
            if gr.probe.take().is_some() {
                out.push(Action::CancelTimer {
                    timer: Timer::ProbeRound(g),
                });
            }
        }
        gr.state = GroupState::Primary;
        gr.active.take()
    }

    /// Applies a kept group's new settings. Returns true when its active
    /// link is no longer one of its links (it must move on).
    fn change_group(
        &mut self,
        g: GroupId,
        new: &GroupConfig,
        config: &Config,
        removed_links: &[LinkId],
        out: &mut Vec<Action>,
    ) -> bool {
        let synced = self.synced;
        let Some(gr) = self.groups.get_mut(g) else {
            return false;
        };
        let removed: Vec<_> = gr
            .segments
            .iter()
            .filter(|s| !new.segments.contains(s))
            .copied()
            .collect();
        let added: Vec<_> = new
            .segments
            .iter()
            .filter(|s| !gr.segments.contains(s))
            .copied()
            .collect();
        if gr.steer.is_some() && !removed.is_empty() {
            out.push(Action::Unsteer {
                group: g,
                segments: removed.clone(),
            });
        }
        let rule_changed = gr.match_mode != new.match_mode || gr.allow_default != new.allow_default;
        if !removed.is_empty() || !added.is_empty() || rule_changed {
            let primary_up: Vec<bool> = new
                .segments
                .iter()
                .map(|s| {
                    !rule_changed
                        && gr
                            .segments
                            .iter()
                            .position(|o| o == s)
                            .and_then(|i| gr.primary_up.get(i).copied())
                            .unwrap_or(false)
                })
                .collect();
            gr.up_count = primary_up.iter().filter(|u| **u).count();
            gr.primary_up = primary_up;
            gr.segments.clone_from(&new.segments);
            gr.match_mode = new.match_mode;
            gr.allow_default = new.allow_default;
            gr.awaiting_routes = synced;
            out.push(Action::Notice(Notice::group(
                &gr.name,
                format!(
                    "segments changed by the reload ({} added, {} removed)",
                    added.len(),
                    removed.len()
                ),
            )));
        }
        if let Some(target) = gr.steer.filter(|_| !added.is_empty()) {
            out.push(steer_action(g, &added, &target));
        }
        gr.activate_delay = new.activate_delay;
        gr.deactivate_delay = new.deactivate_delay;
        let fresh = GroupRt::new(new, config, config.links.slot_count());
        gr.retry_base = fresh.retry_base;
        gr.links = fresh.links;
        gr.active
            .is_some_and(|a| removed_links.contains(&a) || !gr.links.contains(&a))
    }

    /// A group whose active link left its list: drop what it had on that
    /// link and go on with its new list.
    fn move_on(&mut self, now: Millis, g: GroupId, out: &mut Vec<Action>) {
        let link_name = |e: &Engine, l| e.link_name(l);
        let Some(link) = self.groups.get(g).and_then(|gr| gr.active) else {
            return;
        };
        let name = link_name(self, link);
        let Some(gr) = self.groups.get_mut(g) else {
            return;
        };
        gr.active = None;
        let steered = gr.steer.take().is_some();
        let say = |text: String| Action::Notice(Notice::group(&gr.name, text));
        match gr.state {
            GroupState::Backup | GroupState::Activating => {
                let what = if steered { "steering stopped; " } else { "" };
                out.push(say(format!(
                    "link {name} is no longer one of its links: {what}trying its links again"
                )));
                if steered {
                    out.push(Action::Unsteer {
                        group: g,
                        segments: gr.segments.clone(),
                    });
                }
                if gr.links.is_empty() {
                    out.push(say("the group has no links".to_string()));
                    gr.state = GroupState::Failed;
                    gr.since = now;
                } else {
                    self.start_round(now, g, 0, out);
                }
            }
            GroupState::Holding => {
                out.push(say(format!(
                    "link {name} is no longer one of its links; hold ended"
                )));
                out.push(Action::CancelTimer {
                    timer: Timer::Deactivate(g),
                });
                gr.state = GroupState::Primary;
                gr.since = now;
            }
            // Pending has no active link yet (returned above).
            GroupState::Primary | GroupState::Pending | GroupState::Failed => {}
        }
    }
}

#[cfg(test)]
mod tests;
