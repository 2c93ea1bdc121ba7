//! The decision engine: pure, no I/O, no clock reads, no async.
//!
//! `Engine::handle` takes one `model::Event` (with the caller's monotonic time)
//! and returns the `model::Action`s to carry out, in order.

use crate::config::Config;
use crate::model::{Action, EngineStatus, Event, Millis};

/// Dynamic route backup state for every group and link of a config.
pub struct Engine {
    status: EngineStatus,
}

impl Engine {
    pub fn new(_config: &Config) -> Engine {
        Engine {
            status: EngineStatus {
                synced: false,
                groups: Vec::new(),
                links: Vec::new(),
            },
        }
    }

    /// Applies one event at time `now` and returns the actions it calls for.
    pub fn handle(&mut self, _now: Millis, _event: Event) -> Vec<Action> {
        Vec::new()
    }

    /// The current state of every group, segment and link.
    pub fn status(&self) -> EngineStatus {
        self.status.clone()
    }
}
