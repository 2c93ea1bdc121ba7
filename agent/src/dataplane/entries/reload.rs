//! A reload on the fast path's side, around the engine's actions for it
//! (ids are slots that keep their meaning: see `engine::reconfigure`).
//!
//! - `prepare_reload` (before the actions): the new link settings and
//!   attachment to interfaces added to `fastpath.interfaces`.
//! - the engine's actions: `Unsteer` of removed groups and segments,
//!   `Steer` of added segments.
//! - `finish_reload` (after them): interfaces removed from
//!   `fastpath.interfaces` are detached; counters of group slots that
//!   changed hands are zeroed; entries of segments no group monitors any
//!   more are removed and new segments get a `pass` entry.
//!
//! Nothing is written for what did not change: entries are compared with
//! what was last written (`Entries::write`).

use std::collections::HashMap;

use ipnet::IpNet;
use tracing::{error, info};

use super::super::segments::{map_group_id, pass_value};
use super::Entries;
use crate::config::Config;
use crate::error::Report;
use crate::model::GroupId;

/// What `finish_reload` still has to do.
#[derive(Default)]
pub(super) struct Pending {
    detach: Vec<String>,
}

impl Entries {
    pub(super) fn prepare_reload(&mut self, config: &Config) {
        self.links.clone_from(&config.links);
        let fp = &mut self.fastpath;
        let attached: Vec<String> = fp.attachments().into_iter().map(|a| a.interface).collect();
        for ifname in &config.fastpath.interfaces {
            if attached.contains(ifname) {
                continue;
            }
            match fp.attach(ifname, config.fastpath.mode) {
                Ok(a) => info!(
                    "reload: fast path attached to {ifname} (ifindex {}): xdp {:?}, tc {}",
                    a.ifindex,
                    a.xdp,
                    if a.tc { "attached" } else { "not attached" }
                ),
                Err(e) => error!(
                    "reload: cannot attach the fast path to {ifname}: {}",
                    Report(&e)
                ),
            }
        }
        let detach = attached
            .into_iter()
            .filter(|i| !config.fastpath.interfaces.contains(i))
            .collect();
        self.reload = Pending { detach };
    }

    pub(super) fn finish_reload(&mut self, config: &Config) {
        let pending = std::mem::take(&mut self.reload);
        for ifname in pending.detach {
            match self.fastpath.detach(&ifname) {
                Ok(_) => info!("reload: fast path detached from {ifname}"),
                Err(e) => error!(
                    "reload: cannot detach the fast path from {ifname}: {}",
                    Report(&e)
                ),
            }
        }

        // Group slots that changed hands start from zero.
        let names = config.groups.map(|g| g.name.clone());
        let slots = names.slot_count().max(self.group_names.slot_count());
        for g in (0..slots).map(GroupId) {
            if self.group_names.get(g) == names.get(g) {
                continue;
            }
            if let Err(e) = self.fastpath.reset_group_stats(map_group_id(g)) {
                error!("reload: {}", Report(&e));
            }
        }
        self.group_names = names;

        // Entries: one per monitored segment, with its group's slot.
        let mut owner: HashMap<IpNet, GroupId> = HashMap::new();
        for (g, group) in config.groups.iter() {
            for s in &group.segments {
                owner.insert(*s, g);
            }
        }
        let stale: Vec<IpNet> = self
            .written
            .keys()
            .filter(|p| !owner.contains_key(p))
            .copied()
            .collect();
        for prefix in stale {
            self.written.remove(&prefix);
            match self.fastpath.remove_segment(prefix) {
                Ok(_) => info!("reload: removed the fast-path entry of {prefix}"),
                Err(e) => error!("reload: {}", Report(&e)),
            }
        }
        for (prefix, g) in owner {
            let current = self.written.get(&prefix).map(|v| v.group_id);
            if current != Some(map_group_id(g)) {
                self.write(prefix, pass_value(g));
            }
        }
    }
}
