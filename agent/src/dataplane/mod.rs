//! The production `ActionSink`: carries the engine's actions out through
//! one executor per concern, each owning its state and its own stream of
//! background reports:
//!
//! - fast path (`entries`): the segment map entries (`Steer`/`Unsteer`),
//!   with the next-hop MACs of steered Ethernet backups and the TC-only
//!   verdicts of backups that cannot take native XDP redirects
//!   (`xdp_check`, checked every second on its stream);
//! - links (`links`): `LinkUp`/`LinkDown` queued to the link drivers; their
//!   reports come back as `Event::LinkFailed` and `Event::LinkReleased`;
//! - kernel routes (`routes`): a route per steered segment of
//!   `kernel_routes` links, pre-armed routes (`Prearm`/`Disarm`), queued to
//!   a background task (`route_jobs`); no stream;
//! - neighbours (`neighbours::Neighbours`): follows the next hops of the
//!   steered groups; its reports are for the fast path;
//! - probes (`crate::probe::Prober`): echo probes (`Probe`), answered as
//!   `Event::ProbeResult`.
//!
//! `Dataplane` is the one place that routes each action to the executors
//! concerned and merges their streams (`ActionSink::next_event`, awaited by
//! the daemon on the engine's task). Neighbour reports are handed to the
//! fast path there, so next-hop changes are applied ordered with
//! `Steer`/`Unsteer` without locks; only link and probe reports reach the
//! engine. The executors whose work follows the steering (fast path, kernel
//! routes, neighbours) each keep their own copy of it (`steering`).
//!
//! - Start-up: loads and attaches the programs (reusing pinned maps and kept
//!   attachments), reconciles the segment maps with the config (`segments`)
//!   and offers the still-steered groups to the engine for adoption
//!   (`Event::AdoptSteering`).
//! - Reload: each executor prepares its part before the engine's actions
//!   and finishes it after them (new drivers, routes moved to a link's new
//!   settings and new attach points first; then removed links' drivers,
//!   detached interfaces, stale entries and routes).
//! - Stop: by default remove the kernel routes, take the links down, detach
//!   the programs and remove the pins; with `--keep-fastpath` leave all of
//!   it in place for the next agent to adopt.
//! - `run --dry-run` (`Mode::DryRun`): the same composition without the
//!   executors that have effects; a log-only stand-in (`dry_run`) logs
//!   their actions instead, and probes are still sent.

mod dry_run;
mod entries;
pub mod kernel_routes;
mod links;
pub mod neighbours;
mod next_hops;
mod route_jobs;
mod routes;
mod segments;
mod steering;
pub mod xdp_check;

use std::future::Future;
use std::path::PathBuf;

use futures::future::BoxFuture;
use ipnet::IpNet;
use tracing::debug;

use crate::config::Config;
use crate::fastpath::FastpathError;
use crate::kernel::Kernel;
use crate::model::{Action, Event, GroupId};
use crate::probe::Prober;
use crate::sink::{ActionSink, SinkError};
use crate::status::DataplaneStatus;
use dry_run::LogOnly;
use entries::Entries;
use links::Links;
use neighbours::Neighbours;
use routes::Routes;

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot start the fast path")]
    Fastpath(#[source] Box<FastpathError>),
    #[error(
        "cannot read the pinned segment maps under {} (a previous agent's; remove that directory to start with fresh maps)",
        pin_path.display()
    )]
    ReadSegments {
        pin_path: PathBuf,
        #[source]
        source: Box<FastpathError>,
    },
    #[error("cannot update the fast-path entry for {prefix}")]
    WriteSegment {
        prefix: IpNet,
        #[source]
        source: Box<FastpathError>,
    },
}

impl From<DataplaneError> for SinkError {
    fn from(e: DataplaneError) -> SinkError {
        SinkError(Box::new(e))
    }
}

/// One concern of the data plane: carries out the actions of that concern
/// (the others are ignored) and reports its background work on its own
/// stream. Runs on the engine's task: nothing here may block.
trait Executor {
    /// What the stream reports: an engine `Event`, or what another executor
    /// takes in.
    type Event;

    /// `requested_by`: for `LinkUp`, the group that asked for the link.
    fn execute(&mut self, action: &Action, requested_by: Option<&str>);

    /// The next report. Cancel-safe (the composite drops it whenever another
    /// stream comes first); never ready when there is nothing to report.
    fn next_event(&mut self) -> impl Future<Output = Self::Event> + Send {
        std::future::pending()
    }

    /// A reload, before the engine's actions for it (see
    /// `ActionSink::prepare_reload`).
    fn prepare_reload(&mut self, _config: &Config) {}

    /// A reload, after the engine's actions for it.
    fn finish_reload(&mut self, _config: &Config) {}
}

/// An executor that may not run (a dry run starts none with effects; a
/// stopped one is gone): it then takes nothing in and reports nothing.
impl<E: Executor + Send> Executor for Option<E> {
    type Event = E::Event;

    fn execute(&mut self, action: &Action, requested_by: Option<&str>) {
        if let Some(e) = self {
            e.execute(action, requested_by);
        }
    }

    async fn next_event(&mut self) -> E::Event {
        match self {
            Some(e) => e.next_event().await,
            None => std::future::pending().await,
        }
    }

    fn prepare_reload(&mut self, config: &Config) {
        if let Some(e) = self {
            e.prepare_reload(config);
        }
    }

    fn finish_reload(&mut self, config: &Config) {
        if let Some(e) = self {
            e.finish_reload(config);
        }
    }
}

/// The probe executor: echo probes of the primary paths.
impl Executor for Prober {
    type Event = Event;

    fn execute(&mut self, action: &Action, _requested_by: Option<&str>) {
        if let Action::Probe {
            group,
            target,
            ifindex,
            seq,
            timeout,
            ..
        } = action
        {
            self.send(*group, *target, *ifindex, *seq, *timeout);
        }
    }

    fn next_event(&mut self) -> impl Future<Output = Event> + Send {
        self.next_result()
    }
}

/// Whether the actions are carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Carry them out. `keep`: leave everything in place at stop
    /// (`--keep-fastpath`).
    Live { keep: bool },
    /// `run --dry-run`: only log them (probes are still sent).
    DryRun,
}

/// The executors and the routing between them. An executor that is `None`
/// does not run: in a dry run, those with effects; after stop, the ones
/// that were shut down.
pub struct Dataplane {
    fastpath: Option<Entries>,
    links: Option<Links>,
    routes: Option<Routes>,
    neighbours: Option<Neighbours>,
    probes: Prober,
    /// In a dry run, the stand-in for the four above.
    log_only: Option<LogOnly>,
    keep: bool,
}

impl Dataplane {
    /// Opens the fast path and starts the other executors (in a dry run,
    /// only the probes and the log-only stand-in). Must run inside the tokio
    /// runtime.
    pub fn open(config: &Config, mode: Mode, kernel: &Kernel) -> Result<Dataplane, DataplaneError> {
        let Mode::Live { keep } = mode else {
            return Ok(Dataplane {
                fastpath: None,
                links: None,
                routes: None,
                neighbours: None,
                probes: Prober::new(),
                log_only: Some(LogOnly::default()),
                keep: false,
            });
        };
        Ok(Dataplane {
            fastpath: Some(Entries::open(config, kernel)?),
            links: Some(Links::start(config)),
            routes: Some(Routes::start(config)),
            neighbours: Some(Neighbours::start()),
            probes: Prober::new(),
            log_only: None,
            keep,
        })
    }
}

impl ActionSink for Dataplane {
    fn execute(&mut self, action: &Action, requested_by: Option<&str>) {
        self.log_only.execute(action, requested_by);
        match action {
            // The entries first: steering starts and stops with them.
            Action::Steer { .. } | Action::Unsteer { .. } => {
                self.fastpath.execute(action, requested_by);
                self.routes.execute(action, requested_by);
                self.neighbours.execute(action, requested_by);
            }
            Action::Prearm { .. } | Action::Disarm { .. } => {
                self.routes.execute(action, requested_by);
            }
            Action::LinkUp { .. } | Action::LinkDown { .. } => {
                self.links.execute(action, requested_by);
            }
            Action::Probe { .. } => self.probes.execute(action, requested_by),
            other if self.log_only.is_none() => debug!("dataplane ignores {other:?}"),
            _ => {}
        }
    }

    fn next_event(&mut self) -> BoxFuture<'_, Event> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    // Applied here, on the engine's task: ordered with
                    // Steer/Unsteer, to the groups steered at this moment.
                    state = self.neighbours.next_event() => {
                        if let Some(fp) = self.fastpath.as_mut() {
                            fp.next_hop(state);
                        }
                    }
                    // The periodic check of the steered backups ran.
                    () = self.fastpath.next_event() => {}
                    ev = self.probes.next_event() => return ev,
                    ev = self.links.next_event() => return ev,
                    ev = self.log_only.next_event() => return ev,
                }
            }
        })
    }

    fn adoptable(&self) -> Vec<(GroupId, u32)> {
        self.fastpath
            .as_ref()
            .map(Entries::adoptable)
            .unwrap_or_default()
    }

    fn prepare_reload(&mut self, config: &Config) {
        self.links.prepare_reload(config);
        self.routes.prepare_reload(config);
        self.fastpath.prepare_reload(config);
    }

    fn finish_reload(&mut self, config: &Config) {
        self.links.finish_reload(config);
        self.fastpath.finish_reload(config);
        self.routes.finish_reload(config);
    }

    fn after_sync(&mut self) {
        if let Some(r) = self.routes.as_ref() {
            r.after_sync();
        }
    }

    fn status(&self) -> Option<DataplaneStatus> {
        let mut status = self.fastpath.as_ref()?.status();
        if let Some(l) = self.links.as_ref() {
            status.drivers = l.status();
        }
        if let Some(r) = self.routes.as_ref() {
            (status.kernel_routes, status.prearmed) = r.status();
        }
        Some(status)
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let keep = self.keep;
            if let Some(r) = self.routes.as_mut() {
                r.finish(keep).await;
            }
            if let Some(l) = self.links.take() {
                l.shutdown(keep).await;
            }
            if let Some(fp) = self.fastpath.take() {
                fp.close(keep);
            }
        })
    }
}
