//! bench-routes: how the agent copes with a full routing table.
//!
//! Run as root: `cargo run --release -p routebackup-tests --bin bench-routes`
//! (agent binary: $ROUTEBACKUP_BIN, else target/release/routebackup, else
//! target/debug/routebackup). Everything happens in a private network
//! namespace.
//!
//! 1. Installs ROUTES routes (/32s via a veth, `ip -batch`), of which SEGMENTS
//!    are /24s that are monitored segments (10 groups).
//! 2. Starts the agent and measures "initial sync": process start until the
//!    daemon logs `initial sync:` (the engine received `Synced`), and the
//!    agent's peak RSS (VmHWM).
//! 3. Churns unrelated routes at CHURN_RATE changes/s for CHURN_SECS seconds
//!    and measures the agent's CPU time (utime+stime) over that window.
//!
//! Prints a markdown table of measured vs target.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use routebackup::control::request_status;
use routebackup_tests::{wait_until, Netns};

const ROUTES: u32 = 1_000_000;
const SEGMENTS: u32 = 10_000;
const CHURN_RATE: u32 = 10_000;
const CHURN_SECS: u64 = 10;

fn agent() -> PathBuf {
    if let Some(p) = std::env::var_os("ROUTEBACKUP_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let release = root.join("target/release/routebackup");
    if release.exists() {
        release
    } else {
        root.join("target/debug/routebackup")
    }
}

/// /proc/<pid>/stat utime+stime in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("bad /proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / hz)
}

/// VmHWM / VmRSS in KiB.
fn mem_kib(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad line")?
        .parse()?)
}

/// The i-th unrelated /32: 20.0.0.0/12 onwards.
fn unrelated(i: u32) -> String {
    let a = 0x1400_0000u32 + i;
    std::net::Ipv4Addr::from(a).to_string()
}

/// The i-th segment: 30.0.0.0/24 onwards.
fn segment(i: u32) -> String {
    let a = 0x1e00_0000u32 + (i << 8);
    format!("{}/24", std::net::Ipv4Addr::from(a))
}

fn main() -> Result<()> {
    let bin = agent();
    if !bin.exists() {
        bail!(
            "{} missing: cargo build --release -p routebackup",
            bin.display()
        );
    }
    let ns = Netns::new("bench")?;
    ns.sh(
        "ip link add up0 type veth peer name up0p && ip link set up0p up && ip link set up0 up && \
         ip addr add 192.0.2.2/24 dev up0 && \
         ip link add bk0 type veth peer name bk0p && ip link set bk0p up && ip link set bk0 up && \
         ip addr add 203.0.113.2/24 dev bk0",
    )?;
    let dir = tempfile::Builder::new().prefix("rbt-bench").tempdir()?;

    // The table: SEGMENTS monitored /24s plus unrelated /32s.
    let t = Instant::now();
    let batch = dir.path().join("routes.batch");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&batch)?);
        for i in 0..SEGMENTS {
            writeln!(f, "route add {} via 192.0.2.1 proto bgp", segment(i))?;
        }
        for i in 0..ROUTES - SEGMENTS {
            writeln!(f, "route add {}/32 via 192.0.2.1 proto bgp", unrelated(i))?;
        }
    }
    ns.sh(&format!("ip -batch {}", batch.display()))?;
    let installed: usize = ns
        .sh("ip -4 route show proto bgp | wc -l")?
        .trim()
        .parse()?;
    eprintln!(
        "installed {installed} routes in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Config: 10 groups x SEGMENTS/10 segments, always-up backup.
    let sock = dir.path().join("rb.sock");
    let log = dir.path().join("agent.log");
    let cfg = dir.path().join("bench.toml");
    // The agent's own bpffs (never the host's /sys/fs/bpf).
    let bpffs = routebackup_tests::BpfFs::new()?;
    let mut text = format!(
        "[agent]\ncontrol_socket = \"{}\"\npin_path = \"{}\"\ntables = [\"main\"]\nresync_interval = \"1h\"\n\n[fastpath]\ninterfaces = [\"up0\"]\n\n\
         [[link]]\nname = \"backup\"\ninterface = \"bk0\"\ndriver = \"always-up\"\n",
        sock.display(),
        bpffs.path().join("routebackup").display()
    );
    let per = SEGMENTS / 10;
    for g in 0..10 {
        let segs: Vec<String> = (g * per..(g + 1) * per)
            .map(|i| format!("\"{}\"", segment(i)))
            .collect();
        text.push_str(&format!(
            "\n[[group]]\nname = \"g{g}\"\nlinks = [\"backup\"]\nsegments = [{}]\n",
            segs.join(", ")
        ));
    }
    std::fs::write(&cfg, text)?;

    // Initial sync.
    let start = Instant::now();
    let mut child = ns.spawn(&format!(
        "exec {} run --config {} 2>{}",
        bin.display(),
        cfg.display(),
        log.display()
    ))?;
    let pid = child.id();
    let mut sync_line = String::new();
    let r = wait_until(Duration::from_mins(1), || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = l.lines().find(|x| x.contains("initial sync:")) {
            sync_line = line.to_string();
            return Ok(true);
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("agent exited ({st}): {l}");
        }
        Ok(false)
    });
    let wall_ms = start.elapsed().as_millis();
    r.with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    // "... done N ms after start ...": the agent's own clock from start-up.
    let agent_ms: u64 = sync_line
        .split_once(" done ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(200));
    let hwm_sync = mem_kib(pid, "VmHWM:")?;
    let rss_sync = mem_kib(pid, "VmRSS:")?;
    let seen_before = request_status(&sock)
        .ok()
        .and_then(|s| s.watcher)
        .map_or(0, |w| w.routes_seen);
    eprintln!("{sync_line}");

    // Churn: add and delete unrelated /32s through one `ip -batch -`.
    let mut driver = ns
        .command("ip -force -batch - >/dev/null 2>&1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut stdin = driver.stdin.take().context("no stdin")?;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = CHURN_RATE / 10;
    let mut sent = 0u64;
    let mut n = 0u32;
    for k in 0..CHURN_SECS * 10 {
        let mut chunk = String::new();
        for _ in 0..per_tick / 2 {
            let a = std::net::Ipv4Addr::from(0x2800_0000u32 + n);
            n = (n + 1) % 50_000;
            chunk.push_str(&format!(
                "route add {a}/32 via 192.0.2.1 proto bgp\nroute del {a}/32\n"
            ));
            sent += 2;
        }
        stdin.write_all(chunk.as_bytes())?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "k counts ticks of the churn, a few hundred"
        )]
        let next = t0 + tick * (k as u32 + 1);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    drop(stdin);
    let _ = driver.wait();
    let elapsed = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let cpu1 = cpu_seconds(pid)?;
    let churn_cpu = (cpu1 - cpu0) / elapsed * 100.0;
    let status = request_status(&sock).ok();
    let w = status
        .as_ref()
        .and_then(|s| s.watcher.clone())
        .unwrap_or_default();
    let hwm_end = mem_kib(pid, "VmHWM:")?;
    let _ = child.kill();
    let _ = child.wait();

    let sync_ok = (wall_ms as f64) <= 2000.0;
    let mem_ok = hwm_end <= 64 * 1024;
    let cpu_ok = churn_cpu <= 5.0;
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!("bench-routes: {installed} routes in main, {SEGMENTS} monitored segments (10 groups), agent {}", bin.display());
    println!();
    println!("| metric | measured | target | |");
    println!("|---|---|---|---|");
    println!(
        "| initial sync (start → engine Synced) | {wall_ms} ms (agent clock {agent_ms} ms) | <= 2000 ms | {} |",
        mark(sync_ok)
    );
    println!(
        "| agent peak RSS (VmHWM) | {:.1} MiB (after sync {:.1} MiB, RSS {:.1} MiB) | <= 64 MiB | {} |",
        hwm_end as f64 / 1024.0,
        hwm_sync as f64 / 1024.0,
        rss_sync as f64 / 1024.0,
        mark(mem_ok)
    );
    println!(
        "| agent CPU during churn ({} changes in {elapsed:.1} s = {:.0}/s) | {churn_cpu:.2} % of one core | <= 5 % | {} |",
        sent,
        sent as f64 / elapsed,
        mark(cpu_ok)
    );
    println!(
        "| route messages seen during churn | {} (relevant now: {}, overruns: {}) | ~{sent} | |",
        w.routes_seen.saturating_sub(seen_before),
        w.routes_watched,
        w.overruns
    );
    Ok(())
}
