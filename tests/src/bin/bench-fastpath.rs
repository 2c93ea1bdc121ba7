//! ns/packet of `rb_xdp` and `rb_tc` through BPF_PROG_TEST_RUN, not steered
//! and steered, with 1 / 1,000 / 65,536 random distinct segments loaded.
//! "XDP steered" uses an entry with the next hop's MACs cached (the agent's
//! steady state, `FLAG_MACS_VALID`); "XDP steered, fib lookup" the fallback
//! without them (one `bpf_fib_lookup` per packet).
//! Prints a markdown table. Needs root; runs in its own namespace and bpffs
//! and removes both. `cargo run --release -p routebackup-tests --bin bench-fastpath`

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use routebackup::config::AttachMode;
use routebackup::fastpath::{gateway_bytes, Fastpath, FastpathError, FastpathOptions};
use routebackup_common::{SegmentValue, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_MACS_VALID};
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
/// Repetitions per BPF_PROG_TEST_RUN call: the kernel reruns the program on
/// the same buffer, so a steered frame (TTL 255) loses one TTL per run and
/// must be fresh again before it would expire.
const CHUNK: u32 = 250;

/// Average ns/packet over `repeat()` runs in calls of `chunk` repetitions (the
/// kernel's timer covers only its loop, so per-call overhead, e.g. swapping
/// the XDP dispatcher, ~ms, is not included).
fn per_packet(
    chunk: u32,
    run: &dyn Fn(u32) -> Result<routebackup::fastpath::TestRunOutput, FastpathError>,
) -> Result<f64> {
    let mut total = 0u128;
    for _ in 0..repeat() / chunk {
        total += run(chunk)?.duration.as_nanos() * u128::from(chunk);
    }
    Ok(total as f64 / f64::from(repeat()))
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
        })?;
        let value = SegmentValue {
            group_id: 1,
            action: ACTION_STEER,
            backup_ifindex: bk0,
            flags: FLAG_GATEWAY_V4,
            gateway: gateway_bytes(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
            ..Default::default()
        };
        // The steered destination lives in 100.64.0.0/10 (a /24 segment);
        // random segments are drawn from 10.0.0.0/8 and 172.16.0.0/12 with
        // prefix lengths 16..=32, so not-steered traffic (8.8.8.8) misses.
        let steered = frames::ipv4(
            Ipv4Addr::new(10, 9, 0, 5),
            Ipv4Addr::new(100, 64, 1, 7),
            &FrameSpec {
                ttl: 255,
                ..Default::default()
            },
        );
        let plain = frames::ipv4(
            Ipv4Addr::new(10, 9, 0, 5),
            Ipv4Addr::new(8, 8, 8, 8),
            &FrameSpec::default(),
        );
        // The agent's steady state: MACs and MTU cached from the neighbour table.
        fp.set_segment(
            "100.64.1.0/24".parse()?,
            SegmentValue {
                flags: FLAG_GATEWAY_V4 | FLAG_MACS_VALID,
                dmac: [0x02, 0, 0, 0, 0x0b, 0x02],
                smac: [0x02, 0, 0, 0, 0x0b, 0x01],
                mtu: 1500,
                ..value
            },
        )?;
        // The fallback: no cached MACs, a fib lookup per packet.
        fp.set_segment(
            "100.64.2.0/24".parse()?,
            SegmentValue {
                group_id: 3,
                ..value
            },
        )?;
        let fallback = frames::ipv4(
            Ipv4Addr::new(10, 9, 0, 5),
            Ipv4Addr::new(100, 64, 2, 7),
            &FrameSpec {
                ttl: 255,
                ..Default::default()
            },
        );
        let mut loaded = 2usize; // the steered and the fallback segment
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::new();
        let targets: &[usize] = if quick() {
            &[1, 65_536]
        } else {
            &[1, 1_000, 65_536]
        };
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
                fp.set_segment(
                    ipnet::IpNet::V4(net),
                    SegmentValue {
                        group_id: 2,
                        ..value
                    },
                )?;
                loaded += 1;
            }
            // The floor, measured next to the figures of each row.
            // (one call of all repetitions, like the not-steered figures).
            let floor = fp.test_run_floor(&plain, repeat())?.duration.as_nanos() as f64;
            rows.push((
                target,
                floor,
                // Not steered: the frame is untouched, one call of `repeat()`.
                per_packet(repeat(), &|n| fp.test_run_xdp(&plain, n))?,
                per_packet(CHUNK, &|n| fp.test_run_xdp(&steered, n))?,
                per_packet(CHUNK, &|n| fp.test_run_xdp(&fallback, n))?,
                per_packet(repeat(), &|n| fp.test_run_tc(&plain, n))?,
                per_packet(CHUNK, &|n| fp.test_run_tc(&steered, n))?,
            ));
            for g in [1, 3] {
                let s = fp.group_stats(g)?;
                if s.passed_packets != 0 || s.redirect_failures != 0 || s.deferred_packets != 0 {
                    anyhow::bail!("steered runs of group {g} were not all steered: {s:?}");
                }
            }
        }
        fp.close(false)?;
        Ok(rows)
    })?;
    let n = repeat();
    println!("\n### Fast path (BPF_PROG_TEST_RUN, {n} repetitions; steered frames in calls of {CHUNK} since each run decrements the TTL; 74-byte IPv4/UDP frame; ns/packet; in brackets: above the trivial XDP program's floor measured in the same row)\n");
    println!("| segments | floor (XDP_PASS) | XDP not steered | XDP steered (cached MACs) | XDP steered, fib lookup | TC not steered | TC steered |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (n, floor, xp, xs, xf, tp, ts) in rows {
        println!(
            "| {n} | {floor:.1} | {xp:.1} (+{:.1}) | {xs:.1} (+{:.1}) | {xf:.1} (+{:.1}) | {tp:.1} | {ts:.1} |",
            xp - floor,
            xs - floor,
            xf - floor
        );
    }
    Ok(())
}
