//! The TOML configuration: parsing, validation and the normalised form the
//! rest of the agent uses. See README "Configuration" for the file format.
//!
//! The types below are the contract the other modules rely on; parsing
//! produces them only after every check passed.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::ids::{GroupId, LinkId, Slots};

/// A link's driver and its settings: each driver's keys, checks and
/// normalised form live in its module under `links::driver`.
pub use crate::links::driver::DriverConfig;
pub use crate::paths::{DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_PATH, DEFAULT_PPPD_PATH};
/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub agent: AgentConfig,
    pub fastpath: FastpathConfig,
    /// As loaded, every slot is occupied; a reload's slotted config
    /// (`engine::slotted`) may leave some vacant.
    pub links: Slots<LinkId, LinkConfig>,
    pub groups: Slots<GroupId, GroupConfig>,
    /// `[metrics]`: the Prometheus endpoint; None when the table is absent.
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`: where `/metrics` is served over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub pin_path: PathBuf,
    pub control_socket: PathBuf,
    /// Routing table ids that hold primary routes (names already resolved).
    pub tables: Vec<u32>,
    pub resync_interval: Duration,
    /// Extra backup-enabled interfaces besides the links' own interfaces.
    pub backup_interfaces: Vec<String>,
    /// `on_change`: argv run on every group state change (empty: none);
    /// a group's own `on_change` replaces it.
    pub on_change: Vec<String>,
    /// How long a hook may run before it is killed.
    pub hook_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FastpathConfig {
    /// Ingress interfaces whose traffic is steered.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    pub name: String,
    pub interface: String,
    pub driver: DriverConfig,
    /// Next hops on an Ethernet backup (`gateway`, `gateway6`).
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
    /// The link counts as up only once its interface has an address.
    pub require_address: bool,
    pub up_timeout: Duration,
    pub retry_interval: Duration,
    /// Install a kernel route per steered segment via this link.
    pub kernel_routes: bool,
    pub route_metric: u32,
    /// Pre-arm the kernel with a route per segment via this link while the
    /// link is ready and the primary still up (README "Zero-loss switchover").
    /// On by default for always-up links (`Profile::always_up`: ready while
    /// the primary is up), off for dialled ones unless configured.
    pub prearm: bool,
    /// One probe through the link that must answer before it is steered to
    /// (`verify = { target, timeout }`), if any.
    pub verify: Option<VerifyConfig>,
}

/// A link's `verify`: once the link is up, one echo request to `target`
/// out of its interface must be answered within `timeout`, else the attempt
/// fails and the group's next link is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyConfig {
    pub target: std::net::IpAddr,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    /// A route for exactly the segment's prefix.
    Exact,
    /// Any route whose prefix contains the segment (a default route only with
    /// `allow_default`).
    Covering,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub segments: Vec<IpNet>,
    /// Slots of `Config::links`, in the order they are tried.
    pub links: Vec<LinkId>,
    pub match_mode: MatchMode,
    pub allow_default: bool,
    pub activate_delay: Duration,
    pub deactivate_delay: Duration,
    /// The group's own `on_change` argv (replaces `[agent] on_change`).
    pub on_change: Option<Vec<String>>,
    /// Echo probes through the primary path (`probe = { ... }`), if any.
    pub probe: Option<ProbeConfig>,
}

/// A group's `probe`: echo requests to `targets` every `interval`, bound to
/// the interface of the route that holds a segment primary-up. A round
/// succeeds when any target answers within `timeout`; `down_after` failed
/// rounds in a row take the path down, `up_after` good ones bring it back.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    pub targets: Vec<std::net::IpAddr>,
    pub interval: Duration,
    pub timeout: Duration,
    pub down_after: u32,
    pub up_after: u32,
}

mod error;
mod normalise;
mod parse;
mod tables;
#[cfg(test)]
mod tests;

pub use error::{ConfigError, Position, Problem};
pub use parse::{
    DEFAULT_DEACTIVATE_DELAY, DEFAULT_HOOK_TIMEOUT, DEFAULT_PROBE_DOWN_AFTER,
    DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_UP_AFTER, DEFAULT_RESYNC_INTERVAL,
    DEFAULT_RETRY_INTERVAL, DEFAULT_ROUTE_METRIC, DEFAULT_UP_TIMEOUT, DEFAULT_VERIFY_TIMEOUT,
    MAX_IFNAME_LEN,
};
pub use tables::TableNames;

impl crate::links::LinkSpec for LinkConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn interface(&self) -> &str {
        &self.interface
    }

    fn driver(&self) -> &DriverConfig {
        &self.driver
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names the file in errors.
    /// Table names resolve through the system's iproute2 `rt_tables` files.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse::parse(text, origin, &TableNames::system())
    }

    /// Like `parse`, with the table names given (tests, other roots).
    pub fn parse_with_tables(
        text: &str,
        origin: &str,
        tables: &TableNames,
    ) -> Result<Config, ConfigError> {
        parse::parse(text, origin, tables)
    }

    /// The normalised config as TOML (defaults filled in, names resolved), for
    /// `routebackup check`. Table ids carry their names in a comment.
    pub fn normalised(&self) -> String {
        normalise::normalised(self, &TableNames::system())
    }

    /// Every backup-enabled interface name: the links' interfaces plus
    /// `[agent] backup_interfaces`.
    pub fn backup_interfaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.links.values().map(|l| l.interface.clone()).collect();
        names.extend(self.agent.backup_interfaces.iter().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// The `on_change` hook argv of group `g`: its own, else `[agent]`'s;
    /// None when it has none.
    pub fn hook_for(&self, g: GroupId) -> Option<&[String]> {
        let own = self.groups.get(g).and_then(|g| g.on_change.as_deref());
        let argv = own.unwrap_or(&self.agent.on_change);
        (!argv.is_empty()).then_some(argv)
    }
}
