//! Real routing daemons inside the test namespaces, started and stopped by the
//! harness without systemd: FRR (zebra + bgpd, Debian's `frr`) and BIRD 2
//! (Debian's `bird2`). `cargo xtask setup` installs both and keeps their host
//! services off.
//!
//! Every instance gets its own directory (config, pid files, zserv and vty
//! sockets, log) under the system temp dir. FRR drops privileges to user `frr`,
//! so the directory is `frr`'s and mode 0755 (a `mktemp -d` directory is
//! 0700). The daemons also die with their namespace (`Netns` kills every
//! process in it on drop).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{sh, wait_until, Netns};

const FRR_DIR: &str = "/usr/lib/frr";
const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";

/// Whether FRR and BIRD are installed (`cargo xtask setup` installs them).
pub fn installed() -> bool {
    Path::new(FRR_DIR).join("bgpd").exists() && Path::new(BIRD).exists()
}

/// A per-instance directory the daemons' user can traverse and write.
fn daemon_dir(prefix: &str, owner: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    sh(&format!(
        "chmod 755 {0} && chown {owner}:{owner} {0}",
        dir.path().display()
    ))?;
    Ok(dir)
}

/// Sends SIGKILL to the process whose pid is in `pid_file` (no goodbye: a BGP
/// peer sends no NOTIFICATION, an OSPF router no last hello) and waits until
/// it is gone.
fn kill_by_pid_file(pid_file: &Path) -> Result<()> {
    let pid = std::fs::read_to_string(pid_file)
        .with_context(|| format!("read {}", pid_file.display()))?;
    let pid: i32 = pid
        .trim()
        .parse()
        .with_context(|| format!("bad pid in {}: {pid:?}", pid_file.display()))?;
    // SAFETY: kill(2) with a pid read from the daemon's own pid file.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until(Duration::from_secs(5), || {
        Ok(!Path::new(&format!("/proc/{pid}")).exists())
    })
    .with_context(|| format!("pid {pid} did not die"))?;
    let _ = std::fs::remove_file(pid_file);
    Ok(())
}

/// One FRR instance in a namespace: zebra (optional) and bgpd.
pub struct Frr {
    ns_path: String,
    dir: tempfile::TempDir,
    zebra: bool,
}

impl Frr {
    /// Writes `bgpd_conf` and starts zebra (when `zebra`) and bgpd in `ns`.
    /// Without zebra, bgpd runs with `--no_zebra`: a peer that only announces
    /// (its config needs `no bgp network import-check`).
    pub fn start(ns: &Netns, zebra: bool, bgpd_conf: &str) -> Result<Frr> {
        let dir = daemon_dir("rb-frr", "frr")?;
        std::fs::write(dir.path().join("zebra.conf"), "hostname zebra\n")?;
        std::fs::write(dir.path().join("bgpd.conf"), bgpd_conf)?;
        let frr = Frr {
            ns_path: ns.path(),
            dir,
            zebra,
        };
        if zebra {
            frr.daemon("zebra", "")?;
            // bgpd connects to zserv once it exists.
            let api = frr.path("zserv.api");
            wait_until(Duration::from_secs(10), || Ok(api.exists()))
                .with_context(|| format!("zebra never opened its zserv socket: {}", frr.logs()))?;
        }
        frr.start_bgpd()?;
        Ok(frr)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `/usr/lib/frr/<name>` daemonised, with every path in our directory.
    fn daemon(&self, name: &str, extra: &str) -> Result<()> {
        let d = self.dir.path().display();
        let zserv = if self.zebra {
            format!("-z {d}/zserv.api")
        } else if name == "bgpd" {
            "-Z".to_string()
        } else {
            String::new()
        };
        let cmd = format!(
            "nsenter --net={ns} {FRR_DIR}/{name} -d -u frr -g frr -f {d}/{name}.conf \
             -i {d}/{name}.pid {zserv} --vty_socket {d} -P 0 --log file:{d}/{name}.log {extra} \
             </dev/null >>{d}/{name}.out 2>&1",
            ns = self.ns_path
        );
        sh(&cmd).with_context(|| format!("start {name}: {}", self.logs()))?;
        let pid = self.path(&format!("{name}.pid"));
        wait_until(Duration::from_secs(10), || Ok(pid.exists()))
            .with_context(|| format!("{name} wrote no pid file: {}", self.logs()))
    }

    pub fn start_bgpd(&self) -> Result<()> {
        self.daemon("bgpd", "")
    }

    /// SIGSTOPs bgpd: a hung daemon sends no keepalive and, unlike a dead
    /// one (whose TCP sockets the kernel closes), no FIN either: its
    /// sessions end only when the peers' hold timers expire.
    pub fn freeze_bgpd(&self) -> Result<()> {
        let pid = std::fs::read_to_string(self.path("bgpd.pid"))?;
        let pid: i32 = pid.trim().parse().context("bad bgpd pid")?;
        // SAFETY: kill(2) with a pid read from bgpd's own pid file.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Ok(())
    }

    /// SIGKILLs bgpd (frozen or not).
    pub fn kill_bgpd(&self) -> Result<()> {
        kill_by_pid_file(&self.path("bgpd.pid"))
    }

    /// How many paths bgpd has for `prefix`.
    pub fn paths(&self, prefix: &str) -> usize {
        self.vtysh(&format!("show bgp ipv4 unicast {prefix} json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["paths"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// `vtysh -c <cmd>` against this instance.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        sh(&format!(
            "vtysh --vty_socket {} -c '{cmd}'",
            self.dir.path().display()
        ))
    }

    /// Whether bgpd shows the session to `neighbor` as Established.
    pub fn established(&self, neighbor: &str) -> bool {
        self.vtysh(&format!("show bgp neighbors {neighbor} json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v[neighbor]["bgpState"].as_str() == Some("Established"))
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["zebra.out", "zebra.log", "bgpd.out", "bgpd.log"] {
            if let Ok(text) = std::fs::read_to_string(self.path(f)) {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("\n--- {f} (last lines) ---\n"));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for name in ["bgpd", "zebra"] {
            let _ = kill_by_pid_file(&self.path(&format!("{name}.pid")));
        }
    }
}

/// The BGP config of one router: `asn`, its router id, and `neighbors` as
/// (address, remote AS, extra `neighbor X ...` lines without the prefix).
/// Timers: keepalive 1 s, hold 3 s, connect retry 1 s; no policy required,
/// no graceful restart (a dead peer's routes go at once).
pub fn bgpd_conf(
    asn: u32,
    router_id: &str,
    neighbors: &[(&str, u32, &[&str])],
    tail: &str,
) -> String {
    use std::fmt::Write as _;
    let mut c = format!(
        "hostname bgpd\nrouter bgp {asn}\n bgp router-id {router_id}\n \
         no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart-disable\n"
    );
    for (addr, remote, extra) in neighbors {
        let _ = writeln!(c, " neighbor {addr} remote-as {remote}");
        let _ = writeln!(c, " neighbor {addr} timers 1 3");
        let _ = writeln!(c, " neighbor {addr} timers connect 1");
        let _ = writeln!(c, " neighbor {addr} advertisement-interval 0");
        for e in *extra {
            let _ = writeln!(c, " neighbor {addr} {e}");
        }
    }
    c.push_str(tail);
    c
}

/// One BIRD 2 instance in a namespace.
pub struct Bird {
    ns_path: String,
    dir: tempfile::TempDir,
}

impl Bird {
    /// Writes `conf` (with a `log` line to the instance's log file in front)
    /// and starts bird in `ns`.
    pub fn start(ns: &Netns, conf: &str) -> Result<Bird> {
        let dir = daemon_dir("rb-bird", "root")?;
        let log = dir.path().join("bird.log");
        std::fs::write(
            dir.path().join("bird.conf"),
            format!("log \"{}\" all;\n{conf}", log.display()),
        )?;
        let bird = Bird {
            ns_path: ns.path(),
            dir,
        };
        bird.run()?;
        Ok(bird)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts bird (it daemonises once its config parsed).
    pub fn run(&self) -> Result<()> {
        let d = self.dir.path().display();
        sh(&format!(
            "nsenter --net={ns} {BIRD} -c {d}/bird.conf -s {d}/bird.ctl -P {d}/bird.pid \
             </dev/null >>{d}/bird.out 2>&1",
            ns = self.ns_path
        ))
        .with_context(|| format!("start bird: {}", self.logs()))?;
        let pid = self.path("bird.pid");
        wait_until(Duration::from_secs(10), || Ok(pid.exists()))
            .with_context(|| format!("bird wrote no pid file: {}", self.logs()))
    }

    /// SIGKILLs bird: its neighbours notice only when their dead timers expire.
    pub fn kill(&self) -> Result<()> {
        kill_by_pid_file(&self.path("bird.pid"))
    }

    /// `birdc <cmd>` against this instance.
    pub fn birdc(&self, cmd: &str) -> Result<String> {
        sh(&format!(
            "{BIRDC} -s {} {cmd}",
            self.path("bird.ctl").display()
        ))
    }

    pub fn logs(&self) -> String {
        let out = std::fs::read_to_string(self.path("bird.out")).unwrap_or_default();
        let log = std::fs::read_to_string(self.path("bird.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "bird.out: {out}\nbird.log (last lines):\n{}",
            tail.join("\n")
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = kill_by_pid_file(&self.path("bird.pid"));
    }
}

/// Fails unless the daemons are installed, naming the fix.
pub fn require_installed() -> Result<()> {
    if !installed() {
        bail!("FRR ({FRR_DIR}/bgpd) or BIRD ({BIRD}) is missing: run `cargo xtask setup`");
    }
    Ok(())
}
