//! Probing the primary, end to end: the real agent in the lab
//! (tests/src/lab.rs) probes the destination through `wan0` while the
//! primary router stops forwarding (its route on the edge stays), starts
//! again, and flaps.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use routebackup_tests::lab::{dest, flows_via, serial, Backup, Lab, DEST_ADDR};
use routebackup_tests::traffic::{Receiver, Sender};
use routebackup_tests::{veth, wait_until, Netns};

/// Probe settings of these tests: 500 ms rounds, down after 3 failed
/// rounds, up after 4 good ones.
const INTERVAL: Duration = Duration::from_millis(500);
const DOWN_AFTER: u32 = 3;
const UP_AFTER: u32 = 4;

/// The lab with a probe of the destination on the group, agent running.
fn probed_lab() -> Result<Lab> {
    let mut lab = Lab::new(Backup::HotStandby)?;
    // The probes leave from wan0's address: the destination must be able
    // to answer it through the primary router.
    lab.dest.sh("ip route add 10.0.1.0/30 via 10.0.9.1")?;
    let config = format!(
        "{}probe = {{ targets = [\"{DEST_ADDR}\"], interval = \"500ms\", timeout = \"400ms\", down_after = {DOWN_AFTER}, up_after = {UP_AFTER} }}\n",
        lab.config("0s", "auto", "")
    );
    lab.start_agent(&config, &[])?;
    Ok(lab)
}

fn forwarding(lab: &Lab, on: bool) -> Result<()> {
    lab.primary
        .sh(&format!("sysctl -qw net.ipv4.ip_forward={}", u8::from(on)))?;
    Ok(())
}

fn wait_state(lab: &Lab, want: &str, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    wait_until(within, || Ok(lab.group_state()? == want)).with_context(|| {
        format!(
            "group never reached state {want}; status: {:?}; log:\n{}",
            lab.status().ok(),
            lab.log()
        )
    })?;
    Ok(start.elapsed())
}

/// The primary router stops forwarding while the edge keeps its route: the
/// probes fail, the group fails over after about `down_after` rounds (the
/// route alone would never have); forwarding again: back after about
/// `up_after` rounds.
#[test]
fn probe_dead_primary_behind_a_live_route_fails_over_and_recovers() -> Result<()> {
    let _serial = serial();
    let lab = probed_lab()?;
    // Probes answered: the path holds.
    std::thread::sleep(INTERVAL * (DOWN_AFTER + 1));
    ensure!(lab.group_state()? == "primary", "log:\n{}", lab.log());
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 500)?;

    forwarding(&lab, false)?;
    let down = wait_state(&lab, "backup", Duration::from_secs(15))?;
    // At least down_after - 1 rounds (the first failed probe may have been
    // sent just before forwarding stopped), and not much more than
    // down_after rounds + the timeout (slack for a slow, shared VM).
    ensure!(
        down >= INTERVAL * (DOWN_AFTER - 1)
            && down <= INTERVAL * (DOWN_AFTER + 1) + Duration::from_secs(4),
        "failover after {down:?}; log:\n{}",
        lab.log()
    );
    let s = lab.status()?;
    let seg = &s["groups"][0]["segments"][0];
    ensure!(seg["primary_up"] == false, "status: {s}");
    let why = seg["why_not"].as_str().unwrap_or_default();
    ensure!(
        why.starts_with(&format!("probe to {DEST_ADDR} via wan0 failed")),
        "why_not: {why:?}"
    );
    // The edge's route never changed, and traffic goes over the backup.
    ensure!(
        lab.edge
            .sh("ip route show 198.51.100.0/24")?
            .contains("wan0"),
        "the primary route must still be there"
    );
    let (_, d_b) = lab.dest_ifindexes()?;
    flows_via(&rx, d_b, 20, "the backup")?;

    forwarding(&lab, true)?;
    let up = wait_state(&lab, "primary", Duration::from_secs(15))?;
    ensure!(
        up >= INTERVAL * (UP_AFTER - 1) && up <= INTERVAL * (UP_AFTER + 1) + Duration::from_secs(4),
        "recovery after {up:?}; log:\n{}",
        lab.log()
    );
    let (d_p, _) = lab.dest_ifindexes()?;
    flows_via(&rx, d_p, 20, "the primary")?;
    tx.stop();
    Ok(())
}

/// Five cycles of: forwarding `first` for 400 ms, then `!first` for
/// 1.1 s, polling the group's state all along: it must stay `state`.
fn flap_keeps(lab: &Lab, first: bool, state: &str) -> Result<()> {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..5 {
        for (on, d) in [(first, 400), (!first, 1100)] {
            forwarding(lab, on)?;
            let until = Instant::now() + Duration::from_millis(d);
            while Instant::now() < until {
                let s = lab.group_state()?;
                if seen.last() != Some(&s) {
                    seen.push(s);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    ensure!(
        seen == [state],
        "states seen while forwarding flapped (first {first}): {seen:?}; log:\n{}",
        lab.log()
    );
    Ok(())
}

/// Short outages (at most 2 rounds) never take the path down, and short
/// recoveries (at most 2 rounds) never bring it back: the link changes no
/// faster than the counts allow.
#[test]
fn probe_flapping_never_flaps_the_link_faster_than_the_counts() -> Result<()> {
    let _serial = serial();
    let lab = probed_lab()?;
    std::thread::sleep(INTERVAL * 2);
    // Forwarding off 400 ms in every 1.5 s: an outage spans at most two
    // probes, fewer than down_after.
    flap_keeps(&lab, false, "primary")?;
    ensure!(!lab.log().contains("counts as down"), "log:\n{}", lab.log());

    forwarding(&lab, false)?;
    wait_state(&lab, "backup", Duration::from_secs(15))?;
    // Now forwarding on 400 ms in every 1.5 s: at most two good rounds in
    // a row, fewer than up_after: the group stays on the backup.
    flap_keeps(&lab, true, "backup")?;
    forwarding(&lab, true)?;
    wait_state(&lab, "primary", Duration::from_secs(15))?;
    Ok(())
}

/// Two backup links, each with a `verify` probe of the destination; the
/// far side of the first (the backup router, on packets from `bk0`)
/// forwards nothing. The first attempt fails its verification, the second
/// link is used, and traffic arrives through it.
#[test]
fn probe_verify_fails_on_a_dead_far_side_and_the_next_link_is_used() -> Result<()> {
    let _serial = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    // A second backup link, bk1, into the backup router.
    veth(
        &lab.edge,
        "bk1",
        "10.0.3.1/30",
        &lab.backup,
        "b_edge2",
        "10.0.3.2/30",
    )?;
    lab.backup
        .sh("ethtool -K b_edge2 gro on >/dev/null 2>&1 || true")?;
    lab.backup.sh("ip route replace 10.0.0.0/24 via 10.0.3.1")?;
    lab.dest
        .sh("ip route add 10.0.3.0/30 via 10.0.8.1 && ip route add 10.0.2.0/30 via 10.0.8.1")?;
    // The backups' own routes (never primary: they go via backup
    // interfaces): what the verify probes, bound to each link's interface,
    // are routed by.
    lab.edge.sh(&format!(
        "ip route add {DEST_ADDR}/32 via 10.0.2.2 dev bk0 metric 500 && \
         ip route add {DEST_ADDR}/32 via 10.0.3.2 dev bk1 metric 600"
    ))?;
    // The first backup's far side forwards nothing that comes from bk0.
    lab.backup
        .sh("sysctl -qw net.ipv4.conf.b_edge.forwarding=0")?;
    let verify = format!("verify = {{ target = \"{DEST_ADDR}\", timeout = \"1s\" }}");
    let config = lab
        .config(
            "0s",
            "auto",
            &format!(
                "{verify}\n\n[[link]]\nname = \"backup2\"\ninterface = \"bk1\"\ngateway = \"10.0.3.2\"\ndriver = \"always-up\"\n{verify}"
            ),
        )
        .replace("links = [\"backup\"]", "links = [\"backup\", \"backup2\"]");
    lab.start_agent(&config, &[])?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 500)?;

    lab.withdraw_primary()?;
    wait_state(&lab, "backup", Duration::from_secs(15))?;
    let s = lab.status()?;
    ensure!(
        s["groups"][0]["active_link"] == "backup2",
        "status: {s}; log:\n{}",
        lab.log()
    );
    ensure!(
        s["links"][0]["last_error"]
            == format!("verify probe to {DEST_ADDR} via bk0 got no answer").as_str(),
        "status: {s}"
    );
    let (_, d_b) = lab.dest_ifindexes()?;
    flows_via(&rx, d_b, 20, "the second backup")?;
    ensure!(
        lab.log().contains(&format!(
            "link backup2 is up; verifying it: probe to {DEST_ADDR} via bk1"
        )),
        "log:\n{}",
        lab.log()
    );
    tx.stop();
    Ok(())
}

/// The prober itself, without the agent: a probe bound to `wan` is
/// answered through `wan` although the kernel prefers a route via `bk`
/// (whose far side does not have the target), and a probe bound to `bk`
/// gets no answer: probes leave through the interface they are given, in
/// both families, and a missing answer is reported as a failure.
#[test]
fn probe_echo_leaves_through_the_interface_it_is_bound_to() -> Result<()> {
    use routebackup::model::{Event, GroupId};
    use routebackup::probe::Prober;

    let _serial = serial();
    let edge = Netns::new("pe")?;
    let far = Netns::new("pa")?;
    let other = Netns::new("pb")?;
    veth(&edge, "wan", "10.9.1.1/30", &far, "a_edge", "10.9.1.2/30")?;
    veth(&edge, "bk", "10.9.2.1/30", &other, "b_edge", "10.9.2.2/30")?;
    edge.sh("ip -6 addr add 2001:db8:91::1/64 dev wan nodad && \
         ip -6 addr add 2001:db8:92::1/64 dev bk nodad && \
         ip route add 192.0.2.1/32 via 10.9.1.2 dev wan metric 100 && \
         ip route add 192.0.2.1/32 via 10.9.2.2 dev bk metric 10 && \
         ip -6 route add 2001:db8:99::1/128 via 2001:db8:91::2 dev wan metric 100 && \
         ip -6 route add 2001:db8:99::1/128 via 2001:db8:92::2 dev bk metric 10")?;
    far.sh("ip -6 addr add 2001:db8:91::2/64 dev a_edge nodad && \
         ip addr add 192.0.2.1/32 dev lo && ip -6 addr add 2001:db8:99::1/128 dev lo")?;
    other.sh("ip -6 addr add 2001:db8:92::2/64 dev b_edge nodad")?;
    let (wan, bk) = (edge.ifindex("wan")?, edge.ifindex("bk")?);
    let t4: std::net::IpAddr = "192.0.2.1".parse()?;
    let t6: std::net::IpAddr = "2001:db8:99::1".parse()?;
    let cases = [
        (t4, wan, true),
        (t4, bk, false),
        (t6, wan, true),
        (t6, bk, false),
    ];
    let results = edge.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut prober = Prober::new();
            let mut out = Vec::new();
            for (seq, (target, ifindex, _)) in (1u64..).zip(cases) {
                prober.send(GroupId(7), target, ifindex, seq, Duration::from_secs(1));
                let ev = tokio::time::timeout(Duration::from_secs(5), prober.next_result())
                    .await
                    .context("no probe result within 5 s")?;
                out.push(ev);
            }
            Ok::<_, anyhow::Error>(out)
        })
    })?;
    for ((seq, (target, ifindex, ok)), got) in (1u64..).zip(cases).zip(results) {
        let want = Event::ProbeResult {
            group: GroupId(7),
            ifindex,
            target,
            seq,
            ok,
        };
        ensure!(got == want, "probe {seq}: got {got:?}, want {want:?}");
    }
    Ok(())
}
