//! Helpers for the privileged integration tests: network namespaces, veth
//! pairs, commands run inside a namespace, and the agent binary under test.
//!
//! Every privileged test is `#[ignore = "needs root: run with cargo xtask test"]`;
//! `cargo xtask test` runs them with `--include-ignored` as root.

pub mod agent;
pub mod daemons;
pub mod frames;
pub mod lab;
pub mod livegen;
pub mod metrics;
pub mod needs;
pub mod traffic;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Runs a command on the host and returns its stdout; fails with its stderr.
pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .with_context(|| format!("spawn `{cmd}`"))?;
    check(cmd, &out)
}

fn check(cmd: &str, out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace deleted (with its processes killed) on drop.
/// Names are unique per process and test: `rbt<pid>x<n><tag>`.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("rbt{}x{}{}", std::process::id(), n, tag);
        sh(&format!("ip netns add {name}"))?;
        let ns = Netns { name };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    /// Runs `cmd` with `sh -c` inside the namespace (network namespace only,
    /// via nsenter, so /sys and a bpffs stay visible).
    pub fn sh(&self, cmd: &str) -> Result<String> {
        let out = self
            .command(cmd)
            .output()
            .with_context(|| format!("spawn `{cmd}` in {}", self.name))?;
        check(&format!("[{}] {cmd}", self.name), &out)
    }

    /// Like `sh` but returns the raw output whether or not it succeeded.
    pub fn output(&self, cmd: &str) -> Result<Output> {
        Ok(self.command(cmd).output()?)
    }

    /// A `Command` that runs `sh -c cmd` inside the namespace.
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("sh")
            .arg("-c")
            .arg(cmd);
        c
    }

    /// Spawns a long-running command inside the namespace (killed on drop of the Child's owner).
    pub fn spawn(&self, cmd: &str) -> Result<Child> {
        self.command(cmd)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn `{cmd}` in {}", self.name))
    }

    /// Interface index of `ifname` in this namespace. (Not from /sys: under
    /// `nsenter --net` /sys still shows the host's interfaces.)
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let s = self.sh(&format!("ip -o link show dev {ifname}"))?;
        let idx = s.split(':').next().unwrap_or("").trim();
        idx.parse()
            .with_context(|| format!("no ifindex for {ifname} in `{s}`"))
    }

    /// Whether `ifname` exists in this namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        self.sh(&format!("ip link show dev {ifname}")).is_ok()
    }

    /// Path for `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a new thread that first joins this network namespace
    /// (setns(CLONE_NEWNET)); processes spawned from it inherit the namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                traffic::enter_netns(&path)?;
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs in the namespace (never this test process,
        // $PPID of the shell, whose threads may have entered it), then delete it.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ip netns pids {0} | grep -vx \"$PPID\" | xargs -r kill -9; ip netns del {0}",
                self.name
            ))
            .output();
    }
}

/// Creates a veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up, with
/// optional addresses ("10.0.1.1/24", "" for none).
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Result<()> {
    let end = |ns, name, addr| VethEnd {
        ns,
        name,
        addr,
        mac: None,
    };
    veth_pair(1, &end(a, a_if, a_addr), &end(b, b_if, b_addr))
}

/// One end of a veth pair: its namespace, name, address ("" for none) and
/// MAC (`None`: the kernel's random one).
pub struct VethEnd<'a> {
    pub ns: &'a Netns,
    pub name: &'a str,
    pub addr: &'a str,
    pub mac: Option<[u8; 6]>,
}

/// Creates a veth pair with `queues` queues each way, both ends up.
pub fn veth_pair(queues: u32, a: &VethEnd<'_>, b: &VethEnd<'_>) -> Result<()> {
    let tmp = format!(
        "v{}x{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let q = format!("numtxqueues {queues} numrxqueues {queues}");
    sh(&format!(
        "ip link add {tmp}a {q} type veth peer name {tmp}b {q} && \
         ip link set {tmp}a netns {} name {} && ip link set {tmp}b netns {} name {}",
        a.ns.name, a.name, b.ns.name, b.name
    ))?;
    for end in [a, b] {
        if let Some(m) = end.mac {
            let mac = m.map(|b| format!("{b:02x}")).join(":");
            end.ns
                .sh(&format!("ip link set {} address {mac}", end.name))?;
        }
        if !end.addr.is_empty() {
            end.ns
                .sh(&format!("ip addr add {} dev {}", end.addr, end.name))?;
        }
        end.ns.sh(&format!("ip link set {} up", end.name))?;
    }
    Ok(())
}

/// The agent binary under test: `$ROUTEBACKUP_BIN`, else target/debug/routebackup.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ROUTEBACKUP_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/debug/routebackup"
    ))
}

/// Mounts a fresh bpffs on a temporary directory (a pin path for one test).
pub struct BpfFs {
    pub dir: tempfile::TempDir,
}

impl BpfFs {
    pub fn new() -> Result<BpfFs> {
        let dir = tempfile::Builder::new().prefix("rbt-bpffs").tempdir()?;
        sh(&format!("mount -t bpf bpf {}", dir.path().display()))?;
        Ok(BpfFs { dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l {}", self.dir.path().display()));
    }
}

/// How many times slower than on this machine's own kernel the tests run:
/// `ROUTEBACKUP_TEST_TIME_SCALE`, which `cargo xtask vmtest` sets when it
/// boots a kernel under emulation (TCG runs everything 10-40 times slower),
/// else 1. Every deadline a test waits for goes through [`scaled`], so no test
/// fails for being slow; what a test measures (loss, order) is unchanged.
pub fn time_scale() -> u32 {
    std::env::var("ROUTEBACKUP_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `d` stretched by [`time_scale`].
pub fn scaled(d: std::time::Duration) -> std::time::Duration {
    d * time_scale()
}

/// Polls `f` every 10 ms until it returns Ok(true) or `timeout` (stretched
/// by [`time_scale`]) passes.
pub fn wait_until(timeout: std::time::Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let timeout = scaled(timeout);
    let start = std::time::Instant::now();
    let mut last_err = None;
    while start.elapsed() < timeout {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    match last_err {
        Some(e) => bail!("condition not met within {timeout:?}; last error: {e:#}"),
        None => bail!("condition not met within {timeout:?}"),
    }
}

/// A pinned XDP program that passes every packet, loaded once per test
/// binary: attached to the receiving end of a veth (`ip link set dev X
/// xdpdrv pinned PATH`), it lets that veth take native XDP redirects on
/// every kernel. From 5.13 GRO on the peer is enough; before, only an XDP
/// program there gives the veth the NAPI context redirected frames need. A
/// real NIC needs neither: this is the lab's, never the product's.
///
/// # Panics
/// When the kernel refuses a two-instruction XDP program or its pin.
pub fn pass_xdp_pin() -> &'static std::path::Path {
    static PIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PIN.get_or_init(|| {
        // One bpffs for every test binary (cargo runs them one after the
        // other), so runs leave one mount, not one each.
        let dir = PathBuf::from("/run/routebackup-tests");
        let path = dir.join("xdp_pass");
        if !path.exists() {
            std::fs::create_dir_all(&dir).expect("create /run/routebackup-tests");
            let _ = sh(&format!(
                "mountpoint -q {0} || mount -t bpf bpf {0}",
                dir.display()
            ));
            load_and_pin_pass(&path).expect("load and pin an XDP pass program");
        }
        path
    })
}

fn load_and_pin_pass(path: &std::path::Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    // r0 = XDP_PASS (2); exit.
    let insns: [u64; 2] = [0x0000_0002_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&6u32.to_ne_bytes()); // BPF_PROG_TYPE_XDP
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: bpf(2) with a zero-filled attr of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        bail!("BPF_PROG_LOAD: {}", std::io::Error::last_os_error());
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // union bpf_attr for BPF_OBJ_PIN: pathname, bpf_fd.
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&u32::try_from(fd)?.to_ne_bytes());
    // SAFETY: as above; BPF_OBJ_PIN = 6.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours; the pin holds the program.
    unsafe { libc::close(i32::try_from(fd)?) };
    if rc != 0 {
        bail!("BPF_OBJ_PIN {}: {err}", path.display());
    }
    Ok(())
}
