//! The eBPF fast path, user side: loads `rb_xdp` / `rb_tc`, pins and reuses
//! the maps, attaches the programs to the LAN-facing interfaces and writes
//! segment entries.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/routebackup`), in a
//! directory named by the map layout's version (`layout::LAYOUT_VERSION`):
//! - `v1/segments_v4`, `v1/segments_v6`, `v1/stats`: the maps
//!   (`bpftool map dump pinned ...`); `v1/tc_idle`: the switch that tells
//!   both programs that `rb_tc` has nothing to do (no entry steers).
//! - `v1/links/xdp-native|xdp-generic|tc_<ifname>`: the attachments made
//!   through bpf links, pinned as soon as they are made.
//! - `v1/netlink/xdp-native|xdp-generic|tc_<ifname>`: the records of those
//!   made through netlink (kernels without XDP links or TCX), which the
//!   device itself holds: symlinks whose target is the record's JSON
//!   (interface, index, program id, where on the hook), written as they are
//!   made.
//!
//! Lifetime: the pins and the devices, not the agent, keep the programs
//! attached. Whatever ends the process (SIGKILL, a panic, an OOM kill)
//! leaves steering exactly as last written; the next `open` adopts the
//! pinned bpf links and the recorded netlink attachments it finds still in
//! place (atomic program replacement through the bpf link or netlink, no
//! window without steering). `close(false)` (a clean stop) detaches
//! everything and removes the pins, records and maps; `close(true)` leaves
//! all of it in place.
//!
//! The kernel needs forwarding enabled on the backup devices
//! (`net.ipv4.conf.<if>.forwarding=1`, `net.ipv6.conf.<if>.forwarding=1`):
//! otherwise `bpf_fib_lookup` fails and XDP counts redirect failures. `open`
//! warns when it is off globally, `set_segment` when it is off on the backup.

mod attach;
mod bpffs;
mod error;
mod layout;
mod maps;
mod sys;
mod sysctl;
mod test_run;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use routebackup_common::{GroupStats, SegmentValue, ACTION_STEER, PROG_TC, PROG_XDP};

use crate::config::AttachMode;
use crate::kernel::{Feature, Kernel};

pub use attach::{Attachment, Via, XdpAttach};
pub use bpffs::is_bpffs;
pub use error::{FastpathError, MapShape};
pub use layout::{layout_dir, PinLayout, LAYOUT_VERSION};
pub use test_run::TestRunOutput;

use attach::{IfAttachments, Plan};
use maps::{Maps, MAP_LAYOUTS};

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

/// Load-time switches of the programs (ebpf/src/progs.rs), 0 or 1.
const GLOBAL_XDP_META: &str = "RB_XDP_META";
const GLOBAL_XDP_FIB: &str = "RB_XDP_FIB";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FastpathOptions {
    /// Directory on a bpffs for the maps, kept bpf links and netlink records.
    pub pin_path: PathBuf,
    /// LAN-facing interfaces whose ingress traffic is steered.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// What the kernel can do: which program switches are set at load
    /// (`RB_XDP_META`, `RB_XDP_FIB`), how TC attaches, how bpf links detach.
    pub kernel: Kernel,
}

/// The loaded programs, their maps and attachments.
pub struct Fastpath {
    ebpf: Ebpf,
    layout: PinLayout,
    maps: Maps,
    /// Prefixes (host bits cleared) whose entry may steer: every steer entry
    /// written, and a steer write that failed (it may or may not be in the
    /// map). While there is one, TC stays on: XDP defers to it what the
    /// agent cannot foresee (IPv4 fragments, an unresolved neighbour, a
    /// packet over the cached MTU), not only L3 and TC-only backups.
    steering: HashSet<IpNet>,
    /// What the switch was last set to (None before the first write).
    tc_idle_written: Option<bool>,
    /// What is attached, per interface.
    attached: Vec<IfAttachments>,
    forwarding_warned: HashSet<u32>,
    kernel: Kernel,
    /// The attach mechanisms `kernel` chose.
    plan: Plan,
}

impl Fastpath {
    /// Loads the programs, pins (or reuses) the maps under `opts.pin_path`,
    /// adopts the attachments a previous agent kept and attaches to every
    /// interface.
    pub fn open(opts: &FastpathOptions) -> Result<Fastpath> {
        if OBJECT.is_empty() {
            return Err(FastpathError::BuiltWithoutPrograms);
        }
        let layout = PinLayout::new(&opts.pin_path);
        bpffs::prepare_pin_dir(&layout.root)?;
        layout::settle(&layout)?;
        for dir in [&layout.bpf_links, &layout.netlink] {
            std::fs::create_dir_all(dir).map_err(|source| FastpathError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        for l in &MAP_LAYOUTS {
            let path = layout.map(l.name);
            if let Some(why) = maps::stale_map(&path, l) {
                layout::replace_stale_map(&path, &why)?;
            }
        }
        sysctl::warn_forwarding_global();

        let pins: Vec<(&str, PathBuf)> = MAP_LAYOUTS
            .iter()
            .map(|l| (l.name, layout.map(l.name)))
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
            pin_path: layout.dir.clone(),
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

        let maps = Maps::take(&mut ebpf)?;
        let mut fp = Fastpath {
            ebpf,
            layout,
            maps,
            steering: HashSet::new(),
            tc_idle_written: None,
            attached: Vec::new(),
            forwarding_warned: HashSet::new(),
            kernel: opts.kernel.clone(),
            plan: Plan::for_kernel(&opts.kernel),
        };
        // Kept maps may hold steering (a restart): TC is needed for it from
        // the moment our programs take over the kept attachments below. Without
        // XDP in the wanted modes, TC does all the work.
        fp.steering = fp
            .segments()?
            .into_iter()
            .filter(|(_, v)| v.action == ACTION_STEER)
            .map(|(net, _)| net)
            .collect();
        fp.write_tc_idle(fp.steering.is_empty() && !attach::xdp_mode_wanted(opts.mode).is_empty())?;

        let kept = attach::kept(&fp.layout);
        // Attachments kept for interfaces we no longer serve go.
        for pin in &kept {
            if !opts.interfaces.contains(&pin.interface) {
                tracing::info!(
                    "detaching the kept {} attachment of {} (no longer in fastpath.interfaces)",
                    pin.kind,
                    pin.interface
                );
                pin.discard();
            }
        }
        for ifname in &opts.interfaces {
            let l = attach::attach_interface(
                &mut fp.ebpf,
                &fp.plan,
                &fp.layout,
                ifname,
                opts.mode,
                &kept,
            )?;
            fp.attached.push(l);
        }
        fp.sync_tc_switch()?;
        Ok(fp)
    }

    /// `rb_tc` has nothing to do: no entry steers, and XDP, which counts
    /// every packet to a `pass` entry, runs on every interface.
    fn tc_idle_wanted(&self) -> bool {
        self.steering.is_empty()
            && self
                .attached
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
        self.maps.set_tc_idle(idle)?;
        self.tc_idle_written = Some(idle);
        Ok(())
    }

    /// Whether `rb_tc` is switched off (no entry steers and XDP runs on every
    /// interface): it then returns at once, and `rb_xdp` marks nothing.
    pub fn tc_idle(&self) -> bool {
        self.tc_idle_written == Some(true)
    }

    /// Per interface: index, XDP mode actually used, TC attached, adopted,
    /// and the mechanism of each.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.attached.iter().map(|l| l.attachment.clone()).collect()
    }

    /// Kernel ids of the loaded `rb_xdp` and `rb_tc` programs (for bpftool).
    pub fn program_ids(&self) -> Result<(u32, u32)> {
        let xdp = program_id(PROG_XDP, program::<Xdp>(&self.ebpf, PROG_XDP)?.info())?;
        let tc = program_id(
            PROG_TC,
            program::<SchedClassifier>(&self.ebpf, PROG_TC)?.info(),
        )?;
        Ok((xdp, tc))
    }

    /// Where the maps, `links/` and `netlink/` are: the layout's directory
    /// under `[agent] pin_path`.
    pub fn pin_path(&self) -> &Path {
        &self.layout.dir
    }

    /// Inserts or replaces the entry for exactly `prefix` (host bits are cleared).
    ///
    /// A steer entry switches `rb_tc` on before it is written (a packet XDP
    /// defers to TC must find it working); the last one replaced or removed
    /// switches it off after the write.
    pub fn set_segment(&mut self, prefix: IpNet, value: SegmentValue) -> Result<()> {
        maps::validate_value(&prefix, &value)?;
        let net = prefix.trunc();
        if value.action == ACTION_STEER {
            if self.forwarding_warned.insert(value.backup_ifindex) {
                sysctl::warn_backup_forwarding(value.backup_ifindex, &prefix);
            }
            if self.steering.insert(net) {
                self.sync_tc_switch()?;
            }
        }
        self.maps.insert(&prefix, net, value)?;
        if value.action != ACTION_STEER && self.steering.remove(&net) {
            self.sync_tc_switch()?;
        }
        Ok(())
    }

    /// Removes the entry for exactly `prefix`; Ok(false) if there was none.
    pub fn remove_segment(&mut self, prefix: IpNet) -> Result<bool> {
        let removed = self.maps.remove(prefix)?;
        if self.steering.remove(&prefix.trunc()) {
            self.sync_tc_switch()?;
        }
        Ok(removed)
    }

    /// Every entry of both tries (adoption after a restart).
    pub fn segments(&self) -> Result<Vec<(IpNet, SegmentValue)>> {
        self.maps.segments()
    }

    /// Counters of a group summed over CPUs.
    pub fn group_stats(&self, group_id: u32) -> Result<GroupStats> {
        self.maps.group_stats(group_id)
    }

    /// Zeroes a group slot's counters (a reload gave the slot to another
    /// group, or emptied it).
    pub fn reset_group_stats(&mut self, group_id: u32) -> Result<()> {
        self.maps.reset_group_stats(group_id)
    }

    /// Attaches the programs to one more interface (a reload added it to
    /// `fastpath.interfaces`). Nothing happens if it is attached already.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<Attachment> {
        if let Some(l) = self
            .attached
            .iter()
            .find(|l| l.attachment.interface == ifname)
        {
            return Ok(l.attachment.clone());
        }
        let l =
            attach::attach_interface(&mut self.ebpf, &self.plan, &self.layout, ifname, mode, &[])?;
        let attachment = l.attachment.clone();
        self.attached.push(l);
        self.sync_tc_switch()?;
        Ok(attachment)
    }

    /// Detaches the programs from one interface (a reload removed it from
    /// `fastpath.interfaces`), including an attachment kept for it.
    /// Returns whether it was attached.
    pub fn detach(&mut self, ifname: &str) -> Result<bool> {
        let Some(pos) = self
            .attached
            .iter()
            .position(|l| l.attachment.interface == ifname)
        else {
            return Ok(false);
        };
        // Unpinning and closing its bpf links, or the netlink request that
        // undoes a netlink attachment, is what takes the programs off.
        let bpf_link_detach = self.kernel.has(Feature::LinkDetach);
        self.attached.remove(pos).detach(bpf_link_detach);
        for pin in attach::kept(&self.layout) {
            if pin.interface == ifname {
                pin.discard();
            }
        }
        self.sync_tc_switch()?;
        Ok(true)
    }

    /// Runs `rb_xdp` on `frame` through BPF_PROG_TEST_RUN (tests, bench).
    pub fn test_run_xdp(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        test_run::xdp(&self.ebpf, frame, repeat)
    }

    /// Runs the trivial `rb_floor` (XDP_PASS) on `frame` through
    /// BPF_PROG_TEST_RUN: the floor the bench measures `rb_xdp` against.
    /// Loaded on first use; the agent itself never loads it.
    pub fn test_run_floor(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        test_run::floor(&mut self.ebpf, frame, repeat)
    }

    /// Runs `rb_tc` on `frame` through BPF_PROG_TEST_RUN (tests, bench).
    pub fn test_run_tc(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        test_run::tc(&self.ebpf, frame, repeat)
    }

    /// Stops the fast path. `keep = false`: detach every program and remove
    /// the pins and records (maps, bpf links, netlink records). `keep =
    /// true`: leave the attachments, their pins and records, and the maps in
    /// place so steering continues without the agent; the next `open`
    /// adopts them. (Dropping a `Fastpath` without `close`, as a crash does,
    /// is the same as `keep = true`.)
    pub fn close(mut self, keep: bool) -> Result<()> {
        let attached = std::mem::take(&mut self.attached);
        if keep {
            // Dropping an attachment leaves it in place.
            return Ok(());
        }
        for a in attached {
            a.detach(self.kernel.has(Feature::LinkDetach));
        }
        drop(self.ebpf);
        drop(self.maps);
        for l in &MAP_LAYOUTS {
            let p = self.layout.map(l.name);
            if p.exists() {
                std::fs::remove_file(&p)
                    .map_err(|source| FastpathError::RemovePin { path: p, source })?;
            }
        }
        // What was kept for interfaces never attached (an open that failed half-way).
        for pin in attach::kept(&self.layout) {
            pin.discard();
        }
        layout::remove_empty_dirs(&self.layout);
        Ok(())
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

/// The kernel id of `program`, from what its `info()` said.
fn program_id(
    program: &'static str,
    info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>,
) -> Result<u32> {
    info.map(|i| i.id())
        .map_err(|source| FastpathError::ProgramInfo { program, source })
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
