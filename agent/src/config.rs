//! The TOML configuration: parsing, validation and the normalised form the
//! rest of the agent uses. See README "Configuration" for the file format.
//!
//! The types below are the contract the other modules rely on; parsing
//! produces them only after every check passed.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/routebackup";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/routebackup.sock";
/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub agent: AgentConfig,
    pub fastpath: FastpathConfig,
    pub links: Vec<LinkConfig>,
    pub groups: Vec<GroupConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentConfig {
    pub pin_path: PathBuf,
    pub control_socket: PathBuf,
    /// Routing table ids that hold primary routes (names already resolved).
    pub tables: Vec<u32>,
    #[serde(with = "humantime_serde_compat")]
    pub resync_interval: Duration,
    /// Extra backup-enabled interfaces besides the links' own interfaces.
    pub backup_interfaces: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FastpathConfig {
    /// Ingress interfaces whose traffic is steered.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// Native XDP, falling back to generic (skb) XDP; plus TC.
    Auto,
    /// Native XDP only (fails if the driver lacks it); plus TC.
    Xdp,
    /// Generic XDP; plus TC.
    XdpGeneric,
    /// TC only.
    Tc,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkConfig {
    pub name: String,
    pub interface: String,
    pub driver: DriverConfig,
    /// Next hops on an Ethernet backup (`gateway`, `gateway6`).
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
    /// The link counts as up only once its interface has an address.
    pub require_address: bool,
    #[serde(with = "humantime_serde_compat")]
    pub up_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub retry_interval: Duration,
    /// Install a kernel route per steered segment via this link.
    pub kernel_routes: bool,
    pub route_metric: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "driver", rename_all = "kebab-case")]
pub enum DriverConfig {
    /// Hot standby: already up; only steered to, never taken down.
    AlwaysUp,
    /// An existing interface set administratively up/down.
    Interface,
    /// `up`/`down` argv run without a shell.
    Command { up: Vec<String>, down: Vec<String> },
    /// `pppd call <peer> nodetach ifname <interface> linkname <name>`.
    Pppd { peer: String, pppd_path: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// A route for exactly the segment's prefix.
    Exact,
    /// Any route whose prefix contains the segment (a default route only with
    /// `allow_default`).
    Covering,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupConfig {
    pub name: String,
    pub segments: Vec<IpNet>,
    /// Indices into `Config::links`, in the order they are tried.
    pub links: Vec<usize>,
    pub match_mode: MatchMode,
    pub allow_default: bool,
    #[serde(with = "humantime_serde_compat")]
    pub activate_delay: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub deactivate_delay: Duration,
}

/// A configuration error, already formatted with file, line, column and a hint.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "{}: cannot read the config file: {e}",
                path.display()
            ))
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names the file in errors.
    pub fn parse(_text: &str, origin: &str) -> Result<Config, ConfigError> {
        Err(ConfigError(format!(
            "{origin}: config parsing is not implemented yet"
        )))
    }

    /// The normalised config as TOML (defaults filled in, names resolved), for
    /// `routebackup check`.
    pub fn normalised(&self) -> String {
        String::from("# normalised output is not implemented yet\n")
    }

    /// Every backup-enabled interface name: the links' interfaces plus
    /// `[agent] backup_interfaces`.
    pub fn backup_interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.links.iter().map(|l| l.interface.clone()).collect();
        names.extend(self.agent.backup_interfaces.iter().cloned());
        names.sort();
        names.dedup();
        names
    }
}

/// Serialises durations as humantime strings ("20s") in `check` output.
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
