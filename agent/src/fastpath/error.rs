//! Why the fast path could not be loaded, attached or written.
//!
//! Each message names the interface, map, program or pin path and, where
//! there is one, the fix; what aya or the kernel said is the error's source
//! (shown after the message by [`crate::error::Report`]).

use std::io;
use std::path::PathBuf;

use aya::maps::MapError;
use aya::pin::PinError;
use aya::programs::links::LinkError as AyaLinkError;
use aya::programs::ProgramError;
use aya::EbpfError;
use ipnet::IpNet;
use routebackup_common::{MAP_TC_IDLE, MAX_GROUPS, MAX_SEGMENTS};

use super::XdpAttach;
use crate::config::AttachMode;

// aya's ProgramError and EbpfError are boxed in the variants that also hold
// names, keeping every Result of this module small (clippy::result_large_err).
#[derive(Debug, thiserror::Error)]
pub enum FastpathError {
    #[error(
        "this routebackup binary was built without its BPF programs (AYA_BUILD_SKIP=1): \
         rebuild without AYA_BUILD_SKIP to use the fast path"
    )]
    BuiltWithoutPrograms,

    #[error("pin path {} is not absolute: use a directory on a bpffs such as /sys/fs/bpf/routebackup", .path.display())]
    PinPathNotAbsolute { path: PathBuf },

    #[error("{}: path contains a NUL byte", .path.display())]
    PathWithNul { path: PathBuf },

    #[error("statfs {}", .path.display())]
    Statfs { path: PathBuf, source: io::Error },

    /// `checked` is the deepest existing directory of the pin path.
    #[error(
        "pin path {} is not on a bpffs ({} is not a bpf filesystem): mount one with \
         `mount -t bpf bpf {}` or set [agent] pin_path to a directory under /sys/fs/bpf",
        .pin_path.display(), .checked.display(), .checked.display()
    )]
    NotOnBpffs { pin_path: PathBuf, checked: PathBuf },

    #[error("pin directory {} is not on a bpffs: mount one with `mount -t bpf bpf {}`", .path.display(), .path.display())]
    PinDirNotOnBpffs { path: PathBuf },

    #[error("cannot mount a bpffs on {} (run `mount -t bpf bpf {}` as root)", .dir.display(), .dir.display())]
    Mount { dir: PathBuf, source: io::Error },

    #[error("cannot create the pin directory {}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("cannot remove {}", .path.display())]
    RemovePin { path: PathBuf, source: io::Error },

    #[error(
        "cannot move {} to {} (the layout directory): remove the old pins (`rm -r {}`) and restart",
        .from.display(), .to.display(), .from.display()
    )]
    MigratePin {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },

    #[error("cannot load the BPF object (maps pinned under {})", .pin_path.display())]
    Load {
        pin_path: PathBuf,
        source: Box<EbpfError>,
    },

    #[error("the kernel rejected program {program}")]
    Verifier {
        program: &'static str,
        source: ProgramError,
    },

    #[error("the BPF object has no program {program} (the agent was built from mismatched sources: rebuild it)")]
    MissingProgram { program: &'static str },

    #[error("program {program} has an unexpected type (the agent was built from mismatched sources: rebuild it)")]
    ProgramType {
        program: &'static str,
        source: ProgramError,
    },

    #[error(
        "the BPF object has no map {map} (the agent was built from mismatched sources: rebuild it)"
    )]
    MissingMap { map: &'static str },

    #[error("map {map} has an unexpected type (the agent was built from mismatched sources: rebuild it)")]
    MapType { map: &'static str, source: MapError },

    #[error("interface name {interface:?} contains a NUL byte")]
    InterfaceName { interface: String },

    #[error("interface {interface} does not exist (fastpath.interfaces)")]
    NoSuchInterface { interface: String },

    /// The `attempt` (the last mode tried) failed with `source`; in mode
    /// `auto` the native attempt before it failed with `native_error`.
    #[error(
        "cannot attach XDP to {interface}; {}; {}{}",
        xdp_fix(.interface, *.mode), native_note(.native_error.as_deref()), attempt_name(*.attempt)
    )]
    XdpAttach {
        interface: String,
        mode: AttachMode,
        attempt: XdpAttach,
        native_error: Option<String>,
        source: Box<ProgramError>,
    },

    /// Attaching failed: through netlink (with a clsact qdisc), after
    /// TCX failed first where the kernel has TCX.
    #[error(
        "cannot attach TC ingress to {interface}{}",
        .first_error.as_ref().map(|e| format!(" (through TCX: {e}; then through netlink)")).unwrap_or_default()
    )]
    TcAttach {
        interface: String,
        first_error: Option<String>,
        source: Box<ProgramError>,
    },

    #[error("cannot open the kept bpf link {}", .path.display())]
    KeptBpfLinkOpen { path: PathBuf, source: AyaLinkError },

    #[error("the kept bpf link {} is not a bpf link of program {program}", .path.display())]
    KeptBpfLinkKind {
        path: PathBuf,
        program: &'static str,
        source: AyaLinkError,
    },

    #[error("program {program} cannot take over the kept bpf link {}", .path.display())]
    KeptBpfLinkAdopt {
        path: PathBuf,
        program: &'static str,
        source: Box<ProgramError>,
    },

    #[error("program {program} no longer holds its attachment to {interface}")]
    TakeAttachment {
        interface: String,
        program: &'static str,
        source: Box<ProgramError>,
    },

    /// `why` says which attachment and why it has no bpf link.
    #[error("{why} cannot be kept")]
    NoBpfLink {
        why: &'static str,
        source: AyaLinkError,
    },

    #[error("cannot pin the attachment at {}", .path.display())]
    PinBpfLink { path: PathBuf, source: PinError },

    #[error(
        "cannot record the netlink attachment at {} (the next agent would not find it): \
         check that the pin directory is writable",
        .path.display()
    )]
    RecordWrite { path: PathBuf, source: io::Error },

    #[error("{} is no record of a netlink attachment ({why}): it is removed", .path.display())]
    RecordRead { path: PathBuf, why: String },

    /// `why` says what differs (the interface, the program).
    #[error("the netlink attachment recorded at {} is no longer there: {why}", .path.display())]
    RecordStale { path: PathBuf, why: String },

    #[error("program {program} cannot take the place of the one recorded at {}", .path.display())]
    RecordAdopt {
        path: PathBuf,
        program: &'static str,
        source: Box<ProgramError>,
    },

    #[error("cannot read {what} of {interface} from the kernel")]
    NetlinkQuery {
        interface: String,
        what: &'static str,
        source: crate::netlink::NetlinkError,
    },

    #[error("cannot read the kernel's info on program {program}")]
    ProgramInfo {
        program: &'static str,
        source: ProgramError,
    },

    #[error("BPF_PROG_TEST_RUN of {program}")]
    TestRun {
        program: &'static str,
        source: ProgramError,
    },

    #[error("segment {prefix}: group id {group_id} is out of range (< {MAX_GROUPS})")]
    SegmentGroup { prefix: IpNet, group_id: u32 },

    #[error("segment {prefix}: a steer entry needs the backup's interface index")]
    SteerWithoutBackup { prefix: IpNet },

    #[error("segment {prefix}: unknown action {action}")]
    UnknownAction { prefix: IpNet, action: u32 },

    #[error(
        "cannot add segment {prefix}: the fast-path trie is full ({MAX_SEGMENTS} entries per family)"
    )]
    TrieFull { prefix: IpNet, source: MapError },

    #[error("cannot write segment {prefix} to the fast path")]
    SegmentWrite { prefix: IpNet, source: MapError },

    #[error("cannot remove segment {prefix} from the fast path")]
    SegmentRemove { prefix: IpNet, source: MapError },

    #[error("reading {map}")]
    MapRead { map: &'static str, source: MapError },

    #[error("{map} holds an invalid prefix length")]
    BadPrefixLen {
        map: &'static str,
        source: ipnet::PrefixLenError,
    },

    #[error("group id {group_id} is out of range (at most {MAX_GROUPS} groups)")]
    GroupOutOfRange { group_id: u32 },

    /// `state` is "off" (no entry steers) or "on".
    #[error(
        "cannot switch rb_tc {state} through the pinned map {MAP_TC_IDLE}: steering may \
         miss packets XDP hands to TC; check that the map under the pin path is intact"
    )]
    TcSwitch {
        state: &'static str,
        source: MapError,
    },

    #[error("reading stats of group {group_id}")]
    StatsRead { group_id: u32, source: MapError },

    #[error("resetting the counters of group slot {group_id}")]
    StatsReset { group_id: u32, source: MapError },

    #[error("cannot count the possible CPUs ({what})")]
    Cpus {
        what: &'static str,
        source: io::Error,
    },
}

/// A map's kind and sizes, as the kernel reports them for a pinned map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapShape {
    /// `None`: a type aya does not know.
    pub map_type: Option<aya::maps::MapType>,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {:?}, key {} B, value {} B, {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

/// "native: <error>; " before the failed generic attempt in mode `auto`.
fn native_note(native_error: Option<&str>) -> String {
    native_error
        .map(|e| format!("native: {e}; "))
        .unwrap_or_default()
}

/// Precedes what the kernel said about that attempt (the error's source).
fn attempt_name(attempt: XdpAttach) -> &'static str {
    match attempt {
        XdpAttach::Native => "native",
        XdpAttach::Generic | XdpAttach::None => "generic",
    }
}

fn xdp_fix(interface: &str, mode: AttachMode) -> String {
    let other =
        format!("another XDP program may be attached (`ip link set dev {interface} xdp off`)");
    match mode {
        AttachMode::Xdp => format!(
            "{other}, or the driver has no native XDP, which [fastpath] mode = \"xdp\" needs: \
             use mode = \"auto\" or \"xdp-generic\""
        ),
        _ => format!("{other}, or use [fastpath] mode = \"tc\""),
    }
}
