//! End to end: the real agent in the lab (tests/src/lab.rs), a UDP stream from
//! the LAN host to the destination, the primary route withdrawn and restored.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use routebackup_tests::lab::{dest, flows_via, serial, Backup, Lab, BACKUP_GW, DEST_ADDR};
use routebackup_tests::traffic::{report, Receiver, Sender};
use routebackup_tests::{metrics, wait_until};

fn steered(lab: &Lab) -> bool {
    lab.status()
        .is_ok_and(|s| s["groups"][0]["segments"][0]["steered"].as_bool() == Some(true))
}

fn wait_state(lab: &Lab, want: &str, within: Duration) -> Result<()> {
    wait_until(within, || Ok(lab.group_state()? == want)).with_context(|| {
        format!(
            "group never reached state {want}; status: {:?}; log:\n{}",
            lab.status().ok(),
            lab.log()
        )
    })
}

fn dial_count(lab: &Lab) -> usize {
    std::fs::read_to_string(lab.dir.path().join("dials")).map_or(0, |s| s.lines().count())
}

/// Makes the dial script count its invocations (in <lab dir>/dials).
fn count_dials(lab: &Lab) -> Result<()> {
    let up = lab.dir.path().join("dial-up.sh");
    let text = std::fs::read_to_string(&up)?;
    let text = text.replacen(
        "set -e\n",
        &format!(
            "set -e\necho \"dial for group $ROUTEBACKUP_GROUP via $ROUTEBACKUP_INTERFACE\" >> {}\n",
            lab.dir.path().join("dials").display()
        ),
        1,
    );
    std::fs::write(&up, text)?;
    Ok(())
}

/// `FLAG_MACS_VALID` of `SegmentValue::flags`.
const FLAG_MACS_VALID: u64 = 1 << 3;

/// A byte of a bpftool JSON dump: a number or a "0x.." string.
fn json_byte(v: &serde_json::Value) -> Option<u8> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        serde_json::Value::String(s) => u8::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
        _ => None,
    }
}

/// A steer entry as bpftool shows it: (flags, dmac, smac, mtu).
type SteerEntry = (u64, Vec<u8>, Vec<u8>, u64);

/// The steer entry of the pinned IPv4 trie.
fn steer_entry(lab: &Lab) -> Result<Option<SteerEntry>> {
    let out = routebackup_tests::sh(&format!(
        "bpftool -j map dump pinned {}",
        lab.bpffs
            .path()
            .join("routebackup/v1/segments_v4")
            .display()
    ))?;
    let dump: serde_json::Value = serde_json::from_str(&out).context("bpftool JSON")?;
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .map(|a| a.iter().filter_map(json_byte).collect())
            .unwrap_or_default()
    };
    for e in dump.as_array().into_iter().flatten() {
        // With BTF, bpftool puts the decoded value under "formatted".
        let v = if e["formatted"].is_object() {
            &e["formatted"]["value"]
        } else {
            &e["value"]
        };
        if v["action"].as_u64() == Some(1) {
            return Ok(Some((
                v["flags"].as_u64().unwrap_or(0),
                bytes(&v["dmac"]),
                bytes(&v["smac"]),
                v["mtu"].as_u64().unwrap_or(0),
            )));
        }
    }
    Ok(None)
}

/// The MAC of `ifname` in `ns` (from `ip -j link`: /sys is the host's under nsenter).
fn mac_of(ns: &routebackup_tests::Netns, ifname: &str) -> Result<Vec<u8>> {
    let out = ns.sh(&format!("ip -j link show dev {ifname}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let text = v[0]["address"].as_str().context("no address")?;
    text.split(':')
        .map(|b| u8::from_str_radix(b, 16).context("bad MAC"))
        .collect()
}

/// Waits until the steer entry carries valid cached MACs: the backup
/// router's (dmac) and bk0's own (smac), with bk0's MTU.
fn wait_macs_cached(lab: &Lab) -> Result<()> {
    wait_macs_cached_within(lab, Duration::from_secs(5))
}

fn wait_macs_cached_within(lab: &Lab, within: Duration) -> Result<()> {
    let gw_mac = mac_of(&lab.backup, "b_edge")?;
    let bk0_mac = mac_of(&lab.edge, "bk0")?;
    let mut last = None;
    wait_until(within, || {
        last = steer_entry(lab)?;
        Ok(matches!(&last, Some((flags, dmac, smac, mtu))
            if flags & FLAG_MACS_VALID != 0 && *dmac == gw_mac && *smac == bk0_mac && *mtu == 1500))
    })
    .with_context(|| {
        format!(
            "steer entry never got the cached MACs {gw_mac:02x?} / {bk0_mac:02x?}: {last:?}; log:\n{}",
            lab.log()
        )
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn hot_standby_switchover_and_recovery() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 5_000)?;
    flows_via(&rx, via_primary, 500, "the primary")?;
    ensure!(lab.group_state()? == "primary");

    let t0 = Instant::now();
    lab.withdraw_primary()?;
    wait_until(Duration::from_secs(2), || Ok(steered(&lab)))?;
    let switchover = t0.elapsed();
    // Includes spawning `routebackup status` for every poll; the bench has the agent's own figure.
    ensure!(
        switchover <= Duration::from_millis(100),
        "steering took {switchover:?} (> 100 ms); status {:?}; log:\n{}",
        lab.status().ok(),
        lab.log()
    );
    flows_via(&rx, via_backup, 1_000, "the backup")?;
    ensure!(lab.group_state()? == "backup");
    // XDP forwards with the next hop's MACs cached in the entry.
    wait_macs_cached(&lab)?;
    flows_via(&rx, via_backup, 500, "the backup with cached MACs")?;
    // The operator's views: the human table and Prometheus metrics.
    let human = lab.status_text(&[])?;
    for needle in [
        "group dest: backup via backup",
        "198.51.100.0/24  down     yes",
        "lan0 (ifindex",
        "xdp native, tc attached",
        "STEERED PKTS",
    ] {
        ensure!(
            human.contains(needle),
            "human status lacks {needle:?}:\n{human}"
        );
    }
    // `status --prometheus` prints what the metrics endpoint serves; the
    // fast path's counters reach it within a second.
    let steered_series = "routebackup_fastpath_steered_packets_total{group=\"dest\"}";
    let mut prom = String::new();
    wait_until(Duration::from_secs(5), || {
        prom = lab.status_text(&["--prometheus"])?;
        Ok(metrics::value(&prom, steered_series).unwrap_or(0.0) >= 1000.0)
    })
    .with_context(|| format!("steered counter below 1000 in:\n{prom}"))?;
    for needle in [
        "routebackup_group_state{group=\"dest\",state=\"backup\"} 1",
        "routebackup_group_transitions_total{group=\"dest\",from=\"primary\",to=\"backup\"} 1",
        "routebackup_link_state{link=\"backup\",state=\"up\"} 1",
        "routebackup_steer_latency_seconds_count 1",
    ] {
        ensure!(prom.contains(needle), "metrics lack {needle:?}:\n{prom}");
    }

    lab.restore_primary()?;
    wait_until(Duration::from_secs(2), || Ok(!steered(&lab)))?;
    flows_via(&rx, via_primary, 1_000, "the primary after recovery")?;
    wait_state(&lab, "primary", Duration::from_secs(2))?;
    // always-up links are never taken down.
    ensure!(lab.bk0_exists(), "hot-standby interface was taken down");

    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let r = report(&sent, &rx.stop());
    eprintln!("hot standby: switchover seen after {switchover:?}; stream {r:?}");
    ensure!(r.sent > 2_000, "sender too slow: {r:?}");
    // Both switches together may lose a handful of packets, not a stream's worth.
    ensure!(r.lost < 200, "lost {} packets: {r:?}", r.lost);
    Ok(())
}

/// A hot-standby lab steering a `rate` packets/s stream to the backup, with
/// the next hop's MACs cached: (lab, receiver, sender, dest's ifindex towards
/// the backup router).
fn steering_with_cached_macs(
    rate: u32,
    short_neigh_timers: bool,
) -> Result<(Lab, Receiver, Sender, u32)> {
    let mut lab = Lab::new(Backup::HotStandby)?;
    if short_neigh_timers {
        // Before the gateway is first resolved: the kernel applies these when
        // it next arms an entry's timer, so the revalidation takes seconds.
        lab.edge.sh(
            "sysctl -qw net.ipv4.neigh.bk0.delay_first_probe_time=1 \
             net.ipv4.neigh.bk0.base_reachable_time_ms=1000 net.ipv4.neigh.bk0.retrans_time_ms=200",
        )?;
    }
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (_, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), rate)?;
    lab.withdraw_primary()?;
    flows_via(&rx, via_backup, 500, "the backup")?;
    wait_macs_cached(&lab)?;
    Ok((lab, rx, tx, via_backup))
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn gateway_mac_changed_without_announcement_is_relearned() -> Result<()> {
    let _g = serial();
    let (lab, rx, _tx, via_backup) = steering_with_cached_macs(2_000, true)?;
    // The backup router's MAC changes silently (arp_notify is 0: no
    // gratuitous ARP). XDP bypasses the kernel's neighbour code, so only the
    // agent's periodic NTF_USE makes the kernel notice.
    lab.backup
        .sh("ip link set b_edge address 02:00:5e:00:53:42")?;
    wait_macs_cached_within(&lab, Duration::from_secs(30)).with_context(|| {
        format!(
            "neighbours on bk0: {:?}",
            lab.edge
                .sh("ip -s neigh show dev bk0; sysctl net.ipv4.neigh.bk0")
        )
    })?;
    flows_via(&rx, via_backup, 500, "the backup router under its new MAC")?;
    Ok(())
}

/// The gateway's neighbour entry is flushed while steering: XDP falls back
/// (fib lookup → TC's bpf_redirect_neigh re-resolves it), traffic keeps
/// flowing, and the agent caches the re-learned entry again.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn neighbour_flush_while_steering_falls_back_and_relearns() -> Result<()> {
    let _g = serial();
    let (lab, rx, tx, via_backup) = steering_with_cached_macs(5_000, false)?;

    for round in 0..3 {
        lab.edge.sh("ip neigh flush dev bk0")?;
        flows_via(&rx, via_backup, 500, "the backup after a neighbour flush")
            .with_context(|| format!("round {round}; log:\n{}", lab.log()))?;
        wait_macs_cached(&lab)?;
    }
    let log = lab.log();
    ensure!(
        log.contains("no usable neighbour entry; XDP falls back"),
        "the agent never saw the flush:\n{log}"
    );
    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let r = report(&sent, &rx.stop());
    eprintln!("neighbour flushes: stream {r:?}");
    ensure!(r.lost < 200, "lost {} packets: {r:?}", r.lost);
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn dialed_link_with_hold_timer_and_reloss_without_redial() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    count_dials(&lab)?;
    let cfg = lab.config("3s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let _tx = Sender::start(&lab.lan.path(), dest(), 2_000)?;
    flows_via(&rx, via_primary, 200, "the primary")?;
    ensure!(!lab.bk0_exists(), "backup link up before any loss");

    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(10))?;
    ensure!(lab.bk0_exists());
    flows_via(&rx, via_backup, 500, "the dialed backup")?;

    // Primary back: steering stops at once, the link is held.
    lab.restore_primary()?;
    wait_state(&lab, "holding", Duration::from_secs(2))?;
    ensure!(!steered(&lab));
    flows_via(&rx, via_primary, 500, "the primary during the hold")?;
    ensure!(lab.bk0_exists(), "link taken down during the hold");

    // Lost again during the hold: steering resumes at once, no redial.
    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(1))?;
    flows_via(&rx, via_backup, 500, "the backup after re-loss")?;
    ensure!(
        dial_count(&lab) == 1,
        "redialed: {} dials",
        dial_count(&lab)
    );
    let dials = std::fs::read_to_string(lab.dir.path().join("dials"))?;
    ensure!(
        dials.trim() == "dial for group dest via bk0",
        "dial command environment: {dials:?}"
    );

    // Recovery, then the hold timer takes the link down.
    lab.restore_primary()?;
    wait_state(&lab, "holding", Duration::from_secs(2))?;
    wait_state(&lab, "primary", Duration::from_secs(6))?;
    wait_until(Duration::from_secs(3), || Ok(!lab.bk0_exists()))
        .context("link not taken down after the hold")?;
    flows_via(&rx, via_primary, 200, "the primary at the end")?;
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn dialed_link_taken_down_at_once_without_hold() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    let cfg = lab.config("0s", "tc", "");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let _tx = Sender::start(&lab.lan.path(), dest(), 2_000)?;
    flows_via(&rx, via_primary, 200, "the primary")?;
    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(10))?;
    flows_via(&rx, via_backup, 500, "the dialed backup (TC mode)")?;
    lab.restore_primary()?;
    wait_state(&lab, "primary", Duration::from_secs(2))?;
    wait_until(Duration::from_secs(2), || Ok(!lab.bk0_exists()))
        .context("link not taken down at once")?;
    flows_via(&rx, via_primary, 200, "the primary after recovery")?;
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn multi_segment_group_needs_every_segment_lost() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    lab.edge
        .sh("ip route add 203.0.113.0/24 via 10.0.1.2 dev wan0 proto ospf")?;
    let cfg = lab.config("0s", "auto", "").replace(
        "segments = [\"198.51.100.0/24\"]",
        "segments = [\"198.51.100.0/24\", \"203.0.113.0/24\"]",
    );
    lab.start_agent(&cfg, &[])?;
    lab.withdraw_primary()?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        lab.group_state()? == "primary",
        "acted while 203.0.113.0/24 still had its primary route"
    );
    ensure!(!steered(&lab));
    lab.edge.sh("ip route del 203.0.113.0/24")?;
    wait_state(&lab, "backup", Duration::from_secs(2))?;
    let s = lab.status()?;
    for seg in s["groups"][0]["segments"].as_array().context("segments")? {
        ensure!(
            seg["steered"] == true && seg["primary_up"] == false,
            "segment not steered: {seg}"
        );
    }
    Ok(())
}

/// A first link that fails in `how`, then the working dial: the group ends up
/// on the second link, status names the first link's error, nothing is left over.
fn failing_first_link(how: &str, first_link: &str, error_part: &str) -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    let cfg = lab.config("0s", "auto", "").replace(
        "[[group]]",
        &format!("[[link]]\nname = \"flaky\"\n{first_link}\n\n[[group]]"),
    );
    let cfg = cfg.replace("links = [\"backup\"]", "links = [\"flaky\", \"backup\"]");
    lab.start_agent(&cfg, &[])?;
    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(15)).with_context(|| format!("case {how}"))?;
    let s = lab.status()?;
    ensure!(
        s["groups"][0]["active_link"] == "backup",
        "{how}: wrong link: {s}"
    );
    let flaky = s["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "flaky"))
        .with_context(|| format!("no link flaky in {s}"))?;
    let err = flaky["last_error"].as_str().unwrap_or("");
    ensure!(
        err.contains(error_part),
        "{how}: last_error {err:?} does not mention {error_part:?}"
    );
    ensure!(
        flaky["attempts"].as_u64().unwrap_or(0) >= 1,
        "{how}: attempts not counted: {flaky}"
    );
    ensure!(
        flaky["state"] != "up" && flaky["state"] != "connecting",
        "{how}: flaky link left half up: {flaky}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn failing_links_fall_through_to_the_next() -> Result<()> {
    failing_first_link(
        "up exits non-zero",
        "interface = \"fl0\"\ndriver = \"command\"\nup = [\"sh\", \"-c\", \"echo no carrier >&2; exit 3\"]",
        "3",
    )?;
    failing_first_link(
        "up hangs past up_timeout",
        "interface = \"fl0\"\ndriver = \"command\"\nup = [\"sleep\", \"600\"]\nup_timeout = \"1s\"",
        "1s",
    )?;
    failing_first_link(
        "interface never appears",
        "interface = \"fl0\"\ndriver = \"command\"\nup = [\"true\"]\nup_timeout = \"1s\"",
        "1s",
    )?;
    // Never leave the hanging `up` behind.
    let left = routebackup_tests::sh("pgrep -f '^sleep 600$' || true")?;
    ensure!(
        left.trim().is_empty(),
        "hanging up command left running: {left}"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn supervised_link_dying_in_use_moves_to_the_next_link() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    // The first link: a long-running `up` that creates fl0 and dies after 2 s.
    let first = "interface = \"fl0\"\ndriver = \"command\"\nup = [\"sh\", \"-c\", \"ip link add fl0 type veth peer name fl0p && ip link set fl0p up && ip addr add 10.0.7.1/30 dev fl0 && ip link set fl0 up && sleep 2 && exit 1\"]\ndown = [\"ip\", \"link\", \"del\", \"fl0\"]";
    let cfg = lab
        .config("0s", "auto", "")
        .replace(
            "[[group]]",
            &format!("[[link]]\nname = \"flaky\"\n{first}\n\n[[group]]"),
        )
        .replace("links = [\"backup\"]", "links = [\"flaky\", \"backup\"]");
    lab.start_agent(&cfg, &[])?;
    lab.withdraw_primary()?;
    wait_until(Duration::from_secs(5), || {
        let s = lab.status()?;
        Ok(s["groups"][0]["state"] == "backup" && s["groups"][0]["active_link"] == "flaky")
    })
    .with_context(|| format!("never steered to the first link; log:\n{}", lab.log()))?;
    // It dies: the group moves to the next link, the dead one is cleaned up.
    wait_until(Duration::from_secs(15), || {
        let s = lab.status()?;
        Ok(s["groups"][0]["state"] == "backup" && s["groups"][0]["active_link"] == "backup")
    })
    .with_context(|| format!("did not move to the next link; log:\n{}", lab.log()))?;
    let s = lab.status()?;
    ensure!(
        s["links"][1]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "no last_error: {s}"
    );
    wait_until(Duration::from_secs(3), || Ok(!lab.edge.has_link("fl0")))
        .context("dead link's interface left configured")?;
    Ok(())
}

/// A `--keep-fastpath` stop and restart while steering, with the
/// attachments made as `args` (more `run` options) choose: not a packet
/// lost, the link not redialed, the attachments adopted.
fn restart_with_keep_fastpath(args: &[&str]) -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    count_dials(&lab)?;
    let cfg = lab.config("0s", "auto", "");
    let args = [&["--keep-fastpath"], args].concat();
    lab.start_agent(&cfg, &args)?;
    let (_, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 2_000)?;
    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(10))?;
    flows_via(&rx, via_backup, 500, "the backup")?;
    // From here on (steering established) no packet may be lost.
    let steady_from = rx.arrivals().iter().map(|a| a.seq).max().unwrap_or(0);

    let status = lab.stop_agent(libc::SIGTERM)?;
    ensure!(
        status.success(),
        "agent exit status {status}; log:\n{}",
        lab.log()
    );
    // No agent: the pinned programs and maps keep steering.
    flows_via(&rx, via_backup, 1_000, "the backup with the agent stopped")?;
    ensure!(
        lab.bk0_exists(),
        "link taken down by a --keep-fastpath stop"
    );

    lab.start_agent(&cfg, &args)?;
    wait_state(&lab, "backup", Duration::from_secs(5))?;
    flows_via(&rx, via_backup, 1_000, "the backup after the restart")?;
    ensure!(
        dial_count(&lab) == 1,
        "link redialed on restart: {} dials",
        dial_count(&lab)
    );
    let s = lab.status()?;
    ensure!(
        s["fastpath"]["attachments"][0]["adopted"] == true && !lab.log().contains("cannot adopt"),
        "the kept attachments were not adopted: {s}; log:\n{}",
        lab.log()
    );

    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let arrivals = rx.stop();
    let r = report(&sent, &arrivals);
    let mut got = vec![false; sent.len()];
    for a in &arrivals {
        if let Some(g) = usize::try_from(a.seq).ok().and_then(|i| got.get_mut(i)) {
            *g = true;
        }
    }
    let lost_after: Vec<usize> = (usize::try_from(steady_from)?..sent.len())
        .filter(|&i| !got[i])
        .collect();
    eprintln!(
        "restart: {r:?}; lost after steering was established: {}",
        lost_after.len()
    );
    ensure!(
        lost_after.is_empty(),
        "traffic interrupted across the restart: {} packets lost (first seqs {:?}); {r:?}",
        lost_after.len(),
        &lost_after[..lost_after.len().min(10)]
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn restart_with_keep_fastpath_keeps_traffic_and_link() -> Result<()> {
    restart_with_keep_fastpath(&[])
}

/// The same with XDP and TC attached over netlink (kernels before 5.9 and
/// 6.6): a `--keep-fastpath` stop keeps them too.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn restart_with_keep_fastpath_over_netlink_keeps_traffic_and_link() -> Result<()> {
    restart_with_keep_fastpath(&["--kernel-without", "xdp-link,tcx"])
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn clean_stop_removes_steering_and_programs() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let cfg = lab.config("0s", "auto", "kernel_routes = true");
    lab.start_agent(&cfg, &[])?;
    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(2))?;
    // kernel_routes: the box's own traffic fails over too.
    let routes = lab.edge.sh("ip route show 198.51.100.0/24")?;
    ensure!(
        routes.contains("bk0"),
        "no kernel route via the backup: {routes}"
    );
    lab.edge
        .sh(&format!("ping -c 1 -W 2 -I 10.0.0.1 {DEST_ADDR}"))?;

    let status = lab.stop_agent(libc::SIGTERM)?;
    ensure!(status.success(), "agent exit status {status}");
    let xdp = lab.edge.sh("ip -d link show lan0")?;
    ensure!(
        !xdp.contains("prog/xdp"),
        "XDP program left attached: {xdp}"
    );
    let tc = lab.edge.sh("tc filter show dev lan0 ingress")?;
    ensure!(!tc.contains("rb_tc"), "TC program left attached: {tc}");
    let routes = lab.edge.sh("ip route show 198.51.100.0/24")?;
    ensure!(
        !routes.contains("bk0"),
        "kernel route left behind: {routes}"
    );
    ensure!(
        !lab.bpffs.path().join("routebackup/v1/segments_v4").exists(),
        "pinned map left behind"
    );
    Ok(())
}

/// tx packets + tx drops of an interface (a tun nobody reads drops, but the
/// redirect into it happened).
fn tx_count(lab: &Lab, ifname: &str) -> Result<u64> {
    let j: serde_json::Value =
        serde_json::from_str(&lab.edge.sh(&format!("ip -s -j link show dev {ifname}"))?)?;
    let tx = &j[0]["stats64"]["tx"];
    Ok(tx["packets"].as_u64().unwrap_or(0) + tx["dropped"].as_u64().unwrap_or(0))
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn pppd_link_against_the_stand_in_steers_into_the_l3_device() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    // The stand-in for pppd (this kernel has no PPP): a tun device `ppp0` with a
    // point-to-point address, held open by the process, like a ppp unit.
    let peers = lab.dir.path().join("peers");
    std::fs::create_dir_all(&peers)?;
    std::fs::write(
        peers.join("lte"),
        format!(
            "10.64.0.2:10.64.0.1\nfake-piddir {}\n",
            lab.dir.path().display()
        ),
    )?;
    let wrapper = lab.dir.path().join("pppd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nFAKE_PPPD_PEERS_DIR={} exec {} \"$@\"\n",
            peers.display(),
            env!("CARGO_BIN_EXE_fake-pppd")
        ),
    )?;
    routebackup_tests::sh(&format!("chmod 755 {}", wrapper.display()))?;
    let cfg = format!(
        "[agent]\npin_path = \"{pin}\"\ncontrol_socket = \"{sock}\"\n\n\
         [fastpath]\ninterfaces = [\"lan0\"]\n\n\
         [[link]]\nname = \"lte\"\ninterface = \"ppp0\"\ndriver = \"pppd\"\npeer = \"lte\"\npppd_path = \"{ppp}\"\nkernel_routes = true\n\n\
         [[group]]\nname = \"dest\"\nsegments = [\"198.51.100.0/24\"]\nlinks = [\"lte\"]\ndeactivate_delay = \"0s\"\n",
        pin = lab.bpffs.path().join("routebackup").display(),
        sock = lab.socket().display(),
        ppp = wrapper.display(),
    );
    lab.start_agent(&cfg, &[])?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let _tx = Sender::start(&lab.lan.path(), dest(), 2_000)?;
    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(10))?;
    ensure!(
        lab.edge.has_link("ppp0"),
        "the pppd stand-in did not create ppp0"
    );
    let addr = lab.edge.sh("ip -o addr show dev ppp0")?;
    ensure!(
        addr.contains("10.64.0.2 peer 10.64.0.1"),
        "ppp0 address: {addr}"
    );
    let pid = std::fs::read_to_string(lab.dir.path().join("ppp-lte.pid")).with_context(|| {
        format!(
            "no pid file; files: {:?}",
            std::fs::read_dir(lab.dir.path())
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        )
    })?;
    let cmdline = std::fs::read_to_string(format!(
        "/proc/{}/cmdline",
        pid.lines().next().unwrap_or("").trim()
    ))?
    .replace('\0', " ");
    ensure!(
        cmdline.contains("call lte")
            && cmdline.contains("nodetach")
            && cmdline.contains("ifname ppp0")
            && cmdline.contains("linkname lte"),
        "pppd command line: {cmdline}"
    );
    // Steered into the L3 device by the TC program (XDP cannot redirect to it).
    let before = tx_count(&lab, "ppp0")?;
    wait_until(Duration::from_secs(3), || {
        Ok(tx_count(&lab, "ppp0")? >= before + 500)
    })
    .context("traffic is not redirected into ppp0")?;
    let s = lab.status()?;
    let fp = &s["fastpath"]["groups"][0];
    ensure!(
        fp["steered_packets"].as_u64().unwrap_or(0) >= 500,
        "steered counter: {fp}"
    );
    ensure!(
        fp["deferred_packets"].as_u64().unwrap_or(0) >= 500,
        "XDP should defer L3 backups to TC: {fp}"
    );
    let map = routebackup_tests::sh(&format!(
        "bpftool -j map dump pinned {}",
        lab.bpffs
            .path()
            .join("routebackup/v1/segments_v4")
            .display()
    ))?;
    ensure!(
        map.contains("\"action\":1") && map.contains("\"flags\":1"),
        "map entry not steer/L3: {map}"
    );
    // kernel_routes: a route via the point-to-point device, without a gateway.
    let routes = lab.edge.sh("ip route show 198.51.100.0/24")?;
    ensure!(
        routes.contains("dev ppp0"),
        "no kernel route via ppp0: {routes}"
    );

    // Primary back, no hold: steering stops, pppd is terminated, ppp0 goes away.
    lab.restore_primary()?;
    wait_state(&lab, "primary", Duration::from_secs(3))?;
    wait_until(Duration::from_secs(5), || Ok(!lab.edge.has_link("ppp0")))
        .context("pppd not terminated")?;
    let routes = lab.edge.sh("ip route show 198.51.100.0/24")?;
    ensure!(
        !routes.contains("ppp0"),
        "kernel route left behind: {routes}"
    );
    drop(rx);
    Ok(())
}

/// The gateway's neighbour entry as `ip -j neigh` shows it: (states, MAC).
fn gateway_neighbour(lab: &Lab) -> Result<(Vec<String>, String)> {
    let out = lab
        .edge
        .sh(&format!("ip -j neigh show dev bk0 to {BACKUP_GW}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let e = &v[0];
    let states = e["state"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok((states, e["lladdr"].as_str().unwrap_or_default().to_string()))
}

/// An operator's static entry for the backup gateway (common where the far
/// side must not be ARPed) is never modified: the agent's periodic "mark as
/// used" refresh (every 5 s) would clear its PERMANENT state, after which it
/// goes INCOMPLETE and FAILED. Three refresh rounds of steering prove it.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn permanent_neighbour_entry_of_the_gateway_stays_untouched() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let gw_mac = mac_of(&lab.backup, "b_edge")?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    lab.edge.sh(&format!(
        "ip neigh replace {BACKUP_GW} lladdr {gw_mac} dev bk0 nud permanent"
    ))?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (_, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let _tx = Sender::start(&lab.lan.path(), dest(), 1_000)?;
    lab.withdraw_primary()?;
    flows_via(&rx, via_backup, 200, "the backup")?;
    wait_macs_cached(&lab)?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(16) {
        let (states, mac) = gateway_neighbour(&lab)?;
        ensure!(
            states == ["PERMANENT"] && mac == gw_mac,
            "after {:?} of steering the static entry is {states:?} {mac}; log:\n{}",
            start.elapsed(),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    flows_via(&rx, via_backup, 200, "the backup after the refresh rounds")?;
    Ok(())
}
