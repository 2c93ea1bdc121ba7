//! Every file-system path the agent uses at run time, in one place, so a
//! packager or an operator can see at a glance what the agent reads and
//! writes (and a systemd unit can list its write paths from here).

/// `routebackup run|check` read this config unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/routebackup/routebackup.toml";
/// `[agent] control_socket` default: the status socket (mode 0600).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/routebackup.sock";
/// The control socket of `run --dry-run` beside the live agent's
/// `control_socket`: `/run/routebackup.sock` → `/run/routebackup-dry-run.sock`.
pub fn dry_run_socket(control_socket: &std::path::Path) -> std::path::PathBuf {
    let stem = control_socket
        .file_stem()
        .map_or_else(|| "routebackup".into(), |s| s.to_string_lossy());
    control_socket.with_file_name(format!("{stem}-dry-run.sock"))
}
/// `[agent] pin_path` default: the bpffs directory of the pinned maps and links.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/routebackup";
/// Where a bpffs is mounted when the pin path's file system is not one.
pub const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// The agent's runtime directory: its lock files (one per pin path and per
/// control socket, each holding the running agent's pid).
pub const RUN_DIR: &str = "/run/routebackup";

/// The lock file guarding `path` (a pin path or a control socket) for one
/// agent: `<RUN_DIR>/<kind>-<path escaped as systemd-escape --path does>.lock`,
/// e.g. `/run/routebackup/pin-sys-fs-bpf-routebackup.lock`.
pub fn lock_file(kind: &str, path: &std::path::Path) -> std::path::PathBuf {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let trimmed = bytes
        .strip_prefix(b"/")
        .unwrap_or(bytes)
        .strip_suffix(b"/")
        .unwrap_or(bytes.strip_prefix(b"/").unwrap_or(bytes));
    let mut name = format!("{kind}-");
    for (i, &b) in trimmed.iter().enumerate() {
        match b {
            b'/' => name.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => name.push(char::from(b)),
            b'.' if i > 0 => name.push('.'),
            _ => {
                let _ = write!(name, "\\x{b:02x}");
            }
        }
    }
    std::path::Path::new(RUN_DIR).join(name + ".lock")
}

/// `pppd_path` default of pppd links.
pub const DEFAULT_PPPD_PATH: &str = "/usr/sbin/pppd";
/// Where pppd writes `ppp-<linkname>.pid` (pppd's `_PATH_VARRUN`).
pub const PPPD_PID_DIR: &str = "/run";

/// iproute2's table-name files, read in order (later definitions win).
pub const RT_TABLES_FILES: &[&str] = &[
    "/usr/share/iproute2/rt_tables",
    "/usr/lib/iproute2/rt_tables",
    "/etc/iproute2/rt_tables",
];
/// iproute2's table-name directories (`*.conf` files), read after the files.
pub const RT_TABLES_DIRS: &[&str] = &[
    "/usr/share/iproute2/rt_tables.d",
    "/usr/lib/iproute2/rt_tables.d",
    "/etc/iproute2/rt_tables.d",
];

/// The forwarding sysctl of an address family (`ipv4`, `ipv6`) on an
/// interface (`all`, or a name).
pub fn forwarding_sysctl(family: &str, interface: &str) -> String {
    format!("/proc/sys/net/{family}/conf/{interface}/forwarding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn dry_run_socket_sits_beside_the_live_one() {
        assert_eq!(
            dry_run_socket(Path::new(DEFAULT_CONTROL_SOCKET)),
            Path::new("/run/routebackup-dry-run.sock")
        );
        assert_eq!(
            dry_run_socket(Path::new("/run/rb/agent.sock")),
            Path::new("/run/rb/agent-dry-run.sock")
        );
    }

    #[test]
    fn lock_files_are_named_like_systemd_escape() {
        assert_eq!(
            lock_file("pin", Path::new("/sys/fs/bpf/routebackup")),
            Path::new("/run/routebackup/pin-sys-fs-bpf-routebackup.lock")
        );
        assert_eq!(
            lock_file("socket", Path::new("/run/rb-x.sock/")),
            Path::new("/run/routebackup/socket-run-rb\\x2dx.sock.lock")
        );
    }
}
