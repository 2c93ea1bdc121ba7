//! `cargo xtask bench` (failover part): hot-standby switchover.
//!
//! - Time from the route deletion to the steering entry being written, from
//!   the agent's own timestamps (status `last_steer_latency_us`: the daemon
//!   receiving the netlink event from the watcher thread → map write done),
//!   p50/p99 over RUNS runs.
//! - Packets lost at 10,000 and 100,000 packets/s per withdraw → restore
//!   cycle, at each switchover apart (out to the backup, back to the
//!   primary), for the agent with `prearm = true`, the agent with pre-arming
//!   off, and the Linux peer that needs no agent: a floating static route (a
//!   second route via the backup with a higher metric). Three labs, measured
//!   cycle by cycle in turn in the same run. The pre-armed agent puts such a
//!   route in the kernel itself. Loss is counted per packet (sequence
//!   numbers) and placed in 1 ms buckets around the route change; the
//!   receiving socket's own overflows are counted apart (the lab's loss, not
//!   the path's).
//!
//! `RB_BENCH_QUICK=1`: fewer runs (a run of a minute or so).
//! - Packets lost while steering when the agent is SIGKILLed and started
//!   again 3 s later (the pinned fast path steers on meanwhile).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use routebackup_tests::lab::{Backup, Lab, BACKUP_GW, DEST_ADDR, SEGMENT};
use routebackup_tests::traffic::{lost_from, Receiver, Sender};
use routebackup_tests::wait_until;

/// Stream rates of the loss table, packets/s.
const RATES: [u32; 2] = [10_000, 100_000];
/// The rate of the SIGKILL measurement.
const RATE: u32 = 10_000;

fn quick() -> bool {
    std::env::var_os("RB_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Switchovers timed.
fn runs() -> usize {
    if quick() {
        5
    } else {
        20
    }
}

/// Withdraw → restore cycles per rate and peer.
fn loss_runs() -> usize {
    if quick() {
        3
    } else {
        5
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "p is in 0..=1, so this is an index into `sorted`"
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn steered(lab: &Lab) -> bool {
    lab.status()
        .is_ok_and(|s| s["groups"][0]["segments"][0]["steered"].as_bool() == Some(true))
}

/// What one withdraw → restore cycle of a stream lost.
#[derive(Clone, Default)]
struct CycleLoss {
    /// Lost packets sent within `WINDOW` of the withdrawal (the way out to
    /// the backup) and of the restore (the way back to the primary).
    out: u64,
    back: u64,
    /// Lost packets sent between the two windows (over the backup), and
    /// outside both (over the primary): the loss of each path on this
    /// machine, the background the switchovers sit on.
    on_backup: u64,
    on_primary: u64,
    sent: u64,
    /// Datagrams the receiving socket dropped itself (buffer full): the
    /// lab's loss, included in the counts above. Zero unless the receiver
    /// fell more than its buffer behind.
    receiver: u64,
    /// (way back?, ms from the route change) of each packet lost in a
    /// window: where in the switchover it went (1 ms buckets).
    offsets: Vec<(bool, i64)>,
}

/// A switchover's window: packets sent from 20 ms before the route change
/// to 100 ms after it (the agent writes its entry within a millisecond).
const WINDOW: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(100));

/// Whole milliseconds from `at` to `t`, rounded down (−1: the last
/// millisecond before).
fn ms_from(at: Instant, t: Instant) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if t >= at {
        ms(t - at)
    } else {
        -ms(at - t) - 1
    }
}

/// One withdraw → (1 s) → restore → (1 s) cycle of a `rate` packets/s stream.
fn lost_in_cycle(lab: &Lab, wait_steered: bool, rate: u32) -> Result<CycleLoss> {
    let overflows = lab.dest_rcvbuf_errors()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let dst: SocketAddr = format!("{DEST_ADDR}:9000").parse()?;
    let tx = Sender::start(&lab.lan.path(), dst, rate)?;
    std::thread::sleep(Duration::from_millis(500));
    let withdrawn = Instant::now();
    lab.withdraw_primary()?;
    // No status polling during the switchover: it would compete for the CPU
    // with the agent (the floating static route has no such load).
    std::thread::sleep(Duration::from_secs(1));
    if wait_steered {
        ensure!(steered(lab), "not steered 1 s after the withdrawal");
    }
    let restored = Instant::now();
    lab.restore_primary()?;
    std::thread::sleep(Duration::from_secs(1));
    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let lost = lost_from(sent.len(), &rx.stop(), 0);
    if wait_steered {
        wait_until(Duration::from_secs(2), || Ok(!steered(lab)))?;
    }
    std::thread::sleep(Duration::from_millis(200));
    ensure!(
        sent.len() as u64 > u64::from(rate.min(10_000)),
        "sender too slow: {} packets",
        sent.len()
    );
    let near = |at: Instant, t: Instant| t + WINDOW.0 >= at && t <= at + WINDOW.1;
    let mut loss = CycleLoss {
        sent: sent.len() as u64,
        receiver: lab.dest_rcvbuf_errors()?.saturating_sub(overflows),
        ..CycleLoss::default()
    };
    for t in lost
        .iter()
        .filter_map(|seq| usize::try_from(*seq).ok().and_then(|i| sent.get(i)))
    {
        if near(withdrawn, *t) {
            loss.out += 1;
            loss.offsets.push((false, ms_from(withdrawn, *t)));
        } else if near(restored, *t) {
            loss.back += 1;
            loss.offsets.push((true, ms_from(restored, *t)));
        } else if *t > withdrawn && *t < restored {
            loss.on_backup += 1;
        } else {
            loss.on_primary += 1;
        }
    }
    Ok(loss)
}

/// "mean (max)" of `f` over `v`.
fn mean_max(v: &[CycleLoss], f: fn(&CycleLoss) -> u64) -> String {
    let max = v.iter().map(f).max().unwrap_or(0);
    let mean = v.iter().map(f).sum::<u64>() as f64 / v.len().max(1) as f64;
    format!("{mean:.1} ({max})")
}

/// The lost packets of `v` in 1 ms buckets around the withdrawal and the
/// restore ("ms: packets"), or "none".
fn buckets(v: &[CycleLoss]) -> String {
    let mut out = String::new();
    for (back, name) in [(false, "withdrawal"), (true, "restore")] {
        let mut by_ms = std::collections::BTreeMap::<i64, u32>::new();
        for (_, ms) in v.iter().flat_map(|c| &c.offsets).filter(|o| o.0 == back) {
            *by_ms.entry(*ms).or_default() += 1;
        }
        if !by_ms.is_empty() {
            let list: Vec<String> = by_ms.iter().map(|(ms, n)| format!("{ms}: {n}")).collect();
            out.push_str(&format!("{name} {{{}}} ", list.join(", ")));
        }
    }
    if out.is_empty() {
        "none".to_string()
    } else {
        out
    }
}

/// Packets lost at RATE, once steering is established, across a SIGKILL of
/// the agent and a restart 3 s later.
fn lost_across_sigkill() -> Result<usize> {
    let mut lab = Lab::new(Backup::HotStandby)?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &["--log-level", "info"])?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let dst: SocketAddr = format!("{DEST_ADDR}:9000").parse()?;
    let tx = Sender::start(&lab.lan.path(), dst, RATE)?;
    lab.withdraw_primary()?;
    wait_until(Duration::from_secs(2), || Ok(steered(&lab)))?;
    std::thread::sleep(Duration::from_millis(500));
    let from = rx.arrivals().iter().map(|a| a.seq).max().unwrap_or(0);
    lab.stop_agent(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_secs(3));
    lab.start_agent(&cfg, &["--log-level", "info"])?;
    wait_until(Duration::from_secs(2), || Ok(steered(&lab)))?;
    std::thread::sleep(Duration::from_secs(1));
    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    Ok(lost_from(sent.len(), &rx.stop(), from).len())
}

fn main() -> Result<()> {
    // The agent, pre-arming (the default for an always-up link; said
    // explicitly, as the second lab says `prearm = false`).
    let mut lab = Lab::new(Backup::HotStandby)?;
    let cfg = lab.config("0s", "auto", "prearm = true");
    lab.start_agent(&cfg, &["--log-level", "info"])?;
    let mut latencies = Vec::new();
    for _ in 0..runs() {
        let t0 = Instant::now();
        lab.withdraw_primary()?;
        wait_until(Duration::from_secs(2), || Ok(steered(&lab)))?;
        let seen = t0.elapsed();
        let s = lab.status()?;
        let us = s["groups"][0]["last_steer_latency_us"]
            .as_f64()
            .with_context(|| format!("status has no last_steer_latency_us: {s}"))?;
        latencies.push((us, seen.as_secs_f64() * 1e6));
        lab.restore_primary()?;
        wait_until(Duration::from_secs(2), || Ok(!steered(&lab)))?;
    }
    // The agent with pre-arming off (`prearm = false`), and the floating static
    // route: no agent, a second route via the backup. Each in its own lab,
    // all alive at once, measured cycle by cycle in turn (A B C A B C), so
    // the machine's load falls on all three alike.
    let mut plain = Lab::new(Backup::HotStandby)?;
    let plain_cfg = plain.config("0s", "auto", "prearm = false");
    plain.start_agent(&plain_cfg, &["--log-level", "info"])?;
    let floating = Lab::new(Backup::HotStandby)?;
    floating.edge.sh(&format!(
        "ip route add {SEGMENT} via {BACKUP_GW} dev bk0 metric 200"
    ))?;
    let peers = [(&lab, true), (&plain, true), (&floating, false)];
    // losses[rate][peer]: one entry per cycle.
    let mut losses = vec![vec![Vec::new(); peers.len()]; RATES.len()];
    for (r, rate) in RATES.iter().enumerate() {
        for _ in 0..loss_runs() {
            for (p, (peer, agent)) in peers.iter().enumerate() {
                losses[r][p].push(lost_in_cycle(peer, *agent, *rate)?);
            }
        }
    }
    drop((lab, plain, floating));

    let mut agent_us: Vec<f64> = latencies.iter().map(|l| l.0).collect();
    let mut seen_us: Vec<f64> = latencies.iter().map(|l| l.1).collect();
    agent_us.sort_by(f64::total_cmp);
    seen_us.sort_by(f64::total_cmp);
    // Background loss per second over the backup (about 0.9 s per cycle
    // between the windows) and over the primary (about 1.4 s).
    let bg = |v: &[CycleLoss], f: fn(&CycleLoss) -> u64, secs: f64| {
        v.iter().map(f).sum::<u64>() as f64 / v.len().max(1) as f64 / secs
    };
    // The rate the sender reached; the loss outside the windows; what of
    // all that the receiving socket dropped itself.
    let other = |v: &[CycleLoss]| {
        format!(
            "{:.0} pps; {:.0}/s, {:.0}/s; {}",
            v.iter().map(|x| x.sent).sum::<u64>() as f64 / v.len().max(1) as f64 / 2.5,
            bg(v, |x| x.on_backup, 0.88),
            bg(v, |x| x.on_primary, 1.38),
            v.iter().map(|x| x.receiver).sum::<u64>()
        )
    };

    let (runs, loss_runs) = (runs(), loss_runs());
    println!("\n### Failover (hot standby, {runs} switchovers; loss over {loss_runs} withdraw → restore cycles per rate and peer)\n");
    println!("| measure | routebackup, `prearm = true` | routebackup, `prearm = false` | floating static route | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| route event → steering entry written, p50 (agent timestamps) | {:.0} µs | | n/a | |",
        percentile(&agent_us, 0.5)
    );
    println!(
        "| route event → steering entry written, p99 (agent timestamps) | {:.0} µs | | n/a | ≤ 1 ms |",
        percentile(&agent_us, 0.99)
    );
    println!(
        "| `ip route del` → `status` shows steered, p50 (includes CLI polling) | {:.1} ms | | n/a | |",
        percentile(&seen_us, 0.5) / 1000.0
    );
    for (rate, by_peer) in RATES.iter().zip(&losses) {
        let row = |what: &str, f: &dyn Fn(&[CycleLoss]) -> String, target: &str| {
            let cells: Vec<String> = by_peer.iter().map(|v| f(v)).collect();
            println!("| {what} | {} | {target} |", cells.join(" | "));
        };
        row(
            &format!(
                "packets lost at the withdrawal (out to the backup) at {rate} pps, mean (max)"
            ),
            &|v| mean_max(v, |x| x.out),
            "≤ static",
        );
        row(
            &format!("packets lost at the restore (back to the primary) at {rate} pps, mean (max)"),
            &|v| mean_max(v, |x| x.back),
            "≤ static",
        );
        row(
            &format!("… at {rate} pps: rate reached; loss outside the switchovers via backup, via primary; of all loss, dropped by the receiving socket"),
            &other,
            "",
        );
    }
    println!("\nLost packets by ms from the route change (negative: sent before it):");
    for (rate, by_peer) in RATES.iter().zip(&losses) {
        for (name, v) in ["prearm = true", "pre-arming off", "floating static route"]
            .iter()
            .zip(by_peer)
        {
            println!("- {rate} pps, {name}: {}", buckets(v));
        }
    }
    println!(
        "\nSIGKILL + restart while steering: {} packets lost (goal 0)",
        lost_across_sigkill()?
    );
    Ok(())
}
