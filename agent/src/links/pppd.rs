//! The pppd driver: the command line, pppd's exit codes, and finding a pppd
//! left running by a previous agent (through the pid file `linkname` makes
//! pppd write).
//!
//! pppd runs as `<pppd_path> call <peer> nodetach ifname <interface>
//! linkname <link>`. `ifname` needs pppd 2.4.8 or later (Debian 11+, RHEL 9);
//! it names the interface so the agent can find it by the configured name.
//! `nodetach` keeps pppd in the foreground, so the agent supervises it: its
//! exit means the session is over.

use std::path::{Path, PathBuf};

pub use crate::paths::PPPD_PID_DIR as DEFAULT_PID_DIR;

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
