//! A stand-in for pppd in tests (this kernel has no PPP support).
//!
//! It accepts pppd's command line as the agent builds it (`call PEER`,
//! `nodetach`, `ifname NAME`, `linkname NAME`, `unit N`; anything else is an
//! error, exit 2 like pppd), reads the peer file `$FAKE_PPPD_PEERS_DIR/PEER`
//! (default /etc/ppp/peers/PEER), creates a tun device named `ifname` held
//! open by the process (so its carrier is up and it vanishes when the process
//! dies, like a ppp unit), sets it up with a point-to-point address, writes
//! `<piddir>/ppp-<linkname>.pid`, and runs until SIGTERM, SIGINT or SIGHUP,
//! after which it removes the pid file and exits 5 (pppd's "terminated by a
//! signal" status).
//!
//! Peer file options (whitespace separated, `#` comments):
//! - `LOCAL:REMOTE` IPv4 addresses (default 10.64.0.2:10.64.0.1)
//! - `fake-exit N`: print an error and exit with status N at once
//! - `fake-die-after MS`: exit 16 ("modem hung up") after MS milliseconds
//! - `fake-ignore-term`: ignore SIGTERM (tests the SIGKILL path)
//! - `fake-piddir DIR`: where the pid file goes (default /run)

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::{exit, Command};

/// `_IOW('T', 202, int)`: attaches the tun fd to the interface named in the ifreq.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Logs to stderr like pppd with `nodetach`; a closed stderr (the agent went
/// away) is not an error.
fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "pppd: {msg}");
}

fn die(code: i32, msg: &str) -> ! {
    log(msg);
    exit(code)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut peer, mut ifname, mut linkname, mut unit) = (None, None, None, 0u32);
    let mut nodetach = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "call" => {
                peer = Some(
                    args.next()
                        .unwrap_or_else(|| die(2, "option 'call' requires an argument")),
                );
            }
            "ifname" => {
                ifname = Some(
                    args.next()
                        .unwrap_or_else(|| die(2, "option 'ifname' requires an argument")),
                );
            }
            "linkname" => {
                linkname = Some(
                    args.next()
                        .unwrap_or_else(|| die(2, "option 'linkname' requires an argument")),
                );
            }
            "unit" => {
                unit = args
                    .next()
                    .and_then(|u| u.parse().ok())
                    .unwrap_or_else(|| die(2, "option 'unit' requires a number"));
            }
            "nodetach" => nodetach = true,
            other => die(2, &format!("unrecognized option '{other}'")),
        }
    }
    if !nodetach {
        die(2, "this stand-in only supports nodetach");
    }
    let peer = peer.unwrap_or_else(|| die(2, "no peer given (use `call PEER`)"));
    let dir = std::env::var("FAKE_PPPD_PEERS_DIR").unwrap_or_else(|_| "/etc/ppp/peers".into());
    let path = format!("{dir}/{peer}");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| die(2, &format!("In file {path}: cannot open options file: {e}")));
    let mut local = "10.64.0.2".to_string();
    let mut remote = "10.64.0.1".to_string();
    let (mut die_after, mut ignore_term, mut piddir) = (None::<u64>, false, "/run".to_string());
    let mut tokens = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace);
    while let Some(t) = tokens.next() {
        match t {
            "fake-exit" => {
                let code = tokens.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                die(
                    code,
                    &format!("failing with status {code} as the peer file asks"),
                );
            }
            "fake-die-after" => die_after = tokens.next().and_then(|c| c.parse().ok()),
            "fake-ignore-term" => ignore_term = true,
            "fake-piddir" => piddir = tokens.next().unwrap_or("/run").to_string(),
            pair if pair.contains(':') => {
                let (l, r) = pair.split_once(':').unwrap_or_default();
                local = l.to_string();
                remote = r.to_string();
            }
            other => die(2, &format!("In file {path}: unrecognized option '{other}'")),
        }
    }
    let ifname = ifname.unwrap_or_else(|| format!("ppp{unit}"));
    let linkname = linkname.unwrap_or_else(|| ifname.clone());

    // Block the termination signals before anything else so none is lost.
    // SAFETY: plain libc signal-mask calls on a local sigset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGHUP);
        if ignore_term {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        } else {
            libc::sigaddset(&raw mut set, libc::SIGTERM);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
    }

    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| die(4, &format!("cannot open /dev/net/tun: {e}")));
    // struct ifreq: 16 bytes of name, then a short of flags (padded to 40 bytes).
    let mut ifr = [0u8; 40];
    if ifname.len() >= 16 {
        die(2, &format!("interface name {ifname} is too long"));
    }
    ifr[..ifname.len()].copy_from_slice(ifname.as_bytes());
    #[expect(
        clippy::cast_possible_truncation,
        reason = "IFF_TUN | IFF_NO_PI is 0x1001, within ifr_flags (a short)"
    )]
    let flags: libc::c_short = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
        die(
            1,
            &format!(
                "cannot create interface {ifname}: {}",
                std::io::Error::last_os_error()
            ),
        );
    }
    for cmd in [
        format!("ip addr add {local} peer {remote}/32 dev {ifname}"),
        format!("ip link set {ifname} up"),
    ] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            die(1, &format!("`{cmd}` failed"));
        }
    }
    let pidfile = format!("{piddir}/ppp-{linkname}.pid");
    let _ = std::fs::write(&pidfile, format!("{}\n{ifname}\n", std::process::id()));
    log(&format!("local  IP address {local}"));
    log(&format!("remote IP address {remote}"));

    #[expect(
        clippy::cast_possible_wrap,
        reason = "a delay in milliseconds from the command line, far below i64::MAX"
    )]
    let timeout = die_after.map(|ms| libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    });
    loop {
        // SAFETY: waits for one of the blocked signals; `set` and `timeout` outlive the call.
        let sig = unsafe {
            match &timeout {
                Some(t) => libc::sigtimedwait(&raw const set, std::ptr::null_mut(), t),
                None => libc::sigwaitinfo(&raw const set, std::ptr::null_mut()),
            }
        };
        if sig > 0 {
            log(&format!("Terminating on signal {sig}"));
            let _ = std::fs::remove_file(&pidfile);
            drop(tun);
            exit(5);
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            log("Modem hangup");
            let _ = std::fs::remove_file(&pidfile);
            drop(tun);
            exit(16);
        }
        // EINTR: wait again.
    }
}
