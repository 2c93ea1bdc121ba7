//! The kernel routes' executor: `kernel_routes` links get a route per
//! steered segment (`Steer`/`Unsteer`), pre-armed segments a route via their
//! backup (`Prearm`/`Disarm`), in the first watched table. The work is
//! queued to one background task, in order (`route_jobs`); it reports
//! nothing to the engine (failures are logged), so this executor has no
//! stream.
//!
//! A reload moves the routes of steered segments whose link's route
//! settings or table changed (before the engine's actions) and removes
//! those of segments no group monitors any more (after them).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::IpAddr;

use ipnet::IpNet;

use super::route_jobs::RouteQueue;
use super::steering::{self, FollowsSteering, Steering};
use super::Executor;
use crate::config::{Config, LinkConfig};
use crate::ids::Slots;
use crate::model::{Action, GroupId, LinkId, SteerTarget};

pub(super) struct Routes {
    queue: RouteQueue,
    links: Slots<LinkId, LinkConfig>,
    /// The first watched table: where `kernel_routes` go.
    table: u32,
    /// What each group is steered to (routes follow a link's settings).
    steering: Steering,
}

/// The first watched table.
fn route_table(config: &Config) -> u32 {
    config
        .agent
        .tables
        .first()
        .copied()
        .unwrap_or(crate::config::RT_TABLE_MAIN)
}

/// The settings of a link that shape its kernel routes.
fn route_settings(l: Option<&LinkConfig>) -> Option<u32> {
    l.filter(|l| l.kernel_routes).map(|l| l.route_metric)
}

/// A route's gateway via `to`: the target's gateway of the segment's own
/// family on Ethernet, none on an L3 device.
fn gateway(to: &SteerTarget, prefix: &IpNet) -> Option<IpAddr> {
    match prefix {
        _ if to.l3 => None,
        IpNet::V4(_) => to.gateway_v4.map(IpAddr::V4),
        IpNet::V6(_) => to.gateway_v6.map(IpAddr::V6),
    }
}

impl Routes {
    /// Spawns the queue's task (inside the tokio runtime).
    pub fn start(config: &Config) -> Routes {
        Routes {
            queue: RouteQueue::start(),
            links: config.links.clone(),
            table: route_table(config),
            steering: Steering::new(),
        }
    }

    /// Routes the steered segments via the target, where its link installs
    /// kernel routes.
    fn install(&mut self, to: &SteerTarget, segments: &[IpNet]) {
        let Some(cfg) = self.links.get(to.link).filter(|l| l.kernel_routes) else {
            return;
        };
        for prefix in segments {
            self.queue.install(
                *prefix,
                to.ifindex,
                gateway(to, prefix),
                cfg.route_metric,
                self.table,
            );
        }
    }

    /// Pre-arms segments (`Action::Prearm`): a kernel route each via the
    /// target, through its gateway of the segment's family on Ethernet (the
    /// engine pre-arms no segment without one).
    fn prearm(&mut self, to: &SteerTarget, routes: &[(IpNet, u32)]) {
        for (prefix, metric) in routes {
            self.queue.arm(
                *prefix,
                to.ifindex,
                gateway(to, prefix),
                *metric,
                self.table,
            );
        }
    }

    /// Once the engine took in the initial dump: removes the kernel routes
    /// a previous agent left that nothing steers or pre-arms now. Only
    /// where a link installs them: the sweep dumps the routing table.
    pub fn after_sync(&self) {
        if self.links.values().any(|l| l.kernel_routes || l.prearm) {
            self.queue.sweep_others();
        }
    }

    /// The segments with a route, and the pre-armed ones (for `status`).
    pub fn status(&self) -> (Vec<String>, Vec<String>) {
        (self.queue.installed(), self.queue.armed())
    }

    /// At stop: removes the routes unless `keep` (`--keep-fastpath`), then
    /// waits for the queue to drain.
    pub async fn finish(&mut self, keep: bool) {
        self.queue.finish(keep).await;
    }
}

impl FollowsSteering for Routes {
    fn steer(&mut self, group: GroupId, to: &SteerTarget, segments: &[IpNet]) {
        self.install(to, segments);
        steering::steer(&mut self.steering, group, to, segments);
    }

    fn unsteer(&mut self, group: GroupId, segments: &[IpNet]) {
        steering::unsteer(&mut self.steering, group, segments);
        for prefix in segments {
            self.queue.remove(*prefix);
        }
    }
}

impl Executor for Routes {
    /// Nothing is reported: failures are logged.
    type Event = Infallible;

    fn execute(&mut self, action: &Action, _requested_by: Option<&str>) {
        if steering::dispatch(self, action) {
            return;
        }
        match action {
            Action::Prearm { target, routes, .. } => self.prearm(target, routes),
            Action::Disarm { segments, .. } => {
                for prefix in segments {
                    self.queue.disarm(*prefix);
                }
            }
            _ => {}
        }
    }

    fn prepare_reload(&mut self, config: &Config) {
        let old_links = std::mem::replace(&mut self.links, config.links.clone());
        let table = route_table(config);
        let table_changed = table != self.table;
        self.table = table;
        let reroute: Vec<(SteerTarget, Vec<IpNet>)> = self
            .steering
            .values()
            .filter(|(to, _)| {
                let (old, new) = (
                    route_settings(old_links.get(to.link)),
                    route_settings(self.links.get(to.link)),
                );
                old != new || (table_changed && new.is_some())
            })
            .cloned()
            .collect();
        for (to, segments) in reroute {
            for prefix in &segments {
                self.queue.remove(*prefix);
            }
            self.install(&to, &segments);
        }
    }

    fn finish_reload(&mut self, config: &Config) {
        let monitored: HashSet<IpNet> = config
            .groups
            .values()
            .flat_map(|g| g.segments.iter().copied())
            .collect();
        for prefix in self.queue.routed() {
            if !monitored.contains(&prefix) {
                self.queue.remove(prefix);
            }
        }
    }
}
