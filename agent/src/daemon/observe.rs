//! What operators see of the engine's decisions besides the log: metrics
//! and `on_change` hooks. The daemon takes [`Before`] ahead of each event
//! and hands it back afterwards; state changes are found by comparing the
//! engine's cheap per-group and per-link accessors, so the engine stays pure.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::engine::Engine;
use crate::hooks::{Hooks, Transition};
use crate::ids::Slots;
use crate::kernel::Kernel;
use crate::metrics::{FailureReason, GroupSnapshot, LinkSnapshot, Metrics, Snapshot};
use crate::model::{Event, GroupId, GroupState, LinkId, LinkState, Notice, Timer};
use crate::status::GroupCounters;
use crate::watcher::WatcherStats;

/// The engine's groups and links as they were before an event.
pub struct Before {
    groups: Slots<GroupId, (GroupState, Option<LinkId>)>,
    links: Slots<LinkId, (LinkState, u32)>,
    /// What the event was, for the failure reason of a link it failed.
    cause: Cause,
}

impl Before {
    /// Takes `group` as having been in `state` over `link` before the event.
    pub fn assume(&mut self, group: GroupId, state: GroupState, link: Option<LinkId>) {
        if let Some(g) = self.groups.get_mut(group) {
            *g = (state, link);
        }
    }
}

#[derive(Clone, Copy)]
enum Cause {
    UpTimeout,
    DriverReport,
    Other,
}

/// A group as the observer follows it.
struct GroupSeen {
    name: String,
    /// Its segments, space-separated (`ROUTEBACKUP_SEGMENTS`).
    segments: String,
    /// When it entered its current state.
    since: Instant,
}

/// A link as the observer follows it.
struct LinkSeen {
    name: String,
    interface: String,
    /// When it came up, while it is up (None: up before any change seen).
    up_since: Option<Instant>,
}

pub struct Observer {
    metrics: Arc<Metrics>,
    hooks: Hooks,
    groups: Slots<GroupId, GroupSeen>,
    links: Slots<LinkId, LinkSeen>,
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
            groups: Slots::default(),
            links: Slots::default(),
            fastpath: Vec::new(),
            kernel: None,
            watcher,
            started: Instant::now(),
        };
        observer.reconfigure(config);
        observer
    }

    /// Follows a config (at start, and on a reload, laid out on the
    /// engine's ids): names, segments and hooks by slot; the time in state
    /// and up time of groups and links whose slot keeps its name carry over.
    /// `publish` afterwards makes scrapes see it.
    pub fn reconfigure(&mut self, config: &Config) {
        let now = Instant::now();
        self.metrics.declare(
            config.groups.values().map(|g| g.name.as_str()),
            config.links.values().map(|l| l.name.as_str()),
        );
        self.groups = config
            .groups
            .all_ids()
            .map(|g| {
                let gc = config.groups.get(g)?;
                let since = self
                    .groups
                    .get(g)
                    .filter(|old| old.name == gc.name)
                    .map_or(now, |old| old.since);
                let segments: Vec<String> = gc.segments.iter().map(ToString::to_string).collect();
                Some(GroupSeen {
                    name: gc.name.clone(),
                    segments: segments.join(" "),
                    since,
                })
            })
            .collect();
        self.links = config
            .links
            .all_ids()
            .map(|l| {
                let lc = config.links.get(l)?;
                Some(LinkSeen {
                    name: lc.name.clone(),
                    interface: lc.interface.clone(),
                    up_since: self
                        .links
                        .get(l)
                        .filter(|old| old.name == lc.name)
                        .and_then(|old| old.up_since),
                })
            })
            .collect();
        self.hooks.reconfigure(config);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Takes the engine's states before `event` is handled (None: a reload).
    pub fn before(&self, engine: &Engine, event: Option<&Event>) -> Before {
        Before {
            groups: self
                .groups
                .all_ids()
                .map(|g| engine.group_state(g))
                .collect(),
            links: self.links.all_ids().map(|l| engine.link_state(l)).collect(),
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
        for (g, &(from, from_link)) in before.groups.iter() {
            let Some((to, link)) = engine.group_state(g) else {
                continue;
            };
            changed |= from_link != link;
            // (A slot a reload left vacant: nothing to report.)
            let Some(seen) = self.groups.get_mut(g) else {
                continue;
            };
            if from == to {
                continue;
            }
            changed = true;
            self.metrics.transition(&seen.name, from, to);
            seen.since = now;
            let name = &seen.name;
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
                            .and_then(|l| self.links.get(l))
                            .map(|l| l.name.clone())
                            .unwrap_or_default(),
                        interface: link
                            .and_then(|l| self.links.get(l))
                            .map(|l| l.interface.clone())
                            .unwrap_or_default(),
                        reason: reason.join("; "),
                        segments: seen.segments.clone(),
                    },
                );
            }
        }
        for (l, &(from, failures_before)) in before.links.iter() {
            let Some((to, failures)) = engine.link_state(l) else {
                continue;
            };
            let name = self.links.get(l).map(|l| &l.name);
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
                if let Some(seen) = self.links.get_mut(l) {
                    seen.up_since = (to == LinkState::Up).then_some(now);
                }
            }
        }
        if changed {
            self.publish(engine);
        }
    }

    /// The state of the group called `name`.
    pub fn group_state(&self, engine: &Engine, name: &str) -> Option<GroupState> {
        let (g, _) = self.groups.iter().find(|(_, g)| g.name == name)?;
        engine.group_state(g).map(|(s, _)| s)
    }

    /// A `LinkUp` is being carried out.
    pub fn link_attempt(&self, link: LinkId) {
        if let Some(l) = self.links.get(link) {
            self.metrics.link_attempt(&l.name);
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
            .groups
            .iter()
            .filter_map(|(g, seen)| {
                let (state, _) = engine.group_state(g)?;
                Some(GroupSnapshot {
                    name: seen.name.clone(),
                    state,
                    since: seen.since,
                })
            })
            .collect();
        let links = self
            .links
            .iter()
            .filter_map(|(l, seen)| {
                let (state, _) = engine.link_state(l)?;
                Some(LinkSnapshot {
                    name: seen.name.clone(),
                    state,
                    // A link seen up before any change was up from the start.
                    up_since: (state == LinkState::Up)
                        .then(|| seen.up_since.unwrap_or(self.started)),
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
