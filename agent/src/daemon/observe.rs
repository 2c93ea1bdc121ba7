//! What operators see of the engine's decisions besides the log: metrics
//! and `on_change` hooks. The daemon takes [`Before`] ahead of each event
//! and hands it back afterwards; state changes are found by comparing the
//! engine's cheap per-group and per-link accessors, so the engine stays pure.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::dataplane::status::GroupCounters;
use crate::engine::Engine;
use crate::hooks::{Hooks, Transition};
use crate::metrics::{FailureReason, GroupSnapshot, LinkSnapshot, Metrics, Snapshot};
use crate::model::{Event, GroupState, LinkId, LinkState, Timer};
use crate::watcher::WatcherStats;

/// The engine's groups and links as they were before an event.
pub struct Before {
    groups: Vec<Option<(GroupState, Option<LinkId>)>>,
    links: Vec<Option<(LinkState, u32)>>,
    /// What the event was, for the failure reason of a link it failed.
    cause: Cause,
}

#[derive(Clone, Copy)]
enum Cause {
    UpTimeout,
    DriverReport,
    Other,
}

pub struct Observer {
    metrics: Arc<Metrics>,
    hooks: Hooks,
    group_names: Vec<String>,
    group_segments: Vec<String>,
    link_names: Vec<String>,
    link_interfaces: Vec<String>,
    group_since: Vec<Instant>,
    link_up_since: Vec<Option<Instant>>,
    fastpath: Vec<GroupCounters>,
    watcher: Arc<WatcherStats>,
    started: Instant,
}

impl Observer {
    pub fn new(config: &Config, metrics: Arc<Metrics>, watcher: Arc<WatcherStats>) -> Observer {
        let now = Instant::now();
        Observer {
            hooks: Hooks::new(config, metrics.clone()),
            metrics,
            group_names: config.groups.iter().map(|g| g.name.clone()).collect(),
            group_segments: config
                .groups
                .iter()
                .map(|g| {
                    let s: Vec<String> = g.segments.iter().map(ToString::to_string).collect();
                    s.join(" ")
                })
                .collect(),
            link_names: config.links.iter().map(|l| l.name.clone()).collect(),
            link_interfaces: config.links.iter().map(|l| l.interface.clone()).collect(),
            group_since: vec![now; config.groups.len()],
            link_up_since: vec![None; config.links.len()],
            fastpath: Vec::new(),
            watcher,
            started: now,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Takes the engine's states before `event` is handled.
    pub fn before(&self, engine: &Engine, event: &Event) -> Before {
        Before {
            groups: (0..self.group_names.len())
                .map(|g| engine.group_state(g))
                .collect(),
            links: (0..self.link_names.len())
                .map(|l| engine.link_state(l))
                .collect(),
            cause: match event {
                Event::TimerFired(Timer::UpTimeout(_)) => Cause::UpTimeout,
                Event::LinkFailed { .. } => Cause::DriverReport,
                _ => Cause::Other,
            },
        }
    }

    /// Counts what changed since `before`, runs the hooks of groups whose
    /// state changed and publishes a new snapshot if anything did.
    /// `notices`: the engine's log lines for this event.
    pub fn after(&mut self, engine: &Engine, before: &Before, notices: &[&str]) {
        let now = Instant::now();
        let mut changed = false;
        for (g, was) in before.groups.iter().enumerate() {
            let (Some((from, from_link)), Some((to, link))) = (*was, engine.group_state(g)) else {
                continue;
            };
            changed |= from_link != link;
            if from == to {
                continue;
            }
            changed = true;
            let name = &self.group_names[g];
            self.metrics.transition(name, from, to);
            self.group_since[g] = now;
            if self.hooks.wants(g) {
                let prefix = format!("group {name}: ");
                let reason: Vec<&str> = notices
                    .iter()
                    .copied()
                    .filter(|n| n.starts_with(&prefix))
                    .collect();
                self.hooks.changed(
                    g,
                    Transition {
                        group: name.clone(),
                        previous: from,
                        state: to,
                        link: link.map(|l| self.link_names[l].clone()).unwrap_or_default(),
                        interface: link
                            .map(|l| self.link_interfaces[l].clone())
                            .unwrap_or_default(),
                        reason: reason.join("; "),
                        segments: self.group_segments[g].clone(),
                    },
                );
            }
        }
        for (l, was) in before.links.iter().enumerate() {
            let (Some((from, failures_before)), Some((to, failures))) =
                (*was, engine.link_state(l))
            else {
                continue;
            };
            if failures > failures_before {
                let reason = match before.cause {
                    _ if from == LinkState::Up => FailureReason::Dropped,
                    Cause::UpTimeout => FailureReason::UpTimeout,
                    Cause::DriverReport => FailureReason::DriverError,
                    Cause::Other => FailureReason::Other,
                };
                self.metrics.link_failure(&self.link_names[l], reason);
            }
            if from != to {
                changed = true;
                self.link_up_since[l] = (to == LinkState::Up).then_some(now);
            }
        }
        if changed {
            self.publish(engine);
        }
    }

    /// The state of the group called `name`.
    pub fn group_state(&self, engine: &Engine, name: &str) -> Option<GroupState> {
        let g = self.group_names.iter().position(|n| n == name)?;
        engine.group_state(g).map(|(s, _)| s)
    }

    /// A `LinkUp` is being carried out.
    pub fn link_attempt(&self, link: LinkId) {
        if let Some(name) = self.link_names.get(link) {
            self.metrics.link_attempt(name);
        }
    }

    /// New fast-path counters (the daemon's once-a-second refresh).
    pub fn fastpath_counters(&mut self, engine: &Engine, counters: Vec<GroupCounters>) {
        self.fastpath = counters;
        self.publish(engine);
    }

    /// Replaces what scrapes read (call once at start too).
    pub fn publish(&self, engine: &Engine) {
        let groups = self
            .group_names
            .iter()
            .zip(&self.group_since)
            .enumerate()
            .filter_map(|(g, (name, since))| {
                let (state, _) = engine.group_state(g)?;
                Some(GroupSnapshot {
                    name: name.clone(),
                    state,
                    since: *since,
                })
            })
            .collect();
        let links = self
            .link_names
            .iter()
            .zip(&self.link_up_since)
            .enumerate()
            .filter_map(|(l, (name, up_since))| {
                let (state, _) = engine.link_state(l)?;
                Some(LinkSnapshot {
                    name: name.clone(),
                    state,
                    // A link seen up before any change was up from the start.
                    up_since: (state == LinkState::Up).then(|| up_since.unwrap_or(self.started)),
                })
            })
            .collect();
        self.metrics.publish(Snapshot {
            groups,
            links,
            fastpath: self.fastpath.clone(),
            watcher: Some(self.watcher.clone()),
        });
    }
}
