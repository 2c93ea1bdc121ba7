//! The data plane's part of `routebackup status` (`fastpath` in the JSON
//! document): typed on both sides of the control socket, so the daemon
//! serializes and `routebackup status` deserializes the same struct. The
//! data plane converts its fast path's and drivers' state into these.

use std::path::PathBuf;

use routebackup_common::GroupStats;
use serde::{Deserialize, Serialize};

use crate::kernel::Kernel;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// The bpffs directory holding the pinned maps (and kept attachments).
    pub pin_path: PathBuf,
    pub attachments: Vec<AttachmentReport>,
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
    pub driver: DriverReport,
}

/// How XDP ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpReport {
    Native,
    Generic,
    None,
}

/// One interface the programs are attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentReport {
    pub interface: String,
    pub ifindex: u32,
    pub xdp: XdpReport,
    pub tc: bool,
    /// The attachment was kept by a previous agent and adopted.
    pub adopted: bool,
    /// How XDP is attached (`link` or `netlink`); None without XDP, and in
    /// the status of agents from before it was shown.
    #[serde(default)]
    pub xdp_mechanism: Option<Via>,
    /// How TC is attached (`tcx` or `netlink`); None in the status of agents
    /// from before it was shown.
    #[serde(default)]
    pub tc_mechanism: Option<Via>,
}

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// An XDP bpf link (pinned). `link` in the JSON, as before.
    #[serde(rename = "link")]
    BpfLink,
    /// A TCX bpf link (pinned).
    Tcx,
    /// Netlink: IFLA_XDP for XDP, a clsact filter for TC (held by the
    /// device and recorded under `netlink/`, not pinned).
    Netlink,
}

impl Via {
    /// How status and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Via::BpfLink => "link",
            Via::Tcx => "tcx",
            Via::Netlink => "netlink",
        }
    }
}

/// A link driver's own state (the link's real state comes from the engine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum DriverReport {
    /// Nothing running; not brought up (or taken down, or failed).
    Idle,
    /// `up` done: interface set up, `up` command exited 0, or always-up.
    Up,
    /// A supervised process runs (`up` command or pppd).
    Running { pid: u32 },
    /// Taking the link down.
    Stopping,
}

/// A backup XDP leaves to TC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcFallback {
    /// The `[[link]]` steered to it.
    pub link: String,
    pub ifindex: u32,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of an agent from before the mechanisms were shown still
    /// parses (`routebackup status --json` read by a newer binary).
    #[test]
    fn attachment_without_mechanisms_parses() {
        let a: AttachmentReport = serde_json::from_str(
            r#"{"interface":"lan0","ifindex":3,"xdp":"native","tc":true,"adopted":false}"#,
        )
        .unwrap();
        assert_eq!((a.xdp_mechanism, a.tc_mechanism), (None, None));
    }

    /// The JSON keeps the names it had before the variants were renamed.
    #[test]
    fn mechanisms_keep_their_json_names() {
        for v in [Via::BpfLink, Via::Tcx, Via::Netlink] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
        }
        assert_eq!(Via::BpfLink.name(), "link");
    }
}
