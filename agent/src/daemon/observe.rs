//! What operators see of the engine's decisions besides the log: metrics
//! and `on_change` hooks. The daemon takes [`Before`] ahead of each event
//! and hands it back afterwards; state changes are found by comparing the
//! engine's cheap per-group and per-link accessors, so the engine stays pure.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::engine::Engine;
use crate::hooks::{Hooks, Transition};
use crate::kernel::Kernel;
use crate::metrics::{FailureReason, GroupSnapshot, LinkSnapshot, Metrics, Snapshot};
use crate::model::{Event, GroupState, LinkId, LinkState, Notice, Timer};
use crate::status::GroupCounters;
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

/// Each group's segments, space-separated (`ROUTEBACKUP_SEGMENTS`).
fn segment_lists(config: &Config) -> Vec<String> {
    config
        .groups
        .iter()
        .map(|g| {
            let s: Vec<String> = g.segments.iter().map(ToString::to_string).collect();
            s.join(" ")
        })
        .collect()
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
    /// What the kernel can do (None without a fast path, e.g. `--dry-run`).
    kernel: Option<Kernel>,
    watcher: Arc<WatcherStats>,
    started: Instant,
}

impl Observer {
    pub fn new(config: &Config, metrics: Arc<Metrics>, watcher: Arc<WatcherStats>) -> Observer {
        let mut observer = Observer {
            hooks: Hooks::new(config, metrics.clone()),
            metrics,
            group_names: Vec::new(),
            group_segments: Vec::new(),
            link_names: Vec::new(),
            link_interfaces: Vec::new(),
            group_since: Vec::new(),
            link_up_since: Vec::new(),
            fastpath: Vec::new(),
            kernel: None,
            watcher,
            started: Instant::now(),
        };
        observer.reconfigure(config);
        observer
    }

    /// Follows a config (at start, and on a reload, laid out on the
    /// engine's ids): names, segments and hooks by index; the time in state
    /// and up time of groups and links whose slot keeps its name carry over.
    /// `publish` afterwards makes scrapes see it.
    pub fn reconfigure(&mut self, config: &Config) {
        let now = Instant::now();
        let carried = |old_names: &[String], name: &str, i: usize| {
            old_names.get(i).is_some_and(|n| n == name)
        };
        self.group_since = config
            .groups
            .iter()
            .enumerate()
            .map(|(g, gc)| match self.group_since.get(g) {
                Some(since) if carried(&self.group_names, &gc.name, g) => *since,
                _ => now,
            })
            .collect();
        self.link_up_since = config
            .links
            .iter()
            .enumerate()
            .map(|(l, lc)| {
                if carried(&self.link_names, &lc.name, l) {
                    self.link_up_since.get(l).copied().flatten()
                } else {
                    None
                }
            })
            .collect();
        self.group_names = config.groups.iter().map(|g| g.name.clone()).collect();
        self.group_segments = segment_lists(config);
        self.link_names = config.links.iter().map(|l| l.name.clone()).collect();
        self.link_interfaces = config.links.iter().map(|l| l.interface.clone()).collect();
        self.hooks.reconfigure(config);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Takes the engine's states before `event` is handled (None: a reload).
    pub fn before(&self, engine: &Engine, event: Option<&Event>) -> Before {
        Before {
            groups: (0..self.group_names.len())
                .map(|g| engine.group_state(g))
                .collect(),
            links: (0..self.link_names.len())
                .map(|l| engine.link_state(l))
                .collect(),
            cause: match event {
                Some(Event::TimerFired(Timer::UpTimeout(_))) => Cause::UpTimeout,
                Some(Event::LinkFailed { .. }) => Cause::DriverReport,
                _ => Cause::Other,
            },
        }
    }

    /// Counts what changed since `before`, runs the hooks of groups whose
    /// state changed and publishes a new snapshot if anything did.
    /// `notices`: the engine's log lines for this event.
    pub fn after(&mut self, engine: &Engine, before: &Before, notices: &[Notice]) {
        let now = Instant::now();
        let mut changed = false;
        for (g, was) in before.groups.iter().enumerate() {
            let (Some((from, from_link)), Some((to, link))) = (*was, engine.group_state(g)) else {
                continue;
            };
            changed |= from_link != link;
            // (A slot a reload left vacant has no name: nothing to report.)
            let Some(name) = self.group_names.get(g).filter(|n| !n.is_empty()) else {
                continue;
            };
            if from == to {
                continue;
            }
            changed = true;
            self.metrics.transition(name, from, to);
            if let Some(since) = self.group_since.get_mut(g) {
                *since = now;
            }
            if self.hooks.wants(g) {
                let reason: Vec<String> = notices
                    .iter()
                    .filter(|n| n.group_name() == Some(name.as_str()))
                    .map(ToString::to_string)
                    .collect();
                self.hooks.changed(
                    g,
                    Transition {
                        group: name.clone(),
                        previous: from,
                        state: to,
                        link: link
                            .and_then(|l| self.link_names.get(l).cloned())
                            .unwrap_or_default(),
                        interface: link
                            .and_then(|l| self.link_interfaces.get(l).cloned())
                            .unwrap_or_default(),
                        reason: reason.join("; "),
                        segments: self.group_segments.get(g).cloned().unwrap_or_default(),
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
            let name = self.link_names.get(l).filter(|n| !n.is_empty());
            if let Some(name) = name.filter(|_| failures > failures_before) {
                let reason = match before.cause {
                    _ if from == LinkState::Up => FailureReason::Dropped,
                    Cause::UpTimeout => FailureReason::UpTimeout,
                    Cause::DriverReport => FailureReason::DriverError,
                    Cause::Other => FailureReason::Other,
                };
                self.metrics.link_failure(name, reason);
            }
            if from != to {
                changed = true;
                if let Some(since) = self.link_up_since.get_mut(l) {
                    *since = (to == LinkState::Up).then_some(now);
                }
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
    pub fn fastpath_counters(
        &mut self,
        engine: &Engine,
        counters: Vec<GroupCounters>,
        kernel: Option<Kernel>,
    ) {
        self.fastpath = counters;
        self.kernel = kernel;
        self.publish(engine);
    }

    /// Replaces what scrapes read (call once at start too).
    pub fn publish(&self, engine: &Engine) {
        let groups = self
            .group_names
            .iter()
            .zip(&self.group_since)
            .enumerate()
            .filter(|(_, (name, _))| !name.is_empty())
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
            .filter(|(_, (name, _))| !name.is_empty())
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
            kernel: self.kernel.clone(),
            watcher: Some(self.watcher.clone()),
        });
    }
}
