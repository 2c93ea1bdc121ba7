//! A reload on the data plane side, around the engine's actions for it
//! (ids are slots that keep their meaning: see `engine::reconfigure`).
//!
//! - `prepare_reload` (before the actions): drivers for new links (a group
//!   may ask for one at once), the new link settings, kernel routes of
//!   steered segments whose link's route settings or table changed, and
//!   attachment to interfaces added to `fastpath.interfaces`.
//! - the engine's actions: `Unsteer` of removed groups and segments,
//!   `Steer` of added segments, `LinkDown` of removed links (still on their
//!   old drivers).
//! - `finish_reload` (after them): entries of segments no group monitors
//!   any more are removed and new segments get a `pass` entry; counters of
//!   group slots that changed hands are zeroed; drivers of removed links end
//!   (after their queued `down`); interfaces removed from
//!   `fastpath.interfaces` are detached.
//!
//! Nothing is written for what did not change: entries are compared with
//! what was last written (`Dataplane::write`).

use std::collections::HashMap;

use ipnet::IpNet;
use tracing::{error, info};

use super::segments::{map_group_id, pass_value};
use super::Dataplane;
use crate::config::{Config, LinkConfig};
use crate::error::Report;
use crate::model::{GroupId, LinkId};

/// What `finish_reload` still has to do.
#[derive(Default)]
pub(super) struct Pending {
    retire: Vec<LinkId>,
    detach: Vec<String>,
}

/// The settings of a link that shape its kernel routes.
fn route_settings(l: Option<&LinkConfig>) -> Option<u32> {
    l.filter(|l| l.kernel_routes).map(|l| l.route_metric)
}

impl Dataplane {
    pub(super) fn prepare_reload(&mut self, config: &Config) {
        let old_links = std::mem::replace(&mut self.links, config.links.clone());
        let vacant = |l: Option<&LinkConfig>| l.is_none_or(|l| l.name.is_empty());
        let mut retire = Vec::new();
        if let Some(drivers) = self.drivers.as_mut() {
            for (i, l) in config.links.iter().enumerate() {
                if !l.name.is_empty() && vacant(old_links.get(i)) {
                    drivers.add(i, l);
                }
            }
        }
        for (i, old) in old_links.iter().enumerate() {
            let same = config.links.get(i).is_some_and(|n| n.name == old.name);
            if !old.name.is_empty() && !same {
                retire.push(i);
            }
        }

        let table = config
            .agent
            .tables
            .first()
            .copied()
            .unwrap_or(crate::config::RT_TABLE_MAIN);
        let table_changed = table != self.route_table;
        self.route_table = table;
        let reroute: Vec<(GroupId, _, Vec<IpNet>)> = self
            .steering
            .iter()
            .filter(|(_, (to, _))| {
                let (old, new) = (
                    route_settings(old_links.get(to.link)),
                    route_settings(self.links.get(to.link)),
                );
                old != new || (table_changed && new.is_some())
            })
            .map(|(g, (to, segs))| (*g, *to, segs.clone()))
            .collect();
        for (group, to, segments) in reroute {
            for prefix in &segments {
                self.routes.remove(*prefix);
            }
            // Entries are unchanged (nothing written); routes follow the
            // link's new settings.
            self.steer(group, &to, &segments);
        }

        let mut detach = Vec::new();
        if let Some(fp) = self.fastpath.as_mut() {
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
            detach = attached
                .into_iter()
                .filter(|i| !config.fastpath.interfaces.contains(i))
                .collect();
        }
        self.reload = Pending { retire, detach };
    }

    pub(super) fn finish_reload(&mut self, config: &Config) {
        let pending = std::mem::take(&mut self.reload);
        if let Some(drivers) = self.drivers.as_mut() {
            for link in pending.retire {
                drivers.retire(link);
            }
        }
        if let Some(fp) = self.fastpath.as_mut() {
            for ifname in pending.detach {
                match fp.detach(&ifname) {
                    Ok(_) => info!("reload: fast path detached from {ifname}"),
                    Err(e) => error!(
                        "reload: cannot detach the fast path from {ifname}: {}",
                        Report(&e)
                    ),
                }
            }
        }

        // Group slots that changed hands start from zero.
        let names: Vec<String> = config.groups.iter().map(|g| g.name.clone()).collect();
        let slots = names.len().max(self.group_names.len());
        for g in 0..slots {
            let old = self.group_names.get(g).map_or("", String::as_str);
            let new = names.get(g).map_or("", String::as_str);
            if old == new {
                continue;
            }
            if let Some(fp) = self.fastpath.as_mut() {
                if let Err(e) = fp.reset_group_stats(map_group_id(g)) {
                    error!("reload: {}", Report(&e));
                }
            }
        }
        self.group_names = names;

        // Entries: one per monitored segment, with its group's slot.
        let mut owner: HashMap<IpNet, GroupId> = HashMap::new();
        for (g, group) in config.groups.iter().enumerate() {
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
            self.routes.remove(prefix);
            self.written.remove(&prefix);
            if let Some(fp) = self.fastpath.as_mut() {
                match fp.remove_segment(prefix) {
                    Ok(_) => info!("reload: removed the fast-path entry of {prefix}"),
                    Err(e) => error!("reload: {}", Report(&e)),
                }
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
