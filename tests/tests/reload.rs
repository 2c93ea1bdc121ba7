//! Reload end to end: the real agent in the lab (tests/src/lab.rs) with a
//! UDP stream, its config file rewritten and reloaded (SIGHUP or
//! `routebackup reload`) while it steers. Each reload must do what the
//! difference calls for and nothing else.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use routebackup_tests::lab::{Backup, Lab, BACKUP_GW, DEST_ADDR, SEGMENT};
use routebackup_tests::traffic::{report, Receiver, Sender};
use routebackup_tests::wait_until;

/// The lab tests share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A second monitored segment, reachable at `OTHER_ADDR` through either router.
const OTHER_SEGMENT: &str = "203.0.113.0/24";
const OTHER_ADDR: &str = "203.0.113.10";

fn to(addr: &str, port: u16) -> SocketAddr {
    format!("{addr}:{port}").parse().expect("valid address")
}

fn count_on(rx: &Receiver, ifindex: u32) -> usize {
    rx.arrivals()
        .iter()
        .filter(|a| a.ifindex == ifindex)
        .count()
}

fn flows_via(rx: &Receiver, ifindex: u32, n: usize, what: &str) -> Result<()> {
    let before = count_on(rx, ifindex);
    wait_until(Duration::from_secs(5), || {
        Ok(count_on(rx, ifindex) >= before + n)
    })
    .with_context(|| format!("traffic does not flow via {what}"))
}

/// The group named `name` in `status --json`.
fn group(lab: &Lab, name: &str) -> Result<serde_json::Value> {
    let s = lab.status()?;
    s["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name).cloned())
        .with_context(|| format!("no group {name} in status: {s}"))
}

fn group_names(lab: &Lab) -> Result<Vec<String>> {
    let s = lab.status()?;
    Ok(s["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str().map(String::from))
        .collect())
}

/// The steered-packets counter of a group.
fn steered_packets(lab: &Lab, name: &str) -> Result<u64> {
    let s = lab.status()?;
    s["fastpath"]["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .and_then(|g| g["steered_packets"].as_u64())
        .with_context(|| format!("no counters of {name} in status: {s}"))
}

/// The pinned IPv4 segment map, as bpftool dumps it (JSON text).
fn segments_dump(lab: &Lab) -> Result<serde_json::Value> {
    let out = routebackup_tests::sh(&format!(
        "bpftool -j map dump pinned {}",
        lab.bpffs.path().join("routebackup/segments_v4").display()
    ))?;
    serde_json::from_str(&out).context("bpftool JSON")
}

/// A byte of a bpftool JSON dump: a number or a "0x.." string.
fn json_byte(v: &serde_json::Value) -> Option<u8> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        serde_json::Value::String(s) => u8::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
        _ => None,
    }
}

/// (prefix length, address bytes) of a dumped LPM key, with or without BTF.
fn key_of(e: &serde_json::Value) -> Option<(u32, Vec<u8>)> {
    let k = &e["formatted"]["key"];
    if let Some(obj) = k.as_object() {
        let len = obj.values().find_map(serde_json::Value::as_u64)?;
        let data = obj.values().find_map(serde_json::Value::as_array)?;
        return Some((
            u32::try_from(len).ok()?,
            data.iter().filter_map(json_byte).collect(),
        ));
    }
    let raw: Vec<u8> = e["key"].as_array()?.iter().filter_map(json_byte).collect();
    let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?);
    Some((len, raw.get(4..)?.to_vec()))
}

/// The dumped entry of `prefix` ("a.b.c.d/len"): its value, decoded by BTF.
fn entry(dump: &serde_json::Value, prefix: &str) -> Option<serde_json::Value> {
    let (addr, len) = prefix.split_once('/')?;
    let len: u32 = len.parse().ok()?;
    let octets: Vec<u8> = addr.split('.').filter_map(|o| o.parse().ok()).collect();
    dump.as_array()?
        .iter()
        .find(|e| key_of(e) == Some((len, octets.clone())))
        .map(|e| e["formatted"]["value"].clone())
}

/// `routebackup reload --socket`: (success, stdout, stderr).
fn reload_cli(lab: &Lab) -> Result<(bool, String, String)> {
    let out = std::process::Command::new(routebackup_tests::agent_bin())
        .args(["reload", "--socket"])
        .arg(lab.socket())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn write_config(lab: &Lab, text: &str) -> Result<()> {
    std::fs::write(lab.config_path(), text)?;
    Ok(())
}

/// `dest` and, when `other`, a second group for `OTHER_SEGMENT` on the same link.
fn with_other_group(base: &str) -> String {
    format!(
        "{base}\n[[group]]\nname = \"other\"\nsegments = [\"{OTHER_SEGMENT}\"]\nlinks = [\"backup\"]\nactivate_delay = \"0s\"\ndeactivate_delay = \"0s\"\n"
    )
}

/// Makes `OTHER_ADDR` reachable through either router (like `DEST_ADDR`).
fn add_other_destination(lab: &Lab) -> Result<()> {
    lab.dest
        .sh(&format!("ip addr add {OTHER_ADDR}/32 dev lo"))?;
    lab.primary
        .sh(&format!("ip route add {OTHER_SEGMENT} via 10.0.9.2"))?;
    lab.backup
        .sh(&format!("ip route add {OTHER_SEGMENT} via 10.0.8.2"))?;
    Ok(())
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// SIGHUP with the same file: nothing is written, nothing flaps, nothing
/// is redialled; then broken configs are refused and the agent runs on.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn reload_unchanged_config_touches_nothing_and_broken_ones_are_refused() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    let dials = lab.dir.path().join("dials");
    let up = lab.dir.path().join("dial-up.sh");
    let script = std::fs::read_to_string(&up)?.replacen(
        "set -e\n",
        &format!("set -e\necho dial >> {}\n", dials.display()),
        1,
    );
    std::fs::write(&up, script)?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (_, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), to(DEST_ADDR, 9000), 2_000)?;
    lab.withdraw_primary()?;
    wait_until(Duration::from_secs(15), || {
        Ok(group(&lab, "dest")?["state"] == "backup")
    })
    .with_context(|| lab.log())?;
    flows_via(&rx, via_backup, 500, "the backup")?;
    // Let the next hop's MACs settle into the entry first.
    wait_until(Duration::from_secs(5), || {
        let d = segments_dump(&lab)?;
        Ok(entry(&d, SEGMENT).is_some_and(|e| e["flags"].as_u64().unwrap_or(0) & 8 != 0))
    })?;

    // The stream whose losses count starts once the backup carries it (the
    // dial's own gap is not the reload's).
    tx.stop();
    rx.stop();
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), to(DEST_ADDR, 9000), 2_000)?;
    flows_via(&rx, via_backup, 200, "the backup (measured stream)")?;

    let before = segments_dump(&lab)?;
    let since = group(&lab, "dest")?["since"].clone();
    let counter = steered_packets(&lab, "dest")?;
    let writes = count(&lab.log(), "steering entries written");
    let dialled = std::fs::read_to_string(&dials)?.lines().count();
    let pid = lab.agent_pid().context("agent pid")?;
    routebackup_tests::sh(&format!("kill -HUP {pid}"))?;
    wait_until(Duration::from_secs(5), || {
        Ok(lab.log().contains("reload: the config is unchanged"))
    })
    .with_context(|| lab.log())?;
    flows_via(&rx, via_backup, 500, "the backup after SIGHUP")?;
    ensure!(
        segments_dump(&lab)? == before,
        "entries changed by an unchanged reload"
    );
    ensure!(
        steered_packets(&lab, "dest")? > counter,
        "counters did not keep counting"
    );
    ensure!(group(&lab, "dest")?["since"] == since, "the group flapped");
    ensure!(
        count(&lab.log(), "steering entries written") == writes,
        "a steer was written:\n{}",
        lab.log()
    );
    ensure!(
        std::fs::read_to_string(&dials)?.lines().count() == dialled,
        "redialled"
    );
    let (ok, out, _) = reload_cli(&lab)?;
    ensure!(ok && out.contains("unchanged"), "reload said {out:?}");

    // A config that fails `check`: refused with every error, agent unchanged.
    write_config(
        &lab,
        &cfg.replace("activate_delay = \"0s\"", "activate_delay = \"soon\""),
    )?;
    let (ok, _, err) = reload_cli(&lab)?;
    ensure!(!ok, "a broken config was accepted");
    ensure!(
        err.contains("routebackup.toml:") && err.contains("activate_delay"),
        "reload's errors: {err}"
    );
    let status = lab.status()?;
    ensure!(
        status["config"]["last_reload_failed"] == true,
        "status: {status}"
    );
    ensure!(
        status["config"]["last_reload_errors"]
            .to_string()
            .contains("activate_delay"),
        "status: {status}"
    );
    ensure!(status["config"]["path"] == lab.config_path().display().to_string());
    ensure!(group(&lab, "dest")?["since"] == since);
    ensure!(
        lab.status_text(&[])?.contains("last reload"),
        "human status lacks the failure"
    );
    // A setting only a restart applies: refused, saying so.
    write_config(&lab, &cfg.replace("routebackup.sock", "other.sock"))?;
    let (ok, _, err) = reload_cli(&lab)?;
    ensure!(
        !ok && err.contains("requires a restart"),
        "reload's errors: {err}"
    );
    // Fixed: accepted, and the failure is cleared.
    write_config(&lab, &cfg)?;
    let (ok, out, err) = reload_cli(&lab)?;
    ensure!(ok, "reload failed: {out} {err}");
    ensure!(lab.status()?["config"]["last_reload_failed"] == false);
    flows_via(&rx, via_backup, 500, "the backup after the refused reloads")?;
    ensure!(segments_dump(&lab)? == before);
    ensure!(
        std::fs::read_to_string(&dials)?.lines().count() == dialled,
        "redialled"
    );

    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let r = report(&sent, &rx.stop());
    ensure!(r.lost < 100, "lost {} packets: {r:?}", r.lost);
    Ok(())
}

/// Under traffic: a group added (its segment primary: a pass entry only),
/// the steered group removed (its entry and kernel route go), and the
/// other group's steering untouched throughout.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn reload_adds_a_group_and_removes_a_steered_one() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    add_other_destination(&lab)?;
    lab.edge.sh(&format!(
        "ip route add {OTHER_SEGMENT} via 10.0.1.2 dev wan0 proto bgp metric 20"
    ))?;
    let cfg = lab.config("0s", "auto", "kernel_routes = true");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let rx2 = Receiver::start(&lab.dest.path(), "0.0.0.0:9001".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), to(DEST_ADDR, 9000), 2_000)?;
    let tx2 = Sender::start(&lab.lan.path(), to(OTHER_ADDR, 9001), 1_000)?;
    lab.withdraw_primary()?;
    flows_via(&rx, via_backup, 500, "the backup")?;
    flows_via(&rx2, via_primary, 200, "the primary (other)")?;
    let dest_entry = entry(&segments_dump(&lab)?, SEGMENT).context("no dest entry")?;
    let since = group(&lab, "dest")?["since"].clone();

    // Add a group: the segment gets a pass entry; dest keeps its steering.
    let added = with_other_group(&cfg);
    write_config(&lab, &added)?;
    let (ok, out, err) = reload_cli(&lab)?;
    ensure!(ok, "reload failed: {out} {err}");
    wait_until(Duration::from_secs(5), || {
        Ok(group_names(&lab)?.len() == 2 && lab.log().contains("reload: re-dumping"))
    })?;
    wait_until(Duration::from_secs(5), || {
        Ok(group(&lab, "other")?["segments"][0]["primary_up"] == true)
    })
    .with_context(|| lab.log())?;
    let dump = segments_dump(&lab)?;
    let other = entry(&dump, OTHER_SEGMENT).context("no entry for the added segment")?;
    ensure!(other["action"] == 0, "added segment not pass: {other}");
    ensure!(
        entry(&dump, SEGMENT) == Some(dest_entry.clone()),
        "dest's entry changed"
    );
    ensure!(group(&lab, "other")?["state"] == "primary");
    ensure!(group(&lab, "dest")?["since"] == since, "dest flapped");
    flows_via(&rx, via_backup, 500, "the backup after adding a group")?;
    flows_via(
        &rx2,
        via_primary,
        200,
        "the primary (other) after adding it",
    )?;
    ensure!(
        lab.edge.sh("ip route show proto 252")?.contains(SEGMENT),
        "dest's kernel route went"
    );

    // Remove the steered group: its entry and kernel route go.
    let only_other = added.replace(
        &format!("[[group]]\nname = \"dest\"\nsegments = [\"{SEGMENT}\"]\nlinks = [\"backup\"]\nactivate_delay = \"0s\"\ndeactivate_delay = \"0s\"\n"),
        "",
    );
    ensure!(only_other != added, "the test failed to remove the group");
    write_config(&lab, &only_other)?;
    let pid = lab.agent_pid().context("agent pid")?;
    routebackup_tests::sh(&format!("kill -HUP {pid}"))?;
    wait_until(Duration::from_secs(5), || {
        Ok(group_names(&lab)? == ["other"])
    })
    .with_context(|| lab.log())?;
    wait_until(Duration::from_secs(5), || {
        Ok(!lab.edge.sh("ip route show proto 252")?.contains(SEGMENT))
    })
    .context("the removed group's kernel route stayed")?;
    let dump = segments_dump(&lab)?;
    ensure!(
        entry(&dump, SEGMENT).is_none(),
        "the removed group's entry stayed: {dump}"
    );
    ensure!(
        entry(&dump, OTHER_SEGMENT) == Some(other),
        "other's entry changed"
    );
    // dest's traffic follows the kernel now: no route, nothing arrives.
    std::thread::sleep(Duration::from_millis(300));
    let n = count_on(&rx, via_backup);
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        count_on(&rx, via_backup) == n,
        "the removed group is still steered"
    );
    flows_via(
        &rx2,
        via_primary,
        200,
        "the primary (other) after removing dest",
    )?;
    drop((tx, tx2));
    ensure!(lab.bk0_exists(), "the always-up link was taken down");
    Ok(())
}

/// Under traffic, while steered: the link's gateway changes (re-steered, no
/// flap), a segment is added to the steered group (steered alone), and a
/// fast-path interface is added and removed (only it is attached/detached).
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn reload_changes_gateway_and_adds_a_segment_while_steered() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    add_other_destination(&lab)?;
    // A second next hop on the backup's link: the same router, another address.
    lab.edge.sh("ip addr add 10.0.3.1/24 dev bk0")?;
    lab.backup.sh("ip addr add 10.0.3.2/24 dev b_edge")?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let (_, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let rx2 = Receiver::start(&lab.dest.path(), "0.0.0.0:9001".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), to(DEST_ADDR, 9000), 2_000)?;
    lab.withdraw_primary()?;
    flows_via(&rx, via_backup, 500, "the backup")?;
    let since = group(&lab, "dest")?["since"].clone();
    let gw = |lab: &Lab| -> Result<Vec<u64>> {
        let d = segments_dump(lab)?;
        let e = entry(&d, SEGMENT).context("no dest entry")?;
        Ok(e["gateway"]
            .as_array()
            .map(|a| {
                a.iter()
                    .take(4)
                    .filter_map(json_byte)
                    .map(u64::from)
                    .collect()
            })
            .unwrap_or_default())
    };
    ensure!(
        gw(&lab)? == [10, 0, 2, 2],
        "gateway before: {:?}",
        gw(&lab)?
    );

    let moved = cfg.replace(
        &format!("gateway = \"{BACKUP_GW}\""),
        "gateway = \"10.0.3.2\"",
    );
    ensure!(moved != cfg);
    write_config(&lab, &moved)?;
    let (ok, out, err) = reload_cli(&lab)?;
    ensure!(ok, "reload failed: {out} {err}");
    wait_until(Duration::from_secs(5), || Ok(gw(&lab)? == [10, 0, 3, 2]))
        .with_context(|| lab.log())?;
    flows_via(&rx, via_backup, 500, "the backup via the new gateway")?;
    let g = group(&lab, "dest")?;
    ensure!(
        g["since"] == since && g["state"] == "backup",
        "the group flapped: {g}"
    );

    // Add a segment to the steered group: it is steered at once, alone.
    let more = moved.replace(
        &format!("segments = [\"{SEGMENT}\"]"),
        &format!("segments = [\"{SEGMENT}\", \"{OTHER_SEGMENT}\"]"),
    );
    ensure!(more != moved);
    let dest_entry = entry(&segments_dump(&lab)?, SEGMENT);
    let tx2 = Sender::start(&lab.lan.path(), to(OTHER_ADDR, 9001), 1_000)?;
    write_config(&lab, &more)?;
    let (ok, out, err) = reload_cli(&lab)?;
    ensure!(ok, "reload failed: {out} {err}");
    flows_via(&rx2, via_backup, 200, "the backup for the added segment")?;
    let d = segments_dump(&lab)?;
    let added = entry(&d, OTHER_SEGMENT).context("no entry for the added segment")?;
    ensure!(added["action"] == 1, "added segment not steered: {added}");
    ensure!(
        entry(&d, SEGMENT) == dest_entry,
        "the existing entry was rewritten"
    );
    // The watcher's re-dump finds no primary for it either: no flap.
    std::thread::sleep(Duration::from_millis(1_500));
    let g = group(&lab, "dest")?;
    ensure!(
        g["since"] == since && g["state"] == "backup",
        "the group flapped: {g}"
    );
    flows_via(&rx, via_backup, 500, "the backup after adding a segment")?;

    // [fastpath] interfaces: only the added one is attached, only it detached again.
    lab.edge.sh(
        "ip link add lan1 type veth peer name lan1p && ip link set lan1 up && ip link set lan1p up",
    )?;
    let xdp_of = |ifname: &str| -> Result<serde_json::Value> {
        let out = lab.edge.sh(&format!("ip -j -d link show dev {ifname}"))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v[0]["xdp"].clone())
    };
    let lan0 = xdp_of("lan0")?;
    ensure!(!lan0.is_null(), "no XDP on lan0");
    let two = more.replace(
        "interfaces = [\"lan0\"]",
        "interfaces = [\"lan0\", \"lan1\"]",
    );
    ensure!(two != more);
    write_config(&lab, &two)?;
    let (ok, out, err) = reload_cli(&lab)?;
    ensure!(ok, "reload failed: {out} {err}");
    let attached = |lab: &Lab| -> Result<Vec<String>> {
        Ok(lab.status()?["fastpath"]["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["interface"].as_str().map(String::from))
            .collect())
    };
    ensure!(
        attached(&lab)? == ["lan0", "lan1"],
        "attachments: {:?}",
        attached(&lab)?
    );
    ensure!(!xdp_of("lan1")?.is_null(), "no XDP on lan1");
    ensure!(xdp_of("lan0")? == lan0, "lan0 was re-attached");
    write_config(&lab, &more)?;
    let (ok, out, err) = reload_cli(&lab)?;
    ensure!(ok, "reload failed: {out} {err}");
    ensure!(
        attached(&lab)? == ["lan0"],
        "attachments: {:?}",
        attached(&lab)?
    );
    ensure!(xdp_of("lan1")?.is_null(), "XDP still on lan1");
    ensure!(xdp_of("lan0")? == lan0, "lan0 was re-attached");
    flows_via(
        &rx,
        via_backup,
        500,
        "the backup after the interface changes",
    )?;

    let sent = tx.stop();
    drop(tx2);
    std::thread::sleep(Duration::from_millis(200));
    let r = report(&sent, &rx.stop());
    ensure!(r.lost < 100, "lost {} packets: {r:?}", r.lost);
    Ok(())
}
