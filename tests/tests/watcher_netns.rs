//! The real agent binary in a fresh network namespace: routes installed with
//! `ip` (static, kernel/connected, bgp, ospf, multipath, nexthop objects,
//! other tables, IPv6 siblings, a link going down) must show up in
//! `routebackup status --json` as the segments' `primary_up` and the groups'
//! state within a bounded delay.
//!
//! Build the agent first: `cargo build -p routebackup` (or set ROUTEBACKUP_BIN).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use routebackup::control::{request_status, StatusReport};
use routebackup_tests::agent::Agent;
use routebackup_tests::{agent_bin, wait_until, Netns};

/// How long a route change may take to reach `status`. The agent needs a
/// few ms; the bound leaves room for a loaded 2-core test box.
const STEP: Duration = Duration::from_millis(100);

fn start_agent(ns: &Netns, config_body: &str) -> Result<Agent> {
    Agent::start(ns, "tables = [\"main\"]", config_body)
}

/// `routebackup status --json` through the real CLI.
fn cli_status(socket: &Path) -> Result<StatusReport> {
    let out = std::process::Command::new(agent_bin())
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .output()?;
    if !out.status.success() {
        bail!(
            "routebackup status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn segment(s: &StatusReport, group: &str, prefix: &str) -> Result<(bool, String)> {
    let g = s
        .groups
        .iter()
        .find(|g| g.name == group)
        .with_context(|| format!("no group {group} in status"))?;
    let seg = g
        .segments
        .iter()
        .find(|x| x.prefix == prefix)
        .with_context(|| format!("no segment {prefix} in group {group}"))?;
    Ok((seg.primary_up, g.state.to_string()))
}

/// Whether a group state means "primary reachable": `primary`, or `holding`
/// (primary back, backup kept up for `deactivate_delay`).
fn primary_side(state: &str) -> bool {
    state == "primary" || state == "holding"
}

/// Runs `cmd` in `ns`, then waits until `prefix` of `group` has
/// `primary_up == up` and the group's state agrees (primary/holding iff `group_up`).
fn step(
    ns: &Netns,
    agent: &Agent,
    cmd: &str,
    group: &str,
    prefix: &str,
    up: bool,
    group_up: bool,
) -> Result<()> {
    if !cmd.is_empty() {
        ns.sh(cmd)?;
    }
    let mut last = None;
    let r = wait_until(STEP, || {
        let s = request_status(&agent.socket)?;
        let (p, state) = segment(&s, group, prefix)?;
        last = Some((p, state.clone()));
        Ok(p == up && primary_side(&state) == group_up)
    });
    if r.is_err() {
        // Tell a slow agent from a wrong one.
        let late = wait_until(Duration::from_secs(2), || {
            let (p, state) = segment(&request_status(&agent.socket)?, group, prefix)?;
            Ok(p == up && primary_side(&state) == group_up)
        })
        .is_ok();
        bail!(
            "after `{cmd}`: expected {group}/{prefix} primary_up={up}, group primary={group_up}; \
             saw {last:?} after {STEP:?} ({})\nroutes:\n{}\nagent log (tail):\n{}",
            if late {
                "it did get there later"
            } else {
                "and still wrong after 2 s"
            },
            ns.sh("ip route show table all | grep -v local; ip -6 route; ip nexthop")
                .unwrap_or_default(),
            agent
                .log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

const CONFIG: &str = r#"
[fastpath]
interfaces = ["lan0"]

[[link]]
name = "backup"
interface = "bk0"
driver = "always-up"

[[group]]
name = "hq"
segments = ["10.20.0.0/16", "10.30.0.0/16"]
links = ["backup"]

[[group]]
name = "dc"
match = "covering"
segments = ["10.40.1.0/24", "2001:db8:40::/48"]
links = ["backup"]

[[group]]
name = "lan"
segments = ["192.0.2.0/24"]
links = ["backup"]
"#;

fn setup(ns: &Netns) -> Result<()> {
    ns.sh(
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.accept_dad=0 && \
         ip link add lan0 type veth peer name lan0p && ip link set lan0p up && ip link set lan0 up && \
         ip link add up0 type veth peer name up0p && ip link set up0p up && ip link set up0 up && ip addr add 192.0.2.2/24 dev up0 && \
         ip -6 addr add 2001:db8:f::2/64 dev up0 nodad && \
         ip link add up1 type veth peer name up1p && ip link set up1p up && ip link set up1 up && ip addr add 198.51.100.2/24 dev up1 && \
         ip link add bk0 type veth peer name bk0p && ip link set bk0p up && ip link set bk0 up && ip addr add 203.0.113.2/24 dev bk0 && \
         ip -6 addr add 2001:db8:b::2/64 dev bk0 nodad",
    )?;
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn routes_drive_segment_state() -> Result<()> {
    let ns = Netns::new("wat")?;
    setup(&ns)?;
    // A route that exists before the agent starts comes from the dump.
    ns.sh("ip route add 10.40.0.0/16 via 192.0.2.1 proto static")?;
    let agent = start_agent(&ns, CONFIG)?;

    // Initial picture, through the real CLI.
    let s = cli_status(&agent.socket)?;
    assert!(s.synced);
    assert!(!segment(&s, "hq", "10.20.0.0/16")?.0);
    assert_eq!(
        segment(&s, "lan", "192.0.2.0/24")?,
        (true, "primary".into()),
        "connected route (proto kernel)"
    );
    assert!(
        segment(&s, "dc", "10.40.1.0/24")?.0,
        "covering route from the initial dump"
    );
    assert!(!primary_side(&segment(&s, "hq", "10.20.0.0/16")?.1));

    // proto static, then delete.
    step(
        &ns,
        &agent,
        "ip route add 10.20.0.0/16 via 192.0.2.1 proto static",
        "hq",
        "10.20.0.0/16",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip route del 10.20.0.0/16",
        "hq",
        "10.20.0.0/16",
        false,
        false,
    )?;

    // A route via the backup only is not a primary route (proto bgp).
    step(
        &ns,
        &agent,
        "ip route add 10.30.0.0/16 via 203.0.113.1 proto bgp",
        "hq",
        "10.30.0.0/16",
        false,
        false,
    )?;
    // Multipath with one next hop via the backup: primary.
    step(
        &ns,
        &agent,
        "ip route replace 10.30.0.0/16 proto bgp nexthop via 192.0.2.1 nexthop via 203.0.113.1",
        "hq",
        "10.30.0.0/16",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip route replace 10.30.0.0/16 via 203.0.113.1 proto bgp",
        "hq",
        "10.30.0.0/16",
        false,
        false,
    )?;
    step(
        &ns,
        &agent,
        "ip route del 10.30.0.0/16",
        "hq",
        "10.30.0.0/16",
        false,
        false,
    )?;

    // A route in an unwatched table does not count.
    step(
        &ns,
        &agent,
        "ip route add 10.20.0.0/16 via 192.0.2.1 table 100",
        "hq",
        "10.20.0.0/16",
        false,
        false,
    )?;

    // Nexthop objects (FRR 8+ style): via the backup, then a group with a
    // primary member, then the group shrunk to the backup member.
    step(
        &ns,
        &agent,
        "ip nexthop add id 1 via 192.0.2.1 dev up0 && ip nexthop add id 2 via 203.0.113.1 dev bk0 && \
         ip route add 10.20.0.0/16 nhid 2 proto bgp",
        "hq",
        "10.20.0.0/16",
        false,
        false,
    )?;
    step(
        &ns,
        &agent,
        "ip nexthop add id 10 group 1/2 && ip route replace 10.20.0.0/16 nhid 10 proto bgp",
        "hq",
        "10.20.0.0/16",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip nexthop replace id 10 group 2",
        "hq",
        "10.20.0.0/16",
        false,
        false,
    )?;
    step(
        &ns,
        &agent,
        "ip nexthop replace id 10 group 1",
        "hq",
        "10.20.0.0/16",
        true,
        true,
    )?;
    // Deleting the nexthop object takes the route with it.
    step(
        &ns,
        &agent,
        "ip nexthop del id 10",
        "hq",
        "10.20.0.0/16",
        false,
        false,
    )?;

    // proto ospf via up1; then up1 goes down: the kernel flushes the route
    // without a notification.
    step(
        &ns,
        &agent,
        "ip route add 10.20.0.0/16 via 198.51.100.1 proto ospf",
        "hq",
        "10.20.0.0/16",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip link set up1 down",
        "hq",
        "10.20.0.0/16",
        false,
        false,
    )?;
    // The connected route of up0 disappears with up0's only IPv4 address, and
    // the kernel silently flushes every IPv4 route through up0 with it
    // (10.40.0.0/16 from the initial dump covered dc's 10.40.1.0/24).
    step(
        &ns,
        &agent,
        "ip addr del 192.0.2.2/24 dev up0",
        "lan",
        "192.0.2.0/24",
        false,
        false,
    )?;
    step(&ns, &agent, "", "dc", "10.40.1.0/24", false, false)?;
    step(
        &ns,
        &agent,
        "ip addr add 192.0.2.2/24 dev up0",
        "lan",
        "192.0.2.0/24",
        true,
        true,
    )?;

    // Covering mode: a /16 covers 10.40.1.0/24, a /25 inside it does not.
    step(
        &ns,
        &agent,
        "ip route add 10.40.1.0/25 via 192.0.2.1",
        "dc",
        "10.40.1.0/24",
        false,
        false,
    )?;
    step(
        &ns,
        &agent,
        "ip route add 10.40.0.0/16 via 192.0.2.1 proto static",
        "dc",
        "10.40.1.0/24",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip route del 10.40.0.0/16",
        "dc",
        "10.40.1.0/24",
        false,
        false,
    )?;
    // IPv6: siblings added one at a time, then the primary sibling deleted.
    step(
        &ns,
        &agent,
        "ip -6 route add 2001:db8:40::/48 via 2001:db8:f::1 dev up0 proto bgp",
        "dc",
        "2001:db8:40::/48",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip -6 route append 2001:db8:40::/48 via 2001:db8:b::1 dev bk0 proto bgp",
        "dc",
        "2001:db8:40::/48",
        true,
        true,
    )?;
    step(
        &ns,
        &agent,
        "ip -6 route del 2001:db8:40::/48 via 2001:db8:f::1 dev up0",
        "dc",
        "2001:db8:40::/48",
        false,
        false,
    )?;
    // A covering IPv6 route via the primary does not count while the more
    // specific /48 via the backup is there: the longest match decides.
    step(
        &ns,
        &agent,
        "ip -6 route add 2001:db8::/32 via 2001:db8:f::1 proto bgp",
        "dc",
        "2001:db8:40::/48",
        false,
        false,
    )?;
    // Without the /48, the covering /32 via the primary holds the segment.
    step(
        &ns,
        &agent,
        "ip -6 route del 2001:db8:40::/48 via 2001:db8:b::1 dev bk0",
        "dc",
        "2001:db8:40::/48",
        true,
        true,
    )?;

    // Clean stop on SIGTERM removes the socket.
    let pid = agent.child.id();
    routebackup_tests::sh(&format!("kill -TERM {pid}"))?;
    wait_until(Duration::from_secs(5), || Ok(!agent.socket.exists()))
        .with_context(|| format!("socket not removed after SIGTERM; log:\n{}", agent.log()))?;
    let log = agent.log();
    // The dump's own time and the time since start, apart (the probe and
    // the programs' load come first; on an emulated kernel they take seconds).
    let line = log
        .lines()
        .find(|l| l.contains("initial sync:"))
        .with_context(|| format!("no initial sync line: {log}"))?;
    let number_before = |word: &str| -> Option<u64> {
        let (head, _) = line.split_once(word)?;
        head.split_whitespace().last()?.parse().ok()
    };
    let dump = number_before(" ms, done").with_context(|| line.to_string())?;
    let since_start = number_before(" ms after start").with_context(|| line.to_string())?;
    assert!(dump <= since_start, "{line}");
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn status_and_check_errors_are_clear() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("nobody.sock");
    let out = std::process::Command::new(agent_bin())
        .args(["status", "--socket"])
        .arg(&sock)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no agent is listening on") && err.contains("routebackup run"),
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[group]]\nname = \"x\"\nsegments = [\"10.0.0.0/33\"]\n",
    )?;
    let out = std::process::Command::new(agent_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, CONFIG)?;
    let out = std::process::Command::new(agent_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.20.0.0/16"));

    // A second agent on a live socket is refused.
    let ns = Netns::new("wa2")?;
    setup(&ns)?;
    let agent = start_agent(&ns, CONFIG)?;
    let cfg = dir.path().join("second.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ncontrol_socket = \"{}\"\n{CONFIG}",
            agent.socket.display()
        ),
    )?;
    let out = ns.output(&format!(
        "{} run --config {}",
        agent_bin().display(),
        cfg.display()
    ))?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already listening"), "{err}");
    assert!(
        request_status(&agent.socket).is_ok(),
        "the first agent must keep its socket"
    );
    Ok(())
}
