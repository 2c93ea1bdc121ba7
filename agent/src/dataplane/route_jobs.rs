//! The kernel routes of `kernel_routes` links, queued: the engine's task
//! must not wait for rtnetlink, so installs and removals go to one
//! background task that does them in order.

use crate::error::Report;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::kernel_routes::KernelRoutes;

/// How long `finish` waits for queued route work at stop.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Kernel route work, done in order on one task.
enum RouteJob {
    Install {
        prefix: IpNet,
        ifindex: u32,
        gateway: Option<IpAddr>,
        metric: u32,
        table: u32,
    },
    Remove {
        prefix: IpNet,
        metric: u32,
        table: u32,
    },
    /// Removes every route the agent installed (any table) that is not in `keep`.
    Sweep { keep: Vec<(IpNet, u32, u32)> },
    /// Answers once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

/// The queue and what it has installed (as far as the engine's task knows).
pub(super) struct RouteQueue {
    jobs: mpsc::UnboundedSender<RouteJob>,
    /// Per segment: (metric, table) of the route queued for install.
    installed: HashMap<IpNet, (u32, u32)>,
    /// Per segment: (metric, table) of its pre-armed route (`Action::Prearm`).
    /// It can be the same kernel route as the steering one (same prefix,
    /// metric and table): such a route goes only once neither wants it.
    armed: HashMap<IpNet, (u32, u32)>,
}

impl RouteQueue {
    /// Spawns the task (inside the tokio runtime).
    pub fn start() -> RouteQueue {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        RouteQueue {
            jobs,
            installed: HashMap::new(),
            armed: HashMap::new(),
        }
    }

    fn send(&self, job: RouteJob) {
        // The task only ends with the queue itself.
        let _ = self.jobs.send(job);
    }

    /// Queues the removal of our route `prefix` at `at` (metric, table),
    /// unless `kept` (the other kind's route for the prefix: steering or
    /// pre-armed) is that same kernel route.
    fn drop_route(&self, prefix: IpNet, at: (u32, u32), kept: Option<&(u32, u32)>) {
        if kept != Some(&at) {
            self.send(RouteJob::Remove {
                prefix,
                metric: at.0,
                table: at.1,
            });
        }
    }

    /// Routes `prefix` via the backup; replaces the segment's route when
    /// its metric or table changed (another link took over).
    pub fn install(
        &mut self,
        prefix: IpNet,
        ifindex: u32,
        gateway: Option<IpAddr>,
        metric: u32,
        table: u32,
    ) {
        if let Some(old) = self.installed.insert(prefix, (metric, table)) {
            if old != (metric, table) {
                self.drop_route(prefix, old, self.armed.get(&prefix));
            }
        }
        self.send(RouteJob::Install {
            prefix,
            ifindex,
            gateway,
            metric,
            table,
        });
    }

    /// Removes the segment's route, if one was installed.
    pub fn remove(&mut self, prefix: IpNet) {
        if let Some(at) = self.installed.remove(&prefix) {
            self.drop_route(prefix, at, self.armed.get(&prefix));
        }
    }

    /// Pre-arms `prefix` via the backup (installs or replaces its route).
    /// A changed metric or table installs the new route before the old one
    /// goes, so the kernel always has one to fall back to.
    pub fn arm(
        &mut self,
        prefix: IpNet,
        ifindex: u32,
        gateway: Option<IpAddr>,
        metric: u32,
        table: u32,
    ) {
        self.send(RouteJob::Install {
            prefix,
            ifindex,
            gateway,
            metric,
            table,
        });
        if let Some(old) = self.armed.insert(prefix, (metric, table)) {
            if old != (metric, table) {
                self.drop_route(prefix, old, self.installed.get(&prefix));
            }
        }
    }

    /// Removes the pre-armed route of `prefix`, if any.
    pub fn disarm(&mut self, prefix: IpNet) {
        if let Some(at) = self.armed.remove(&prefix) {
            self.drop_route(prefix, at, self.installed.get(&prefix));
        }
    }

    /// The pre-armed segments, sorted as text (for `status`).
    pub fn armed(&self) -> Vec<String> {
        let mut routes: Vec<String> = self.armed.keys().map(ToString::to_string).collect();
        routes.sort();
        routes
    }

    /// Removes the agent's routes (a previous agent's leftovers) that this
    /// one has not installed.
    pub fn sweep_others(&self) {
        let keep = self
            .installed
            .iter()
            .chain(&self.armed)
            .map(|(p, (m, t))| (*p, *m, *t))
            .collect();
        self.send(RouteJob::Sweep { keep });
    }

    /// The segments with a route queued for install.
    pub fn routed(&self) -> Vec<IpNet> {
        self.installed.keys().copied().collect()
    }

    /// The segments with a route, sorted as text (for `status`).
    pub fn installed(&self) -> Vec<String> {
        let mut routes: Vec<String> = self.installed.keys().map(ToString::to_string).collect();
        routes.sort();
        routes
    }

    /// At stop: removes the installed routes unless `keep`, then waits (at
    /// most `FLUSH_TIMEOUT`) for the queue to drain.
    pub async fn finish(&mut self, keep: bool) {
        if !keep {
            for prefix in self.routed() {
                self.remove(prefix);
            }
            let prefixes: Vec<IpNet> = self.armed.keys().copied().collect();
            for prefix in prefixes {
                self.disarm(prefix);
            }
        }
        let (done_tx, done_rx) = oneshot::channel();
        self.send(RouteJob::Flush(done_tx));
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, done_rx).await;
    }
}

async fn run(mut jobs: mpsc::UnboundedReceiver<RouteJob>) {
    let routes = match KernelRoutes::new() {
        Ok(r) => Some(r),
        Err(e) => {
            error!(
                "kernel routes unavailable (kernel_routes links will not get routes): {}",
                Report(&e)
            );
            None
        }
    };
    while let Some(job) = jobs.recv().await {
        let Some(routes) = routes.as_ref() else {
            if let RouteJob::Flush(done) = job {
                let _ = done.send(());
            }
            continue;
        };
        match job {
            RouteJob::Install {
                prefix,
                ifindex,
                gateway,
                metric,
                table,
            } => {
                match routes.install(prefix, ifindex, gateway, metric, table).await {
                    Ok(()) => info!("kernel route {prefix} via ifindex {ifindex} metric {metric} table {table} installed"),
                    Err(e) => error!("cannot install the kernel route for {prefix}: {}", Report(&e)),
                }
            }
            RouteJob::Remove {
                prefix,
                metric,
                table,
            } => match routes.remove(prefix, metric, table).await {
                Ok(()) => info!("kernel route {prefix} metric {metric} table {table} removed"),
                Err(e) => error!(
                    "cannot remove the kernel route for {prefix}: {}",
                    Report(&e)
                ),
            },
            RouteJob::Sweep { keep } => match routes.list_ours(None).await {
                Ok(ours) => {
                    for r in ours {
                        if !keep.contains(&(r.prefix, r.metric, r.table)) {
                            match routes.remove(r.prefix, r.metric, r.table).await {
                                Ok(()) => info!(
                                    "removed leftover kernel route {} (table {})",
                                    r.prefix, r.table
                                ),
                                Err(e) => {
                                    warn!(
                                        "cannot remove leftover kernel route {}: {}",
                                        r.prefix,
                                        Report(&e)
                                    );
                                }
                            }
                        }
                    }
                }
                Err(e) => warn!("cannot list the agent's kernel routes: {}", Report(&e)),
            },
            RouteJob::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
