//! The control socket's side of a reload: the `reload` answer, the config
//! part of `status`, and the `routebackup reload` client.

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

/// The config part of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The file the agent was started with (and reloads).
    pub path: String,
    /// When the running config was loaded (start or last successful
    /// reload), RFC 3339 UTC.
    pub loaded: String,
    /// Whether the last reload was refused (the agent runs the config
    /// loaded at `loaded`).
    pub last_reload_failed: bool,
    /// When that failed reload was asked for, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_failed_at: Option<String>,
    /// Its errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_reload_errors: Vec<String>,
}

/// The config line(s) of `routebackup status`.
pub(super) fn render(s: &mut String, c: &ConfigReport) {
    s.push_str(&format!("config {}, loaded {}\n", c.path, c.loaded));
    if c.last_reload_failed {
        s.push_str(&format!(
            "last reload ({}) FAILED; still running the config loaded {}:\n",
            c.last_reload_failed_at.as_deref().unwrap_or("?"),
            c.loaded
        ));
        for e in &c.last_reload_errors {
            s.push_str(&format!("  {e}\n"));
        }
    }
}

/// Asks the agent at `path` to reload its config file (blocking). A reload
/// that waits for nothing takes milliseconds; 30 s covers a slow box.
pub fn request_reload(path: &Path) -> Result<ReloadReport, ClientError> {
    super::request(path, "reload", Duration::from_secs(30))
}
