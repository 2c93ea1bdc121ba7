//! Live traffic: a veth lab, a generator of 64-byte UDP frames at
//! saturation, and what a measurement window saw.
//!
//! ```text
//!  [gen] g0 ──── <ingress> [edge] wan0 ──── s_p ┐
//!                                  bk0  ──── s_b ┴ [sink]
//! ```
//! - The generator is `rb_bench_gen` (ebpf/src/bench.rs) run by
//!   `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` (aya's
//!   `TestRunAttrs::xdp_live_frames`) from a thread in `gen` pinned to one
//!   CPU: every repetition really transmits (`XDP_TX` out of `g0`, so into
//!   the edge's ingress ring). One call with a huge repeat count per window,
//!   ended by SIGUSR1 (the kernel's loop checks for a pending signal and
//!   returns EINTR): each call swaps the kernel's XDP dispatcher and waits
//!   for RCU, so many short calls would make a generator that mostly sleeps
//!   and sends bursts.
//! - The edge forwards 198.51.100.0/24 to `s_p` by its kernel route, or the
//!   fast path steers it to `bk0`. Its ingress uses threaded NAPI, so its
//!   forwarding work is a kernel thread the bench pins to a CPU.
//! - The sinks count and drop in XDP (`rb_bench_sink`): counts are of
//!   delivered frames, per interface. The XDP program also makes `s_p` and
//!   `s_b` native XDP redirect targets.
//! - Next hops are permanent neighbours: the sinks drop ARP too.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use routebackup::config::AttachMode;
use routebackup::fastpath::{gateway_bytes, Fastpath, FastpathOptions};
use routebackup::kernel::Kernel;
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
/// Frames per `XDP_TX` batch of the live-frames loop (the kernel's
/// maximum is 256; its default, NAPI's 64, is what a driver does).
const GEN_BATCH: u32 = 64;

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("the BPF object has no map {name}"))
        };
        let sink = PerCpuHashMap::try_from(take("bench_sink")?)?;
        let sent = PerCpuArray::try_from(take("bench_gen_sent")?)?;
        let gen_hdr = Array::try_from(take("bench_gen_hdr")?)?;
        let redirect = Array::try_from(take("bench_redirect")?)?;
        Ok(BenchProgs {
            ebpf,
            sink,
            sent,
            gen_hdr,
            redirect,
        })
    }

    fn sent(&self) -> Result<u64> {
        Ok(self
            .sent
            .get(&0, 0)?
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
    /// Frames dropped at the edge's ingress (rx dropped of its veth: a full
    /// ring when the generator's transmit found no room).
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
    pub fn new(queues: u32) -> Result<LiveLab> {
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
        Ok(LiveLab {
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
        let out = self
            .edge
            .sh(&format!("ip -j -s link show dev {}", self.ingress))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["stats64"]["rx"]["dropped"]
            .as_u64()
            .with_context(|| format!("no rx dropped in `{out}`"))
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
            offered: self.progs.sent()?,
            ingress_drops: self.ingress_drops()?,
            cpus: cpu_times()?,
            queues: self.queue_packets()?,
        })
    }

    /// Runs one generator per CPU of `gen_cpus` (each one test-run call),
    /// waits `settle`, measures `window`, then stops them.
    pub fn run(&self, gen_cpus: &[usize], settle: Duration, window: Duration) -> Result<Window> {
        install_sigusr1();
        let frame = gen_frame();
        let prog = xdp(&self.progs.ebpf, PROG_GEN)?;
        let stop = AtomicBool::new(false);
        let gen_path = self.gen.path();
        let g0 = self.g0;
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let mut handles = Vec::new();
            for &cpu in gen_cpus {
                let (tx, frame, stop, gen_path) = (tx.clone(), &frame, &stop, &gen_path);
                handles.push(s.spawn(move || -> Result<()> {
                    crate::traffic::enter_netns(gen_path)?;
                    pin(0, &[cpu])?;
                    let _ = tx.send(gettid());
                    generate(prog, frame, g0, stop)
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
            Err(e) => return Err(e).context("BPF_PROG_TEST_RUN with live frames"),
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
            ingress_drops: 5,
            cpus: vec![(10, 100), (0, 100)],
            queues: vec![0],
        };
        let b = Sample {
            at: t + Duration::from_secs(2),
            primary: 2_000,
            backup: 10,
            offered: 4_000,
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
}
