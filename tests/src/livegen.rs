//! Live traffic: a veth lab, a generator of 64-byte UDP frames at
//! saturation, and what a measurement window saw.
//!
//! ```text
//!  [gen] g0 ──── <ingress> [edge] wan0 ──── s_p ┐
//!                                  bk0  ──── s_b ┴ [sink]
//! ```
//! - Two generators ([`Generator`]), each a thread in `gen` pinned to one
//!   CPU per entry of the run's CPU list:
//!   - `live`: `rb_bench_gen` (ebpf/src/bench.rs) run by `BPF_PROG_TEST_RUN`
//!     with `BPF_F_TEST_XDP_LIVE_FRAMES` (aya's
//!     `TestRunAttrs::xdp_live_frames`): every repetition really transmits
//!     (`XDP_TX` out of `g0`, so into the edge's ingress ring). One call
//!     with a huge repeat count per window, ended by SIGUSR1 (the kernel's
//!     loop checks for a pending signal and returns EINTR): each call swaps
//!     the kernel's XDP dispatcher and waits for RCU, so many short calls
//!     would make a generator that mostly sleeps and sends bursts.
//!   - `clone`: where the kernel refuses live frames (EPERM on hardened
//!     6.18 builds), an AF_PACKET socket on `g0` sends the frame in a loop
//!     and `rb_bench_amp`, on `g0`'s TC egress, turns each send into
//!     `AMP_COPIES` frames with `bpf_clone_redirect` back to `g0`'s egress.
//!     Why this one: it needs nothing the hardened kernel refuses (TC and
//!     `bpf_clone_redirect` are the agent's own requirements), no package
//!     and no ring setup, and a clone costs far less than a system call:
//!     a plain AF_PACKET loop (one send per frame) offered about a quarter
//!     of its rate here (see `AMP_COPIES`). AF_XDP on a veth is copy mode,
//!     one skb per frame built by a system call, as that loop. trafgen
//!     (netsniff-ng 0.6.8, TX ring, with or without `--qdisc-path`)
//!     stalled after a few thousand frames into a veth whose peer runs
//!     threaded NAPI, as the edge's does, so it was no candidate.
//!     Unlike live frames its frames arrive at the edge as skbs (the edge's
//!     XDP copies each into a page first), so a steering configuration
//!     costs the edge more per frame than with live frames: the bench says
//!     which generator ran.
//!
//!   `ROUTEBACKUP_LIVEGEN=clone|live` forces one; by default `live` where
//!   `Kernel::host()` has live frames, else `clone`. Both the XDP and the
//!   TC generator program are loaded either way (both load on this
//!   kernel; only running live frames is refused).
//! - The edge forwards 198.51.100.0/24 to `s_p` by its kernel route, or the
//!   fast path steers it to `bk0`. Its ingress uses threaded NAPI, so its
//!   forwarding work is a kernel thread the bench pins to a CPU.
//! - The sinks count and drop in XDP (`rb_bench_sink`): counts are of
//!   delivered frames, per interface. The XDP program also makes `s_p` and
//!   `s_b` native XDP redirect targets.
//! - Next hops are permanent neighbours: the sinks drop ARP too.
//! - Saturation: a window whose generator did not offer more than the edge
//!   took (no drops at its ingress, its NAPI CPU not busy) measured the
//!   generator, not the edge: [`Window::saturated`] tells which.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::links::LinkOrder;
use aya::programs::tc::{NlOptions, TcAttachOptions, TcAttachType};
use aya::programs::{
    ProgramError, SchedClassifier, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
};
use aya::{Ebpf, EbpfLoader};
use routebackup::config::AttachMode;
use routebackup::fastpath::{gateway_bytes, Fastpath, FastpathOptions};
use routebackup::kernel::{Feature, Kernel};
use routebackup_common::{
    SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_MACS_VALID,
};

use crate::frames::{self, FrameSpec, LAN_DST_MAC, LAN_SRC_MAC};
use crate::{sh, veth_pair, BpfFs, Netns, VethEnd};

pub const SEGMENT: &str = "198.51.100.0/24";
pub const DEST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const PRIMARY_GW: &str = "10.0.1.2";
pub const BACKUP_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Frame length without FCS: 64 bytes on the wire.
pub const FRAME_LEN: usize = 60;

const WAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const SINK_P_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const BK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
const SINK_B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];

const PROG_GEN: &str = "rb_bench_gen";
const PROG_SINK: &str = "rb_bench_sink";
const PROG_REDIRECT: &str = "rb_bench_redirect";
const PROG_AMP: &str = "rb_bench_amp";
/// Frames `rb_bench_amp` makes of each send (`ROUTEBACKUP_LIVEGEN_COPIES`
/// overrides it). Offered by one generator thread on this 2-core VM
/// (2026-12, kernel forwarding at the edge, two 1.5 s windows each):
/// 1 copy, a plain AF_PACKET loop, 0.51-0.54 Mpps; 8: 1.48-1.53; 64:
/// 1.85-1.95; 256: 1.81-2.06. Past 64 the send's share is already small.
const AMP_COPIES: u32 = 64;
/// Frames per `XDP_TX` batch of the live-frames loop (the kernel's
/// maximum is 256; its default, NAPI's 64, is what a driver does).
const GEN_BATCH: u32 = 64;

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How the lab makes its traffic (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// `BPF_PROG_TEST_RUN` with live frames, `rb_bench_gen` transmitting.
    Live,
    /// An AF_PACKET send loop amplified by `rb_bench_amp` (TC egress,
    /// `bpf_clone_redirect`).
    Clone,
}

impl Generator {
    /// `ROUTEBACKUP_LIVEGEN` (`live` or `clone`), else `live` where the host
    /// kernel runs live frames and `clone` where it does not.
    pub fn choose() -> Result<Generator> {
        match std::env::var("ROUTEBACKUP_LIVEGEN") {
            Ok(v) if v.is_empty() => Ok(Generator::for_host()),
            Ok(v) => Generator::from_name(&v)
                .with_context(|| format!("ROUTEBACKUP_LIVEGEN={v}: expected live or clone")),
            Err(_) => Ok(Generator::for_host()),
        }
    }

    pub fn for_host() -> Generator {
        if Kernel::host().has(Feature::LiveFrames) {
            Generator::Live
        } else {
            Generator::Clone
        }
    }

    pub fn from_name(name: &str) -> Option<Generator> {
        match name.trim() {
            "live" => Some(Generator::Live),
            "clone" => Some(Generator::Clone),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Generator::Live => "live",
            Generator::Clone => "clone",
        }
    }

    /// One line for a bench's header.
    pub fn describe(self) -> String {
        match self {
            Generator::Live => "live: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, \
                                rb_bench_gen transmitting XDP_TX out of g0"
                .to_string(),
            Generator::Clone => format!(
                "clone: an AF_PACKET send loop on g0, each frame made {} frames by \
                 rb_bench_amp (TC egress, bpf_clone_redirect to g0)",
                amp_copies().unwrap_or(AMP_COPIES)
            ),
        }
    }
}

/// The generator's frame: IPv4/UDP from the generator to `DEST`, TTL 64,
/// `FRAME_LEN` bytes.
fn gen_frame() -> Vec<u8> {
    frames::ipv4(
        GEN_ADDR,
        DEST,
        &FrameSpec {
            payload: FRAME_LEN - 42,
            ..FrameSpec::default()
        },
    )
}

/// The kernel object the agent embeds (it never loads the bench programs;
/// aya loads programs by name from the same object).
pub fn ebpf_object() -> Result<&'static [u8]> {
    let object = routebackup::fastpath::object();
    if object.is_empty() {
        bail!("the agent was built with AYA_BUILD_SKIP=1 and embeds no BPF object: build it with `cargo xtask build`");
    }
    Ok(object)
}

/// The bench programs and their maps.
pub struct BenchProgs {
    ebpf: Ebpf,
    sink: PerCpuHashMap<MapData, u32, u64>,
    sent: PerCpuArray<MapData, u64>,
    gen_hdr: Array<MapData, [u8; 48]>,
    redirect: Array<MapData, [u8; 16]>,
    amp: Array<MapData, u32>,
}

impl BenchProgs {
    pub fn load() -> Result<BenchProgs> {
        let object = ebpf_object()?;
        let mut ebpf = EbpfLoader::new()
            .load(object)
            .context("load the BPF object")?;
        for name in [PROG_GEN, PROG_SINK, PROG_REDIRECT] {
            xdp_mut(&mut ebpf, name)?
                .load()
                .with_context(|| format!("the kernel rejected {name}"))?;
        }
        let amp: &mut SchedClassifier = ebpf
            .program_mut(PROG_AMP)
            .with_context(|| {
                format!("the BPF object has no program {PROG_AMP} (rebuild the agent)")
            })?
            .try_into()?;
        amp.load()
            .with_context(|| format!("the kernel rejected {PROG_AMP}"))?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("the BPF object has no map {name}"))
        };
        let sink = PerCpuHashMap::try_from(take("bench_sink")?)?;
        let sent = PerCpuArray::try_from(take("bench_gen_sent")?)?;
        let gen_hdr = Array::try_from(take("bench_gen_hdr")?)?;
        let redirect = Array::try_from(take("bench_redirect")?)?;
        let amp = Array::try_from(take("bench_amp")?)?;
        Ok(BenchProgs {
            ebpf,
            sink,
            sent,
            gen_hdr,
            redirect,
            amp,
        })
    }

    /// Slot 0: frames offered; slot 1: frames the veth refused at once.
    fn sent(&self, slot: u32) -> Result<u64> {
        Ok(self
            .sent
            .get(&slot, 0)?
            .iter()
            .copied()
            .fold(0, u64::wrapping_add))
    }

    /// Starts counting frames that arrive on `ifindex` at a sink.
    fn count_sink(&mut self, ifindex: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        self.sink
            .insert(ifindex, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        Ok(())
    }

    fn sink_count(&self, ifindex: u32) -> Result<u64> {
        Ok(self
            .sink
            .get(&ifindex, 0)?
            .iter()
            .copied()
            .fold(0, u64::wrapping_add))
    }
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let p = ebpf
        .program_mut(name)
        .with_context(|| format!("the BPF object has no program {name} (rebuild the agent)"))?;
    Ok(p.try_into()?)
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    let p = ebpf
        .program(name)
        .with_context(|| format!("the BPF object has no program {name} (rebuild the agent)"))?;
    Ok(p.try_into()?)
}

/// Counters at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    /// Frames delivered to the primary / backup sink.
    pub primary: u64,
    pub backup: u64,
    /// Frames the generator offered.
    pub offered: u64,
    /// Of those, frames `rb_bench_amp` saw the veth refuse (0 with live
    /// frames): what `ingress_drops` must count for the clone generator.
    pub refused: u64,
    /// Frames dropped at the edge's ingress because its ring was full when
    /// the generator transmitted. Live frames (`XDP_TX`): rx dropped of the
    /// ingress veth. Clone generator (skbs): tx dropped of `g0`, where a
    /// veth counts the skbs it could not queue to its peer. (A veth reports
    /// a refused `XDP_TX` frame in both, so the two are never added.)
    pub ingress_drops: u64,
    /// Per CPU: (busy, total) jiffies from /proc/stat.
    pub cpus: Vec<(u64, u64)>,
    /// Per queue of the ingress: frames its NAPI took from the ring
    /// (`rx_queue_<n>_xdp_packets` of `ethtool -S`).
    pub queues: Vec<u64>,
}

/// What one window measured, per second.
#[derive(Clone, Debug)]
pub struct Window {
    pub secs: f64,
    pub primary_pps: f64,
    pub backup_pps: f64,
    pub offered_pps: f64,
    pub drops_pps: f64,
    /// Busy share of each CPU over the window, 0..=1.
    pub busy: Vec<f64>,
    /// Frames per second each ingress queue took from its ring.
    pub queue_pps: Vec<f64>,
}

impl Window {
    /// Whether the edge, not the generator, limited this window: its
    /// ingress dropped at least 1 % of what was offered (the generator
    /// found its ring full), or `napi_cpu` (the CPU of the ingress's NAPI
    /// thread, when it has one to itself) was busy at least 98 % of the
    /// time. Neither: the generator offered no more than the edge forwards,
    /// and the forwarded rate is the generator's.
    pub fn saturated(&self, napi_cpu: Option<usize>) -> bool {
        (self.drops_pps > 0.0 && self.drops_pps >= 0.01 * self.offered_pps)
            || napi_cpu
                .and_then(|c| self.busy.get(c))
                .is_some_and(|&b| b >= 0.98)
    }

    pub fn between(a: &Sample, b: &Sample) -> Window {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Window {
            secs,
            primary_pps: rate(a.primary, b.primary),
            backup_pps: rate(a.backup, b.backup),
            offered_pps: rate(a.offered, b.offered),
            drops_pps: rate(a.ingress_drops, b.ingress_drops),
            queue_pps: a
                .queues
                .iter()
                .zip(&b.queues)
                .map(|(&x, &y)| rate(x, y))
                .collect(),
            busy: a
                .cpus
                .iter()
                .zip(&b.cpus)
                .map(|(&(b0, t0), &(b1, t1))| {
                    let t = t1.saturating_sub(t0);
                    if t == 0 {
                        0.0
                    } else {
                        b1.saturating_sub(b0) as f64 / t as f64
                    }
                })
                .collect(),
        }
    }
}

/// (busy, total) jiffies of every CPU ("cpuN" lines of /proc/stat).
pub fn cpu_times() -> Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        out.push((total.saturating_sub(idle), total));
    }
    Ok(out)
}

/// Pins thread or process `tid` to `cpus`.
pub fn pin(tid: i32, cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c is below CPU_SETSIZE on any machine this runs on.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: set is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc != 0 {
        bail!(
            "cannot pin {tid} to CPUs {cpus:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// SIGUSR1 interrupts a generator's test run: a handler that does nothing,
/// without SA_RESTART (the kernel returns EINTR, and the generator's loop
/// looks at its stop flag).
fn install_sigusr1() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigusr1 as *const () as usize;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &raw const sa, std::ptr::null_mut());
        }
    });
}

fn is_eintr(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EINTR))
}

/// The lab: `gen`, `edge` and `sink` namespaces, veths of `queues` queues.
pub struct LiveLab {
    pub gen: Netns,
    pub edge: Netns,
    pub sink: Netns,
    /// The edge's ingress veth (a name unique to this process: its NAPI
    /// threads are found by name, `napi/<ingress>-<id>`).
    pub ingress: String,
    pub queues: u32,
    pub bk0: u32,
    pub generator: Generator,
    g0: u32,
    s_p: u32,
    s_b: u32,
    progs: BenchProgs,
    trivial: Option<aya::programs::xdp::XdpLinkId>,
    pub bpffs: BpfFs,
    pin_seq: u32,
}

/// One end of a lab veth with its fixed MAC.
fn end<'a>(ns: &'a Netns, name: &'a str, mac: [u8; 6], addr: &'a str) -> VethEnd<'a> {
    VethEnd {
        ns,
        name,
        addr,
        mac: Some(mac),
    }
}

impl LiveLab {
    /// A lab with the generator [`Generator::choose`] picks.
    pub fn new(queues: u32) -> Result<LiveLab> {
        LiveLab::with_generator(queues, Generator::choose()?)
    }

    pub fn with_generator(queues: u32, generator: Generator) -> Result<LiveLab> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let ingress = format!("li{}{}", std::process::id() % 100_000, seq % 10);
        let gen = Netns::new("gen")?;
        let edge = Netns::new("edge")?;
        let sink = Netns::new("sink")?;
        for ns in [&gen, &edge, &sink] {
            // No IPv6 chatter (neighbour discovery, MLD) on the sinks' links.
            ns.sh(
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            )?;
        }
        veth_pair(
            queues,
            &end(&gen, "g0", LAN_SRC_MAC, "10.0.0.2/24"),
            &end(&edge, &ingress, LAN_DST_MAC, "10.0.0.1/24"),
        )?;
        veth_pair(
            queues,
            &end(&edge, "wan0", WAN_MAC, "10.0.1.1/30"),
            &end(&sink, "s_p", SINK_P_MAC, "10.0.1.2/30"),
        )?;
        let bk_gw = format!("{BACKUP_GW}/30");
        veth_pair(
            queues,
            &end(&edge, "bk0", BK_MAC, "10.0.2.1/30"),
            &end(&sink, "s_b", SINK_B_MAC, &bk_gw),
        )?;
        edge.sh(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
             net.ipv4.conf.default.rp_filter=0",
        )?;
        edge.sh(&format!(
            "ip route add {SEGMENT} via {PRIMARY_GW} dev wan0 && \
             ip neigh replace {PRIMARY_GW} lladdr {} nud permanent dev wan0 && \
             ip neigh replace {BACKUP_GW} lladdr {} nud permanent dev bk0",
            mac_text(SINK_P_MAC),
            mac_text(SINK_B_MAC)
        ))?;
        // Frames the generator transmits land in the ingress's ring only
        // while the ingress runs NAPI: GRO on (or an XDP program, which
        // not every configuration has). Threaded NAPI makes the edge's
        // forwarding a kernel thread the bench can pin. (/sys as this
        // namespace sees it: `ip netns exec`, not nsenter.)
        edge.sh(&format!("ethtool -K {ingress} gro on >/dev/null"))?;
        sh(&format!(
            "ip netns exec {} sh -c 'echo 1 > /sys/class/net/{ingress}/threaded'",
            edge.name
        ))?;
        let mut progs = BenchProgs::load()?;
        let (s_p, s_b) = (sink.ifindex("s_p")?, sink.ifindex("s_b")?);
        progs.count_sink(s_p)?;
        progs.count_sink(s_b)?;
        let sink_prog = xdp_mut(&mut progs.ebpf, PROG_SINK)?;
        sink.run_in(|| {
            for idx in [s_p, s_b] {
                // Held by the program for the lab's lifetime.
                sink_prog
                    .attach_to_if_index(idx, XdpMode::Driver)
                    .context("attach rb_bench_sink natively to a sink veth")?;
            }
            Ok(())
        })?;
        let frame = gen_frame();
        let mut hdr = [0u8; 48];
        hdr[..42].copy_from_slice(&frame[..42]);
        progs.gen_hdr.set(0, hdr, 0)?;
        let bk0 = edge.ifindex("bk0")?;
        let mut conf = [0u8; 16];
        conf[..4].copy_from_slice(&bk0.to_ne_bytes());
        conf[4..10].copy_from_slice(&SINK_B_MAC);
        conf[10..16].copy_from_slice(&BK_MAC);
        progs.redirect.set(0, conf, 0)?;
        if generator == Generator::Clone {
            amplify(&gen, &mut progs, queues)?;
        }
        Ok(LiveLab {
            generator,
            g0: gen.ifindex("g0")?,
            gen,
            edge,
            sink,
            ingress,
            queues,
            bk0,
            s_p,
            s_b,
            progs,
            trivial: None,
            bpffs: BpfFs::new()?,
            pin_seq: 0,
        })
    }

    /// routebackup's programs on the ingress as the agent attaches them
    /// (`mode`), with no segment entries.
    pub fn fastpath(&mut self, mode: AttachMode) -> Result<Fastpath> {
        self.pin_seq += 1;
        let opts = FastpathOptions {
            pin_path: self.bpffs.path().join(format!("rb{}", self.pin_seq)),
            interfaces: vec![self.ingress.clone()],
            mode,
            kernel: Kernel::host().clone(),
        };
        self.edge.run_in(|| Ok(Fastpath::open(&opts)?))
    }

    /// The entry of the segment while its group is on the primary.
    pub fn pass_value() -> SegmentValue {
        SegmentValue {
            group_id: 1,
            action: ACTION_PASS,
            ..SegmentValue::default()
        }
    }

    /// The steering entry the agent writes once the backup's neighbour is
    /// known: cached MACs and MTU.
    pub fn steer_value(&self) -> SegmentValue {
        SegmentValue {
            group_id: 1,
            action: ACTION_STEER,
            backup_ifindex: self.bk0,
            flags: FLAG_GATEWAY_V4 | FLAG_MACS_VALID,
            gateway: gateway_bytes(BACKUP_GW.into()),
            dmac: SINK_B_MAC,
            smac: BK_MAC,
            mtu: 1500,
            _pad: 0,
        }
    }

    /// Attaches `rb_bench_redirect` (natively) to the ingress.
    pub fn attach_trivial(&mut self) -> Result<()> {
        let idx = self.edge.ifindex(&self.ingress)?;
        let prog = xdp_mut(&mut self.progs.ebpf, PROG_REDIRECT)?;
        let id = self
            .edge
            .run_in(|| Ok(prog.attach_to_if_index(idx, XdpMode::Driver)?))?;
        self.trivial = Some(id);
        Ok(())
    }

    pub fn detach_trivial(&mut self) -> Result<()> {
        if let Some(id) = self.trivial.take() {
            xdp_mut(&mut self.progs.ebpf, PROG_REDIRECT)?.detach(id)?;
        }
        Ok(())
    }

    /// Process ids of the ingress's NAPI threads, in the order of their
    /// NAPI ids (so of their queues).
    pub fn napi_threads(&self) -> Result<Vec<i32>> {
        let prefix = format!("napi/{}-", self.ingress);
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
                continue;
            };
            if let Some(id) = comm.trim().strip_prefix(&prefix) {
                found.push((id.parse::<u64>().unwrap_or(u64::MAX), pid));
            }
        }
        found.sort_unstable();
        if found.is_empty() {
            bail!("no NAPI thread {prefix}* (threaded NAPI is not on for the ingress)");
        }
        Ok(found.into_iter().map(|(_, pid)| pid).collect())
    }

    /// Pins the ingress's NAPI thread of queue i to `cpus[i % cpus.len()]`.
    pub fn pin_napi(&self, cpus: &[usize]) -> Result<()> {
        for (i, pid) in self.napi_threads()?.into_iter().enumerate() {
            pin(pid, &[cpus[i % cpus.len()]])?;
        }
        Ok(())
    }

    fn ingress_drops(&self) -> Result<u64> {
        let stat = |ns: &Netns, dev: &str, dir: &str| -> Result<u64> {
            let out = ns.sh(&format!("ip -j -s link show dev {dev}"))?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            v[0]["stats64"][dir]["dropped"]
                .as_u64()
                .with_context(|| format!("no {dir} dropped in `{out}`"))
        };
        match self.generator {
            Generator::Live => stat(&self.edge, &self.ingress, "rx"),
            Generator::Clone => stat(&self.gen, "g0", "tx"),
        }
    }

    fn queue_packets(&self) -> Result<Vec<u64>> {
        let out = self.edge.sh(&format!("ethtool -S {}", self.ingress))?;
        (0..self.queues)
            .map(|q| {
                let key = format!("rx_queue_{q}_xdp_packets:");
                out.lines()
                    .find_map(|l| l.trim().strip_prefix(&key))
                    .and_then(|v| v.trim().parse().ok())
                    .with_context(|| format!("no {key} in `ethtool -S {}`", self.ingress))
            })
            .collect()
    }

    pub fn sample(&self) -> Result<Sample> {
        Ok(Sample {
            at: Instant::now(),
            primary: self.progs.sink_count(self.s_p)?,
            backup: self.progs.sink_count(self.s_b)?,
            offered: self.progs.sent(0)?,
            refused: self.progs.sent(1)?,
            ingress_drops: self.ingress_drops()?,
            cpus: cpu_times()?,
            queues: self.queue_packets()?,
        })
    }

    /// Runs one generator thread per CPU of `gen_cpus`, waits `settle`,
    /// measures `window`, then stops them.
    pub fn run(&self, gen_cpus: &[usize], settle: Duration, window: Duration) -> Result<Window> {
        install_sigusr1();
        let frame = gen_frame();
        let prog = xdp(&self.progs.ebpf, PROG_GEN)?;
        let stop = AtomicBool::new(false);
        let gen_path = self.gen.path();
        let g0 = self.g0;
        let generator = self.generator;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let mut handles = Vec::new();
            for &cpu in gen_cpus {
                let (tx, frame, stop, gen_path) = (tx.clone(), &frame, &stop, &gen_path);
                handles.push(s.spawn(move || -> Result<()> {
                    crate::traffic::enter_netns(gen_path)?;
                    pin(0, &[cpu])?;
                    let _ = tx.send(gettid());
                    match generator {
                        Generator::Live => generate(prog, frame, g0, stop),
                        Generator::Clone => send_loop(frame, g0, stop),
                    }
                }));
            }
            drop(tx);
            let mut tids = Vec::new();
            for _ in gen_cpus {
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(t) => tids.push(t),
                    Err(_) => break,
                }
            }
            let measured = if tids.len() == gen_cpus.len() {
                (|| {
                    std::thread::sleep(settle);
                    let a = self.sample()?;
                    std::thread::sleep(window);
                    let b = self.sample()?;
                    Ok(Window::between(&a, &b))
                })()
            } else {
                Err(anyhow::anyhow!("a generator thread did not start"))
            };
            stop.store(true, Ordering::SeqCst);
            // Signal until each has left its call: a signal that lands just
            // before the syscall starts is not seen by it.
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            while handles.iter().any(|h| !h.is_finished()) {
                for &t in &tids {
                    // SAFETY: tgkill of a thread of this process.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, t, libc::SIGUSR1) };
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for h in handles {
                h.join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
                    .context("generator")?;
            }
            measured
        })
    }
}

/// `ROUTEBACKUP_LIVEGEN_COPIES`, else `AMP_COPIES`.
fn amp_copies() -> Result<u32> {
    match std::env::var("ROUTEBACKUP_LIVEGEN_COPIES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("ROUTEBACKUP_LIVEGEN_COPIES={v}: expected a number")),
        Err(_) => Ok(AMP_COPIES),
    }
}

/// Sets the clone generator up on `g0`: `rb_bench_amp` on its TC egress
/// and, with several queues, XPS so that each generator thread transmits
/// into the queue of its CPU (as live frames do): without it every copy of
/// the one flow hashes to the same queue.
fn amplify(gen: &Netns, progs: &mut BenchProgs, queues: u32) -> Result<()> {
    progs.amp.set(0, amp_copies()?, 0)?;
    // A veth hands an skb to its peer's NAPI ring only while the sender
    // has no TSO (or the skb is a GRO candidate, which these clones are
    // not); otherwise it goes through netif_rx into the backlog of the
    // generator's own CPU, where the edge's forwarding would then run. An
    // XDP program on the ingress turns the peer's TSO off by itself, so
    // without this the configurations without XDP ran on the wrong CPU.
    gen.sh("ethtool -K g0 tso off >/dev/null")?;
    let tcx = Kernel::host().has(Feature::Tcx);
    let amp: &mut SchedClassifier = progs
        .ebpf
        .program_mut(PROG_AMP)
        .context("the BPF object has no rb_bench_amp")?
        .try_into()?;
    gen.run_in(|| {
        let options = if tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            // Adding the clsact qdisc that is there already fails harmlessly.
            let _ = aya::programs::tc::qdisc_add_clsact("g0");
            TcAttachOptions::Netlink(NlOptions::default())
        };
        // Held by the program for the lab's lifetime.
        amp.attach_with_options("g0", TcAttachType::Egress, options)
            .context("attach rb_bench_amp to g0's TC egress")?;
        Ok(())
    })?;
    if queues > 1 {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut script = String::new();
        for q in 0..queues as usize {
            let mask = 1u64 << (q % cpus.min(64));
            script.push_str(&format!(
                "echo {mask:x} > /sys/class/net/g0/queues/tx-{q}/xps_cpus; "
            ));
        }
        sh(&format!("ip netns exec {} sh -c '{script}'", gen.name))?;
    }
    Ok(())
}

/// The clone generator's loop: the whole frame (headers as the edge must
/// see them) sent on `g0` until `stop`; `rb_bench_amp` multiplies it.
fn send_loop(frame: &[u8], g0: u32, stop: &AtomicBool) -> Result<()> {
    // SAFETY: plain socket call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = u16::try_from(libc::AF_PACKET)?;
    to.sll_protocol = u16::try_from(libc::ETH_P_IP)?.to_be();
    to.sll_ifindex = i32::try_from(g0)?;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&frame[..6]);
    let to_len = u32::try_from(size_of::<libc::sockaddr_ll>())?;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: frame and `to` are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                raw,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                to_len,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // EINTR: the stop signal; ENOBUFS: a transmit queue was full,
            // which the counters already show.
            if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOBUFS)) {
                return Err(e).context("send on g0");
            }
        }
    }
    Ok(())
}

/// The generator's loop: one long live-frames test run after another
/// (each `u32::MAX` repetitions, minutes) until `stop`.
fn generate(prog: &Xdp, frame: &[u8], g0: u32, stop: &AtomicBool) -> Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex. XDP_TX leaves by the ingress device.
    let mut ctx = [0u8; 24];
    let len = u32::try_from(frame.len())?;
    ctx[4..8].copy_from_slice(&len.to_ne_bytes());
    ctx[12..16].copy_from_slice(&g0.to_ne_bytes());
    while !stop.load(Ordering::SeqCst) {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = u32::MAX;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(GEN_BATCH);
        match prog.test_run(opts) {
            Ok(_) => {}
            Err(e) if is_eintr(&e) => {}
            Err(e) => {
                return Err(e).context(
                    "BPF_PROG_TEST_RUN with live frames (a kernel that refuses them says EPERM: \
                     use ROUTEBACKUP_LIVEGEN=clone or leave it unset)",
                )
            }
        }
    }
    Ok(())
}

/// Median of `v` (mean of the middle two for an even count); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        assert!(median(&[]).abs() < 1e-9);
    }

    #[test]
    fn window_rates_and_busy() {
        let t = Instant::now();
        let a = Sample {
            at: t,
            primary: 0,
            backup: 10,
            offered: 0,
            refused: 0,
            ingress_drops: 5,
            cpus: vec![(10, 100), (0, 100)],
            queues: vec![0],
        };
        let b = Sample {
            at: t + Duration::from_secs(2),
            primary: 2_000,
            backup: 10,
            offered: 4_000,
            refused: 1_000,
            ingress_drops: 1_005,
            cpus: vec![(110, 200), (50, 200)],
            queues: vec![600],
        };
        let w = Window::between(&a, &b);
        assert!((w.primary_pps - 1_000.0).abs() < 1e-6);
        assert!(w.backup_pps.abs() < 1e-9);
        assert!((w.offered_pps - 2_000.0).abs() < 1e-6);
        assert!((w.drops_pps - 500.0).abs() < 1e-6);
        assert!((w.queue_pps[0] - 300.0).abs() < 1e-6);
        assert!((w.busy[0] - 1.0).abs() < 1e-9 && (w.busy[1] - 0.5).abs() < 1e-9);
    }

    fn window(offered: f64, drops: f64, napi_busy: f64) -> Window {
        Window {
            secs: 1.0,
            primary_pps: offered - drops,
            backup_pps: 0.0,
            offered_pps: offered,
            drops_pps: drops,
            busy: vec![1.0, napi_busy],
            queue_pps: vec![offered - drops],
        }
    }

    #[test]
    fn saturated_by_drops_or_a_busy_napi_cpu_else_generator_bound() {
        // Ring full: the edge limited the window, whatever its CPU shows.
        assert!(window(2e6, 1e6, 0.5).saturated(Some(1)));
        assert!(window(2e6, 1e6, 0.5).saturated(None));
        // Everything offered was taken and the NAPI CPU idled: generator-bound.
        assert!(!window(1e6, 0.0, 0.6).saturated(Some(1)));
        assert!(!window(1e6, 1e3, 0.6).saturated(Some(1)));
        // A NAPI CPU busy all the time counts only where it has the CPU alone.
        assert!(window(1e6, 0.0, 0.99).saturated(Some(1)));
        assert!(!window(1e6, 0.0, 0.99).saturated(None));
    }
}
