//! `run --dry-run`: the stand-in for the executors with effects (fast path,
//! links, kernel routes, neighbours), which a dry run does not start. It is
//! handed every action and logs those it stands in for. A `LinkDown` it
//! did not carry out is reported finished at once, as the engine waits for
//! that. Probes are still sent, by the probe executor: they change nothing,
//! and without their answers the dry run would see every probed path fail.

use std::collections::VecDeque;

use tracing::{debug, info};

use super::Executor;
use crate::model::{Action, Event, LinkId};

#[derive(Debug, Default)]
pub(super) struct LogOnly {
    released: VecDeque<LinkId>,
}

impl Executor for LogOnly {
    type Event = Event;

    fn execute(&mut self, action: &Action, _requested_by: Option<&str>) {
        if let Action::Probe { .. } = action {
            debug!("action: {action:?}");
            return;
        }
        info!("action (not carried out by the log-only sink): {action:?}");
        if let Action::LinkDown { link } = action {
            self.released.push_back(*link);
        }
    }

    async fn next_event(&mut self) -> Event {
        match self.released.pop_front() {
            Some(link) => Event::LinkReleased { link },
            None => std::future::pending().await,
        }
    }
}
