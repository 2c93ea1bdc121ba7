//! The action sink: what carries out the engine's actions that touch the
//! outside world, as the daemon sees it. A leaf: it names the model, the
//! config and the status document, never the data plane that implements it,
//! so the daemon and the data plane do not depend on each other (main.rs
//! is the one place that wires them).

use futures::future::BoxFuture;

use crate::config::Config;
use crate::model::{Action, Event, GroupId};
use crate::status::DataplaneStatus;

/// Why a sink could not start, whatever the sink: its own typed error is
/// the source, so the whole chain still reaches the log.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SinkError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

/// Carries out the actions that touch the outside world: `LinkUp`,
/// `LinkDown`, `Steer`, `Unsteer`. (Timers and notices are the daemon's own.)
///
/// `execute` and `next_event` run on the engine's task: they must not block.
/// Long work (pppd, a dial command) is spawned; its outcome comes back as an
/// `Event` (e.g. `LinkFailed`) from `next_event`. The interface coming up is
/// seen by the watcher, not reported by the sink.
pub trait ActionSink: Send {
    /// `requested_by`: for `LinkUp`, the group that asked for the link.
    fn execute(&mut self, action: &Action, requested_by: Option<&str>);

    /// At start-up: (group, backup ifindex) pairs the fast path still steers
    /// (kept by a previous agent), offered to the engine for adoption.
    fn adoptable(&self) -> Vec<(GroupId, u32)> {
        Vec::new()
    }

    /// Called once after the engine took in the initial dump.
    fn after_sync(&mut self) {}

    /// A reload (see `reload`): called with the new config, laid out on the
    /// running ids (`engine::slotted`), before the engine's actions for it
    /// are carried out: new links' drivers, new attach points.
    fn prepare_reload(&mut self, _config: &Config) {}

    /// A reload, after the engine's actions for it: entries of removed and
    /// added segments, removed links' drivers, detached interfaces.
    fn finish_reload(&mut self, _config: &Config) {}

    /// The next event for the engine from the sink's background work. The
    /// sink may do its own work on the engine's task while this is awaited
    /// (the fast path applies next-hop changes here, ordered with `Steer` and
    /// `Unsteer`). Must be cancel-safe: the daemon drops it whenever another
    /// event comes first. Never ready when the sink has nothing to report.
    fn next_event(&mut self) -> BoxFuture<'_, Event> {
        Box::pin(std::future::pending())
    }

    /// Extra status for `routebackup status` (the fast path's maps and counters).
    fn status(&self) -> Option<DataplaneStatus> {
        None
    }

    /// Called once on SIGTERM/SIGINT before the daemon exits.
    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
