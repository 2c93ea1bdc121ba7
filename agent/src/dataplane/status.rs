//! The data plane's part of `routebackup status` (`fastpath` in the JSON
//! document): typed on both sides of the control socket, so the daemon
//! serializes and `routebackup status` deserializes the same struct.

use std::path::PathBuf;

use routebackup_common::GroupStats;
use serde::{Deserialize, Serialize};

pub use super::xdp_check::TcFallback;
use crate::fastpath::Attachment;
use crate::kernel::Kernel;
use crate::links::DriverState;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// The bpffs directory holding the pinned maps (and kept attachments).
    pub pin_path: PathBuf,
    pub attachments: Vec<Attachment>,
    /// Per configured group, in config order.
    pub groups: Vec<GroupCounters>,
    /// Per configured link, in config order.
    pub drivers: Vec<DriverStatus>,
    /// Segments with a kernel route installed by the agent, sorted as text.
    pub kernel_routes: Vec<String>,
    /// Ethernet backups XDP leaves to TC, and why (`xdp_check`).
    #[serde(default)]
    pub tc_fallbacks: Vec<TcFallback>,
    /// Fallbacks to TC after steered packets were not transmitted.
    #[serde(default)]
    pub tc_fallbacks_total: u64,
    /// Segments pre-armed with a kernel route via a backup, sorted as text.
    #[serde(default)]
    pub prearmed: Vec<String>,
    /// What the kernel can do, as probed at start (None from an older agent).
    #[serde(default)]
    pub kernel: Option<Kernel>,
}

/// A group's fast-path counters (summed over the CPUs). The counters sit
/// next to `name` in the JSON, not under a key of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCounters {
    pub name: String,
    #[serde(flatten)]
    pub stats: GroupStats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStatus {
    pub link: String,
    pub driver: DriverState,
}
