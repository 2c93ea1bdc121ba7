//! The agent dying and coming back (tests/src/lab.rs, real traffic): the
//! pinned fast path keeps steering as last written while it is dead, the next
//! start reconciles with the kernel without redialing or flapping; one agent
//! per pin path; the systemd notify protocol and the shipped unit.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use routebackup_tests::lab::{dest, flows_via, serial, Backup, Lab, SEGMENT};
use routebackup_tests::traffic::{lost_from, Receiver, Sender};
use routebackup_tests::wait_until;

/// (group state, active link, segment steered) from `status`.
fn group(lab: &Lab) -> Result<(String, Option<String>, bool)> {
    let s = lab.status()?;
    let g = &s["groups"][0];
    Ok((
        g["state"].as_str().unwrap_or("?").to_string(),
        g["active_link"].as_str().map(str::to_string),
        g["segments"][0]["steered"].as_bool() == Some(true),
    ))
}

/// Waits (at most `within`) for the group to be in `state` with `steered`.
fn converges(lab: &Lab, state: &str, steered: bool, within: Duration) -> Result<()> {
    let mut last = None;
    wait_until(within, || {
        let g = group(lab)?;
        let ok = g.0 == state && g.2 == steered;
        last = Some(g);
        Ok(ok)
    })
    .with_context(|| {
        format!(
            "group never reached {state} (steered {steered}) within {within:?}: {last:?}; log:\n{}",
            lab.log()
        )
    })
}

/// Makes the dial script count its invocations; returns the counter file.
fn count_dials(lab: &Lab) -> Result<std::path::PathBuf> {
    let up = lab.dir.path().join("dial-up.sh");
    let counter = lab.dir.path().join("dials");
    let text = std::fs::read_to_string(&up)?.replacen(
        "set -e\n",
        &format!("set -e\necho dial >> {}\n", counter.display()),
        1,
    );
    std::fs::write(&up, text)?;
    Ok(counter)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// The agent's kernel routes (protocol 252) in the lab's edge.
fn agent_routes(lab: &Lab) -> Result<Vec<String>> {
    Ok(lab
        .edge
        .sh("ip -4 route show table all proto 252")?
        .lines()
        .map(str::to_string)
        .collect())
}

/// Every file under the pin path, relative to it.
fn pins(lab: &Lab) -> BTreeSet<String> {
    let root = lab.bpffs.path().join("routebackup");
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(rel) = p.strip_prefix(&root) {
                out.insert(rel.display().to_string());
            }
        }
    }
    out
}

/// What a running agent on lan0 pins: four maps, and each attachment's bpf
/// link under `links/` or, made over netlink, its record under `netlink/`
/// (as status names the mechanisms).
fn expected_pins(lab: &Lab) -> Result<BTreeSet<String>> {
    let s = lab.status()?;
    let a = &s["fastpath"]["attachments"][0];
    let dir = |mechanism: &serde_json::Value| {
        if mechanism == "netlink" {
            "netlink"
        } else {
            "links"
        }
    };
    Ok([
        "v1/segments_v4".to_string(),
        "v1/segments_v6".to_string(),
        "v1/stats".to_string(),
        "v1/tc_idle".to_string(),
        format!("v1/{}/xdp-native_lan0", dir(&a["xdp_mechanism"])),
        format!("v1/{}/tc_lan0", dir(&a["tc_mechanism"])),
    ]
    .into_iter()
    .collect())
}

/// Our TC filters on lan0's clsact ingress (TC over netlink), as `tc
/// filter show` lists them: one line per filter names the program.
fn lan0_tc_filters(lab: &Lab) -> Result<usize> {
    let out = lab
        .edge
        .sh("tc filter show dev lan0 ingress 2>/dev/null || true")?;
    Ok(out.lines().filter(|l| l.contains("rb_tc")).count())
}

/// XDP programs attached to lan0, as `bpftool net` lists them (this
/// bpftool predates TCX, whose links the pin check covers: an unpinned TCX
/// link cannot outlive the agent that made it).
fn lan0_xdp_programs(lab: &Lab) -> Result<usize> {
    let out = lab.edge.sh("bpftool -j net show dev lan0")?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v[0]["xdp"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|e| e["devname"] == "lan0").count()))
}

/// The agent SIGKILLed while steering, with its attachments made as `args`
/// (`run` options) choose: the kept ones steer alone while it is dead, the
/// next agent adopts them without losing a packet and leaves no second
/// program behind, and a clean stop then removes all of it.
fn sigkill_while_steering(args: &[&str]) -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    let dials = count_dials(&lab)?;
    // No kernel routes: the pinned fast path alone carries the traffic while
    // the agent is dead.
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, args)?;
    let (_, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let tx = Sender::start(&lab.lan.path(), dest(), 2_000)?;
    lab.withdraw_primary()?;
    converges(&lab, "backup", true, Duration::from_secs(10))?;
    flows_via(&rx, via_backup, 500, "the backup")?;
    let link_before = group(&lab)?.1;
    let steady_from = rx.arrivals().iter().map(|a| a.seq).max().unwrap_or(0);

    let killed = Instant::now();
    lab.stop_agent(libc::SIGKILL)?;
    // Dead agent: steering frozen as last written.
    flows_via(&rx, via_backup, 1_000, "the backup with the agent killed")?;
    ensure!(lab.bk0_exists(), "the backup link went with the agent");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed()));

    lab.start_agent(&cfg, args)?;
    converges(&lab, "backup", true, Duration::from_secs(2))?;
    ensure!(
        group(&lab)?.1 == link_before,
        "another link after the restart"
    );
    flows_via(&rx, via_backup, 1_000, "the backup after the restart")?;
    let s = lab.status()?;
    ensure!(
        s["fastpath"]["attachments"][0]["adopted"] == true,
        "the attachments were not adopted: {s}"
    );
    ensure!(lines(&dials) == 1, "redialed: {} dials", lines(&dials));
    ensure!(
        !lab.log().contains("cannot adopt"),
        "an attachment was attached anew, not adopted:\n{}",
        lab.log()
    );
    // Replaced, not added: one program per hook.
    let tc_over_netlink = s["fastpath"]["attachments"][0]["tc_mechanism"] == "netlink";
    ensure!(
        lan0_tc_filters(&lab)? == usize::from(tc_over_netlink),
        "lan0's TC filters after the restart:\n{}",
        lab.edge.sh("tc filter show dev lan0 ingress")?
    );
    ensure!(
        lan0_xdp_programs(&lab)? == 1,
        "lan0 has {} XDP programs attached",
        lan0_xdp_programs(&lab)?
    );
    ensure!(pins(&lab) == expected_pins(&lab)?, "pins: {:?}", pins(&lab));

    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let lost = lost_from(sent.len(), &rx.stop(), steady_from);
    eprintln!(
        "SIGKILL + restart: {} sent, {} lost after steering was established",
        sent.len(),
        lost.len()
    );
    ensure!(
        lost.is_empty(),
        "{} packets lost across the crash (first seqs {:?})",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // A clean stop takes everything off, adopted or not.
    lab.stop_agent(libc::SIGTERM)?;
    ensure!(pins(&lab).is_empty(), "left pinned: {:?}", pins(&lab));
    ensure!(
        (lan0_tc_filters(&lab)?, lan0_xdp_programs(&lab)?) == (0, 0),
        "programs left on lan0 after a clean stop"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn sigkill_while_steering_loses_nothing_and_redials_nothing() -> Result<()> {
    sigkill_while_steering(&[])
}

/// The same with XDP and TC attached over netlink, as on kernels before 5.9
/// and 6.6: the device keeps them, and their records lead the next agent to
/// them.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn sigkill_while_steering_over_netlink_loses_nothing() -> Result<()> {
    sigkill_while_steering(&["--kernel-without", "xdp-link,tcx"])
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn primary_back_or_lost_while_dead_is_acted_on_at_restart() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    // The steering routes only: pre-arming (its own route behind the
    // primary, tests/tests/prearm.rs) would add one while the primary is up.
    let cfg = lab.config("0s", "auto", "kernel_routes = true\nprearm = false");
    lab.start_agent(&cfg, &[])?;
    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let _tx = Sender::start(&lab.lan.path(), dest(), 2_000)?;
    lab.withdraw_primary()?;
    converges(&lab, "backup", true, Duration::from_secs(5))?;
    wait_until(
        Duration::from_secs(1),
        || Ok(agent_routes(&lab)?.len() == 1),
    )
    .with_context(|| format!("kernel routes: {:?}", agent_routes(&lab)))?;
    let routes_before = agent_routes(&lab)?;

    // Killed and restarted with nothing changed: the adopted kernel route
    // survives the sweep of leftovers, unchanged and not duplicated.
    lab.stop_agent(libc::SIGKILL)?;
    lab.start_agent(&cfg, &[])?;
    converges(&lab, "backup", true, Duration::from_secs(1))?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        agent_routes(&lab)? == routes_before,
        "kernel routes changed across the crash: {routes_before:?} → {:?}",
        agent_routes(&lab)?
    );

    // The primary comes back while the agent is dead: steering stays frozen
    // until the restart, which ends it at once.
    lab.stop_agent(libc::SIGKILL)?;
    lab.restore_primary()?;
    flows_via(
        &rx,
        via_backup,
        500,
        "the backup (frozen) with the agent dead",
    )?;
    lab.start_agent(&cfg, &[])?;
    converges(&lab, "primary", false, Duration::from_secs(1))?;
    flows_via(&rx, via_primary, 500, "the primary after the restart")?;
    wait_until(
        Duration::from_secs(1),
        || Ok(agent_routes(&lab)?.is_empty()),
    )
    .with_context(|| format!("stale kernel route left: {:?}", agent_routes(&lab)))?;

    // The primary is lost while the agent is dead: steering starts after the restart.
    lab.stop_agent(libc::SIGKILL)?;
    lab.withdraw_primary()?;
    lab.start_agent(&cfg, &[])?;
    converges(&lab, "backup", true, Duration::from_secs(1))?;
    flows_via(&rx, via_backup, 500, "the backup after the restart")?;
    wait_until(
        Duration::from_secs(1),
        || Ok(agent_routes(&lab)?.len() == 1),
    )
    .with_context(|| format!("kernel routes: {:?}", agent_routes(&lab)))?;
    Ok(())
}

/// A tiny deterministic generator (xorshift64*): the moments of the cycles
/// below are random but repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Withdraws and restores the primary every second until stopped; `hold`
/// keeps it in its current state (a flip is done under the lock, so `hold`
/// never reads a state that is about to change).
struct Flapper {
    stop: Arc<AtomicBool>,
    /// Whether the primary is up; locked for a whole flip.
    up: Arc<Mutex<bool>>,
    paused: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Flapper {
    fn start(edge: String) -> Flapper {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let up = Arc::new(Mutex::new(true));
        let (s, p, u) = (stop.clone(), paused.clone(), up.clone());
        let route = format!("{SEGMENT} via 10.0.1.2 dev wan0 proto bgp metric 20");
        let thread = std::thread::spawn(move || -> Result<()> {
            let mut next = Instant::now() + Duration::from_secs(1);
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                if Instant::now() < next {
                    continue;
                }
                let mut up = u.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if p.load(Ordering::SeqCst) {
                    continue;
                }
                next += Duration::from_secs(1);
                let verb = if *up { "del" } else { "replace" };
                routebackup_tests::sh(&format!("ip -n {edge} route {verb} {route}"))?;
                *up = !*up;
            }
            Ok(())
        });
        Flapper {
            stop,
            up,
            paused,
            thread: Some(thread),
        }
    }

    /// Holds the primary as it is (after a flip in progress) and says whether it is up.
    fn hold(&self) -> bool {
        let up = self
            .up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.paused.store(true, Ordering::SeqCst);
        *up
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("flapper panicked"),
            None => Ok(()),
        }
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn twenty_sigkills_while_the_primary_flaps_converge_without_leftovers() -> Result<()> {
    // Under emulation (the kernel matrix) each start takes seconds: five
    // kills there, at the same random moments, keep the matrix within CI's time.
    let cycles: usize = if routebackup_tests::time_scale() > 1 {
        5
    } else {
        20
    };
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    // The steering routes only: pre-arming (its own route behind the
    // primary, tests/tests/prearm.rs) would add one while the primary is up.
    let cfg = lab.config("0s", "auto", "kernel_routes = true\nprearm = false");
    lab.start_agent(&cfg, &["--log-level", "info"])?;
    let flapper = Flapper::start(lab.edge.name.clone());
    let mut rng = Rng(0x5eed_c4a5_4b11_0001);
    let mut worst = Duration::ZERO;
    let result = (|| -> Result<()> {
        for cycle in 0..cycles {
            // Alive for a random while, killed at a random moment of the flapping.
            std::thread::sleep(Duration::from_millis(200 + rng.below(1_300)));
            lab.stop_agent(libc::SIGKILL)?;
            std::thread::sleep(Duration::from_millis(rng.below(1_200)));
            let primary_up = flapper.hold();
            let started = Instant::now();
            lab.start_agent(&cfg, &["--log-level", "info"])?;
            let up_at = Instant::now();
            let (state, steered) = if primary_up {
                ("primary", false)
            } else {
                ("backup", true)
            };
            converges(&lab, state, steered, Duration::from_secs(1))
                .with_context(|| format!("cycle {cycle}: primary up {primary_up}"))?;
            // Kernel routes follow on their own queue: same bound.
            let want_routes = usize::from(!primary_up);
            wait_until(Duration::from_secs(1), || {
                Ok(agent_routes(&lab)?.len() == want_routes)
            })
            .with_context(|| {
                format!(
                    "cycle {cycle}: kernel routes (proto 252) {:?}, want {want_routes}",
                    agent_routes(&lab)
                )
            })?;
            worst = worst.max(up_at.elapsed());
            ensure!(
                pins(&lab) == expected_pins(&lab)?,
                "cycle {cycle}: pins {:?}",
                pins(&lab)
            );
            ensure!(
                lan0_xdp_programs(&lab)? == 1,
                "cycle {cycle}: lan0 has {} XDP programs attached",
                lan0_xdp_programs(&lab)?
            );
            eprintln!(
                "cycle {cycle}: primary up {primary_up}; started in {:?}, converged",
                up_at - started
            );
            flapper.resume();
        }
        Ok(())
    })();
    flapper.finish()?;
    result?;
    eprintln!("slowest convergence after the agent answered: {worst:?}");
    // No agent of this lab's config left but the running one.
    let pid = lab.agent_pid().context("agent gone")?;
    let config = lab.config_path().display().to_string();
    let agents: Vec<u32> = routebackup_tests::sh("pgrep -x routebackup || true")?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&config))
        })
        .collect();
    ensure!(
        agents == vec![pid],
        "agents of this lab: {agents:?}, want [{pid}]"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_second_agent_on_the_same_pin_path_refuses_to_start() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let first = lab.agent_pid().context("no agent")?;
    // Same pin path, its own control socket.
    let other_sock = lab.dir.path().join("other.sock");
    let other_cfg = lab.dir.path().join("other.toml");
    std::fs::write(
        &other_cfg,
        cfg.replace(
            &lab.socket().display().to_string(),
            &other_sock.display().to_string(),
        ),
    )?;
    for config in [other_cfg, lab.config_path()] {
        let out = lab
            .edge
            .command(&format!(
                "exec {} run --config {}",
                routebackup_tests::agent_bin().display(),
                config.display()
            ))
            .stdin(Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "second agent started: {err}");
        ensure!(
            err.contains(&format!("pid {first}")) && err.contains("stop it first"),
            "the refusal does not name the running agent and the fix: {err}"
        );
    }
    ensure!(
        !other_sock.exists(),
        "the refused agent bound its control socket"
    );
    // The first one is untouched.
    ensure!(lab.status().is_ok(), "first agent no longer answers");
    ensure!(pins(&lab) == expected_pins(&lab)?, "pins: {:?}", pins(&lab));
    Ok(())
}

/// Reads notify datagrams until one contains `want` (or `within` passes).
fn notified(sock: &UnixDatagram, want: &str, within: Duration) -> Result<Vec<String>> {
    let within = routebackup_tests::scaled(within);
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.contains(want);
            seen.push(msg);
            if hit {
                return Ok(seen);
            }
        }
    }
    bail!("no notify message with {want:?} within {within:?}; got {seen:?}")
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn systemd_notify_ready_status_watchdog_stopping() -> Result<()> {
    let _g = serial();
    let lab = Lab::new(Backup::HotStandby)?;
    std::fs::write(lab.config_path(), lab.config("0s", "auto", ""))?;
    let notify_path = lab.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path)?;
    let log = std::fs::File::create(lab.log_path())?;
    let mut agent = lab
        .edge
        .command(&format!(
            "exec {} run --config {}",
            routebackup_tests::agent_bin().display(),
            lab.config_path().display()
        ))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = (|| -> Result<()> {
        let seen = notified(&sock, "READY=1", Duration::from_secs(15))?;
        let ready = seen.last().context("no message")?;
        ensure!(
            ready.contains("STATUS=1 group: 1 primary"),
            "READY without the group summary: {ready:?}"
        );
        // The fast path is attached by then.
        ensure!(
            lab.edge.sh("ip -d link show lan0")?.contains("prog/xdp"),
            "READY before the fast path was attached"
        );
        lab.withdraw_primary()?;
        notified(
            &sock,
            "STATUS=1 group: 1 backup; dest: backup via backup",
            Duration::from_secs(5),
        )?;
        // Pings every WATCHDOG_USEC / 2 = 200 ms. Those queued while the
        // test waited above (many on a slow emulated kernel) are not counted.
        sock.set_nonblocking(true)?;
        while sock.recv(&mut [0u8; 4096]).is_ok() {}
        sock.set_nonblocking(false)?;
        let window = routebackup_tests::scaled(Duration::from_millis(1_100));
        let most = window.as_millis() / 200 + 3;
        let t0 = Instant::now();
        let mut pings = 0;
        while t0.elapsed() < window {
            if notified(&sock, "WATCHDOG=1", Duration::from_millis(500)).is_ok() {
                pings += 1;
            }
        }
        ensure!(
            (3..=most).contains(&pings),
            "{pings} watchdog pings in {window:?}"
        );
        // SIGTERM: STOPPING=1.
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(agent.id().cast_signed(), libc::SIGTERM) };
        notified(&sock, "STOPPING=1", Duration::from_secs(5))?;
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    result.with_context(|| format!("log:\n{}", lab.log()))
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn shipped_unit_passes_systemd_analyze_verify() -> Result<()> {
    let unit = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/routebackup.service"
    ));
    let text = std::fs::read_to_string(unit)?;
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=process",
        "Restart=always",
        // Issue 20: with the default start limit, Restart=always gave up
        // after five quick failures.
        "StartLimitIntervalSec=0",
        "RestartSec=2s",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        ensure!(text.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    if routebackup_tests::sh("command -v systemd-analyze").is_err() {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed here");
        return Ok(());
    }
    // verify checks that the binaries exist: point it at the one under test.
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("routebackup.service");
    std::fs::write(
        &copy,
        text.replace(
            "/usr/local/bin/routebackup",
            &routebackup_tests::agent_bin().display().to_string(),
        ),
    )?;
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "systemd-analyze verify failed: {err}");
    // Only complaints about this unit count (a container may lack sysinit.target...).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("routebackup.service") || l.contains(&*copy.to_string_lossy()))
        .filter(|l| !l.contains(".target"))
        .collect();
    ensure!(
        ours.is_empty(),
        "systemd-analyze verify complains: {}",
        ours.join("\n")
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_long_running_up_command_outlives_a_crash_and_is_stopped_by_the_next_agent() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    let dials = count_dials(&lab)?;
    // Dials, then stays (as a modem manager would) until stopped.
    let dial = lab.dir.path().join("dial-up.sh");
    let stay = lab.dir.path().join("dial-stay.sh");
    std::fs::write(
        &stay,
        format!("#!/bin/sh\n{} || exit 1\nexec sleep 600\n", dial.display()),
    )?;
    routebackup_tests::sh(&format!("chmod 755 {}", stay.display()))?;
    let cfg = lab.config("0s", "auto", "").replace(
        &format!("up = [\"{}\"]", dial.display()),
        &format!("up = [\"{}\"]", stay.display()),
    );
    ensure!(cfg.contains("dial-stay.sh"), "config: {cfg}");
    lab.start_agent(&cfg, &[])?;
    lab.withdraw_primary()?;
    converges(&lab, "backup", true, Duration::from_secs(10))?;
    let s = lab.status()?;
    let pid = s["fastpath"]["drivers"][0]["driver"]["pid"]
        .as_u64()
        .with_context(|| format!("the up command is not running: {s}"))?;
    // Running, not a zombie nobody reaped.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
    };

    lab.stop_agent(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(alive(), "the up command died with the agent");
    lab.start_agent(&cfg, &[])?;
    converges(&lab, "backup", true, Duration::from_secs(2))?;
    ensure!(lines(&dials) == 1, "redialed: {} dials", lines(&dials));
    ensure!(alive(), "the up command was stopped at the restart");

    // The primary returns: the next agent takes the link down, and with it
    // the up command it did not start.
    lab.restore_primary()?;
    converges(&lab, "primary", false, Duration::from_secs(2))?;
    wait_until(Duration::from_secs(5), || Ok(!alive())).with_context(|| {
        format!(
            "orphaned up command {pid} left running; log:\n{}",
            lab.log()
        )
    })?;
    wait_until(Duration::from_secs(5), || Ok(!lab.bk0_exists()))
        .context("the down command did not run")?;
    Ok(())
}

/// A restart while on backup is no transition (issue 20): the hooks are not
/// run again (every `systemctl restart` paged the NOC with
/// PREVIOUS_STATE=primary). A primary that came back while the agent was
/// dead is a transition from backup.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_restart_on_backup_runs_no_hook_and_a_return_while_dead_is_from_backup() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let out = lab.dir.path().join("hook.out");
    let hook = lab.dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$ROUTEBACKUP_PREVIOUS_STATE>$ROUTEBACKUP_STATE\" >> {}\n",
            out.display()
        ),
    )?;
    routebackup_tests::sh(&format!("chmod 755 {}", hook.display()))?;
    let cfg = lab.config("0s", "auto", "").replace(
        "[fastpath]",
        &format!("on_change = [\"{}\"]\n\n[fastpath]", hook.display()),
    );
    let hooks = || -> Vec<String> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    lab.start_agent(&cfg, &[])?;
    lab.withdraw_primary()?;
    converges(&lab, "backup", true, Duration::from_secs(5))?;
    wait_until(Duration::from_secs(5), || Ok(hooks().len() == 1))?;
    ensure!(hooks() == ["primary>backup"], "hooks {:?}", hooks());

    // Restarted on backup: adopted, no hook.
    lab.stop_agent(libc::SIGKILL)?;
    lab.start_agent(&cfg, &[])?;
    converges(&lab, "backup", true, Duration::from_secs(5))?;
    std::thread::sleep(routebackup_tests::scaled(Duration::from_secs(1)));
    ensure!(
        hooks() == ["primary>backup"],
        "a restart on backup ran the hooks: {:?}; log:\n{}",
        hooks(),
        lab.log()
    );

    // The primary back while the agent is dead: a transition from backup.
    lab.stop_agent(libc::SIGKILL)?;
    lab.restore_primary()?;
    lab.start_agent(&cfg, &[])?;
    converges(&lab, "primary", false, Duration::from_secs(5))?;
    wait_until(Duration::from_secs(5), || Ok(hooks().len() == 2))
        .with_context(|| format!("hooks {:?}", hooks()))?;
    ensure!(
        hooks() == ["primary>backup", "backup>primary"],
        "hooks {:?}",
        hooks()
    );
    Ok(())
}
