//! `routebackup run`: wires the watcher, the engine, the timers, the action
//! sink and the control socket together.
//!
//! One task owns the engine. Everything that happens reaches it there:
//! netlink events (watcher thread, over a channel), the action sink's own
//! events (`ActionSink::next_event`, e.g. a driver's `Event::LinkFailed`),
//! timer expiries and control requests. The engine's clock is milliseconds
//! since the daemon started (monotonic). SIGHUP and `routebackup reload`
//! re-read the config file (`reload`).

mod reload;

pub mod lock;
pub mod notify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::config::Config;
use crate::control::{self, ControlError, ControlRequest, StatusReport, WatcherReport};
use crate::engine::Engine;
use crate::kernel::Kernel;
use crate::metrics::Metrics;
use crate::model::{Action, Event, GroupId, GroupState, LinkId, Millis, Notice, Subject, Timer};
pub use crate::sink::{ActionSink, SinkError};
use crate::watcher::{Watcher, WatcherConfig, WatcherStats};

mod observe;
use observe::Observer;

/// Why the daemon could not start, or stopped other than on a signal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::http::MetricsError),
    #[error("cannot install the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the route watcher")]
    Watcher(#[source] crate::watcher::WatcherError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the netlink watcher stopped unexpectedly (see the log above for why)")]
    WatcherStopped,
}

/// One pending instance per `Timer` value; arming again replaces it.
struct Timers {
    pending: HashMap<Timer, (u64, JoinHandle<()>)>,
    next_gen: u64,
    fired: mpsc::UnboundedSender<(Timer, u64)>,
}

impl Timers {
    fn arm(&mut self, timer: Timer, after: std::time::Duration) {
        self.cancel(timer);
        self.next_gen += 1;
        let gen = self.next_gen;
        let tx = self.fired.clone();
        let handle = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send((timer, gen));
        });
        self.pending.insert(timer, (gen, handle));
    }

    fn cancel(&mut self, timer: Timer) {
        if let Some((_, h)) = self.pending.remove(&timer) {
            h.abort();
        }
    }

    /// Whether a fire is the current instance (not a replaced or cancelled one).
    fn take(&mut self, timer: Timer, gen: u64) -> bool {
        match self.pending.get(&timer) {
            Some((g, _)) if *g == gen => {
                self.pending.remove(&timer);
                true
            }
            _ => false,
        }
    }
}

/// The daemon's state, owned by one task.
pub struct Daemon {
    engine: Engine,
    sink: Box<dyn ActionSink>,
    timers: Timers,
    start: Instant,
    started_wall: SystemTime,
    watcher_stats: Arc<WatcherStats>,
    synced_logged: bool,
    /// When the event being handled arrived.
    event_at: Instant,
    /// Per group: the last route event → steering entry written, in µs.
    steer_latency_us: HashMap<GroupId, u64>,
    /// Metrics and on_change hooks.
    observer: Observer,
    /// The config file and the running config (for reloads).
    config: reload::ConfigState,
    watcher: Option<Watcher>,
    /// What the kernel can do (the watcher's config at a reload needs it).
    kernel: Kernel,
    /// systemd's READY/STATUS/WATCHDOG (no-op outside a notify unit).
    notify: notify::Notifier,
}

impl Daemon {
    fn now(&self) -> Millis {
        Millis::try_from(self.start.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    fn handle(&mut self, event: Event) {
        self.event_at = Instant::now();
        let now = self.now();
        let first_sync = event == Event::Synced && !self.synced_logged;
        let adopted = if first_sync {
            self.adopt(now)
        } else {
            Vec::new()
        };
        if first_sync {
            self.synced_logged = true;
            let s = &self.watcher_stats;
            // The dump's own time (the watcher's clock) and the time since
            // start-up began, apart: on a slow machine the kernel probe and
            // loading the programs come first and take most of it.
            info!(
                "initial sync: {} routes seen, {} relevant in {} ms, done {} ms after start \
                 (the kernel probe and the fast path come first)",
                s.initial_routes.load(Ordering::Relaxed),
                s.routes_watched.load(Ordering::Relaxed),
                s.initial_sync_ms.load(Ordering::Relaxed),
                now
            );
        } else {
            debug!("event: {event:?}");
        }
        // Carry out the actions first and log the decisions after: a switchover
        // must not wait for log lines to be written.
        let mut before = self.observer.before(&self.engine, Some(&event));
        // A group still steered by the previous agent was on backup when it
        // stopped: what the first sync finds is compared with that, so a
        // restart on backup is no transition (no hook run, no counted
        // transition), and a primary that came back meanwhile is one from
        // backup, not from the engine's initial primary.
        for &(group, link) in &adopted {
            before.assume(group, GroupState::Backup, Some(link));
        }
        let (notices, actions): (Vec<Action>, Vec<Action>) = self
            .engine
            .handle(now, event)
            .into_iter()
            .partition(|a| matches!(a, Action::Notice(_)));
        let changed = !(actions.is_empty() && notices.is_empty());
        for action in actions {
            self.execute(action);
        }
        let notices: Vec<Notice> = notices
            .into_iter()
            .filter_map(|n| match n {
                Action::Notice(n) => Some(n),
                _ => None,
            })
            .collect();
        self.observer.after(&self.engine, &before, &notices);
        for n in &notices {
            self.notice(n);
        }
        if first_sync {
            self.sink.after_sync();
        }
        let engine = &self.engine;
        self.notify
            .after_event(self.synced_logged, changed, || engine.status());
    }

    /// Offers the steering a previous agent kept (`--keep-fastpath`) to the
    /// engine, before it sees the initial dump as complete.
    /// Offers what the fast path still steers to the engine; returns the
    /// (group, link) pairs offered.
    fn adopt(&mut self, now: Millis) -> Vec<(GroupId, LinkId)> {
        let mut offered = Vec::new();
        for (group, ifindex) in self.sink.adoptable() {
            match self.engine.link_on(ifindex) {
                Some((link, link_name)) => {
                    offered.push((group, link));
                    info!(
                        "fast path still steers group {} to {link_name} (ifindex {ifindex}): offering it for adoption",
                        self.engine.group_name(group).unwrap_or("?"),
                    );
                    for action in self.engine.handle(now, Event::AdoptSteering { group, link }) {
                        self.execute(action);
                    }
                }
                None => info!(
                    "fast path steers group #{group} to ifindex {ifindex}, which is no configured link's interface now; not adopted"
                ),
            }
        }
        offered
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::ArmTimer { timer, after } => {
                debug!("timer {timer:?} armed for {after:?}");
                self.timers.arm(timer, after);
            }
            Action::CancelTimer { timer } => {
                debug!("timer {timer:?} cancelled");
                self.timers.cancel(timer);
            }
            Action::Notice(n) => self.notice(&n),
            Action::LinkUp { link, .. } => {
                debug!("action: {action:?}");
                self.observer.link_attempt(link);
                let group = self.engine.group_using(link).map(str::to_owned);
                self.sink.execute(&action, group.as_deref());
            }
            Action::Steer { group, .. } => {
                self.sink.execute(&action, None);
                let us = u64::try_from(self.event_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.steer_latency_us.insert(group, us);
                self.observer.metrics().steer_latency(us as f64 / 1e6);
                let name = self.engine.group_name(group).unwrap_or("?");
                info!(group = name, "group {name}: steering entries written {us} µs after the event that called for them");
            }
            other => {
                debug!("action: {other:?}");
                self.sink.execute(&other, None);
            }
        }
    }

    /// An engine notice as a log line, with the group or link it is about
    /// (and the group's state) as fields: journald keeps them as GROUP,
    /// LINK and STATE.
    /// Logs an engine notice with its subject as a field (journald's
    /// `GROUP=` and `STATE=`, or `LINK=`).
    fn notice(&self, n: &Notice) {
        match &n.about {
            Subject::Group(group) => {
                let state = self
                    .observer
                    .group_state(&self.engine, group)
                    .map_or("", GroupState::name);
                info!(group = group.as_str(), state, "{n}");
            }
            Subject::Link(link) => info!(link = link.as_str(), "{n}"),
            Subject::Agent => info!("{n}"),
        }
    }

    /// Refreshes the fast path's counters in the metrics snapshot.
    fn refresh_metrics(&mut self) {
        let (counters, kernel) = self
            .sink
            .status()
            .map(|s| (s.groups, s.kernel))
            .unwrap_or_default();
        self.observer
            .fastpath_counters(&self.engine, counters, kernel);
    }

    fn status(&self) -> StatusReport {
        let mut r = StatusReport::from_engine(&self.engine.status(), self.now(), self.started_wall);
        let s = &self.watcher_stats;
        r.watcher = Some(WatcherReport {
            initial_routes: s.initial_routes.load(Ordering::Relaxed),
            initial_sync_ms: s.initial_sync_ms.load(Ordering::Relaxed),
            routes_seen: s.routes_seen.load(Ordering::Relaxed),
            routes_watched: s.routes_watched.load(Ordering::Relaxed),
            overruns: s.overruns.load(Ordering::Relaxed),
            resyncs: s.resyncs.load(Ordering::Relaxed),
            view_divergences: s.view_divergences.load(Ordering::Relaxed),
        });
        r.fastpath = self.sink.status();
        r.config = Some(self.config.report());
        // By name: the status leaves out slots a reload left vacant.
        let groups = &self.config.running.groups;
        for g in &mut r.groups {
            let slot = groups.iter().find(|(_, c)| c.name == g.name);
            g.last_steer_latency_us =
                slot.and_then(|(id, _)| self.steer_latency_us.get(&id).copied());
        }
        r
    }
}

/// Runs the agent until SIGTERM/SIGINT on `kernel` (the probe's answers,
/// features forced off already removed). `make_sink` builds the action sink
/// once the control socket is ours (so a second agent never touches the
/// fast path) and the watcher is subscribed. `config_path`: where `config`
/// was read, read again on SIGHUP and `routebackup reload`.
pub async fn run(
    config: Config,
    config_path: PathBuf,
    kernel: Kernel,
    make_sink: impl FnOnce(&Kernel) -> Result<Box<dyn ActionSink>, SinkError>,
) -> Result<(), DaemonError> {
    let start = Instant::now();
    let started_wall = SystemTime::now();
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(4096);
    let (fired_tx, mut fired_rx) = mpsc::unbounded_channel();
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(16);

    let socket_path: PathBuf = config.agent.control_socket.clone();
    let listener = control::bind(&socket_path)?;
    let _socket_guard = SocketGuard(socket_path.clone());
    let metrics_listener = match &config.metrics {
        Some(m) => Some(crate::metrics::http::bind(m.listen)?),
        None => None,
    };
    let signal = |kind, signal| {
        tokio::signal::unix::signal(kind).map_err(|source| DaemonError::Signal { signal, source })
    };
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = signal(tokio::signal::unix::SignalKind::hangup(), "SIGHUP")?;

    let watcher = Watcher::spawn(WatcherConfig::from_config(&config, &kernel), ev_tx)
        .map_err(DaemonError::Watcher)?;
    let sink = make_sink(&kernel)?;
    let metrics = Arc::new(Metrics::new());
    let mut daemon = Daemon {
        engine: Engine::new(&config),
        sink,
        timers: Timers {
            pending: HashMap::new(),
            next_gen: 0,
            fired: fired_tx,
        },
        start,
        started_wall,
        watcher_stats: watcher.stats.clone(),
        synced_logged: false,
        event_at: Instant::now(),
        steer_latency_us: HashMap::new(),
        observer: Observer::new(&config, metrics.clone(), watcher.stats.clone()),
        config: reload::ConfigState::new(config_path, config.clone()),
        watcher: Some(watcher),
        kernel,
        notify: notify::Notifier::from_env(),
    };
    let mut watchdog = daemon.notify.watchdog_every().map(tokio::time::interval);
    daemon.observer.publish(&daemon.engine);
    let server = tokio::spawn(control::serve(listener, ctl_tx, metrics.clone()));
    let metrics_server = metrics_listener.map(|l| {
        info!(
            "metrics at http://{}/metrics",
            l.local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string())
        );
        tokio::spawn(crate::metrics::http::serve(l, metrics.clone()))
    });
    // The fast path's per-CPU counters are read for the metrics once a second.
    let mut counters_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    counters_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(
        "routebackup {} started: {} groups, {} links, {} segments; control socket {}",
        env!("CARGO_PKG_VERSION"),
        config.groups.values().count(),
        config.links.values().count(),
        config
            .groups
            .values()
            .map(|g| g.segments.len())
            .sum::<usize>(),
        socket_path.display()
    );

    let reason = loop {
        tokio::select! {
            ev = ev_rx.recv() => match ev {
                Some(ev) => daemon.handle(ev),
                None => break "the netlink watcher stopped",
            },
            Some((timer, gen)) = fired_rx.recv() => {
                if daemon.timers.take(timer, gen) {
                    daemon.handle(Event::TimerFired(timer));
                }
            }
            ev = daemon.sink.next_event() => daemon.handle(ev),
            Some(req) = ctl_rx.recv() => match req {
                ControlRequest::Status(reply) => {
                    let _ = reply.send(daemon.status());
                }
                ControlRequest::Reload(reply) => {
                    let _ = reply.send(daemon.reload("routebackup reload"));
                }
            },
            _ = sighup.recv() => {
                daemon.reload("SIGHUP");
            }
            _ = counters_tick.tick() => daemon.refresh_metrics(),
            () = watchdog_tick(watchdog.as_mut()) => daemon.notify.watchdog(),
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    info!("stopping ({reason})");
    daemon.notify.stopping(reason);
    daemon.sink.shutdown().await;
    server.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    drop(ev_rx);
    // The watcher thread notices the closed channel within a second; do not
    // wait for it.
    drop(daemon.watcher.take());
    if reason == "the netlink watcher stopped" {
        return Err(DaemonError::WatcherStopped);
    }
    Ok(())
}

/// The next watchdog ping time; never without a watchdog.
async fn watchdog_tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Removes the control socket when the daemon ends.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
