//! `driver = "always-up"`: a hot standby, already up. It is only steered to
//! and never taken down: `up` and `down` do nothing, and the engine, seeing
//! [`Profile::always_up`], sends neither and waits for its interface.

use super::{Driver, Keys, Problems, Profile, Task};
use crate::links::DriverState;

/// The always-up driver (no settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlwaysUp;

impl Driver for AlwaysUp {
    const NAME: &'static str = "always-up";
    const PROFILE: Profile = Profile {
        always_up: true,
        needs_address: false,
    };

    fn check(_: &Keys<'_>, _: &mut dyn Problems) -> Option<AlwaysUp> {
        Some(AlwaysUp)
    }

    async fn up(&self, task: &mut Task) {
        task.set_state(DriverState::Up);
    }

    async fn down(&self, task: &mut Task) {
        tracing::debug!(link = %task.name, "always-up link: down is a no-op");
    }
}
