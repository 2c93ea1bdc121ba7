//! The vocabulary shared by the watcher, the engine, the link drivers and the
//! daemon: what the kernel told us (routes, next hops, links, addresses), what
//! the drivers and timers report, and the actions the engine asks for.
//!
//! Everything here is plain data: no I/O, no clocks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// rtm_protocol of the routes the agent installs (`kernel_routes`,
/// pre-armed routes): `ip route` shows `proto 252`.
pub const RTPROT_ROUTEBACKUP: u8 = 252;

pub use crate::ids::{GroupId, LinkId};
/// Milliseconds on a monotonic clock, supplied by the caller of the engine.
pub type Millis = u64;

/// The kernel's identity of a route: (table, destination, priority, tos) and,
/// where the kernel keeps several routes ("aliases") under those, which one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Routing table id (RTA_TABLE, 254 = main).
    pub table: u32,
    pub prefix: IpNet,
    /// RTA_PRIORITY (the metric).
    pub metric: u32,
    pub tos: u8,
    pub alias: RouteAlias,
}

/// Which of the routes sharing (table, prefix, metric, tos) a route is.
///
/// IPv4 keeps a list of aliases per (table, prefix, tos, priority)
/// (`ip route append blackhole P` beside a unicast `P`); two aliases differ
/// in their type or their `fib_info` (protocol, scope, preferred source, next
/// hops): fib_table_insert refuses an alias with the same type and
/// `fib_info` (`fa_match`). IPv6 keeps one route per next hop at a metric;
/// those with a gateway are siblings of one multipath route (fib6_add_rt2node,
/// rt6_qualify_for_ecmp), the others are told apart by their next hop
/// (rt6_duplicate_nexthop: device, gateway, nexthop object) and type (a
/// replace can put a blackhole beside a prohibit route, both via `lo`).
/// Not mirrored: two IPv6 routes identical in all of these, which only a
/// replace of another route by a copy of an existing one can create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteAlias {
    /// The IPv6 multipath route of the gateway next hops at this metric. Also
    /// the key of routes built by hand (tests), which have no alias.
    #[default]
    Ipv6Ecmp,
    /// An IPv6 route without a gateway, of another type, or through a
    /// nexthop object.
    Ipv6 {
        /// rtm_type.
        rtype: u8,
        nh_id: Option<u32>,
        ifindex: Option<u32>,
        gateway: Option<IpAddr>,
    },
    /// An IPv4 alias.
    Ipv4 {
        /// rtm_type.
        rtype: u8,
        protocol: u8,
        scope: u8,
        /// RTA_PREFSRC: the kernel flushes the route when this address goes
        /// away (fib_del_ifaddr → fib_sync_down_addr).
        prefsrc: Option<Ipv4Addr>,
        nh_id: Option<u32>,
        /// (outgoing interface, gateway) of each next hop, in the kernel's order.
        hops: Vec<(Option<u32>, Option<IpAddr>)>,
    },
}

/// rtm_type of a route. Only `Unicast` routes can make a segment primary-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
    /// local, broadcast, multicast, throw, nat, ...: never a primary route.
    Other(u8),
}

/// RTNH_F_DEAD: the next hop's device is down.
pub const RTNH_F_DEAD: u32 = 1;
/// RTNH_F_LINKDOWN: carrier down on the next hop's device.
pub const RTNH_F_LINKDOWN: u32 = 16;

/// One next hop of a route (a multipath route has several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Outgoing interface (RTA_OIF / rtnh_ifindex).
    pub ifindex: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// RTNH_F_* flags; DEAD or LINKDOWN next hops do not count.
    pub flags: u32,
}

/// A route as the watcher saw it (already filtered to watched tables and to
/// prefixes that can match a monitored segment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub key: RouteKey,
    /// rtm_protocol (2 kernel, 3 boot, 4 static, 186 bgp, 188 ospf, 187 isis, 189 rip, ...).
    pub protocol: u8,
    pub kind: RouteKind,
    /// Inline next hops (RTA_OIF/RTA_GATEWAY or RTA_MULTIPATH). Empty when `nh_id` is set.
    pub nexthops: Vec<NextHop>,
    /// RTA_NH_ID: the route points to a nexthop object (FRR 8+ does this).
    pub nh_id: Option<u32>,
}

/// A nexthop object (RTM_NEWNEXTHOP): either a single next hop or a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexthopObject {
    pub id: u32,
    /// NHA_OIF.
    pub ifindex: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// NHA_BLACKHOLE.
    pub blackhole: bool,
    /// NHA_GROUP member ids (empty for a single next hop).
    pub group: Vec<u32>,
    /// RTNH_F_* flags of the object.
    pub flags: u32,
}

/// Operational state of an interface (IFLA_OPERSTATE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    Up,
    /// ppp and tun report UNKNOWN when they work; it counts as up.
    Unknown,
    Down,
    Other,
}

/// An interface as the watcher saw it (RTM_NEWLINK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub ifindex: u32,
    pub name: String,
    /// IFF_UP.
    pub admin_up: bool,
    pub oper: OperState,
    /// No Ethernet header (ARPHRD_PPP, ARPHRD_NONE for tun, ...): XDP cannot
    /// redirect to it, TC redirects without a MAC header.
    pub l3: bool,
}

/// An address on an interface (RTM_NEWADDR).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddressInfo {
    pub ifindex: u32,
    /// IFA_LOCAL (or IFA_ADDRESS when there is no IFA_LOCAL) with its prefix length.
    pub local: IpNet,
    /// IFA_ADDRESS when it differs from IFA_LOCAL: the peer of a point-to-point link.
    pub peer: Option<IpAddr>,
}

/// Timers the engine arms through `Action::ArmTimer`. The runtime keeps at most
/// one pending instance of each value (arming again replaces it) and sends
/// `Event::TimerFired` when it expires. The engine ignores fires that no longer
/// fit its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The group's `activate_delay` ran out.
    Activate(GroupId),
    /// The group's `deactivate_delay` (hold) ran out.
    Deactivate(GroupId),
    /// The link's `up_timeout` for the current attempt ran out.
    UpTimeout(LinkId),
    /// The group may retry bringing up a link (backoff after failures).
    Retry(GroupId),
    /// The group's next probe round is due (`probe.interval`).
    ProbeRound(GroupId),
    /// The link's verification probe (`verify.timeout`) got no answer in time.
    Verify(LinkId),
}

/// Everything that can happen to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    RouteUpsert(Route),
    RouteDelete(RouteKey),
    NexthopUpsert(NexthopObject),
    NexthopDelete(u32),
    InterfaceUpsert(InterfaceInfo),
    InterfaceDelete(u32),
    AddressAdd(AddressInfo),
    AddressDelete(AddressInfo),
    /// The initial dump (routes, nexthops, links, addresses) is complete. Before
    /// this the engine only records state; it never acts on a partial picture.
    Synced,
    TimerFired(Timer),
    /// The driver of `link` reports that an attempt or session is over: `up`
    /// exited non-zero, could not be started, or the supervised process
    /// (pppd, a long-running `up`) exited. `attempt` is the id of the
    /// `Action::LinkUp` that started it: the engine ignores reports of an
    /// earlier attempt than the link's current one.
    LinkFailed {
        link: LinkId,
        attempt: u64,
        error: String,
    },
    /// The driver finished one `Action::LinkDown` of `link` (its `down` ran,
    /// its process was stopped), whatever the outcome. One per `LinkDown`.
    LinkReleased {
        link: LinkId,
    },
    /// At start-up, before `Synced`: the pinned fast-path map already steers
    /// this group to this link (an agent restart with `--keep-fastpath`). If the
    /// group is still primary-lost and the link still up after `Synced`, the
    /// engine adopts it: state `backup`, no new dial, no flap.
    AdoptSteering {
        group: GroupId,
        link: LinkId,
    },
    /// The outcome of one `Action::Probe` (same group, ifindex, target and
    /// seq): `ok` when the echo reply came within the timeout.
    ProbeResult {
        group: GroupId,
        ifindex: u32,
        target: IpAddr,
        seq: u64,
        ok: bool,
    },
}

/// Where a steered group's traffic goes: the backup link and what the fast
/// path needs to forward over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerTarget {
    pub link: LinkId,
    pub ifindex: u32,
    /// The interface has no MAC header (ppp, tun).
    pub l3: bool,
    /// Next hops for neighbour resolution on an Ethernet backup.
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
}

/// What the engine asks the edges to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start bringing the link up (run its driver's "up"). The engine then
    /// waits for the interface to be ready (netlink) or for `LinkFailed`
    /// carrying this `attempt` id (unique per engine, increasing).
    LinkUp {
        link: LinkId,
        attempt: u64,
    },
    /// Take the link down (driver "down", stop the supervised process); the
    /// driver answers with `Event::LinkReleased` when it is done.
    LinkDown {
        link: LinkId,
    },
    /// Redirect traffic to these segments to the link's interface.
    Steer {
        group: GroupId,
        target: SteerTarget,
        segments: Vec<IpNet>,
    },
    /// Stop redirecting these segments (they follow the kernel's routes again).
    Unsteer {
        group: GroupId,
        segments: Vec<IpNet>,
    },
    /// Pre-arm the kernel (see the README, "Zero-loss switchover"):
    /// install, or replace, one route per segment via the target's interface
    /// (its gateway of the segment's family on an Ethernet backup) with the
    /// given metric, worse than every other route to that prefix the engine
    /// knows. The kernel uses it only once the primary routes are gone, from
    /// the instant they go, like a floating static route.
    Prearm {
        group: GroupId,
        target: SteerTarget,
        routes: Vec<(IpNet, u32)>,
    },
    /// Remove the pre-armed routes of these segments.
    Disarm {
        group: GroupId,
        segments: Vec<IpNet>,
    },
    ArmTimer {
        timer: Timer,
        after: Duration,
    },
    CancelTimer {
        timer: Timer,
    },
    /// Send one echo request to `target` out of interface `ifindex` (never
    /// another one: the primary path is what is probed) and answer with
    /// `Event::ProbeResult` carrying the same group, ifindex, target and
    /// seq: `ok` when the reply came within `timeout`, else not ok.
    /// `gateway` is the next hop of the route being probed, for log lines:
    /// the kernel picks the next hop among the routes through `ifindex`.
    Probe {
        group: GroupId,
        target: IpAddr,
        ifindex: u32,
        gateway: Option<IpAddr>,
        seq: u64,
        timeout: Duration,
    },
    /// A decision worth a log line, saying what and why, e.g.
    /// "group hq: primary lost (0 of 2 segments have a primary route); bringing up link lte".
    Notice(Notice),
}

/// What a notice is about. The daemon gives journald the name as a field
/// (`GROUP=`, `LINK=`) and hooks the group's notices as the reason of a
/// transition, without reading it back out of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Group(String),
    Link(String),
    /// The agent itself (no group or link of that name, e.g. a report about
    /// a slot that no longer exists).
    Agent,
}

/// A log line of the engine: its subject and what happened and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub about: Subject,
    pub text: String,
}

impl Notice {
    pub fn group(name: impl AsRef<str>, text: impl Into<String>) -> Notice {
        Notice {
            about: Subject::Group(name.as_ref().to_string()),
            text: text.into(),
        }
    }

    pub fn link(name: impl AsRef<str>, text: impl Into<String>) -> Notice {
        Notice {
            about: Subject::Link(name.as_ref().to_string()),
            text: text.into(),
        }
    }

    pub fn agent(text: impl Into<String>) -> Notice {
        Notice {
            about: Subject::Agent,
            text: text.into(),
        }
    }

    /// The group it is about, if any.
    pub fn group_name(&self) -> Option<&str> {
        match &self.about {
            Subject::Group(name) => Some(name),
            _ => None,
        }
    }
}

/// "group hq: primary lost ...", "link lte: ...", or the bare text.
impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.about {
            Subject::Group(name) => write!(f, "group {name}: {}", self.text),
            Subject::Link(name) => write!(f, "link {name}: {}", self.text),
            Subject::Agent => f.write_str(&self.text),
        }
    }
}

/// A group's state (see the README's state diagram). Its lowercase name is
/// what `status` shows (serde and `Display` agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupState {
    /// At least one segment has a primary route.
    Primary,
    /// Primary lost; waiting out `activate_delay` before trying a link.
    Pending,
    /// Primary lost; a link is being brought up.
    Activating,
    /// A backup link is up and the group's traffic is steered to it.
    Backup,
    /// Primary back, steering stopped, link kept up for `deactivate_delay`.
    Holding,
    /// Primary lost and every link failed; retrying after a backoff.
    Failed,
}

impl GroupState {
    /// Every state, in the order metrics list them.
    pub const ALL: [GroupState; 6] = [
        GroupState::Primary,
        GroupState::Pending,
        GroupState::Activating,
        GroupState::Backup,
        GroupState::Holding,
        GroupState::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupState::Primary => "primary",
            GroupState::Pending => "pending",
            GroupState::Activating => "activating",
            GroupState::Backup => "backup",
            GroupState::Holding => "holding",
            GroupState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// A backup link's state (lowercase in `status`, like `GroupState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Down,
    Connecting,
    Up,
    /// Taken down by the engine, and its driver's `down` has not finished:
    /// no group can use it until it has.
    Releasing,
    Failed,
}

impl LinkState {
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Down => "down",
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Releasing => "releasing",
            LinkState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The route that holds a segment primary-up (`status` shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingRoute {
    pub prefix: IpNet,
    /// The next hop's gateway, if it has one.
    pub via: Option<IpAddr>,
    /// The outgoing interface (its name, or "ifindex N" when unknown).
    pub dev: String,
    /// rtm_protocol by name ("bgp", "static", "proto 99").
    pub proto: String,
    pub table: u32,
    pub metric: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentStatus {
    pub prefix: IpNet,
    pub primary_up: bool,
    pub steered: bool,
    /// The route that makes the segment primary-up (`primary_up` only).
    pub held_by: Option<HoldingRoute>,
    /// Why no route does, e.g. "blackhole route 10.0.0.0/25 (table 254)"
    /// (not `primary_up` only).
    pub why_not: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub state: GroupState,
    pub active_link: Option<String>,
    /// When the group entered `state` (the engine's `Millis`).
    pub since_ms: Millis,
    pub segments: Vec<SegmentStatus>,
}

/// Also the link rows of `routebackup status --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub interface: String,
    pub state: LinkState,
    pub ifindex: Option<u32>,
    /// Failed attempts and sessions (timeouts, driver failures, drops):
    /// `FAILURES` in the human status; the metrics count every attempt in
    /// `link_attempts` and these in `link_failures`. (The JSON keeps the
    /// name `attempts` for the scripts that read it.)
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The engine's view, for `routebackup status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineStatus {
    /// False until `Event::Synced`.
    pub synced: bool,
    pub groups: Vec<GroupStatus>,
    pub links: Vec<LinkStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_read_as_before_and_keep_their_subject_apart() {
        let n = Notice::group("hq", "primary lost");
        assert_eq!(n.to_string(), "group hq: primary lost");
        assert_eq!(n.group_name(), Some("hq"));
        // A name with ": " in it no longer confuses whoever needs the subject.
        let n = Notice::link("a: b", "up");
        assert_eq!(n.to_string(), "link a: b: up");
        assert_eq!(n.about, Subject::Link("a: b".into()));
        assert_eq!(n.group_name(), None);
        assert_eq!(Notice::agent("x").to_string(), "x");
    }

    #[test]
    fn state_names_are_their_serde_names() {
        for g in GroupState::ALL {
            assert_eq!(serde_json::to_value(g).unwrap(), g.name());
            assert_eq!(
                serde_json::from_value::<GroupState>(g.name().into()).unwrap(),
                g
            );
        }
        for l in [
            LinkState::Down,
            LinkState::Connecting,
            LinkState::Up,
            LinkState::Releasing,
            LinkState::Failed,
        ] {
            assert_eq!(serde_json::to_value(l).unwrap(), l.name());
            assert_eq!(
                serde_json::from_value::<LinkState>(l.name().into()).unwrap(),
                l
            );
        }
    }
}
