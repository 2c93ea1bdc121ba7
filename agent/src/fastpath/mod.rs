//! The eBPF fast path, user side: loads `rb_xdp` / `rb_tc`, pins and reuses
//! the maps, attaches the programs to the LAN-facing interfaces and writes
//! segment entries.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/routebackup`), in a
//! directory named by the map layout's version (`layout::LAYOUT_VERSION`):
//! - `v1/segments_v4`, `v1/segments_v6`, `v1/stats`: the maps
//!   (`bpftool map dump pinned ...`); `v1/tc_idle`: the switch that tells
//!   both programs that `rb_tc` has nothing to do (no entry steers).
//! - `v1/links/xdp-native|xdp-generic|tc_<ifname>`: the attachments (bpf
//!   links), pinned as soon as they are made.
//!
//! Lifetime: the pins, not the agent, keep the programs attached. Whatever
//! ends the process (SIGKILL, a panic, an OOM kill) leaves steering exactly as
//! last written; the next `open` adopts the pinned links (atomic program
//! replacement through the link, no window without steering). `close(false)`
//! (a clean stop) unpins and so detaches everything and removes the maps;
//! `close(true)` leaves all of it in place.
//!
//! The kernel needs forwarding enabled on the backup devices
//! (`net.ipv4.conf.<if>.forwarding=1`, `net.ipv6.conf.<if>.forwarding=1`):
//! otherwise `bpf_fib_lookup` fails and XDP counts redirect failures. `open`
//! warns when it is off globally, `set_segment` when it is off on the backup.

mod bpffs;
mod error;
mod layout;
mod sys;

use std::collections::HashSet;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData, MapError, MapInfo, MapType, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{
    NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcAttachType,
};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::LinkOrder;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use routebackup_common::{
    GroupStats, SegmentValue, ACTION_PASS, ACTION_STEER, MAP_SEGMENTS_V4, MAP_SEGMENTS_V6,
    MAP_STATS, MAP_TC_IDLE, MAX_GROUPS, MAX_SEGMENTS, PROG_FLOOR, PROG_TC, PROG_XDP,
};

use crate::config::AttachMode;
use crate::kernel::{Feature, Kernel, Support};

pub use bpffs::is_bpffs;
pub use error::{FastpathError, MapShape};
pub use layout::{layout_dir, LAYOUT_VERSION};

type Result<T, E = FastpathError> = std::result::Result<T, E>;

/// The kernel object built by agent/build.rs (empty with AYA_BUILD_SKIP=1).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/routebackup-ebpf"));

/// The embedded kernel object. It also holds programs the agent never loads
/// (`rb_floor`, the live-traffic bench's); the benches load those from here
/// by name. Empty when built with `AYA_BUILD_SKIP=1`.
#[must_use]
pub fn object() -> &'static [u8] {
    OBJECT
}

const LINKS_DIR: &str = "links";

/// Load-time switches of the programs (ebpf/src/progs.rs), 0 or 1.
const GLOBAL_XDP_META: &str = "RB_XDP_META";
const GLOBAL_XDP_FIB: &str = "RB_XDP_FIB";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastpathOptions {
    /// Directory on a bpffs for the maps and kept links.
    pub pin_path: PathBuf,
    /// LAN-facing interfaces whose ingress traffic is steered.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// What the kernel can do: which program switches are set at load
    /// (`RB_XDP_META`, `RB_XDP_FIB`), how TC attaches, how links detach.
    pub kernel: Kernel,
}

/// How XDP ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttach {
    Native,
    Generic,
    None,
}

impl XdpAttach {
    fn pin_suffix(self) -> &'static str {
        match self {
            XdpAttach::Native => "xdp-native",
            XdpAttach::Generic => "xdp-generic",
            XdpAttach::None => "",
        }
    }
}

/// One interface the programs are attached to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub ifindex: u32,
    pub xdp: XdpAttach,
    pub tc: bool,
    /// The attachment was kept by a previous agent (`close(true)`) and adopted.
    pub adopted: bool,
}

/// An attachment as the agent holds it.
enum Held {
    /// A bpf link pinned at `path`: the pin keeps it attached whatever
    /// happens to the agent; `detach` removes the pin, then closes the fd.
    Pinned { link: FdLink, path: PathBuf },
    /// XDP attached through netlink (kernel without XDP links): owned by the
    /// program, so it cannot be pinned; detached with the program.
    XdpNetlink,
    /// TC attached through netlink (kernel without TCX): no bpf link to pin;
    /// detached when dropped (the field only holds it).
    TcNetlink(
        #[expect(dead_code, reason = "held for its Drop, which detaches")] SchedClassifierLink,
    ),
}

/// One interface's attachments. Dropping it leaves the pinned ones attached
/// (that is what survives a crash); `detach` takes them off.
struct IfLinks {
    attachment: Attachment,
    held: Vec<Held>,
}

impl IfLinks {
    /// Detaches, unpins and closes every attachment: the programs leave the
    /// interface before this returns.
    fn detach(self, link_detach: bool) {
        for h in self.held {
            if let Held::Pinned { link, path } = h {
                // Closing alone leaves the program on while anyone else still
                // holds the link (see sys.rs); then the close is what is left.
                if !link_detach {
                    // The kernel has no BPF_LINK_DETACH: closing is all there is.
                } else if let Err(e) = sys::detach_link(&link) {
                    tracing::warn!(
                        "cannot detach the program from {} at once (it leaves when the \
                         last holder of its link closes it): {}",
                        self.attachment.interface,
                        crate::error::Report(&e)
                    );
                }
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(
                            "cannot unpin {} (it stays attached until removed): {}",
                            path.display(),
                            crate::error::Report(&e)
                        );
                    }
                }
                drop(link);
            }
        }
    }
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug)]
pub struct TestRunOutput {
    /// The program's return value (XDP action or TC verdict).
    pub verdict: u32,
    /// The frame as the program left it.
    pub data: Vec<u8>,
    /// Average run time per repetition as reported by the kernel.
    pub duration: Duration,
    /// XDP only: the program left the "already counted" marker in the
    /// metadata area (removed from `data`).
    pub meta_counted: bool,
}

/// Bytes of the metadata marker `rb_xdp` writes (u32 0x52425031, native order).
const META_COUNTED: [u8; 4] = routebackup_common::META_COUNTED.to_ne_bytes();

/// The loaded programs, their maps and attachments.
pub struct Fastpath {
    ebpf: Ebpf,
    /// `[agent] pin_path`.
    pin_path: PathBuf,
    /// `<pin_path>/<LAYOUT_VERSION>`: the maps and `links/`.
    dir: PathBuf,
    segments_v4: LpmTrie<MapData, [u8; 4], SegmentValue>,
    segments_v6: LpmTrie<MapData, [u8; 16], SegmentValue>,
    stats: PerCpuArray<MapData, GroupStats>,
    /// `MAP_TC_IDLE`: the switch for `rb_tc`.
    tc_idle: Array<MapData, u32>,
    /// Prefixes (host bits cleared) whose entry may steer: every steer entry
    /// written, and a steer write that failed (it may or may not be in the
    /// map). While there is one, TC stays on: XDP defers to it what the
    /// agent cannot foresee (IPv4 fragments, an unresolved neighbour, a
    /// packet over the cached MTU), not only L3 and TC-only backups.
    steering: HashSet<IpNet>,
    /// What the switch was last set to (None before the first write).
    tc_idle_written: Option<bool>,
    links: Vec<IfLinks>,
    forwarding_warned: HashSet<u32>,
    kernel: Kernel,
}

/// Expected layout of a pinned map (checked before reuse).
struct MapLayout {
    name: &'static str,
    shape: MapShape,
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "map values are a few dozen bytes (asserted in common)"
)]
const MAP_LAYOUTS: [MapLayout; 4] = [
    MapLayout {
        name: MAP_SEGMENTS_V4,
        shape: MapShape {
            map_type: Some(MapType::LpmTrie),
            key_size: 8,
            value_size: size_of::<SegmentValue>() as u32,
            max_entries: MAX_SEGMENTS,
        },
    },
    MapLayout {
        name: MAP_SEGMENTS_V6,
        shape: MapShape {
            map_type: Some(MapType::LpmTrie),
            key_size: 20,
            value_size: size_of::<SegmentValue>() as u32,
            max_entries: MAX_SEGMENTS,
        },
    },
    MapLayout {
        name: MAP_STATS,
        shape: MapShape {
            map_type: Some(MapType::PerCpuArray),
            key_size: 4,
            value_size: size_of::<GroupStats>() as u32,
            max_entries: MAX_GROUPS,
        },
    },
    MapLayout {
        name: MAP_TC_IDLE,
        shape: MapShape {
            map_type: Some(MapType::Array),
            key_size: 4,
            value_size: 4,
            max_entries: 1,
        },
    },
];

/// Why a pinned map at `path` cannot be reused (aya would reuse it silently
/// and the programs would misread it); None when it is absent or fits.
fn stale_map(path: &Path, want: &MapLayout) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let info = match MapInfo::from_pin(path) {
        Ok(i) => i,
        Err(e) => {
            return Some(format!(
                "it is not a usable BPF map ({})",
                crate::error::Report(&e)
            ))
        }
    };
    let found = MapShape {
        map_type: info.map_type().ok(),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    };
    (found != want.shape).then(|| {
        format!(
            "its layout ({found}) is not the one this agent needs ({})",
            want.shape
        )
    })
}

fn ifindex_of(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| FastpathError::InterfaceName {
        interface: name.to_string(),
    })?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(FastpathError::NoSuchInterface {
            interface: name.to_string(),
        });
    }
    Ok(idx)
}

fn ifname_of(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf.get(..end)?.to_vec()).ok()
}

fn sysctl_is_on(path: &str) -> Option<bool> {
    std::fs::read_to_string(path).ok().map(|s| s.trim() != "0")
}

/// Warns when forwarding is off globally: the fib lookup of the XDP program
/// then fails with "forwarding disabled" and TC steering is dropped by the kernel.
fn warn_forwarding_global() {
    if sysctl_is_on(&crate::paths::forwarding_sysctl("ipv4", "all")) == Some(false) {
        tracing::warn!(
            "net.ipv4.conf.all.forwarding is 0: steering to a backup needs forwarding \
             (sysctl -w net.ipv4.conf.all.forwarding=1)"
        );
    }
    if sysctl_is_on(&crate::paths::forwarding_sysctl("ipv6", "all")) == Some(false) {
        tracing::warn!(
            "net.ipv6.conf.all.forwarding is 0: IPv6 steering to a backup needs forwarding \
             (sysctl -w net.ipv6.conf.all.forwarding=1)"
        );
    }
}

/// File name of a kept link: `<kind>_<ifname>`. bpffs refuses names with a
/// dot (EPERM), so dots of VLAN interface names ("eth0.100") become colons,
/// which interface names cannot contain.
fn link_pin_name(kind: &str, ifname: &str) -> String {
    format!("{kind}_{}", ifname.replace('.', ":"))
}

/// Pin files under links/ as (interface, kind, path).
fn pinned_links(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((kind, ifname)) = name.split_once('_') {
            out.push((ifname.replace(':', "."), kind.to_string(), entry.path()));
        }
    }
    out
}

fn xdp_mode_wanted(mode: AttachMode) -> &'static [XdpAttach] {
    match mode {
        AttachMode::Auto => &[XdpAttach::Native, XdpAttach::Generic],
        AttachMode::Xdp => &[XdpAttach::Native],
        AttachMode::XdpGeneric => &[XdpAttach::Generic],
        AttachMode::Tc => &[],
    }
}

impl Fastpath {
    /// Loads the programs, pins (or reuses) the maps under `opts.pin_path`,
    /// adopts links a previous agent kept and attaches to every interface.
    pub fn open(opts: &FastpathOptions) -> Result<Fastpath> {
        if OBJECT.is_empty() {
            return Err(FastpathError::BuiltWithoutPrograms);
        }
        bpffs::prepare_pin_dir(&opts.pin_path)?;
        layout::settle(&opts.pin_path)?;
        let dir = layout_dir(&opts.pin_path);
        let links_dir = dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir).map_err(|source| FastpathError::CreateDir {
            path: links_dir.clone(),
            source,
        })?;
        for l in &MAP_LAYOUTS {
            let path = dir.join(l.name);
            if let Some(why) = stale_map(&path, l) {
                layout::replace_stale_map(&path, &why)?;
            }
        }
        warn_forwarding_global();

        let pins: Vec<(&str, PathBuf)> = MAP_LAYOUTS
            .iter()
            .map(|l| (l.name, dir.join(l.name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        // The verifier prunes the branches these close (see ebpf/src/progs.rs):
        // a helper the kernel refuses is then never on a path it walks.
        let xdp_meta = u32::from(opts.kernel.has(Feature::XdpMetadata));
        let xdp_fib = u32::from(opts.kernel.has(Feature::FibLookupXdp));
        loader.override_global(GLOBAL_XDP_META, &xdp_meta, true);
        loader.override_global(GLOBAL_XDP_FIB, &xdp_fib, true);
        let mut ebpf = loader.load(OBJECT).map_err(|source| FastpathError::Load {
            pin_path: dir.clone(),
            source: Box::new(source),
        })?;

        {
            let xdp: &mut Xdp = program_mut(&mut ebpf, PROG_XDP)?;
            xdp.load().map_err(|source| FastpathError::Verifier {
                program: PROG_XDP,
                source,
            })?;
        }
        {
            let tc: &mut SchedClassifier = program_mut(&mut ebpf, PROG_TC)?;
            tc.load().map_err(|source| FastpathError::Verifier {
                program: PROG_TC,
                source,
            })?;
        }

        let segments_v4 = typed_map(&mut ebpf, MAP_SEGMENTS_V4, LpmTrie::try_from)?;
        let segments_v6 = typed_map(&mut ebpf, MAP_SEGMENTS_V6, LpmTrie::try_from)?;
        let stats = typed_map(&mut ebpf, MAP_STATS, PerCpuArray::try_from)?;
        let tc_idle = typed_map(&mut ebpf, MAP_TC_IDLE, Array::try_from)?;

        let mut fp = Fastpath {
            ebpf,
            pin_path: opts.pin_path.clone(),
            dir,
            segments_v4,
            segments_v6,
            stats,
            tc_idle,
            steering: HashSet::new(),
            tc_idle_written: None,
            links: Vec::new(),
            forwarding_warned: HashSet::new(),
            kernel: opts.kernel.clone(),
        };
        // Kept maps may hold steering (a restart): TC is needed for it from
        // the moment our programs take over the kept links below. Without
        // XDP in the wanted modes, TC does all the work.
        fp.steering = fp
            .segments()?
            .into_iter()
            .filter(|(_, v)| v.action == ACTION_STEER)
            .map(|(net, _)| net)
            .collect();
        fp.write_tc_idle(fp.steering.is_empty() && !xdp_mode_wanted(opts.mode).is_empty())?;

        let kept = pinned_links(&links_dir);
        // Links kept for interfaces we no longer serve: unpinning detaches them.
        for (ifname, kind, path) in &kept {
            if !opts.interfaces.iter().any(|i| i == ifname) {
                tracing::info!(
                    "detaching the kept {kind} attachment of {ifname} (no longer in fastpath.interfaces)"
                );
                let _ = std::fs::remove_file(path);
            }
        }
        for ifname in &opts.interfaces {
            let l = fp.attach_interface(ifname, opts.mode, &kept)?;
            fp.links.push(l);
        }
        fp.sync_tc_switch()?;
        Ok(fp)
    }

    /// `rb_tc` has nothing to do: no entry steers, and XDP, which counts
    /// every packet to a `pass` entry, runs on every interface.
    fn tc_idle_wanted(&self) -> bool {
        self.steering.is_empty()
            && self
                .links
                .iter()
                .all(|l| l.attachment.xdp != XdpAttach::None)
    }

    /// Sets the switch to what the entries and attachments need now.
    fn sync_tc_switch(&mut self) -> Result<()> {
        let idle = self.tc_idle_wanted();
        if self.tc_idle_written == Some(idle) {
            return Ok(());
        }
        self.write_tc_idle(idle)
    }

    fn write_tc_idle(&mut self, idle: bool) -> Result<()> {
        self.tc_idle
            .set(0, u32::from(idle), 0)
            .map_err(|source| FastpathError::TcSwitch {
                state: if idle { "off" } else { "on" },
                source,
            })?;
        self.tc_idle_written = Some(idle);
        Ok(())
    }

    /// Whether `rb_tc` is switched off (no entry steers and XDP runs on every
    /// interface): it then returns at once, and `rb_xdp` marks nothing.
    pub fn tc_idle(&self) -> bool {
        self.tc_idle_written == Some(true)
    }

    /// Attaches both programs to `ifname` (adopting what `kept` holds for
    /// it) and pins each attachment at once, so it outlives the agent.
    fn attach_interface(
        &mut self,
        ifname: &str,
        mode: AttachMode,
        kept: &[(String, String, PathBuf)],
    ) -> Result<IfLinks> {
        let ifindex = ifindex_of(ifname)?;
        let wanted = xdp_mode_wanted(mode);
        let links_dir = self.dir.join(LINKS_DIR);
        let mut adopted = false;
        let mut held = Vec::new();

        // XDP: adopt a kept link in an acceptable mode, else attach.
        let mut xdp_mode = XdpAttach::None;
        for (_, kind, path) in kept
            .iter()
            .filter(|(i, k, _)| i == ifname && k.starts_with("xdp"))
        {
            let m = if kind == XdpAttach::Native.pin_suffix() {
                XdpAttach::Native
            } else {
                XdpAttach::Generic
            };
            if xdp_mode == XdpAttach::None && wanted.contains(&m) {
                match self.adopt_xdp(path) {
                    Ok(link) => {
                        held.push(Held::Pinned {
                            link,
                            path: path.clone(),
                        });
                        xdp_mode = m;
                        adopted = true;
                        continue;
                    }
                    Err(e) => tracing::warn!(
                        "{ifname}: cannot adopt the kept XDP link {}: {}; attaching anew",
                        path.display(),
                        crate::error::chain(&e)
                    ),
                }
            }
            let _ = std::fs::remove_file(path);
        }
        if xdp_mode == XdpAttach::None && !wanted.is_empty() {
            let xdp: &mut Xdp = program_mut(&mut self.ebpf, PROG_XDP)?;
            // The native attempt's error when the generic one follows (mode auto).
            let mut native_error = None;
            let mut xdp_id = None;
            for (i, m) in wanted.iter().enumerate() {
                let flags = match m {
                    XdpAttach::Native => XdpMode::Driver,
                    _ => XdpMode::Skb,
                };
                match xdp.attach_to_if_index(ifindex, flags) {
                    Ok(id) => {
                        xdp_id = Some((id, flags));
                        xdp_mode = *m;
                        break;
                    }
                    Err(source) if i + 1 == wanted.len() => {
                        return Err(FastpathError::XdpAttach {
                            interface: ifname.to_string(),
                            mode,
                            attempt: *m,
                            native_error,
                            source: Box::new(source),
                        });
                    }
                    Err(e) => native_error = Some(crate::error::chain(&e)),
                }
            }
            if xdp_mode == XdpAttach::Generic && mode == AttachMode::Auto {
                tracing::info!("{ifname}: the driver has no native XDP; using generic XDP");
            }
            if let Some((id, flags)) = xdp_id {
                let path = links_dir.join(link_pin_name(xdp_mode.pin_suffix(), ifname));
                held.push(self.pin_xdp(ifname, ifindex, id, flags, path)?);
            }
        }

        // TC ingress: adopt or attach.
        let mut tc = false;
        for (_, _, path) in kept.iter().filter(|(i, k, _)| i == ifname && k == "tc") {
            if !tc {
                match self.adopt_tc(path) {
                    Ok(link) => {
                        held.push(Held::Pinned {
                            link,
                            path: path.clone(),
                        });
                        tc = true;
                        adopted = true;
                        continue;
                    }
                    Err(e) => tracing::warn!(
                        "{ifname}: cannot adopt the kept TC link {}: {}; attaching anew",
                        path.display(),
                        crate::error::chain(&e)
                    ),
                }
            }
            let _ = std::fs::remove_file(path);
        }
        if !tc {
            let tcx = self.kernel.has(Feature::Tcx);
            let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, PROG_TC)?;
            let id = if tcx {
                // TCX said yes to the probe; a failure on this device still
                // gets the netlink attachment rather than no TC at all.
                match attach_tc(prog, ifname, true) {
                    Ok(id) => id,
                    Err(first) => attach_tc(prog, ifname, false).map_err(|source| {
                        FastpathError::TcAttach {
                            interface: ifname.to_string(),
                            first_error: Some(crate::error::chain(&first)),
                            source: Box::new(source),
                        }
                    })?,
                }
            } else {
                attach_tc(prog, ifname, false).map_err(|source| FastpathError::TcAttach {
                    interface: ifname.to_string(),
                    first_error: None,
                    source: Box::new(source),
                })?
            };
            let link = prog.take_link(id).map_err(take_link(ifname, PROG_TC))?;
            if link.attach_type().is_ok() {
                tracing::warn!(
                    "{ifname}: TC attached through netlink ({}): it cannot be pinned, so a \
                     restart of the agent re-attaches it",
                    match self.kernel.support(Feature::Tcx) {
                        Support::Forced => "TCX forced off",
                        Support::Yes | Support::Unknown { .. } => "TCX refused on this device",
                        Support::No { .. } => "kernel without TCX",
                    }
                );
                held.push(Held::TcNetlink(link));
            } else {
                let fd = FdLink::try_from(link).map_err(|source| FastpathError::NoBpfLink {
                    why: "the TCX attachment",
                    source,
                })?;
                let path = links_dir.join(link_pin_name("tc", ifname));
                held.push(Held::Pinned {
                    link: pin_link(fd, &path)?,
                    path,
                });
            }
        }

        Ok(IfLinks {
            attachment: Attachment {
                interface: ifname.to_string(),
                ifindex,
                xdp: xdp_mode,
                tc: true,
                adopted,
            },
            held,
        })
    }

    /// Pins a fresh XDP attachment. Without an XDP bpf link (netlink
    /// attachment, kernels before 5.9) the conversion drops it, so it is
    /// made again and left to the program.
    fn pin_xdp(
        &mut self,
        ifname: &str,
        ifindex: u32,
        id: XdpLinkId,
        flags: XdpMode,
        path: PathBuf,
    ) -> Result<Held> {
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, PROG_XDP)?;
        let link = xdp.take_link(id).map_err(take_link(ifname, PROG_XDP))?;
        match FdLink::try_from(link) {
            Ok(fd) => Ok(Held::Pinned {
                link: pin_link(fd, &path)?,
                path,
            }),
            Err(e) => {
                tracing::warn!(
                    "{ifname}: XDP attached through netlink (no bpf link: {}): it cannot be \
                     pinned, so a restart of the agent re-attaches it",
                    crate::error::Report(&e)
                );
                xdp.attach_to_if_index(ifindex, flags).map_err(|source| {
                    FastpathError::XdpReattach {
                        interface: ifname.to_string(),
                        source: Box::new(source),
                    }
                })?;
                Ok(Held::XdpNetlink)
            }
        }
    }

    /// Takes over a kept XDP link: its program is replaced by ours in one
    /// step; the pin stays, so the link outlives this agent too.
    fn adopt_xdp(&mut self, path: &Path) -> Result<FdLink> {
        let link = XdpLink::try_from(open_kept_link(path)?).map_err(|source| {
            FastpathError::KeptLinkKind {
                path: path.to_path_buf(),
                program: PROG_XDP,
                source,
            }
        })?;
        let adopt = |source| FastpathError::KeptLinkAdopt {
            path: path.to_path_buf(),
            program: PROG_XDP,
            source: Box::new(source),
        };
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, PROG_XDP)?;
        let id = xdp.attach_to_link(link).map_err(adopt)?;
        let link = xdp.take_link(id).map_err(adopt)?;
        FdLink::try_from(link).map_err(|source| FastpathError::KeptLinkKind {
            path: path.to_path_buf(),
            program: PROG_XDP,
            source,
        })
    }

    fn adopt_tc(&mut self, path: &Path) -> Result<FdLink> {
        let link = SchedClassifierLink::try_from(open_kept_link(path)?).map_err(|source| {
            FastpathError::KeptLinkKind {
                path: path.to_path_buf(),
                program: PROG_TC,
                source,
            }
        })?;
        let adopt = |source| FastpathError::KeptLinkAdopt {
            path: path.to_path_buf(),
            program: PROG_TC,
            source: Box::new(source),
        };
        let tc: &mut SchedClassifier = program_mut(&mut self.ebpf, PROG_TC)?;
        let id = tc.attach_to_link(link).map_err(adopt)?;
        let link = tc.take_link(id).map_err(adopt)?;
        FdLink::try_from(link).map_err(|source| FastpathError::KeptLinkKind {
            path: path.to_path_buf(),
            program: PROG_TC,
            source,
        })
    }

    /// Per interface: index, XDP mode actually used, TC attached, adopted.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|l| l.attachment.clone()).collect()
    }

    /// Kernel ids of the loaded `rb_xdp` and `rb_tc` programs (for bpftool).
    pub fn program_ids(&self) -> Result<(u32, u32)> {
        let info = |program: &'static str, r: Result<aya::programs::ProgramInfo, _>| {
            r.map(|i| i.id())
                .map_err(|source| FastpathError::ProgramInfo { program, source })
        };
        let xdp = info(PROG_XDP, program::<Xdp>(&self.ebpf, PROG_XDP)?.info())?;
        let tc = info(
            PROG_TC,
            program::<SchedClassifier>(&self.ebpf, PROG_TC)?.info(),
        )?;
        Ok((xdp, tc))
    }

    /// Where the maps and `links/` are pinned: the layout's directory
    /// under `[agent] pin_path`.
    #[expect(
        clippy::misnamed_getters,
        reason = "status shows where the maps are, which is the layout's directory"
    )]
    pub fn pin_path(&self) -> &Path {
        &self.dir
    }

    /// Inserts or replaces the entry for exactly `prefix` (host bits are cleared).
    ///
    /// A steer entry switches `rb_tc` on before it is written (a packet XDP
    /// defers to TC must find it working); the last one replaced or removed
    /// switches it off after the write.
    pub fn set_segment(&mut self, prefix: IpNet, value: SegmentValue) -> Result<()> {
        validate_value(&prefix, &value)?;
        let net = prefix.trunc();
        if value.action == ACTION_STEER {
            self.warn_backup_forwarding(value.backup_ifindex, &prefix);
            if self.steering.insert(net) {
                self.sync_tc_switch()?;
            }
        }
        match net {
            IpNet::V4(n) => self.segments_v4.insert(
                &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                value,
                0,
            ),
            IpNet::V6(n) => self.segments_v6.insert(
                &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                value,
                0,
            ),
        }
        .map_err(|e| map_write_error(&prefix, e))?;
        if value.action != ACTION_STEER && self.steering.remove(&net) {
            self.sync_tc_switch()?;
        }
        Ok(())
    }

    /// Removes the entry for exactly `prefix`; Ok(false) if there was none.
    pub fn remove_segment(&mut self, prefix: IpNet) -> Result<bool> {
        let r = match prefix.trunc() {
            IpNet::V4(n) => self
                .segments_v4
                .remove(&Key::new(u32::from(n.prefix_len()), n.network().octets())),
            IpNet::V6(n) => self
                .segments_v6
                .remove(&Key::new(u32::from(n.prefix_len()), n.network().octets())),
        };
        let removed = match r {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => false,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                false
            }
            Err(source) => return Err(FastpathError::SegmentRemove { prefix, source }),
        };
        if self.steering.remove(&prefix.trunc()) {
            self.sync_tc_switch()?;
        }
        Ok(removed)
    }

    /// Every entry of both tries (adoption after a restart).
    pub fn segments(&self) -> Result<Vec<(IpNet, SegmentValue)>> {
        let mut out = Vec::new();
        let read = |map| move |source| FastpathError::MapRead { map, source };
        let bad_len = |map| move |source| FastpathError::BadPrefixLen { map, source };
        for item in &self.segments_v4 {
            let (k, v) = item.map_err(read(MAP_SEGMENTS_V4))?;
            let net = Ipv4Net::new(
                Ipv4Addr::from(k.data()),
                u8::try_from(k.prefix_len()).unwrap_or(u8::MAX),
            )
            .map_err(bad_len(MAP_SEGMENTS_V4))?;
            out.push((IpNet::V4(net), v));
        }
        for item in &self.segments_v6 {
            let (k, v) = item.map_err(read(MAP_SEGMENTS_V6))?;
            let net = Ipv6Net::new(
                Ipv6Addr::from(k.data()),
                u8::try_from(k.prefix_len()).unwrap_or(u8::MAX),
            )
            .map_err(bad_len(MAP_SEGMENTS_V6))?;
            out.push((IpNet::V6(net), v));
        }
        Ok(out)
    }

    /// Counters of a group summed over CPUs.
    pub fn group_stats(&self, group_id: u32) -> Result<GroupStats> {
        if group_id >= MAX_GROUPS {
            return Err(FastpathError::GroupOutOfRange { group_id });
        }
        let per_cpu = self
            .stats
            .get(&group_id, 0)
            .map_err(|source| FastpathError::StatsRead { group_id, source })?;
        let mut sum = GroupStats::default();
        for s in per_cpu.iter() {
            sum.accumulate(s);
        }
        Ok(sum)
    }

    /// Zeroes a group slot's counters (a reload gave the slot to another
    /// group, or emptied it).
    pub fn reset_group_stats(&mut self, group_id: u32) -> Result<()> {
        if group_id >= MAX_GROUPS {
            return Err(FastpathError::GroupOutOfRange { group_id });
        }
        let cpus =
            aya::util::nr_cpus().map_err(|(what, source)| FastpathError::Cpus { what, source })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![GroupStats::default(); cpus]).map_err(
            |source| FastpathError::Cpus {
                what: "per-CPU values",
                source,
            },
        )?;
        self.stats
            .set(group_id, zeros, 0)
            .map_err(|source| FastpathError::StatsReset { group_id, source })
    }

    /// Attaches the programs to one more interface (a reload added it to
    /// `fastpath.interfaces`). Nothing happens if it is attached already.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<Attachment> {
        if let Some(l) = self.links.iter().find(|l| l.attachment.interface == ifname) {
            return Ok(l.attachment.clone());
        }
        let l = self.attach_interface(ifname, mode, &[])?;
        let attachment = l.attachment.clone();
        self.links.push(l);
        self.sync_tc_switch()?;
        Ok(attachment)
    }

    /// Detaches the programs from one interface (a reload removed it from
    /// `fastpath.interfaces`), including an attachment pinned for it.
    /// Returns whether it was attached.
    pub fn detach(&mut self, ifname: &str) -> Result<bool> {
        let Some(pos) = self
            .links
            .iter()
            .position(|l| l.attachment.interface == ifname)
        else {
            return Ok(false);
        };
        // Unpinning and closing its links is what takes the programs off.
        // (An XDP attachment made through netlink, on kernels before bpf
        // links, stays until the program is unloaded: there is no link.)
        let link_detach = self.kernel.has(Feature::LinkDetach);
        self.links.remove(pos).detach(link_detach);
        for (name, _, path) in pinned_links(&self.pin_path.join(LINKS_DIR)) {
            if name == ifname {
                let _ = std::fs::remove_file(path);
            }
        }
        self.sync_tc_switch()?;
        Ok(true)
    }

    /// Runs `rb_xdp` on `frame` through BPF_PROG_TEST_RUN (tests, bench).
    pub fn test_run_xdp(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        let xdp: &Xdp = program(&self.ebpf, PROG_XDP)?;
        let mut out = run(xdp, PROG_XDP, frame, repeat)?;
        // The kernel returns the frame from the start of the metadata area.
        if out.data.len() == frame.len() + META_COUNTED.len() && out.data.starts_with(&META_COUNTED)
        {
            out.data.drain(..META_COUNTED.len());
            out.meta_counted = true;
        }
        Ok(out)
    }

    /// Runs the trivial `rb_floor` (XDP_PASS) on `frame` through
    /// BPF_PROG_TEST_RUN: the floor the bench measures `rb_xdp` against.
    /// Loaded on first use; the agent itself never loads it.
    pub fn test_run_floor(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        let floor: &mut Xdp = program_mut(&mut self.ebpf, PROG_FLOOR)?;
        if floor.fd().is_err() {
            floor.load().map_err(|source| FastpathError::Verifier {
                program: PROG_FLOOR,
                source,
            })?;
        }
        run(&*floor, PROG_FLOOR, frame, repeat)
    }

    /// Runs `rb_tc` on `frame` through BPF_PROG_TEST_RUN (tests, bench).
    pub fn test_run_tc(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        let tc: &SchedClassifier = program(&self.ebpf, PROG_TC)?;
        run(tc, PROG_TC, frame, repeat)
    }

    /// Stops the fast path. `keep = false`: detach every program and remove
    /// the pins (maps and links). `keep = true`: leave the pinned attachments
    /// and maps in place so steering continues without the agent; the next
    /// `open` adopts them. (Dropping a `Fastpath` without `close`, as a
    /// crash does, is the same as `keep = true`.)
    pub fn close(mut self, keep: bool) -> Result<()> {
        let links = std::mem::take(&mut self.links);
        if keep {
            let lost: Vec<String> = links
                .iter()
                .filter(|l| l.held.iter().any(|h| !matches!(h, Held::Pinned { .. })))
                .map(|l| l.attachment.interface.clone())
                .collect();
            if !lost.is_empty() {
                return Err(FastpathError::KeepAttachments { interfaces: lost });
            }
            return Ok(());
        }
        for l in links {
            l.detach(self.kernel.has(Feature::LinkDetach));
        }
        drop(self.ebpf);
        for l in &MAP_LAYOUTS {
            let p = self.dir.join(l.name);
            if p.exists() {
                std::fs::remove_file(&p)
                    .map_err(|source| FastpathError::RemovePin { path: p, source })?;
            }
        }
        // Pins of interfaces that were never attached (an open that failed half-way).
        for (_, _, p) in pinned_links(&self.dir.join(LINKS_DIR)) {
            let _ = std::fs::remove_file(p);
        }
        layout::remove_empty_dirs(&self.pin_path);
        Ok(())
    }

    fn warn_backup_forwarding(&mut self, ifindex: u32, prefix: &IpNet) {
        if !self.forwarding_warned.insert(ifindex) {
            return;
        }
        let Some(name) = ifname_of(ifindex) else {
            tracing::warn!("segment {prefix}: backup interface index {ifindex} does not exist");
            return;
        };
        let fam = if prefix.addr().is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        };
        let path = crate::paths::forwarding_sysctl(fam, &name);
        if sysctl_is_on(&path) == Some(false) {
            tracing::warn!(
                "segment {prefix}: forwarding is off on backup {name}: steering fails until \
                 `sysctl -w net.{fam}.conf.{name}.forwarding=1` (or conf.all)"
            );
        }
    }
}

fn validate_value(prefix: &IpNet, v: &SegmentValue) -> Result<()> {
    let prefix = *prefix;
    if v.group_id >= MAX_GROUPS {
        return Err(FastpathError::SegmentGroup {
            prefix,
            group_id: v.group_id,
        });
    }
    match v.action {
        ACTION_STEER if v.backup_ifindex == 0 => Err(FastpathError::SteerWithoutBackup { prefix }),
        ACTION_PASS | ACTION_STEER => Ok(()),
        action => Err(FastpathError::UnknownAction { prefix, action }),
    }
}

fn map_write_error(prefix: &IpNet, source: MapError) -> FastpathError {
    let prefix = *prefix;
    let full = matches!(&source, MapError::SyscallError(s)
        if s.io_error.raw_os_error() == Some(libc::ENOSPC));
    if full {
        FastpathError::TrieFull { prefix, source }
    } else {
        FastpathError::SegmentWrite { prefix, source }
    }
}

/// Opens a link a previous agent pinned; the pin stays (it keeps the link
/// attached across this agent's death too).
/// TC ingress through TCX (a bpf link) or netlink (a filter on clsact).
fn attach_tc(
    prog: &mut SchedClassifier,
    ifname: &str,
    tcx: bool,
) -> std::result::Result<SchedClassifierLinkId, aya::programs::ProgramError> {
    let options = if tcx {
        TcAttachOptions::TcxOrder(LinkOrder::default())
    } else {
        // Netlink filters hang off a clsact qdisc; adding one that is there
        // already fails harmlessly.
        let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        TcAttachOptions::Netlink(NlOptions::default())
    };
    prog.attach_with_options(ifname, TcAttachType::Ingress, options)
}

fn open_kept_link(path: &Path) -> Result<FdLink> {
    PinnedLink::from_pin(path)
        .map(FdLink::from)
        .map_err(|source| FastpathError::KeptLinkOpen {
            path: path.to_path_buf(),
            source,
        })
}

/// Pins `fd` at `path`, replacing a pin left there; returns the link's fd.
fn pin_link(fd: FdLink, path: &Path) -> Result<FdLink> {
    let _ = std::fs::remove_file(path);
    fd.pin(path)
        .map(FdLink::from)
        .map_err(|source| FastpathError::PinLink {
            path: path.to_path_buf(),
            source,
        })
}

fn take_link<'a>(
    interface: &'a str,
    program: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> FastpathError + 'a {
    move |source| FastpathError::TakeLink {
        interface: interface.to_string(),
        program,
        source: Box::new(source),
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or(FastpathError::MissingProgram { program: name })?;
    <&mut T>::try_from(p).map_err(|source| FastpathError::ProgramType {
        program: name,
        source,
    })
}

fn program<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T>
where
    &'a T: TryFrom<&'a aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program(name)
        .ok_or(FastpathError::MissingProgram { program: name })?;
    <&T>::try_from(p).map_err(|source| FastpathError::ProgramType {
        program: name,
        source,
    })
}

/// Takes map `name` out of the object as the type `convert` makes of it.
fn typed_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, MapError>,
) -> Result<M> {
    let map = ebpf
        .take_map(name)
        .ok_or(FastpathError::MissingMap { map: name })?;
    convert(map).map_err(|source| FastpathError::MapType { map: name, source })
}

fn run<P>(prog: &P, name: &'static str, frame: &[u8], repeat: u32) -> Result<TestRunOutput>
where
    for<'b> P: TestRun<Opts<'b> = TestRunOptions<'b>, Result = aya::programs::TestRunResult>,
{
    // Room for a frame that grows (it never does today) plus headroom.
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let r = prog
        .test_run(opts)
        .map_err(|source| FastpathError::TestRun {
            program: name,
            source,
        })?;
    let len = (r.data_size_out as usize).min(out.len());
    out.truncate(len);
    Ok(TestRunOutput {
        verdict: r.return_value,
        data: out,
        duration: r.duration,
        meta_counted: false,
    })
}

/// The address family of a prefix as the `FLAG_GATEWAY_*` helpers see it.
pub fn gateway_bytes(gw: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match gw {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b = a.octets(),
    }
    b
}
