//! `routebackup run`: wires the watcher, the engine, the timers, the action
//! sink and the control socket together.
//!
//! One task owns the engine. Everything that happens reaches it over
//! channels: netlink events (watcher thread), driver reports
//! (`ActionSink` implementations send `Event::LinkFailed` etc. on the
//! `EventSender` they are given), timer expiries and control requests. The
//! engine's clock is milliseconds since the daemon started (monotonic).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::config::Config;
use crate::control::{self, StatusReport, StatusRequest, WatcherReport};
use crate::engine::Engine;
use crate::model::{Action, Event, Millis, Timer};
use crate::watcher::{Watcher, WatcherConfig, WatcherStats};

/// Where drivers and other edges report back to the engine.
pub type EventSender = mpsc::Sender<Event>;

/// Carries out the actions that touch the outside world: `LinkUp`,
/// `LinkDown`, `Steer`, `Unsteer`. (Timers and notices are the daemon's own.)
///
/// `execute` runs on the engine's task: it must not block. Long work (pppd,
/// a dial command) is spawned; its outcome is reported as an `Event` (e.g.
/// `LinkFailed`) on the `EventSender` the sink was built with. The interface
/// coming up is seen by the watcher, not reported by the sink.
pub trait ActionSink: Send {
    fn execute(&mut self, action: &Action);

    /// Extra status for `routebackup status` (the fast path's maps and counters).
    fn status(&self) -> Option<serde_json::Value> {
        None
    }

    /// Called once on SIGTERM/SIGINT before the daemon exits.
    fn shutdown(&mut self) {}
}

/// An `ActionSink` that only logs (the first form of the daemon, and `run`
/// until the fast path and link drivers are plugged in).
#[derive(Debug, Default)]
pub struct LogSink;

impl ActionSink for LogSink {
    fn execute(&mut self, action: &Action) {
        info!("action (not carried out by the log-only sink): {action:?}");
    }
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
}

impl Daemon {
    fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    fn handle(&mut self, event: Event) {
        let now = self.now();
        if event == Event::Synced && !self.synced_logged {
            self.synced_logged = true;
            let s = &self.watcher_stats;
            info!(
                "initial sync: {} routes seen, {} relevant in {} ms",
                s.initial_routes.load(Ordering::Relaxed),
                s.routes_watched.load(Ordering::Relaxed),
                now
            );
            s.initial_sync_ms.store(now, Ordering::Relaxed);
        } else {
            debug!("event: {event:?}");
        }
        for action in self.engine.handle(now, event) {
            self.execute(action);
        }
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
            Action::Notice(text) => info!("{text}"),
            other => {
                debug!("action: {other:?}");
                self.sink.execute(&other);
            }
        }
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
        });
        r.fastpath = self.sink.status();
        r
    }
}

/// Runs the agent until SIGTERM/SIGINT. `make_sink` builds the action sink
/// from the sender its drivers report on.
pub async fn run(
    config: Config,
    make_sink: impl FnOnce(EventSender) -> Box<dyn ActionSink>,
) -> Result<()> {
    let start = Instant::now();
    let started_wall = SystemTime::now();
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(4096);
    let (fired_tx, mut fired_rx) = mpsc::unbounded_channel();
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<StatusRequest>(16);

    let socket_path: PathBuf = config.agent.control_socket.clone();
    let listener = control::bind(&socket_path)?;
    let _socket_guard = SocketGuard(socket_path.clone());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;

    let watcher = Watcher::spawn(WatcherConfig::from_config(&config), ev_tx.clone())
        .context("subscribing to rtnetlink events (needs CAP_NET_ADMIN)")?;
    let sink = make_sink(ev_tx.clone());
    drop(ev_tx);
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
    };
    let server = tokio::spawn(control::serve(listener, ctl_tx));
    info!(
        "routebackup {} started: {} groups, {} links, {} segments; control socket {}",
        env!("CARGO_PKG_VERSION"),
        config.groups.len(),
        config.links.len(),
        config
            .groups
            .iter()
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
            Some(reply) = ctl_rx.recv() => {
                let _ = reply.send(daemon.status());
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    info!("stopping ({reason})");
    daemon.sink.shutdown();
    server.abort();
    drop(ev_rx);
    // The watcher thread notices the closed channel within a second; do not
    // wait for it.
    drop(watcher);
    if reason == "the netlink watcher stopped" {
        anyhow::bail!("the netlink watcher stopped unexpectedly");
    }
    Ok(())
}

/// Removes the control socket when the daemon ends.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
