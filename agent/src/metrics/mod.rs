//! Prometheus metrics: one registry (prometheus-client) rendered the same way
//! for `GET /metrics` (`[metrics] listen`) and `routebackup status --prometheus`.
//!
//! Scrapes never wait for the engine. Counters of things that happen
//! (transitions, link attempts and failures, hook runs, steering latency) are
//! atomics the daemon bumps as it handles events. Everything else is read from
//! a [`Snapshot`] the daemon publishes: after every event that changed a
//! group or link state, and once a second for the fast path's per-CPU
//! counters. A scrape only clones an `Arc` under a mutex held for that clone.

pub mod http;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use routebackup_common::GroupStats;

use crate::kernel::{Kernel, Support};
use crate::model::{GroupState, LinkState};
use crate::status::GroupCounters;
use crate::watcher::WatcherStats;

/// Every link state, in the order the metrics list them.
const LINK_STATES: [LinkState; 5] = [
    LinkState::Down,
    LinkState::Connecting,
    LinkState::Up,
    LinkState::Releasing,
    LinkState::Failed,
];

/// Fails to compile when a link state is added, so `LINK_STATES` gets it too.
const _: fn(LinkState) = |s| match s {
    LinkState::Down
    | LinkState::Connecting
    | LinkState::Up
    | LinkState::Releasing
    | LinkState::Failed => (),
};

/// Why a link attempt or session failed: a small fixed set (metric labels
/// must not carry free text), derived from what the daemon saw happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// `up_timeout` ran out before the interface was ready.
    UpTimeout,
    /// The driver reported the attempt failed (exit code, spawn error).
    DriverError,
    /// The link was up and went away (interface gone or down, process died).
    Dropped,
    /// Anything else the engine counted as a failure.
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] = [
        FailureReason::UpTimeout,
        FailureReason::DriverError,
        FailureReason::Dropped,
        FailureReason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailureReason::UpTimeout => "up_timeout",
            FailureReason::DriverError => "driver_error",
            FailureReason::Dropped => "dropped",
            FailureReason::Other => "other",
        }
    }
}

/// How a hook run ended (`routebackup_hook_runs_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookResult {
    Ok,
    /// Exited non-zero or died by a signal.
    Failed,
    /// Could not be started.
    SpawnError,
    /// Still running after `hook_timeout`: killed.
    Timeout,
}

impl HookResult {
    pub const ALL: [HookResult; 4] = [
        HookResult::Ok,
        HookResult::Failed,
        HookResult::SpawnError,
        HookResult::Timeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Failed => "failed",
            HookResult::SpawnError => "spawn_error",
            HookResult::Timeout => "timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    group: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    link: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    group: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// A group as the snapshot holds it.
#[derive(Clone, Debug)]
pub struct GroupSnapshot {
    pub name: String,
    pub state: GroupState,
    /// When the daemon saw the group enter `state`.
    pub since: Instant,
}

/// A link as the snapshot holds it.
#[derive(Clone, Debug)]
pub struct LinkSnapshot {
    pub name: String,
    pub state: LinkState,
    /// Since when the link is up (None while it is not).
    pub up_since: Option<Instant>,
}

/// What scrapes read: the daemon replaces it whole.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub groups: Vec<GroupSnapshot>,
    pub links: Vec<LinkSnapshot>,
    /// The fast path's per-group counters, summed over the CPUs (empty
    /// without a fast path, e.g. `--dry-run`).
    pub fastpath: Vec<GroupCounters>,
    /// The kernel probe's answers (None without a fast path).
    pub kernel: Option<Kernel>,
    /// The watcher's counters are atomics; they are read at scrape time.
    pub watcher: Option<Arc<WatcherStats>>,
}

/// The agent's metrics. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    link_attempts: Family<LinkLabels, Counter>,
    link_failures: Family<FailureLabels, Counter>,
    steer_latency: Histogram,
    hook_runs: Family<HookLabels, Counter>,
    hooks_dropped: Family<GroupLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("routebackup");
        let transitions = Family::<TransitionLabels, Counter>::default();
        let link_attempts = Family::<LinkLabels, Counter>::default();
        let link_failures = Family::<FailureLabels, Counter>::default();
        // 10 µs .. ~0.33 s: the bench's p99 is ~160 µs, a slow box a few ms.
        let steer_latency = Histogram::new(exponential_buckets(0.000_01, 2.0, 16));
        let hook_runs = Family::<HookLabels, Counter>::default();
        let hooks_dropped = Family::<GroupLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let snapshot = Arc::new(Mutex::new(Arc::new(Snapshot::default())));
        registry.register(
            "group_transitions",
            "Group state changes, by previous and new state",
            transitions.clone(),
        );
        registry.register(
            "link_attempts",
            "Attempts to bring the backup link up",
            link_attempts.clone(),
        );
        registry.register(
            "link_failures",
            "Failed attempts and sessions of the backup link, by reason",
            link_failures.clone(),
        );
        registry.register_with_unit(
            "steer_latency",
            "Time from the event that called for steering to the steering entries written",
            Unit::Seconds,
            steer_latency.clone(),
        );
        registry.register(
            "hook_runs",
            "on_change hook runs, by how they ended (ok, failed, spawn_error, timeout)",
            hook_runs.clone(),
        );
        registry.register(
            "hooks_dropped",
            "Queued on_change hook runs dropped because more than 16 waited",
            hooks_dropped.clone(),
        );
        registry.register(
            "config_reloads",
            "Reloads (SIGHUP, routebackup reload), by result (applied, refused)",
            config_reloads.clone(),
        );
        registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
        Metrics {
            registry,
            transitions,
            link_attempts,
            link_failures,
            steer_latency,
            hook_runs,
            hooks_dropped,
            config_reloads,
            snapshot,
        }
    }

    /// Creates the counters of these groups and links at zero, so that
    /// `increase(...)` sees their first event (a series that appears at 1
    /// has no earlier sample to increase from). Called at start and after a
    /// reload; counters already there keep their value.
    pub fn declare<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a str>,
        links: impl IntoIterator<Item = &'a str>,
    ) {
        for group in groups {
            for from in GroupState::ALL {
                for to in GroupState::ALL.into_iter().filter(|&to| to != from) {
                    let _ = self.transitions.get_or_create(&TransitionLabels {
                        group: group.to_owned(),
                        from: from.name(),
                        to: to.name(),
                    });
                }
            }
            for result in HookResult::ALL {
                let _ = self.hook_runs.get_or_create(&HookLabels {
                    group: group.to_owned(),
                    result: result.label(),
                });
            }
            let _ = self.hooks_dropped.get_or_create(&GroupLabels {
                group: group.to_owned(),
            });
        }
        for link in links {
            let _ = self.link_attempts.get_or_create(&LinkLabels {
                link: link.to_owned(),
            });
            for reason in FailureReason::ALL {
                let _ = self.link_failures.get_or_create(&FailureLabels {
                    link: link.to_owned(),
                    reason: reason.label(),
                });
            }
        }
        for result in ["applied", "refused"] {
            let _ = self.config_reloads.get_or_create(&ResultLabels { result });
        }
    }

    /// Replaces what scrapes read.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }

    /// The snapshot scrapes read now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn transition(&self, group: &str, from: GroupState, to: GroupState) {
        self.transitions
            .get_or_create(&TransitionLabels {
                group: group.to_owned(),
                from: from.name(),
                to: to.name(),
            })
            .inc();
    }

    pub fn link_attempt(&self, link: &str) {
        self.link_attempts
            .get_or_create(&LinkLabels {
                link: link.to_owned(),
            })
            .inc();
    }

    pub fn link_failure(&self, link: &str, reason: FailureReason) {
        self.link_failures
            .get_or_create(&FailureLabels {
                link: link.to_owned(),
                reason: reason.label(),
            })
            .inc();
    }

    pub fn steer_latency(&self, seconds: f64) {
        self.steer_latency.observe(seconds);
    }

    pub fn hook_run(&self, group: &str, result: HookResult) {
        self.hook_runs
            .get_or_create(&HookLabels {
                group: group.to_owned(),
                result: result.label(),
            })
            .inc();
    }

    pub fn hook_dropped(&self, group: &str) {
        self.hooks_dropped
            .get_or_create(&GroupLabels {
                group: group.to_owned(),
            })
            .inc();
    }

    /// A reload was applied (`true`, also an unchanged file) or refused.
    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and the collector's own encoding
        // only fails when its writer does.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// What the snapshot-derived families are: (name, help, unit) + the value.
type WatcherFamily = (
    &'static str,
    &'static str,
    MetricType,
    fn(&WatcherStats) -> f64,
);

/// The watcher's families. Adding one is one line here.
const WATCHER_FAMILIES: &[WatcherFamily] = &[
    (
        "watcher_routes_seen",
        "Route messages looked at (dumps and events)",
        MetricType::Counter,
        |s| s.routes_seen.load(Relaxed) as f64,
    ),
    (
        "watcher_routes_watched",
        "Routes currently relevant to a monitored segment",
        MetricType::Gauge,
        |s| s.routes_watched.load(Relaxed) as f64,
    ),
    (
        "watcher_overruns",
        "Netlink socket overruns (each followed by a full re-dump)",
        MetricType::Counter,
        |s| s.overruns.load(Relaxed) as f64,
    ),
    (
        "watcher_resyncs",
        "Full re-dumps of the kernel's tables",
        MetricType::Counter,
        |s| s.resyncs.load(Relaxed) as f64,
    ),
    (
        "watcher_view_divergences",
        "Differences between the route view and the kernel found by a periodic re-dump (a bug if not 0)",
        MetricType::Counter,
        |s| s.view_divergences.load(Relaxed) as f64,
    ),
    (
        "watcher_initial_sync_seconds",
        "Agent start to the initial dump complete",
        MetricType::Gauge,
        |s| s.initial_sync_ms.load(Relaxed) as f64 / 1000.0,
    ),
];

/// The fast path's per-group counters (per-CPU values summed). Adding one
/// is one line here.
type FastpathFamily = (&'static str, &'static str, fn(&GroupStats) -> u64);

const FASTPATH_FAMILIES: &[FastpathFamily] = &[
    (
        "fastpath_steered_packets",
        "Packets handed to the backup link by a redirect (not confirmed deliveries: later drops show in the backup interface's counters)",
        |s| s.steered_packets,
    ),
    (
        "fastpath_steered_bytes",
        "Bytes handed to the backup link by a redirect (not confirmed deliveries)",
        |s| s.steered_bytes,
    ),
    (
        "fastpath_passed_packets",
        "Packets to monitored segments left to the kernel's route",
        |s| s.passed_packets,
    ),
    (
        "fastpath_passed_bytes",
        "Bytes to monitored segments left to the kernel's route",
        |s| s.passed_bytes,
    ),
    (
        "fastpath_redirect_failures",
        "Steered packets whose redirect failed",
        |s| s.redirect_failures,
    ),
    (
        "fastpath_deferred_packets",
        "Packets XDP handed to the TC program",
        |s| s.deferred_packets,
    ),
];

/// Encodes the snapshot's families at scrape time.
#[derive(Debug)]
struct SnapshotCollector(Arc<Mutex<Arc<Snapshot>>>);

impl SnapshotCollector {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One family whose samples each carry a label set and a value.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let kind = first.metric_type();
    let mut m = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot();
        let build = [("version", env!("CARGO_PKG_VERSION"))];
        family(
            &mut encoder,
            "build_info",
            "Always 1; the version is a label",
            None,
            [(build, ConstGauge::new(1_i64))],
        )?;
        family(
            &mut encoder,
            "group_state",
            "1 for the group's current state, 0 for the others",
            None,
            snap.groups.iter().flat_map(|g| {
                GroupState::ALL.into_iter().map(|st| {
                    (
                        [("group", g.name.as_str()), ("state", st.name())],
                        ConstGauge::new(i64::from(g.state == st)),
                    )
                })
            }),
        )?;
        family(
            &mut encoder,
            "group_state_duration",
            "Time the group has been in its current state",
            Some(&Unit::Seconds),
            snap.groups.iter().map(|g| {
                (
                    [("group", g.name.as_str())],
                    ConstGauge::new(g.since.elapsed().as_secs_f64()),
                )
            }),
        )?;
        family(
            &mut encoder,
            "link_state",
            "1 for the link's current state, 0 for the others",
            None,
            snap.links.iter().flat_map(|l| {
                LINK_STATES.into_iter().map(|st| {
                    (
                        [("link", l.name.as_str()), ("state", st.name())],
                        ConstGauge::new(i64::from(l.state == st)),
                    )
                })
            }),
        )?;
        family(
            &mut encoder,
            "link_up_duration",
            "Time the link has been up (0 while it is not)",
            Some(&Unit::Seconds),
            snap.links.iter().map(|l| {
                let up = l.up_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
                ([("link", l.name.as_str())], ConstGauge::new(up))
            }),
        )?;
        for (name, help, read) in FASTPATH_FAMILIES {
            family(
                &mut encoder,
                name,
                help,
                None,
                snap.fastpath.iter().map(|g| {
                    (
                        [("group", g.name.as_str())],
                        ConstCounter::new(read(&g.stats)),
                    )
                }),
            )?;
        }
        family(
            &mut encoder,
            "kernel_feature",
            "1 for what the kernel probe found for a feature the agent relies on \
             (state yes, no, forced off, unknown), 0 for the other states; \
             `routebackup kernel` says what each absence costs",
            None,
            snap.kernel
                .iter()
                .flat_map(|k| &k.capabilities)
                .flat_map(|c| {
                    ["yes", "no", "forced", "unknown"]
                        .into_iter()
                        .map(move |st| {
                            let now = match c.support {
                                Support::Yes => "yes",
                                Support::No { .. } => "no",
                                Support::Forced => "forced",
                                Support::Unknown { .. } => "unknown",
                            };
                            (
                                [("feature", c.feature.name()), ("state", st)],
                                ConstGauge::new(i64::from(now == st)),
                            )
                        })
                }),
        )?;
        if let Some(w) = &snap.watcher {
            for (name, help, kind, read) in WATCHER_FAMILIES {
                let v = read(w);
                let no_labels: [(&str, &str); 0] = [];
                match kind {
                    MetricType::Counter => {
                        family(
                            &mut encoder,
                            name,
                            help,
                            None,
                            [(no_labels, ConstCounter::new(v))],
                        )?;
                    }
                    _ => family(
                        &mut encoder,
                        name,
                        help,
                        None,
                        [(no_labels, ConstGauge::new(v))],
                    )?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
