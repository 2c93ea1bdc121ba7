//! `driver = "pppd"`: the command line, pppd's exit codes, and finding a
//! pppd left running by a previous agent (through the pid file `linkname`
//! makes pppd write).
//!
//! pppd runs as `<pppd_path> call <peer> nodetach ifname <interface>
//! linkname <link>`. `ifname` needs pppd 2.4.8 or later (Debian 11+, RHEL 9);
//! it names the interface so the agent can find it by the configured name.
//! `nodetach` keeps pppd in the foreground, so the agent supervises it: its
//! exit, whatever its status, means the session is over, and the failure
//! quotes what pppd's exit code means. A ppp interface is up before IPCP is
//! done, so a pppd link needs an address by default (`require_address`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Driver, KeyType, Keys, Problems, Profile, Task};
use crate::links::process::{self, Role};
use crate::links::DriverState;
use crate::paths::DEFAULT_PPPD_PATH;
pub use crate::paths::PPPD_PID_DIR as DEFAULT_PID_DIR;

/// pppd itself: every exit of it ends the session.
pub static PPPD: Role = Role {
    what: "pppd",
    config_key: "`pppd_path`",
    env_name: "pppd",
    may_finish: false,
    exit_meaning,
};

/// A pppd link's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pppd {
    /// The file in /etc/ppp/peers (`call <peer>`).
    pub peer: String,
    pub pppd_path: PathBuf,
}

impl Driver for Pppd {
    const NAME: &'static str = "pppd";
    const KEYS: &'static [(&'static str, KeyType)] =
        &[("peer", KeyType::Text), ("pppd_path", KeyType::Text)];
    const PROFILE: Profile = Profile {
        always_up: false,
        needs_address: true,
    };

    fn check(keys: &Keys<'_>, problems: &mut dyn Problems) -> Option<Pppd> {
        let Some(peer) = keys.text("peer") else {
            let hint = "add peer = \"NAME\" (a file in /etc/ppp/peers)";
            keys.missing("peer", hint, problems);
            return None;
        };
        let mut ok = true;
        if peer.get_ref().is_empty() || peer.get_ref().contains('/') {
            problems.hinted(
                peer.span(),
                "peer must be a file name in /etc/ppp/peers",
                "e.g. peer = \"lte\"",
            );
            ok = false;
        }
        let pppd_path = match keys.text("pppd_path") {
            Some(p) => problems.absolute_path(p, "pppd_path"),
            None => PathBuf::from(DEFAULT_PPPD_PATH),
        };
        ok.then(|| Pppd {
            peer: peer.get_ref().clone(),
            pppd_path,
        })
    }

    fn normalised(&self) -> Vec<(&'static str, toml::Value)> {
        vec![
            ("peer", toml::Value::String(self.peer.clone())),
            (
                "pppd_path",
                toml::Value::String(self.pppd_path.display().to_string()),
            ),
        ]
    }

    async fn up(&self, task: &mut Task) {
        if let Some(pid) = running_pid(&task.pppd_pid_dir, &task.name) {
            tracing::info!(link = %task.name, pid, "a pppd for this link already runs (left by an earlier agent); not starting another");
            task.set_state(DriverState::Up);
            return;
        }
        let argv = argv(&self.pppd_path, &self.peer, &task.interface, &task.name);
        task.spawn(&argv, &PPPD);
    }

    async fn down(&self, task: &mut Task) {
        if !task.stop_child().await {
            stop_orphan(task).await;
        }
    }
}

/// Stops a pppd for this link started by an earlier agent (kept across a
/// restart).
async fn stop_orphan(task: &Task) {
    let Some(pid) = running_pid(&task.pppd_pid_dir, &task.name) else {
        return;
    };
    tracing::info!(link = %task.name, pid, "stopping the pppd left by an earlier agent");
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on a pid verified to be our link's pppd.
    unsafe { libc::kill(p, libc::SIGTERM) };
    let deadline = tokio::time::Instant::now() + task.timeouts.term_grace;
    while tokio::time::Instant::now() < deadline {
        if !process::is_running(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if running_pid(&task.pppd_pid_dir, &task.name) == Some(pid) {
        // SAFETY: as above, re-verified.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

/// pppd's argv for a link.
pub fn argv(pppd_path: &Path, peer: &str, interface: &str, link: &str) -> Vec<String> {
    vec![
        pppd_path.display().to_string(),
        "call".into(),
        peer.into(),
        "nodetach".into(),
        "ifname".into(),
        interface.into(),
        "linkname".into(),
        link.into(),
    ]
}

/// What pppd's exit status means (pppd(8), "EXIT STATUS").
pub fn exit_meaning(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "the connection was established and terminated at the peer's request",
        1 => "an immediately fatal error occurred",
        2 => "an error in the options given (see the peer file)",
        3 => "pppd is not setuid-root and the invoking user is not root",
        4 => "the kernel does not support PPP",
        5 => "terminated by SIGINT, SIGTERM or SIGHUP",
        6 => "the serial port could not be locked",
        7 => "the serial port could not be opened",
        8 => "the connect script failed",
        9 => "the pty command could not be run",
        10 => "PPP negotiation failed",
        11 => "the peer system failed (or refused) to authenticate itself",
        12 => "the link was idle and was terminated",
        13 => "the connect time limit was reached",
        14 => "callback was negotiated",
        15 => "the peer is not responding to echo requests",
        16 => "the link was terminated by the modem hanging up",
        17 => "the PPP negotiation failed because serial loopback was detected",
        18 => "the init script failed",
        19 => "we failed to authenticate ourselves to the peer",
        _ => return None,
    })
}

/// The pid file of a pppd started with `linkname <link>`.
pub fn pid_file(dir: &Path, link: &str) -> PathBuf {
    dir.join(format!("ppp-{link}.pid"))
}

/// The pid of a running pppd for `link` found through its pid file, only if
/// that process's command line really has `linkname <link>` (a stale pid
/// file whose pid was reused must not get us to kill a stranger).
pub fn running_pid(dir: &Path, link: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file(dir, link)).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 1 {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args
        .windows(2)
        .any(|w| matches!(w, [a, b] if *a == b"linkname" && *b == link.as_bytes()));
    ours.then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_names_interface_and_link() {
        let a = argv(Path::new("/usr/sbin/pppd"), "lte", "ppp-lte", "lte");
        assert_eq!(
            a.join(" "),
            "/usr/sbin/pppd call lte nodetach ifname ppp-lte linkname lte"
        );
    }

    #[test]
    fn stale_pid_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid: a live process whose cmdline has no "linkname x".
        std::fs::write(
            pid_file(dir.path(), "x"),
            format!("{}\nppp0\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(running_pid(dir.path(), "x"), None);
        std::fs::write(pid_file(dir.path(), "y"), "garbage").unwrap();
        assert_eq!(running_pid(dir.path(), "y"), None);
        assert_eq!(running_pid(dir.path(), "missing"), None);
    }

    #[test]
    fn exit_codes_have_meanings() {
        assert!(exit_meaning(5).unwrap().contains("SIGTERM"));
        assert!(exit_meaning(99).is_none());
    }
}
