//! ns/packet of `rb_xdp` and `rb_tc` through BPF_PROG_TEST_RUN, not steered
//! and steered, with 1 / 1,000 / 65,536 random distinct segments loaded.
//! "XDP steered" uses an entry with the next hop's MACs cached (the agent's
//! steady state, `FLAG_MACS_VALID`); "XDP steered, fib lookup" the fallback
//! without them (one `bpf_fib_lookup` per packet).
//!
//! Two measurement patterns, each with the trivial program's floor measured
//! the same way (so a figure is only ever compared with a floor of its own
//! pattern):
//! - one call of all repetitions (not-steered frames: the program leaves
//!   them unchanged, so every repetition sees the same frame);
//! - calls of `CHUNK` repetitions (steered frames): the kernel copies the
//!   input once per call and reruns the program on the same buffer
//!   (net/bpf/test_run.c, `bpf_test_run`), so each run lowers the TTL of the
//!   previous run's output, and a frame sent with TTL 255 must be fresh again
//!   before it would expire. Each call starts with cold caches (the syscall,
//!   the XDP dispatcher swap and its RCU wait run in between), which the
//!   kernel's timer includes and a long call spreads over more repetitions.
//!
//! Not steered is measured in two states of the segment entries: nothing
//! steered (every entry `pass`; the agent then tells the programs that
//! `rb_tc` has nothing to do) and one group steered (TC needed).
//!
//! Each figure is the median of `ROUNDS` rounds; a round measures every
//! figure once, in turn (A B C A B C ...), so a slow window of the VM moves
//! all figures of a round, not one.
//! Prints markdown tables. Needs root; runs in its own namespace and bpffs
//! and removes both. `cargo run --release -p routebackup-tests --bin bench-fastpath`

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use routebackup::config::AttachMode;
use routebackup::fastpath::{
    gateway_bytes, Fastpath, FastpathError, FastpathOptions, TestRunOutput,
};
use routebackup::kernel::{Feature, Kernel};
use routebackup_common::{
    SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_MACS_VALID,
};
use routebackup_tests::frames::{self, FrameSpec};
use routebackup_tests::{BpfFs, Netns};

/// Repetitions per figure; `RB_BENCH_QUICK=1` takes a tenth (and fewer
/// segment counts) for a run of seconds rather than minutes.
fn repeat() -> u32 {
    if quick() {
        100_000
    } else {
        1_000_000
    }
}

fn quick() -> bool {
    std::env::var_os("RB_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Repetitions per BPF_PROG_TEST_RUN call for steered frames (TTL 255, one
/// lower per repetition; see the module doc).
const CHUNK: u32 = 250;
/// Repetitions per figure in calls of `CHUNK`, in both modes: each call
/// costs milliseconds outside the kernel's timer (the XDP dispatcher swap
/// and its RCU wait), so a million would be 4,000 calls per figure and the
/// full bench would take the better part of an hour for the same medians.
const CHUNKED_REPEAT: u32 = 100_000;
/// Rounds per figure (medians).
const ROUNDS: u32 = 5;

type Run<'a> = dyn Fn(&mut Fastpath, u32) -> Result<TestRunOutput, FastpathError> + 'a;

/// One figure: how it runs and in calls of how many repetitions.
struct Figure<'a> {
    chunk: Option<u32>,
    run: &'a Run<'a>,
    samples: Vec<f64>,
}

impl Figure<'_> {
    /// Average ns/packet over `n` repetitions (the kernel's timer covers only
    /// its loop; per-call work outside it, e.g. swapping the XDP dispatcher,
    /// is not included).
    fn sample(&mut self, fp: &mut Fastpath, n: u32) -> Result<()> {
        let n = if self.chunk.is_some() {
            n.min(CHUNKED_REPEAT / ROUNDS)
        } else {
            n
        };
        let chunk = self.chunk.unwrap_or(n);
        let mut total = 0u128;
        for _ in 0..n / chunk {
            total += (self.run)(fp, chunk)?.duration.as_nanos() * u128::from(chunk);
        }
        self.samples
            .push(total as f64 / f64::from(n / chunk * chunk));
        Ok(())
    }

    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Measures all figures in `ROUNDS` interleaved rounds; returns their medians.
fn measure(fp: &mut Fastpath, figures: &mut [Figure<'_>]) -> Result<Vec<f64>> {
    let per_round = repeat() / ROUNDS;
    for _ in 0..ROUNDS {
        for f in figures.iter_mut() {
            f.sample(fp, per_round)?;
        }
    }
    Ok(figures.iter().map(Figure::median).collect())
}

fn figure<'a>(chunk: Option<u32>, run: &'a Run<'a>) -> Figure<'a> {
    Figure {
        chunk,
        run,
        samples: Vec::new(),
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One table row: the medians of one segment count.
struct Row {
    segments: usize,
    /// Nothing steered: floor, XDP not steered, TC not steered (one call each).
    idle: [f64; 3],
    /// A group steered: floor, XDP not steered, TC not steered (one call each).
    busy: [f64; 3],
    /// Calls of CHUNK: floor, XDP not steered, XDP steered, XDP fib, TC steered.
    chunked: [f64; 5],
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear script: setup, rows, tables"
)]
fn main() -> Result<()> {
    let ns = Netns::new("bench")?;
    ns.sh("sysctl -qw net.ipv4.conf.all.forwarding=1 && \
         ip link add bk0 address 02:00:00:00:0b:01 type veth peer name bk1 && \
         ip addr add 192.0.2.1/24 dev bk0 && ip link set bk0 up && ip link set bk1 up && \
         ip neigh add 192.0.2.2 lladdr 02:00:00:00:0b:02 nud permanent dev bk0")?;
    let bk0 = ns.ifindex("bk0")?;
    let bpffs = BpfFs::new()?;
    let pin = bpffs.path().join("rb");
    let rows = ns.run_in(move || {
        let mut fp = Fastpath::open(&FastpathOptions {
            pin_path: pin,
            interfaces: vec![],
            mode: AttachMode::Tc,
            kernel: Kernel::host().clone(),
        })?;
        let value = SegmentValue {
            group_id: 1,
            action: ACTION_STEER,
            backup_ifindex: bk0,
            flags: FLAG_GATEWAY_V4,
            gateway: gateway_bytes(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
            ..Default::default()
        };
        // The steered destinations live in 100.64.0.0/10 (/24 segments);
        // random segments are drawn from 10.0.0.0/8 and 172.16.0.0/12 with
        // prefix lengths 16..=32, so not-steered traffic (8.8.8.8) misses.
        let ttl255 = FrameSpec {
            ttl: 255,
            ..Default::default()
        };
        let steered = frames::ipv4(
            Ipv4Addr::new(10, 9, 0, 5),
            Ipv4Addr::new(100, 64, 1, 7),
            &ttl255,
        );
        let fallback = frames::ipv4(
            Ipv4Addr::new(10, 9, 0, 5),
            Ipv4Addr::new(100, 64, 2, 7),
            &ttl255,
        );
        let plain = frames::ipv4(
            Ipv4Addr::new(10, 9, 0, 5),
            Ipv4Addr::new(8, 8, 8, 8),
            &FrameSpec::default(),
        );
        // The agent's steady state: MACs and MTU cached from the neighbour table.
        let cached: (ipnet::IpNet, SegmentValue) = (
            "100.64.1.0/24".parse()?,
            SegmentValue {
                flags: FLAG_GATEWAY_V4 | FLAG_MACS_VALID,
                dmac: [0x02, 0, 0, 0, 0x0b, 0x02],
                smac: [0x02, 0, 0, 0, 0x0b, 0x01],
                mtu: 1500,
                ..value
            },
        );
        // The fallback: no cached MACs, a fib lookup per packet.
        let fib: (ipnet::IpNet, SegmentValue) = (
            "100.64.2.0/24".parse()?,
            SegmentValue {
                group_id: 3,
                ..value
            },
        );
        let pass = |v: SegmentValue| SegmentValue {
            action: ACTION_PASS,
            backup_ifindex: 0,
            ..v
        };
        let set_steering = |fp: &mut Fastpath, on: bool| -> Result<()> {
            for (net, v) in [cached, fib] {
                fp.set_segment(net, if on { v } else { pass(v) })?;
            }
            Ok(())
        };
        let mut loaded = 2usize; // the steered and the fallback segment
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        let targets: &[usize] = if quick() {
            &[1, 65_536]
        } else {
            &[1, 1_000, 65_536]
        };
        let floor: &Run<'_> = &|fp, n| fp.test_run_floor(&plain, n);
        let xdp_plain: &Run<'_> = &|fp, n| fp.test_run_xdp(&plain, n);
        let tc_plain: &Run<'_> = &|fp, n| fp.test_run_tc(&plain, n);
        let xdp_steered: &Run<'_> = &|fp, n| fp.test_run_xdp(&steered, n);
        let xdp_fib: &Run<'_> = &|fp, n| fp.test_run_xdp(&fallback, n);
        let tc_steered: &Run<'_> = &|fp, n| fp.test_run_tc(&steered, n);
        for &target in targets {
            while loaded < target {
                let r = rng.next();
                let len = 16 + (r % 17) as u8;
                let base: u32 = if r & (1 << 40) == 0 {
                    0x0a00_0000
                } else {
                    0xac10_0000
                };
                let span = if base == 0x0a00_0000 { 24 } else { 20 };
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "keeps the low random bits; the mask takes at most 24"
                )]
                let addr = base | ((r >> 8) as u32 & ((1 << span) - 1));
                let net = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len)?.trunc();
                if !seen.insert(net) {
                    continue;
                }
                // Every configured segment has an entry; `pass` while its
                // primary is up.
                fp.set_segment(
                    ipnet::IpNet::V4(net),
                    pass(SegmentValue {
                        group_id: 2,
                        ..value
                    }),
                )?;
                loaded += 1;
            }
            let one_call = || {
                [
                    figure(None, floor),
                    figure(None, xdp_plain),
                    figure(None, tc_plain),
                ]
            };
            set_steering(&mut fp, false)?;
            let idle = measure(&mut fp, &mut one_call())?;
            set_steering(&mut fp, true)?;
            let busy = measure(&mut fp, &mut one_call())?;
            let chunked = measure(
                &mut fp,
                &mut [
                    figure(Some(CHUNK), floor),
                    figure(Some(CHUNK), xdp_plain),
                    figure(Some(CHUNK), xdp_steered),
                    figure(Some(CHUNK), xdp_fib),
                    figure(Some(CHUNK), tc_steered),
                ],
            )?;
            for g in [1, 3] {
                let s = fp.group_stats(g)?;
                if s.passed_packets != 0 || s.redirect_failures != 0 || s.deferred_packets != 0 {
                    anyhow::bail!("steered runs of group {g} were not all steered: {s:?}");
                }
            }
            rows.push(Row {
                segments: target,
                idle: idle.try_into().map_err(|_| anyhow::anyhow!("3 figures"))?,
                busy: busy.try_into().map_err(|_| anyhow::anyhow!("3 figures"))?,
                chunked: chunked
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("5 figures"))?,
            });
        }
        fp.close(false)?;
        Ok(rows)
    })?;
    let n = repeat();
    println!(
        "\n### Fast path (BPF_PROG_TEST_RUN, 74-byte IPv4/UDP frame, ns/packet, medians of \
         {ROUNDS} interleaved rounds of {} repetitions; in brackets: above the trivial XDP \
         program's floor measured the same way in the same rounds)\n",
        n / ROUNDS
    );
    println!("Not steered, one call per round:\n");
    println!(
        "| segments | nothing steered: floor (XDP_PASS) | XDP | TC | a group steered: floor | XDP | TC |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let [f0, x0, t0] = r.idle;
        let [f1, x1, t1] = r.busy;
        println!(
            "| {} | {f0:.1} | {x0:.1} (+{:.1}) | {t0:.1} | {f1:.1} | {x1:.1} (+{:.1}) | {t1:.1} |",
            r.segments,
            x0 - f0,
            x1 - f1,
        );
    }
    // Where XDP cannot mark (no metadata), rb_tc examines again every
    // packet XDP passed while a group steers; with the mark it returns after
    // one read, as it does when switched off. So the fallback's price per
    // passed packet is TC's "a group steered" figure less its switched-off
    // one, and the mark's own price is XDP's "a group steered" figure less
    // its "nothing steered" one (measured where the kernel has metadata).
    let meta = Kernel::host().has(Feature::XdpMetadata);
    println!(
        "\nXDP metadata mark on this kernel ({}): {}. What the mark saves, and the fallback \
         costs, per packet XDP passes while a group steers:\n",
        Kernel::host().release,
        if meta {
            "yes, XDP marks"
        } else {
            "refused, the fallback ran: XDP leaves no mark, TC examines again"
        }
    );
    println!(
        "| segments | TC returns at once (switched off) | TC examines an unmarked packet | fallback: added per passed packet | XDP's mark: added per packet |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        let [f0, x0, t0] = r.idle;
        let [f1, x1, t1] = r.busy;
        let mark = if meta {
            format!("{:.1}", (x1 - f1) - (x0 - f0))
        } else {
            "(no mark here)".into()
        };
        println!(
            "| {} | {t0:.1} | {t1:.1} | +{:.1} | {mark} |",
            r.segments,
            t1 - t0
        );
    }
    println!(
        "\nCalls of {CHUNK} repetitions (steered frames: TTL 255, one lower per repetition), \
         {} repetitions per round, a group steered:\n",
        n.min(CHUNKED_REPEAT) / ROUNDS
    );
    println!(
        "| segments | floor (XDP_PASS) | XDP not steered | XDP steered (cached MACs) | XDP steered, fib lookup | TC steered | XDP steered, rb_xdp's per-call cost removed (vs one-call floor) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let [f, xp, xs, xf, ts] = r.chunked;
        // What calls of CHUNK add to rb_xdp's own figure (its not-steered
        // frame measured both ways), taken off the steered figure.
        let [f1, x1, _] = r.busy;
        let est = xs - (xp - x1);
        println!(
            "| {} | {f:.1} | {xp:.1} (+{:.1}) | {xs:.1} (+{:.1}) | {xf:.1} (+{:.1}) | {ts:.1} | {est:.1} (+{:.1}) |",
            r.segments,
            xp - f,
            xs - f,
            xf - f,
            est - f1,
        );
    }
    Ok(())
}
