//! The control socket's side of a reload: the `reload` answer and the
//! `routebackup reload` client (the config part of `status` is in `status`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ClientError;

/// The answer to `reload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The new config is running (unchanged counts as applied).
    pub ok: bool,
    /// What was applied, or why nothing was.
    pub summary: String,
    /// Every problem found (one per line, as `routebackup check` prints
    /// them); empty when `ok`.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Asks the agent at `path` to reload its config file (blocking). A reload
/// that waits for nothing takes milliseconds; 30 s covers a slow box.
pub fn request_reload(path: &Path) -> Result<ReloadReport, ClientError> {
    super::request(path, "reload", Duration::from_secs(30))
}
