//! End to end with the routing daemons operators run: FRR (zebra + bgpd,
//! routes through nexthop objects) and BIRD 2 (OSPF) inside the lab's
//! namespaces (tests/src/lab.rs), the real agent on the edge, a UDP stream
//! from the LAN host to the destination through the fast path in every phase.
//!
//! The primary route is learned over `wan0`; the same prefix is also learned
//! over the backup link `bk0` by a second session with a worse preference (the
//! vendor feature's BGP pitfall: the backup-learned route is in the table
//! during the outage and must never count as the primary's).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use routebackup_tests::daemons::{bgpd_conf, require_installed, Bird, Frr};
use routebackup_tests::lab::{dest, flows_via, serial, Backup, Lab, SEGMENT};
use routebackup_tests::traffic::{report, Receiver, Sender};
use routebackup_tests::{wait_until, Netns};

/// The edge's kernel route to the segment (`ip route show`), "" when none.
fn edge_route(lab: &Lab) -> String {
    lab.edge
        .sh(&format!("ip route show {SEGMENT}"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until one of the edge's routes to the segment contains every
/// needle (one route: the pre-armed route sits beside the daemon's, and
/// needles spread over both must not pass for the daemon's route).
fn wait_edge_route(lab: &Lab, needles: &[&str], within: Duration, why: &str) -> Result<String> {
    let mut last = String::new();
    wait_until(within, || {
        last = edge_route(lab);
        Ok(last
            .lines()
            .any(|route| needles.iter().all(|n| route.contains(n))))
    })
    .with_context(|| format!("{why}: the edge's route never showed {needles:?}; last: {last:?}"))?;
    Ok(last)
}

fn wait_state(lab: &Lab, want: &str, within: Duration, logs: &dyn Fn() -> String) -> Result<()> {
    wait_until(within, || Ok(lab.group_state()? == want)).with_context(|| {
        format!(
            "group never reached state {want}; route {:?}; status: {:?}; agent log:\n{}\ndaemons:{}",
            edge_route(lab),
            lab.status().ok(),
            lab.log(),
            logs()
        )
    })
}

/// The group's fast-path counter `name` (steered_packets, passed_packets, ...).
fn counter(lab: &Lab, name: &str) -> u64 {
    lab.status()
        .ok()
        .and_then(|s| s["fastpath"]["groups"][0][name].as_u64())
        .unwrap_or(0)
}

/// Waits until `counter` grew by at least `n`: the stream goes through the
/// fast path (passed while primary, steered while on the backup).
fn fastpath_counts(lab: &Lab, name: &str, n: u64) -> Result<()> {
    let before = counter(lab, name);
    wait_until(Duration::from_secs(5), || {
        Ok(counter(lab, name) >= before + n)
    })
    .with_context(|| {
        format!(
            "the fast path's {name} did not grow by {n}; status {:?}",
            lab.status().ok()
        )
    })
}

/// The segment's `why_not` in status.
fn why_not(lab: &Lab) -> String {
    lab.status()
        .ok()
        .and_then(|s| {
            s["groups"][0]["segments"][0]["why_not"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The primary phase: traffic arrives via the primary router, passed by the fast path.
fn primary_phase(lab: &Lab, rx: &Receiver, via_primary: u32, what: &str) -> Result<()> {
    flows_via(rx, via_primary, 300, what)?;
    fastpath_counts(lab, "passed_packets", 300)?;
    ensure!(lab.group_state()? == "primary", "{what}: not primary");
    Ok(())
}

/// The backup phase: the backup-learned route is in the table, yet the
/// segment is not primary-up; traffic is steered by the fast path and arrives
/// via the backup router. `backup_route` is what the edge's route shows then.
fn backup_phase(
    lab: &Lab,
    rx: &Receiver,
    via_backup: u32,
    backup_route: &[&str],
    what: &str,
) -> Result<()> {
    let route = wait_edge_route(lab, backup_route, Duration::from_secs(10), what)?;
    flows_via(rx, via_backup, 300, what)?;
    fastpath_counts(lab, "steered_packets", 300)?;
    let why = why_not(lab);
    ensure!(
        why.contains("only via backup interface bk0"),
        "{what}: with {route:?} installed the segment's why_not is {why:?}"
    );
    ensure!(lab.group_state()? == "backup", "{what}: not on the backup");
    Ok(())
}

/// Stops the stream and checks it was not lost wholesale.
fn finish(name: &str, rx: Receiver, tx: Sender) -> Result<()> {
    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let r = report(&sent, &rx.stop());
    eprintln!("{name}: stream {r:?}");
    ensure!(r.sent > 1_000, "sender too slow: {r:?}");
    // Losses happen only while a dead peer's timers run out (a few seconds at
    // 1,000 packets/s per outage), never for the whole test.
    ensure!(r.received * 2 > r.sent, "most packets lost: {r:?}");
    Ok(())
}

/// A BGP peer that announces the segment, without zebra (it installs nothing).
fn announcing_peer(ns: &Netns, asn: u32, id: &str, edge_addr: &str) -> Result<Frr> {
    Frr::start(
        ns,
        false,
        &bgpd_conf(
            asn,
            id,
            &[(edge_addr, 65000, &[])],
            &format!(" address-family ipv4 unicast\n  network {SEGMENT}\n exit-address-family\n"),
        ),
    )
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn frr_bgp_primary_with_backup_learned_route() -> Result<()> {
    let _g = serial();
    require_installed()?;
    let mut lab = Lab::new(Backup::HotStandby)?;
    // The lab's hand-made "bgp" route goes: FRR provides the real one.
    lab.withdraw_primary()?;
    let primary = announcing_peer(&lab.primary, 65001, "10.0.1.2", "10.0.1.1")?;
    let _backup = announcing_peer(&lab.backup, 65002, "10.0.2.2", "10.0.2.1")?;
    // The edge prefers the primary's path (local-pref 100 over 50): the
    // backup-learned route is installed only while the primary's is gone.
    // The route-map comes before its use: bgpd denies everything through a
    // route-map it does not know yet and asks for the routes again only
    // after its route-map delay.
    let edge = Frr::start(
        &lab.edge,
        true,
        &format!(
            "route-map BACKUP-IN permit 10\n set local-preference 50\n!\n{}",
            bgpd_conf(
                65000,
                "10.0.1.1",
                &[("10.0.1.2", 65001, &[]), ("10.0.2.2", 65002, &[])],
                " address-family ipv4 unicast\n  neighbor 10.0.2.2 route-map BACKUP-IN in\n \
                 exit-address-family\n",
            )
        ),
    )?;
    let logs = || format!("{}\n[primary peer]{}", edge.logs(), primary.logs());
    // zebra installs the route through a nexthop object, as FRR 8+ does.
    wait_edge_route(
        &lab,
        &["nhid", "via 10.0.1.2 dev wan0", "proto bgp"],
        Duration::from_secs(30),
        "BGP over the primary",
    )
    .with_context(logs)?;
    // Both paths are known: the backup-learned one waits behind the primary's.
    wait_until(Duration::from_secs(20), || Ok(edge.paths(SEGMENT) == 2)).with_context(|| {
        format!(
            "the edge never had both paths: {:?}{}",
            edge.vtysh(&format!("show bgp ipv4 unicast {SEGMENT}")),
            logs()
        )
    })?;

    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 1_000)?;
    primary_phase(&lab, &rx, via_primary, "BGP primary")?;
    let held = lab.status()?["groups"][0]["segments"][0]["held_by"].clone();
    ensure!(
        held["proto"] == "bgp" && held["dev"] == "wan0",
        "held_by {held}"
    );
    // Pre-armed (the default for an always-up link) beside FRR: zebra learns
    // our kernel route at distance 255 (its metric's top byte) and keeps its
    // BGP route best and installed. With a small metric (distance 0) zebra
    // preferred ours and withdrew its BGP route.
    wait_until(Duration::from_secs(5), || {
        Ok(lab.edge.sh("ip -4 route show proto 252")?.contains(SEGMENT))
    })
    .with_context(|| format!("not pre-armed; log:\n{}", lab.log()))?;
    wait_until(Duration::from_secs(5), || {
        Ok(edge
            .vtysh(&format!("show ip route {SEGMENT}"))?
            .contains("distance 255"))
    })
    .with_context(|| {
        format!(
            "zebra never learned the pre-armed route: {:?}",
            edge.vtysh(&format!("show ip route {SEGMENT}"))
        )
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let zebra = edge.vtysh(&format!("show ip route {SEGMENT}"))?;
    ensure!(
        zebra.contains("\"bgp\", distance 20") && lab.group_state()? == "primary",
        "zebra let the pre-armed route displace BGP: {zebra}\nkernel: {}",
        lab.edge.sh("ip -4 route")?
    );
    wait_edge_route(
        &lab,
        &["nhid", "via 10.0.1.2 dev wan0", "proto bgp"],
        Duration::from_secs(1),
        "BGP over the primary, beside the pre-armed route",
    )
    .with_context(logs)?;

    // The primary peer hangs without a word: only the hold timer (3 s) ends
    // the session; FRR then installs the backup-learned route.
    let t0 = Instant::now();
    primary.freeze_bgpd()?;
    wait_state(&lab, "backup", Duration::from_secs(15), &logs)?;
    let took = t0.elapsed();
    eprintln!("bgp: on the backup {took:?} after the peer hung");
    // The last keepalive came at most 1 s before the freeze.
    ensure!(
        took >= Duration::from_secs(2),
        "failed over after {took:?}: before the hold timer could expire"
    );
    backup_phase(
        &lab,
        &rx,
        via_backup,
        &["nhid", "via 10.0.2.2 dev bk0", "proto bgp"],
        "BGP backup-learned route",
    )
    .with_context(|| {
        format!(
            "edge BGP: {:?}\n{:?}\n{}",
            edge.vtysh("show bgp ipv4 unicast"),
            edge.vtysh("show ip route"),
            logs()
        )
    })?;
    // The backup-learned route stays installed; it never counts.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        lab.group_state()? == "backup",
        "the backup-learned route counted as primary"
    );

    // The peer is restarted: the session re-establishes, the primary's path wins.
    let t1 = Instant::now();
    primary.kill_bgpd()?;
    primary.start_bgpd()?;
    wait_edge_route(
        &lab,
        &["nhid", "via 10.0.1.2 dev wan0", "proto bgp"],
        Duration::from_secs(30),
        "BGP primary back",
    )
    .with_context(logs)?;
    wait_state(&lab, "primary", Duration::from_secs(10), &logs)?;
    eprintln!(
        "bgp: primary again {:?} after the peer restarted",
        t1.elapsed()
    );
    primary_phase(&lab, &rx, via_primary, "BGP primary after recovery")?;
    finish("bgp", rx, tx)
}

/// BIRD 2 config of an OSPF router: `interfaces` as (name, cost); hello 1 s,
/// dead 3 s, point-to-point (no DR election wait); `extra` protocols appended.
fn bird_ospf(router_id: &str, interfaces: &[(&str, u32)], export: &str, extra: &str) -> String {
    use std::fmt::Write as _;
    let mut ifaces = String::new();
    for (name, cost) in interfaces {
        let _ = writeln!(
            ifaces,
            "      interface \"{name}\" {{ type ptp; cost {cost}; hello 1; dead 3; }};"
        );
    }
    format!(
        "router id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n\
         {extra}\
         protocol ospf v2 {{\n  ipv4 {{ import all; export {export}; }};\n  area 0 {{\n{ifaces}  }};\n}}\n"
    )
}

/// A router that originates the segment into OSPF (a static route towards
/// the destination, exported as external) and installs nothing it learns.
fn originating_router(ns: &Netns, id: &str, iface: &str, towards_dest: &str) -> Result<Bird> {
    let conf = bird_ospf(
        id,
        &[(iface, 10)],
        "where source = RTS_STATIC",
        &format!("protocol static {{ ipv4; route {SEGMENT} via {towards_dest}; }}\n"),
    )
    // Its kernel routes are the lab's static ones: BIRD installs nothing here.
    .replace("import none; export all;", "import none; export none;");
    Bird::start(ns, &conf)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn bird_ospf_primary_dead_router_and_carrier_loss() -> Result<()> {
    let _g = serial();
    require_installed()?;
    let mut lab = Lab::new(Backup::HotStandby)?;
    lab.withdraw_primary()?;
    let primary = originating_router(&lab.primary, "10.0.1.2", "p_edge", "10.0.9.2")?;
    // The same prefix over the backup link, at a far higher cost.
    let _backup = originating_router(&lab.backup, "10.0.2.2", "b_edge", "10.0.8.2")?;
    let edge = Bird::start(
        &lab.edge,
        &bird_ospf("10.0.1.1", &[("wan0", 10), ("bk0", 1000)], "none", ""),
    )?;
    let logs = || format!("\n[edge] {}\n[primary] {}", edge.logs(), primary.logs());
    wait_edge_route(
        &lab,
        &["via 10.0.1.2 dev wan0", "proto bird"],
        Duration::from_secs(30),
        "OSPF over the primary",
    )
    .with_context(logs)?;

    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 1_000)?;
    primary_phase(&lab, &rx, via_primary, "OSPF primary")?;

    // The primary router dies: its adjacency ends when the dead timer (3 s)
    // runs out; BIRD installs the route learned over the backup link.
    let t0 = Instant::now();
    primary.kill()?;
    wait_state(&lab, "backup", Duration::from_secs(15), &logs)?;
    eprintln!(
        "ospf: on the backup {:?} after the router died",
        t0.elapsed()
    );
    backup_phase(
        &lab,
        &rx,
        via_backup,
        &["via 10.0.2.2 dev bk0", "proto bird"],
        "OSPF backup-learned route",
    )?;

    let t1 = Instant::now();
    primary.run()?;
    wait_edge_route(
        &lab,
        &["via 10.0.1.2 dev wan0", "proto bird"],
        Duration::from_secs(30),
        "OSPF primary back",
    )
    .with_context(logs)?;
    wait_state(&lab, "primary", Duration::from_secs(10), &logs)?;
    eprintln!(
        "ospf: primary again {:?} after the router restarted",
        t1.elapsed()
    );
    primary_phase(&lab, &rx, via_primary, "OSPF primary after restart")?;

    // Carrier loss: the far side takes its end of the primary link down.
    let t2 = Instant::now();
    lab.primary.sh("ip link set p_edge down")?;
    wait_state(&lab, "backup", Duration::from_secs(15), &logs)?;
    eprintln!("ospf: on the backup {:?} after carrier loss", t2.elapsed());
    backup_phase(
        &lab,
        &rx,
        via_backup,
        &["via 10.0.2.2 dev bk0", "proto bird"],
        "OSPF after carrier loss",
    )?;
    let t3 = Instant::now();
    lab.primary.sh("ip link set p_edge up")?;
    wait_edge_route(
        &lab,
        &["via 10.0.1.2 dev wan0", "proto bird"],
        Duration::from_secs(30),
        "OSPF primary after carrier",
    )
    .with_context(logs)?;
    wait_state(&lab, "primary", Duration::from_secs(10), &logs)?;
    eprintln!(
        "ospf: primary again {:?} after carrier came back",
        t3.elapsed()
    );
    primary_phase(&lab, &rx, via_primary, "OSPF primary after carrier")?;
    finish("ospf", rx, tx)
}
