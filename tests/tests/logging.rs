//! How the agent logs, as an operator meets it: syslog's level names work
//! (`--log-level warning` used to silence every line, fatal start errors
//! included, because tracing read "warning" as a module name), and a stderr
//! that stops reading (`| tee` restarted, a log collector gone) never ends
//! the agent or leaves its programs attached.
//!
//! Build the agent first: `cargo build -p routebackup` (or set ROUTEBACKUP_BIN).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use routebackup::control::request_status;
use routebackup_tests::agent::one_group_config;
use routebackup_tests::{agent_bin, wait_until, Netns};

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Result<std::process::Output> {
    let mut cmd = std::process::Command::new(agent_bin());
    cmd.arg("run").args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.stdin(Stdio::null()).output()?)
}

#[test]
fn syslog_level_names_keep_fatal_errors_and_unknown_levels_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_string_lossy();
    for (args, env) in [
        (
            vec!["--config", &*missing, "--log-level", "warning"],
            vec![],
        ),
        (vec!["--config", &*missing, "--log-level", "err"], vec![]),
        (vec!["--config", &*missing], vec![("RUST_LOG", "warning")]),
    ] {
        let out = run_with(&args, &env)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1),
            "{args:?} {env:?}: {:?}",
            out.status
        );
        ensure!(
            err.contains("missing.toml"),
            "{args:?} {env:?}: the fatal error did not reach stderr: {err:?}"
        );
    }
    let out = run_with(&["--config", &missing, "--log-level", "warnings"], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{:?}", out.status);
    ensure!(err.contains("\"warnings\" is no log level"), "{err}");
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_closed_stderr_neither_ends_the_agent_nor_leaves_its_programs() -> Result<()> {
    let ns = Netns::new("log")?;
    ns.sh(
        "ip link add lan0 type veth peer name lan0p && ip link set lan0p up && ip link set lan0 up && \
         ip link add up0 type veth peer name up0p && ip link set up0p up && ip link set up0 up && \
         ip addr add 192.0.2.2/24 dev up0 && \
         ip link add bk0 type veth peer name bk0p && ip link set bk0p up && ip link set bk0 up",
    )?;
    let dir = tempfile::tempdir()?;
    let bpffs = routebackup_tests::BpfFs::new()?;
    let socket = dir.path().join("rb.sock");
    let cfg = dir.path().join("rb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ncontrol_socket = \"{}\"\npin_path = \"{}\"\n{}",
            socket.display(),
            bpffs.path().join("rb").display(),
            one_group_config("auto")
        ),
    )?;
    let mut child = ns
        .command(&format!(
            "exec {} run --config {} --log-level debug",
            agent_bin().display(),
            cfg.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Nobody reads stderr any more: every log line from here meets EPIPE.
    drop(child.stderr.take());
    wait_until(Duration::from_secs(10), || {
        Ok(request_status(&socket).is_ok_and(|s| s.synced))
    })
    .context("the agent did not come up with its stderr closed")?;
    // Decisions to log: primary up, lost, back.
    for cmd in [
        "ip route add 10.20.0.0/16 via 192.0.2.1 dev up0",
        "ip route del 10.20.0.0/16",
        "ip route add 10.20.0.0/16 via 192.0.2.1 dev up0",
    ] {
        ns.sh(cmd)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        child.try_wait()?.is_none(),
        "the agent ended: {:?}",
        child.try_wait()?
    );
    ensure!(request_status(&socket)?.synced, "status no longer answers");
    // A clean stop still detaches everything.
    nix_kill(child.id())?;
    let status = child.wait()?;
    ensure!(
        status.success(),
        "the agent exited {status:?} after SIGTERM"
    );
    let link = ns.sh("ip -d link show dev lan0")?;
    ensure!(
        !link.contains("prog/xdp"),
        "XDP left attached after the stop: {link}"
    );
    Ok(())
}

fn nix_kill(pid: u32) -> Result<()> {
    let pid = i32::try_from(pid)?;
    // SAFETY: kill has no memory preconditions.
    ensure!(
        unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
        "kill failed"
    );
    Ok(())
}
