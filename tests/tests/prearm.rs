//! Pre-arming end to end (README "Zero-loss switchover"): the real agent in
//! the hot-standby lab (tests/src/lab.rs) installs a kernel route via the
//! backup behind the primary route, never counts it as primary, takes it
//! away when the link stops being ready or the group goes, never makes it
//! more specific than the primary; and a stream crossing switchovers loses
//! no more than with a floating static route measured in the same test.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use routebackup_tests::lab::{dest, flows_via, serial, Backup, Lab, BACKUP_GW, SEGMENT};
use routebackup_tests::traffic::{lost_from, Receiver, Sender};
use routebackup_tests::wait_until;

/// The edge's routes with protocol 252 (the agent's), as `ip route` lines.
fn ours(lab: &Lab) -> Result<Vec<String>> {
    Ok(lab
        .edge
        .sh("ip -4 route show table main proto 252")?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The pre-armed route for the lab's segment, as the agent installs it.
/// The pre-armed route as `ip route` prints it: at the metric floor, 255 in
/// the top byte (FRR reads it as administrative distance 255).
fn prearmed_line() -> String {
    format!("{SEGMENT} via {BACKUP_GW} dev bk0 metric {}", 255u32 << 24)
}

fn wait_ours(lab: &Lab, want: &[String], what: &str) -> Result<()> {
    wait_until(Duration::from_secs(5), || Ok(ours(lab)? == want)).with_context(|| {
        format!(
            "{what}: routes of ours {:?}, want {want:?}; log:\n{}",
            ours(lab).unwrap_or_default(),
            lab.log()
        )
    })
}

fn steered(lab: &Lab) -> bool {
    lab.status()
        .is_ok_and(|s| s["groups"][0]["segments"][0]["steered"].as_bool() == Some(true))
}

fn segment_status(lab: &Lab) -> Result<serde_json::Value> {
    Ok(lab.status()?["groups"][0]["segments"][0].clone())
}

fn reload(lab: &Lab, config: &str) -> Result<()> {
    std::fs::write(lab.config_path(), config)?;
    let pid = lab.agent_pid().context("agent pid")?;
    routebackup_tests::sh(&format!("kill -HUP {pid}"))?;
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn prearmed_route_sits_behind_the_primary_and_follows_link_and_config() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    // No `prearm` key: the default for an always-up link is on.
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;

    // Present while the primary is up and the link ready, at the segment's
    // own prefix (never more specific), behind the primary's metric.
    wait_ours(&lab, &[prearmed_line()], "pre-armed at start")?;
    let seg = segment_status(&lab)?;
    ensure!(seg["primary_up"] == true, "{seg}");
    // Never counted as primary: the bgp route holds the segment.
    ensure!(seg["held_by"]["proto"] == "bgp", "{seg}");
    let fp = &lab.status()?["fastpath"];
    ensure!(fp["prearmed"][0] == SEGMENT, "{fp}");
    let chosen = lab.edge.sh("ip -4 route get 198.51.100.10")?;
    ensure!(
        chosen.contains("dev wan0"),
        "kernel does not use the primary: {chosen}"
    );

    // Never counted as primary: withdrawing the primary makes the group lose
    // it, though our route still matches the segment.
    lab.withdraw_primary()?;
    wait_until(Duration::from_secs(5), || Ok(steered(&lab))).with_context(|| lab.log())?;
    ensure!(
        ours(&lab)? == vec![prearmed_line()],
        "disarmed by the outage"
    );
    lab.restore_primary()?;
    wait_until(Duration::from_secs(5), || Ok(!steered(&lab))).with_context(|| lab.log())?;
    wait_ours(&lab, &[prearmed_line()], "still pre-armed after recovery")?;

    // The link stops being ready (the backup router's side goes down: bk0
    // loses carrier, the kernel keeps its routes): the agent removes ours.
    lab.backup.sh("ip link set b_edge down")?;
    wait_ours(&lab, &[], "disarmed when the link went down")?;
    lab.backup.sh("ip link set b_edge up")?;
    wait_ours(
        &lab,
        &[prearmed_line()],
        "pre-armed again when the link came back",
    )?;

    // A covering group whose primary is the shorter /24: no route more
    // specific than the primary, so nothing at all.
    let covering = cfg.replace(
        &format!("segments = [\"{SEGMENT}\"]"),
        "segments = [\"198.51.100.0/25\"]\nmatch = \"covering\"",
    );
    ensure!(covering != cfg, "config shape changed");
    reload(&lab, &covering)?;
    wait_ours(&lab, &[], "disarmed for a covering segment")?;
    wait_until(Duration::from_secs(5), || {
        Ok(lab.group_state()? == "primary" && segment_status(&lab)?["prefix"] == "198.51.100.0/25")
    })
    .with_context(|| lab.log())?;

    // Back to the exact segment, then the group is removed (another group
    // on another segment takes its place): the route goes.
    reload(&lab, &cfg)?;
    wait_ours(&lab, &[prearmed_line()], "pre-armed after the reload")?;
    let other = cfg
        .replace("name = \"dest\"", "name = \"other\"")
        .replace(SEGMENT, "203.0.113.0/24");
    reload(&lab, &other)?;
    wait_ours(&lab, &[], "disarmed when the group was removed")?;

    // `prearm = false`: nothing.
    reload(&lab, &lab.config("0s", "auto", "prearm = false"))?;
    wait_until(Duration::from_secs(5), || {
        Ok(segment_status(&lab)?["prefix"] == SEGMENT)
    })?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(ours(&lab)?.is_empty(), "prearm = false still pre-arms");

    // A clean stop removes what it pre-armed.
    reload(&lab, &cfg)?;
    wait_ours(&lab, &[prearmed_line()], "pre-armed before the stop")?;
    lab.stop_agent(libc::SIGTERM)?;
    ensure!(ours(&lab)?.is_empty(), "routes left after a clean stop");
    Ok(())
}

/// How long each phase of a cycle lasts once traffic flows its new way: long
/// enough for a receiver that cannot keep up to show it.
const DWELL: Duration = Duration::from_millis(300);

/// What a stream lost over withdraw/restore cycles.
#[derive(Debug, Default)]
struct Loss {
    /// Lost packets sent from 20 ms before a withdrawal to the next restore
    /// (the way out to the backup), and from 20 ms before a restore on (the
    /// way back to the primary).
    out: u64,
    back: u64,
    /// Lost before the first withdrawal (steady on the primary).
    before: u64,
    sent: u64,
    /// How long the stream ran, seconds.
    secs: f64,
    /// Datagrams the receiving socket dropped itself (buffer full): the
    /// lab's loss, included above.
    receiver: u64,
}

/// Packets lost by a `rate` packets/s stream over `cycles` withdraw/restore
/// cycles, each waiting for the traffic to arrive over the other router
/// (and, with the agent, for steering to start and stop), then staying
/// there for `DWELL`.
fn cycle_loss(lab: &Lab, rate: u32, cycles: usize, agent: bool) -> Result<Loss> {
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let overflows = lab.dest_rcvbuf_errors()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let started = Instant::now();
    let tx = Sender::start(&lab.lan.path(), dest(), rate)?;
    flows_via(&rx, via_primary, 300, "the primary")?;
    std::thread::sleep(DWELL);
    // (when, the way back?) of every route change.
    let mut changes = Vec::new();
    for _ in 0..cycles {
        changes.push((Instant::now(), false));
        lab.withdraw_primary()?;
        if agent {
            wait_until(Duration::from_secs(5), || Ok(steered(lab))).with_context(|| lab.log())?;
        }
        flows_via(&rx, via_backup, 500, "the backup")?;
        std::thread::sleep(DWELL);
        changes.push((Instant::now(), true));
        lab.restore_primary()?;
        if agent {
            wait_until(Duration::from_secs(5), || Ok(!steered(lab))).with_context(|| lab.log())?;
        }
        flows_via(&rx, via_primary, 500, "the primary again")?;
        std::thread::sleep(DWELL);
    }
    let sent = tx.stop();
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let mut loss = Loss {
        sent: sent.len() as u64,
        secs,
        ..Loss::default()
    };
    for seq in lost_from(sent.len(), &rx.stop(), 0) {
        let Some(t) = usize::try_from(seq).ok().and_then(|i| sent.get(i)) else {
            continue;
        };
        let margin = Duration::from_millis(20);
        match changes.iter().rev().find(|(at, _)| *at <= *t + margin) {
            Some((_, false)) => loss.out += 1,
            Some((_, true)) => loss.back += 1,
            None => loss.before += 1,
        }
    }
    loss.receiver = lab.dest_rcvbuf_errors()?.saturating_sub(overflows);
    Ok(loss)
}

/// A stream of `rate` packets/s crosses `cycles` withdraw/restore cycles,
/// first with a floating static route, then with the pre-arming agent, in
/// the same lab; each switchover direction of the agent loses no more than
/// the floating route's plus `slack` per cycle.
fn agent_vs_floating(rate: u32, cycles: usize, slack: u64) -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    // The agentless peer: a floating static route, in the same lab.
    let floating = format!("{SEGMENT} via {BACKUP_GW} dev bk0 metric 1024");
    lab.edge.sh(&format!("ip route add {floating}"))?;
    let floating_loss = cycle_loss(&lab, rate, cycles, false)?;
    lab.edge.sh(&format!("ip route del {floating}"))?;

    let cfg = lab.config("0s", "auto", "prearm = true");
    lab.start_agent(&cfg, &[])?;
    wait_ours(&lab, &[prearmed_line()], "pre-armed")?;
    let agent_loss = cycle_loss(&lab, rate, cycles, true)?;
    eprintln!(
        "{cycles} withdraw/restore cycles at {rate} pps: floating static route {floating_loss:?}, agent {agent_loss:?}"
    );
    // At least 30 % of the rate asked for, or the test proves little (this
    // debug build's sender reached 55,000–85,000 of 100,000 packets/s on the
    // 2-core VM with other builds running; less with the agent, whose
    // status is polled meanwhile).
    let pps = |l: &Loss| l.sent as f64 / l.secs;
    let min_pps = f64::from(rate) * 0.3;
    ensure!(
        pps(&floating_loss) >= min_pps && pps(&agent_loss) >= min_pps,
        "sender too slow: floating {floating_loss:?}, agent {agent_loss:?}"
    );
    // The lab's own receiver must keep up, or its overflows pass for the
    // paths' loss (they did at 100,000 pps with the default socket buffer:
    // hundreds of packets per cycle, agent or not).
    ensure!(
        floating_loss.receiver == 0 && agent_loss.receiver == 0,
        "the receiving socket overflowed: floating {}, agent {} datagrams",
        floating_loss.receiver,
        agent_loss.receiver
    );
    // Both the way out (kernel falls back to the pre-armed route, then XDP
    // takes over) and the way back (primary route wins, then steering
    // stops) must be lossless, each on its own.
    let slack = slack * cycles as u64;
    ensure!(
        agent_loss.out <= floating_loss.out + slack
            && agent_loss.back <= floating_loss.back + slack,
        "agent lost {agent_loss:?}, floating static route {floating_loss:?}; log:\n{}",
        lab.log()
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn prearmed_switchover_loses_no_more_than_a_floating_static_route() -> Result<()> {
    // One packet of slack per cycle; without pre-arming the agent loses ~3
    // packets per switchover at this rate on a quiet machine (issue 12),
    // tens on a loaded one.
    agent_vs_floating(10_000, 3, 1)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn prearmed_switchover_at_100k_pps_loses_no_more_than_a_floating_static_route() -> Result<()> {
    // The rate of the README's second loss row (the sender reaches what the
    // machine allows). Fails with the receiving socket's default buffer:
    // 22,000 datagrams overflowed in each half of one run here.
    // Without pre-arming the agent lost 6 to 396 packets per cycle on
    // average here (bench-failover); one of slack per cycle, as at 10,000.
    agent_vs_floating(100_000, 2, 1)
}
