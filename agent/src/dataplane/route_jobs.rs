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
}

impl RouteQueue {
    /// Spawns the task (inside the tokio runtime).
    pub fn start() -> RouteQueue {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        RouteQueue {
            jobs,
            installed: HashMap::new(),
        }
    }

    fn send(&self, job: RouteJob) {
        // The task only ends with the queue itself.
        let _ = self.jobs.send(job);
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
                self.send(RouteJob::Remove {
                    prefix,
                    metric: old.0,
                    table: old.1,
                });
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
        if let Some((metric, table)) = self.installed.remove(&prefix) {
            self.send(RouteJob::Remove {
                prefix,
                metric,
                table,
            });
        }
    }

    /// Removes the agent's routes (a previous agent's leftovers) that this
    /// one has not installed.
    pub fn sweep_others(&self) {
        let keep = self
            .installed
            .iter()
            .map(|(p, (m, t))| (*p, *m, *t))
            .collect();
        self.send(RouteJob::Sweep { keep });
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
            let prefixes: Vec<IpNet> = self.installed.keys().copied().collect();
            for prefix in prefixes {
                self.remove(prefix);
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
