//! The operator's surface, end to end in the lab (tests/src/lab.rs): the
//! metrics endpoint over HTTP as the group fails over, `on_change` hooks
//! (every transition in order; a hanging one killed without delaying the
//! failover), `run --dry-run` beside the live agent, and the README's sample
//! log lines against what the agent prints.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use routebackup_tests::lab::{Backup, Lab};
use routebackup_tests::{metrics, wait_until};

/// The lab tests share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The endpoint, on the edge namespace's loopback.
const METRICS: &str = "127.0.0.1:9469";

/// `GET /metrics` from inside the edge namespace.
fn scrape(lab: &Lab) -> Result<String> {
    let addr: SocketAddr = METRICS.parse()?;
    lab.edge.run_in(|| metrics::http_get(addr, "/metrics"))
}

/// Waits until the scraped `series` has the value `want`.
fn wait_metric(lab: &Lab, series: &str, want: f64, within: Duration) -> Result<String> {
    let mut last = String::new();
    wait_until(within, || {
        last = scrape(lab)?;
        Ok(metrics::value(&last, series) == Some(want))
    })
    .with_context(|| {
        format!(
            "{series} never became {want}; scraped:\n{last}\nlog:\n{}",
            lab.log()
        )
    })?;
    Ok(last)
}

fn write_hook(lab: &Lab, name: &str, body: &str) -> Result<String> {
    let path = lab.dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
    routebackup_tests::sh(&format!("chmod 755 {}", path.display()))?;
    Ok(path.display().to_string())
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn steered(lab: &Lab) -> bool {
    lab.status()
        .is_ok_and(|s| s["groups"][0]["segments"][0]["steered"].as_bool() == Some(true))
}

/// A dialed backup with a hold: the metrics follow every step, the hook
/// sees each transition in order with its environment, and the README's
/// sample log lines are what the agent printed.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn metrics_and_hooks_follow_a_dialed_failover() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::Dialed)?;
    let out = lab.dir.path().join("hook.out");
    let hook = write_hook(
        &lab,
        "hook.sh",
        &format!(
            "echo \"$ROUTEBACKUP_GROUP|$ROUTEBACKUP_PREVIOUS_STATE|$ROUTEBACKUP_STATE|$ROUTEBACKUP_LINK|$ROUTEBACKUP_INTERFACE|$ROUTEBACKUP_SEGMENTS|$ROUTEBACKUP_REASON\" >> {}",
            out.display()
        ),
    )?;
    let cfg = lab.config("3s", "auto", "").replace(
        "[fastpath]",
        &format!("on_change = [\"{hook}\"]\n\n[metrics]\nlisten = \"{METRICS}\"\n\n[fastpath]"),
    );
    lab.start_agent(&cfg, &["--log-level", "info"])?;

    let text = wait_metric(
        &lab,
        "routebackup_group_state{group=\"dest\",state=\"primary\"}",
        1.0,
        Duration::from_secs(5),
    )?;
    for series in [
        "routebackup_link_state{link=\"backup\",state=\"down\"} 1",
        "routebackup_build_info{version=",
        "# TYPE routebackup_steer_latency_seconds histogram",
        "routebackup_watcher_routes_watched 1",
        // Counters exist at zero before their first event (issue 20), so
        // increase() sees the first failure.
        "routebackup_link_attempts_total{link=\"backup\"} 0",
        "routebackup_link_failures_total{link=\"backup\",reason=\"up_timeout\"} 0",
        "routebackup_group_transitions_total{group=\"dest\",from=\"primary\",to=\"activating\"} 0",
        "routebackup_hook_runs_total{group=\"dest\",result=\"failed\"} 0",
        "routebackup_config_reloads_total{result=\"refused\"} 0",
    ] {
        ensure!(text.contains(series), "{series:?} not in:\n{text}");
    }
    ensure!(
        metrics::value(&text, "routebackup_watcher_routes_seen_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );

    lab.withdraw_primary()?;
    let text = wait_metric(
        &lab,
        "routebackup_group_state{group=\"dest\",state=\"backup\"}",
        1.0,
        Duration::from_secs(15),
    )?;
    for (series, want) in [
        ("routebackup_group_state{group=\"dest\",state=\"primary\"}", 0.0),
        ("routebackup_group_transitions_total{group=\"dest\",from=\"primary\",to=\"activating\"}", 1.0),
        ("routebackup_group_transitions_total{group=\"dest\",from=\"activating\",to=\"backup\"}", 1.0),
        ("routebackup_link_state{link=\"backup\",state=\"up\"}", 1.0),
        ("routebackup_link_attempts_total{link=\"backup\"}", 1.0),
        ("routebackup_steer_latency_seconds_count", 1.0),
    ] {
        ensure!(
            metrics::value(&text, series) == Some(want),
            "{series} is not {want} in:\n{text}"
        );
    }

    lab.restore_primary()?;
    wait_metric(
        &lab,
        "routebackup_group_state{group=\"dest\",state=\"holding\"}",
        1.0,
        Duration::from_secs(5),
    )?;
    let text = wait_metric(
        &lab,
        "routebackup_group_state{group=\"dest\",state=\"primary\"}",
        1.0,
        Duration::from_secs(10),
    )?;
    ensure!(
        metrics::value(
            &text,
            "routebackup_group_transitions_total{group=\"dest\",from=\"holding\",to=\"primary\"}"
        ) == Some(1.0),
        "{text}"
    );
    wait_metric(
        &lab,
        "routebackup_link_state{link=\"backup\",state=\"down\"}",
        1.0,
        Duration::from_secs(10),
    )?;

    // The hook saw the four transitions, in order.
    wait_until(Duration::from_secs(10), || Ok(lines(&out).len() >= 4))
        .with_context(|| format!("hook lines: {:?}; log:\n{}", lines(&out), lab.log()))?;
    let seen = lines(&out);
    let steps: Vec<String> = seen
        .iter()
        .map(|l| l.splitn(7, '|').take(6).collect::<Vec<_>>().join("|"))
        .collect();
    let seg = routebackup_tests::lab::SEGMENT;
    assert_eq!(
        steps,
        [
            format!("dest|primary|activating|backup|bk0|{seg}"),
            format!("dest|activating|backup|backup|bk0|{seg}"),
            format!("dest|backup|holding|backup|bk0|{seg}"),
            format!("dest|holding|primary|||{seg}"),
        ],
        "hook lines: {seen:#?}"
    );
    // ROUTEBACKUP_REASON: the words of the log line.
    let log = lab.log();
    for line in &seen {
        let reason = line.splitn(7, '|').nth(6).unwrap_or_default();
        for part in reason.split("; ") {
            ensure!(
                !part.is_empty() && log.contains(part),
                "reason {part:?} is not a log line:\n{log}"
            );
        }
    }
    let hook_ok = scrape(&lab)?;
    ensure!(
        metrics::value(
            &hook_ok,
            "routebackup_hook_runs_total{group=\"dest\",result=\"ok\"}"
        ) == Some(4.0),
        "{hook_ok}"
    );

    readme_log_lines_match(&log, &lab.dir.path().display().to_string())
}

/// The README's "Running it" sample lines, each found in the agent's log
/// once numbers are masked and the lab's directory named as in the README.
fn readme_log_lines_match(log: &str, lab_dir: &str) -> Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let section = readme
        .split("## Running it")
        .nth(1)
        .context("README has no \"Running it\" section")?;
    let sample = section
        .split("```text\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .context("no ```text block in \"Running it\"")?;
    let mask = |s: &str| -> String {
        let mut out = String::new();
        let mut digits = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                if !digits {
                    out.push('#');
                }
                digits = true;
            } else {
                digits = false;
                out.push(c);
            }
        }
        out
    };
    // The log's lines without the timestamp and the module ("TIME  INFO
    // routebackup::daemon: text" → "INFO text"), the lab's scripts where the
    // README has /etc/routebackup.
    let printed: Vec<String> = log
        .lines()
        .map(|l| {
            let l = l.replace(lab_dir, "/etc/routebackup");
            let mut words = l.split_whitespace();
            let (_time, level) = (words.next(), words.next().unwrap_or_default());
            let rest = words.collect::<Vec<&str>>().join(" ");
            let text = rest
                .strip_prefix("routebackup")
                .and_then(|r| r.split_once(": "))
                .map_or(rest.as_str(), |(_, text)| text);
            mask(&format!("{level} {text}"))
        })
        .collect();
    let sample_lines: Vec<&str> = sample.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(sample_lines.len() >= 5, "README sample too short: {sample}");
    for line in sample_lines {
        let want = mask(line);
        ensure!(
            printed.contains(&want),
            "README line {line:?} is not what the agent prints; the log (masked):\n{}",
            printed.join("\n")
        );
    }
    Ok(())
}

/// A hook that never exits is killed after `hook_timeout`, the next
/// transition's run follows, and steering does not wait for either.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_hanging_hook_is_killed_and_does_not_delay_failover() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let out = lab.dir.path().join("hook.out");
    // A marker argument names the hook's own child for pgrep below.
    let hook = write_hook(
        &lab,
        "hang.sh",
        &format!(
            "echo \"$ROUTEBACKUP_STATE\" >> {}\nsleep 987654 & wait",
            out.display()
        ),
    )?;
    let cfg = lab.config("0s", "auto", "").replace(
        "[fastpath]",
        &format!(
            "on_change = [\"{hook}\"]\nhook_timeout = \"2s\"\n\n[metrics]\nlisten = \"{METRICS}\"\n\n[fastpath]"
        ),
    );
    lab.start_agent(&cfg, &[])?;

    let t0 = Instant::now();
    lab.withdraw_primary()?;
    wait_until(Duration::from_secs(2), || Ok(steered(&lab)))?;
    let switchover = t0.elapsed();
    ensure!(
        switchover <= Duration::from_millis(500),
        "steering took {switchover:?} with a hanging hook; log:\n{}",
        lab.log()
    );
    // Recovery while the first run still hangs: immediate too.
    let t1 = Instant::now();
    lab.restore_primary()?;
    wait_until(Duration::from_secs(2), || Ok(!steered(&lab)))?;
    ensure!(
        t1.elapsed() <= Duration::from_millis(500),
        "unsteering took {:?} with a hanging hook",
        t1.elapsed()
    );
    ensure!(
        lines(&out) == ["backup"],
        "the second run started before the first was killed: {:?}",
        lines(&out)
    );
    // Both runs are killed in turn, in order.
    wait_metric(
        &lab,
        "routebackup_hook_runs_total{group=\"dest\",result=\"timeout\"}",
        2.0,
        Duration::from_secs(15),
    )?;
    ensure!(lines(&out) == ["backup", "primary"], "{:?}", lines(&out));
    let log = lab.log();
    ensure!(
        log.contains("still running after 2s; killed it"),
        "no log line for the kill:\n{log}"
    );
    let left = lab.edge.output("pgrep -f 'sleep 98765[4]'")?;
    ensure!(
        left.stdout.is_empty(),
        "the hook's child outlived the kill: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    Ok(())
}

/// `run --dry-run` with the live agent's config runs beside it: its own
/// control socket, and the live agent keeps answering on its own.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn dry_run_runs_beside_the_live_agent() -> Result<()> {
    let _g = serial();
    let mut lab = Lab::new(Backup::HotStandby)?;
    let cfg = lab.config("0s", "auto", "");
    lab.start_agent(&cfg, &[])?;
    let dry_socket = lab.dir.path().join("routebackup-dry-run.sock");
    let dry_log = lab.dir.path().join("dry-run.log");
    let mut dry = lab.edge.spawn(&format!(
        "exec {} run --dry-run --config {} > {} 2>&1",
        routebackup_tests::agent_bin().display(),
        lab.config_path().display(),
        dry_log.display()
    ))?;
    let answered = wait_until(Duration::from_secs(15), || {
        if let Some(status) = dry.try_wait()? {
            anyhow::bail!("the dry run exited ({status})");
        }
        let out = std::process::Command::new(routebackup_tests::agent_bin())
            .args(["status", "--json", "--socket"])
            .arg(&dry_socket)
            .output()?;
        Ok(out.status.success())
    });
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(dry.id().cast_signed(), libc::SIGTERM) };
    let _ = dry.wait();
    answered.with_context(|| {
        format!(
            "the dry run never answered on {}; its log:\n{}",
            dry_socket.display(),
            std::fs::read_to_string(&dry_log).unwrap_or_default()
        )
    })?;
    ensure!(
        lab.group_state()? == "primary",
        "the live agent stopped answering"
    );
    Ok(())
}

/// One journal entry as tracing-journald sends it (native protocol:
/// `KEY=value` lines, or `KEY`, a little-endian u64 length and the bytes).
fn journal_fields(mut datagram: &[u8]) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    while !datagram.is_empty() {
        let line_end = datagram
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(datagram.len());
        let line = &datagram[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            datagram = datagram.get(line_end + 1..).unwrap_or_default();
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = datagram.get(line_end + 1..).unwrap_or_default();
            let Some((len, rest)) = rest.split_first_chunk::<8>() else {
                break;
            };
            let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
            let value = rest.get(..len).unwrap_or(rest);
            fields.insert(key, String::from_utf8_lossy(value).into_owned());
            datagram = rest.get(len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) the agent
/// writes to journald with a priority per level and GROUP/STATE fields.
/// The journal's socket is a stand-in bound by this test and mounted over
/// /run/systemd/journal in a private mount namespace (the machine's own
/// /run is not touched).
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn journald_gets_priorities_and_group_fields() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    let _g = serial();
    let lab = Lab::new(Backup::HotStandby)?;
    std::fs::write(lab.config_path(), lab.config("0s", "auto", ""))?;
    let journal_dir = lab.dir.path().join("journal");
    std::fs::create_dir(&journal_dir)?;
    let journal = UnixDatagram::bind(journal_dir.join("socket"))?;
    journal.set_read_timeout(Some(Duration::from_millis(200)))?;
    // What systemd gives a service: stderr connected to a stream socket
    // whose device:inode is in JOURNAL_STREAM.
    let (stderr, _journal_stream) = UnixStream::pair()?;
    let meta = std::fs::metadata(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        stderr.as_raw_fd()
    }))?;
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && \
         mount --bind {dir} /run/systemd/journal && \
         exec nsenter --net=/run/netns/{ns} {bin} run --dry-run --config {cfg}",
        dir = journal_dir.display(),
        ns = lab.edge.name,
        bin = routebackup_tests::agent_bin().display(),
        cfg = lab.config_path().display(),
    );
    let mut agent = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            stderr,
        )))
        .spawn()?;
    let mut entries: Vec<std::collections::HashMap<String, String>> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut collect = |entries: &mut Vec<_>| {
        while let Ok(n) = journal.recv(&mut buf) {
            entries.push(journal_fields(&buf[..n]));
        }
    };
    let find = |entries: &[std::collections::HashMap<String, String>], start: &str| {
        entries
            .iter()
            .find(|e| e.get("MESSAGE").is_some_and(|m| m.starts_with(start)))
            .cloned()
    };
    let result = (|| -> Result<()> {
        wait_until(Duration::from_secs(15), || {
            collect(&mut entries);
            Ok(find(&entries, "initial sync").is_some())
        })
        .context("the agent never logged its initial sync to the journal")?;
        lab.withdraw_primary()?;
        wait_until(Duration::from_secs(5), || {
            collect(&mut entries);
            Ok(find(&entries, "group dest: primary lost").is_some())
        })
        .context("no decision reached the journal")?;
        Ok(())
    })();
    // SAFETY: kill on our own child's pid (the agent, after the execs).
    unsafe { libc::kill(agent.id().cast_signed(), libc::SIGTERM) };
    let _ = agent.wait();
    result.with_context(|| format!("journal entries: {entries:#?}"))?;

    let warning = find(&entries, "--dry-run").context("no --dry-run warning")?;
    ensure!(warning["PRIORITY"] == "4", "{warning:?}");
    ensure!(warning["SYSLOG_IDENTIFIER"] == "routebackup", "{warning:?}");
    let decision = find(&entries, "group dest: primary lost").context("no decision")?;
    ensure!(decision["PRIORITY"] == "5", "{decision:?}");
    ensure!(decision["GROUP"] == "dest", "{decision:?}");
    ensure!(decision.contains_key("STATE"), "{decision:?}");
    // (tracing-journald probes the socket with an empty datagram first.)
    ensure!(
        entries
            .iter()
            .filter(|e| e.contains_key("MESSAGE"))
            .all(|e| e.get("PRIORITY").is_some_and(|p| p.as_str() >= "3")),
        "an entry without a priority: {entries:#?}"
    );
    Ok(())
}
