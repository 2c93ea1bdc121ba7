//! The failover lab shared by the end-to-end tests, the demo and the failover
//! bench: five network namespaces.
//!
//! ```text
//!  lan (10.0.0.2) ── lan0 [edge] wan0 ── [primary] ── d_p ┐
//!                             bk0  ── [backup]  ── d_b ┴ [dest] 198.51.100.10
//! ```
//! - `edge` runs the agent; the fast path sits on `lan0`; its primary route to
//!   198.51.100.0/24 goes via the primary router (10.0.1.2 on `wan0`, proto bgp).
//! - The backup link `bk0` (10.0.2.1/30 ↔ 10.0.2.2/30) either exists from the
//!   start (hot standby) or is created by the `command` driver's dial script
//!   (a veth into `backup`, the stand-in for a dial-up).
//! - `dest` holds 198.51.100.10 and answers via either router.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::traffic::Receiver;
use crate::{veth, wait_until, BpfFs, Netns};

pub const DEST_ADDR: &str = "198.51.100.10";
/// `DEST_ADDR` as an address.
pub const DEST_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 51, 100, 10);
pub const SEGMENT: &str = "198.51.100.0/24";
pub const LAN_HOST: &str = "10.0.0.2";
pub const PRIMARY_GW: &str = "10.0.1.2";
pub const BACKUP_GW: &str = "10.0.2.2";

/// The lab tests of one test binary share two cores: each takes this lock
/// to run alone.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the lab's UDP stream goes: the destination, port 9000.
pub fn dest() -> std::net::SocketAddr {
    std::net::SocketAddr::from((DEST_IP, 9000))
}

/// Packets that arrived on `ifindex` so far.
pub fn count_on(rx: &Receiver, ifindex: u32) -> usize {
    rx.arrivals()
        .iter()
        .filter(|a| a.ifindex == ifindex)
        .count()
}

/// Waits until at least `n` more packets arrive on `ifindex`.
pub fn flows_via(rx: &Receiver, ifindex: u32, n: usize, what: &str) -> Result<()> {
    let before = count_on(rx, ifindex);
    wait_until(Duration::from_secs(5), || {
        Ok(count_on(rx, ifindex) >= before + n)
    })
    .with_context(|| format!("traffic does not flow via {what}"))
}

/// How the backup link comes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backup {
    /// `bk0` exists and is up from the start; driver `always-up`.
    HotStandby,
    /// `bk0` is created by the `command` driver's up script after a loss and
    /// deleted by its down script.
    Dialed,
}

pub struct Lab {
    pub lan: Netns,
    pub edge: Netns,
    pub primary: Netns,
    pub backup: Netns,
    pub dest: Netns,
    pub bpffs: BpfFs,
    pub dir: tempfile::TempDir,
    pub kind: Backup,
    agent: Option<Child>,
}

fn sysctl_router(ns: &Netns) -> Result<()> {
    ns.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv6.conf.all.forwarding=1")?;
    Ok(())
}

impl Lab {
    pub fn new(kind: Backup) -> Result<Lab> {
        let lab = Lab {
            lan: Netns::new("lan")?,
            edge: Netns::new("edge")?,
            primary: Netns::new("pri")?,
            backup: Netns::new("bak")?,
            dest: Netns::new("dst")?,
            bpffs: BpfFs::new()?,
            dir: tempfile::Builder::new().prefix("rb-lab").tempdir()?,
            kind,
            agent: None,
        };
        for ns in [&lab.edge, &lab.primary, &lab.backup] {
            sysctl_router(ns)?;
        }
        veth(
            &lab.lan,
            "eth0",
            "10.0.0.2/24",
            &lab.edge,
            "lan0",
            "10.0.0.1/24",
        )?;
        veth(
            &lab.edge,
            "wan0",
            "10.0.1.1/30",
            &lab.primary,
            "p_edge",
            "10.0.1.2/30",
        )?;
        veth(
            &lab.primary,
            "p_dst",
            "10.0.9.1/30",
            &lab.dest,
            "d_p",
            "10.0.9.2/30",
        )?;
        veth(
            &lab.backup,
            "b_dst",
            "10.0.8.1/30",
            &lab.dest,
            "d_b",
            "10.0.8.2/30",
        )?;
        lab.lan.sh("ip route add default via 10.0.0.1")?;
        lab.primary.sh(
            "ip route add 198.51.100.0/24 via 10.0.9.2 && ip route add 10.0.0.0/24 via 10.0.1.1",
        )?;
        lab.backup.sh("ip route add 198.51.100.0/24 via 10.0.8.2")?;
        lab.dest.sh(&format!(
            "ip addr add {DEST_ADDR}/32 dev lo && \
             ip route add 10.0.0.0/24 via 10.0.9.1 metric 100 && \
             ip route add 10.0.0.0/24 via 10.0.8.1 metric 200"
        ))?;
        lab.restore_primary()?;
        // The dial script (also used to bring up the hot standby at start).
        let up = lab.dir.path().join("dial-up.sh");
        let down = lab.dir.path().join("dial-down.sh");
        write_script(
            &up,
            &format!(
                "#!/bin/sh\n# Stand-in for a dial-up: a veth to the backup router.\nset -e\n\
                 sleep 0.2\n\
                 ip link add bk0 type veth peer name b_edge netns {bak}\n\
                 ip -n {bak} addr add 10.0.2.2/30 dev b_edge\n\
                 ip -n {bak} link set b_edge up\n\
                 ip -n {bak} route replace 10.0.0.0/24 via 10.0.2.1\n\
                 ip netns exec {bak} ethtool -K b_edge gro on >/dev/null 2>&1 || true\n\
                 ip -n {bak} link set dev b_edge xdpdrv pinned {pass}\n\
                 ip addr add 10.0.2.1/30 dev bk0\n\
                 ip link set bk0 up\n",
                bak = lab.backup.name,
                pass = crate::pass_xdp_pin().display()
            ),
        )?;
        write_script(&down, "#!/bin/sh\nip link del bk0 2>/dev/null || true\n")?;
        if kind == Backup::HotStandby {
            lab.edge.sh(&up.display().to_string())?;
            // A hot standby is up before anything fails (the kernel's linkwatch
            // reports carrier up to a second late).
            wait_until(Duration::from_secs(5), || {
                Ok(lab.edge.sh("ip -o link show dev bk0")?.contains("state UP"))
            })
            .context("bk0 never got carrier")?;
        }
        // Native XDP redirect into a veth needs NAPI on the receiving peer:
        // GRO from 5.13, an XDP program before (the dial script does both
        // for the backup's peer).
        let pass = crate::pass_xdp_pin().display();
        lab.primary.sh(&format!(
            "ethtool -K p_edge gro on >/dev/null 2>&1 || true; ip link set dev p_edge xdpdrv pinned {pass}"
        ))?;
        lab.lan.sh(&format!(
            "ethtool -K eth0 gro on >/dev/null 2>&1 || true; ip link set dev eth0 xdpdrv pinned {pass}"
        ))?;
        // The LAN host's own sockets leave the UDP checksum to "hardware"
        // (CHECKSUM_PARTIAL over veth); a native XDP redirect forwards the frame
        // as it is, so the checksum would never be filled in. Real NICs deliver
        // complete checksums; on veth the sender must compute them itself.
        lab.lan.sh("ethtool -K eth0 tx off >/dev/null")?;
        Ok(lab)
    }

    /// (Re)installs the primary route, as a BGP session coming up would.
    pub fn restore_primary(&self) -> Result<()> {
        self.edge.sh(&format!(
            "ip route replace {SEGMENT} via {PRIMARY_GW} dev wan0 proto bgp metric 20"
        ))?;
        Ok(())
    }

    /// Withdraws the primary route, as a BGP session going down would.
    pub fn withdraw_primary(&self) -> Result<()> {
        self.edge.sh(&format!(
            "ip route del {SEGMENT} via {PRIMARY_GW} dev wan0 proto bgp metric 20"
        ))?;
        Ok(())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("routebackup.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routebackup.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The lab's config; `deactivate_delay` as a TOML duration ("0s", "2s"),
    /// `extra_link` lines appended to the `[[link]]` table, `mode` the fast-path mode.
    pub fn config(&self, deactivate_delay: &str, mode: &str, extra_link: &str) -> String {
        let link = match self.kind {
            Backup::HotStandby => "driver = \"always-up\"".to_string(),
            Backup::Dialed => format!(
                "driver = \"command\"\nup = [\"{}\"]\ndown = [\"{}\"]\nrequire_address = true\nup_timeout = \"10s\"",
                self.dir.path().join("dial-up.sh").display(),
                self.dir.path().join("dial-down.sh").display()
            ),
        };
        format!(
            "[agent]\npin_path = \"{pin}\"\ncontrol_socket = \"{sock}\"\ntables = [\"main\"]\n\n\
             [fastpath]\ninterfaces = [\"lan0\"]\nmode = \"{mode}\"\n\n\
             [[link]]\nname = \"backup\"\ninterface = \"bk0\"\ngateway = \"{BACKUP_GW}\"\n{link}\n{extra_link}\n\n\
             [[group]]\nname = \"dest\"\nsegments = [\"{SEGMENT}\"]\nlinks = [\"backup\"]\n\
             activate_delay = \"0s\"\ndeactivate_delay = \"{deactivate_delay}\"\n",
            pin = self.bpffs.path().join("routebackup").display(),
            sock = self.socket().display(),
        )
    }

    /// Writes `config` and starts the agent in `edge`; waits until it answers `status`.
    pub fn start_agent(&mut self, config: &str, extra_args: &[&str]) -> Result<()> {
        std::fs::write(self.config_path(), config)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        // Debug logs by default; a caller may pass its own --log-level.
        let level = if extra_args.contains(&"--log-level") {
            ""
        } else {
            "--log-level routebackup=debug,info"
        };
        let mut cmd = self.edge.command(&format!(
            "exec {} run --config {} {level} {}",
            crate::agent_bin().display(),
            self.config_path().display(),
            extra_args.join(" ")
        ));
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.agent = Some(cmd.spawn().context("start the agent")?);
        wait_until(Duration::from_secs(15), || {
            if let Some(child) = self.agent.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("agent exited ({status}); log:\n{}", self.log());
                }
            }
            Ok(self
                .status()
                .is_ok_and(|s| s["synced"].as_bool().unwrap_or(true)))
        })
        .with_context(|| format!("agent did not come up; log:\n{}", self.log()))
    }

    /// Sends `signal` to the agent and waits for it to exit.
    pub fn stop_agent(&mut self, signal: i32) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.agent.take() else {
            bail!("agent not running")
        };
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id().cast_signed(), signal) };
        let deadline = std::time::Instant::now() + crate::scaled(Duration::from_secs(5));
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        bail!(
            "agent did not exit within 5 s of signal {signal}; log:\n{}",
            self.log()
        )
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// `routebackup status --json` parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.status_text(&["--json"])?)?)
    }

    /// `routebackup status <extra>` output as text.
    pub fn status_text(&self, extra: &[&str]) -> Result<String> {
        let out = std::process::Command::new(crate::agent_bin())
            .args(["status", "--socket"])
            .arg(self.socket())
            .args(extra)
            .output()?;
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The group's state in status ("primary", "backup", ...).
    pub fn group_state(&self) -> Result<String> {
        let s = self.status()?;
        Ok(s["groups"][0]["state"].as_str().unwrap_or("?").to_string())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// ifindex of dest's interface towards the primary and the backup router.
    pub fn dest_ifindexes(&self) -> Result<(u32, u32)> {
        Ok((self.dest.ifindex("d_p")?, self.dest.ifindex("d_b")?))
    }

    /// Datagrams the destination's sockets dropped because their receive
    /// buffer was full (`Udp: RcvbufErrors` in `dest`'s /proc/net/snmp):
    /// loss of the lab's receiver, not of any path.
    pub fn dest_rcvbuf_errors(&self) -> Result<u64> {
        let snmp = self.dest.sh("cat /proc/net/snmp")?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
            bail!("no Udp lines in /proc/net/snmp:\n{snmp}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RcvbufErrors")
            .with_context(|| format!("no Udp RcvbufErrors in /proc/net/snmp:\n{snmp}"))?
            .1
            .parse()
            .context("Udp RcvbufErrors is not a number")
    }

    pub fn bk0_exists(&self) -> bool {
        self.edge.has_link("bk0")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id().cast_signed(), libc::SIGTERM) };
            for _ in 0..300 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    crate::sh(&format!("chmod 755 {}", path.display()))?;
    Ok(())
}
