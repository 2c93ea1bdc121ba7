//! `cargo xtask`: setup, build, test, bench, demo, lint, dist.
//!
//! `test`, `bench`, `demo`, `soak` and `dist` run `setup` first, so each works
//! alone on a fresh Debian 12 machine as root; `build` and `lint` only check
//! that setup has run and never install anything or stop host services.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "routebackup developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every missing prerequisite (Debian packages, the pinned nightly, bpf-linker).
    Setup,
    /// Build the eBPF object and the agent (which embeds it).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests and the privileged network-namespace tests (needs root).
    Test {
        /// Extra arguments for the test binaries (e.g. a name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and print their tables (needs root).
    Bench {
        /// Only these benches: fastpath, routes, failover, live.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Build a lab of network namespaces and show a failover end to end (needs root).
    Demo {
        /// Leave the lab running for exploring with `routebackup status` and bpftool.
        #[arg(long)]
        keep: bool,
    },
    /// The route-truth differential test at length (needs root): random kernel
    /// changes, the agent's picture compared with the kernel's after each.
    Soak {
        /// Steps per seed (4 seeds); `cargo xtask test` runs 500.
        #[arg(long, default_value_t = 5000)]
        steps: u32,
        /// Added to the 4 built-in seeds, for a different sequence.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// cargo fmt --check and cargo clippy -D warnings on host and kernel crates.
    Lint,
    /// Release build, man page, shell completions and a .deb in target/dist/.
    Dist,
}

include!("../../ebpf/nightly.rs");

/// Debian packages the build, the tests and the demo need, besides LLVM's
/// (`llvm_packages`).
const DEB_PACKAGES: &[&str] = &[
    // bpf-linker's build
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
    // runtime and tests
    "bpftool",
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "ethtool",
    "procps",
    "util-linux",
    // routing daemons run inside the test namespaces (tests/tests/daemons.rs)
    "frr",
    "bird2",
];

/// Services of `DEB_PACKAGES` that Debian enables (and may start) on install:
/// the tests start their own daemons per namespace, never the host's.
/// (service, the pid file its host instance writes).
const HOST_SERVICES: &[(&str, &str)] = &[
    ("frr", "/run/frr/watchfrr.pid"),
    ("bird", "/run/bird/bird.pid"),
];

/// LLVM of the pinned nightly, which bpf-linker is built against.
fn llvm_packages() -> [String; 2] {
    [
        format!("llvm-{PINNED_LLVM_MAJOR}-dev"),
        format!("libpolly-{PINNED_LLVM_MAJOR}-dev"),
    ]
}

const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deb for `dist` (3.x builds on the workspace's rustc 1.95; its MSRV is 1.85).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup(),
        Task::Build { release } => ready().and_then(|()| build(release)),
        Task::Test { args } => setup().and_then(|()| test(&args)),
        Task::Bench { only } => setup().and_then(|()| bench(&only)),
        Task::Demo { keep } => setup().and_then(|()| demo(keep)),
        Task::Soak { steps, seed } => setup().and_then(|()| soak(steps, seed)),
        Task::Lint => ready().and_then(|()| lint()),
        Task::Dist => setup().and_then(|()| dist()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    // The kernel object must always be built for real: never embed a stale or empty one.
    cmd.env_remove("AYA_BUILD_SKIP");
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (network namespaces, BPF programs, bpffs): run it as root, e.g. `sudo -E cargo xtask ...`");
    }
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs what is missing; quick when everything is there.
fn setup() -> Result<()> {
    let llvm = llvm_packages();
    let missing: Vec<&str> = DEB_PACKAGES
        .iter()
        .copied()
        .chain(llvm.iter().map(String::as_str))
        .filter(|p| !deb_installed(p))
        .collect();
    if !missing.is_empty() {
        require_root("installing Debian packages")?;
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    keep_host_services_off()?;

    setup_pinned_nightly()?;

    if !bpf_linker_ok() {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {PINNED_LLVM_MAJOR} (a few minutes, once)"
        );
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{PINNED_LLVM_MAJOR}"),
                ])
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{PINNED_LLVM_MAJOR}")),
        )?;
    }
    Ok(())
}

/// What `build` and `lint` need, checked without installing anything or
/// touching host services: those two run on a developer's box as it is.
fn ready() -> Result<()> {
    let mut missing = Vec::new();
    if !has_rust_src(PINNED_TOOLCHAIN) {
        missing.push(format!("the toolchain {PINNED_TOOLCHAIN} with rust-src"));
    }
    if !bpf_linker_ok() {
        missing.push(format!(
            "bpf-linker {BPF_LINKER_VERSION} built against LLVM {PINNED_LLVM_MAJOR}"
        ));
    }
    if !missing.is_empty() {
        bail!(
            "missing {}: run `cargo xtask setup` once (as root: it installs Debian packages)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Stops and disables the routing daemons' host services that the packages'
/// postinst enabled (and started, where no policy-rc.d forbids it): the
/// daemons belong in the test namespaces only. Quick when already off.
fn keep_host_services_off() -> Result<()> {
    let systemd_running = Path::new("/run/systemd/system").exists();
    for &(unit, pid_file) in HOST_SERVICES {
        // `is-enabled` reads the unit symlinks, with or without a running systemd.
        let enabled = Command::new("systemctl")
            .args(["is-enabled", "--quiet", unit])
            .status()
            .is_ok_and(|s| s.success());
        let sysv_enabled = std::fs::read_dir("/etc/rc2.d").is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy() == format!("S01{unit}"))
        });
        // The host instance's pid file, not a process name: the tests' own
        // daemons in their namespaces must not count.
        let running = std::fs::read_to_string(pid_file)
            .is_ok_and(|pid| Path::new(&format!("/proc/{}", pid.trim())).exists());
        if !(enabled || sysv_enabled || running) {
            continue;
        }
        require_root("disabling the host's routing daemon services")?;
        eprintln!("xtask: stopping and disabling the host service {unit} (the tests run their own daemons in namespaces)");
        if systemd_running {
            run(Command::new("systemctl").args(["disable", "--now", unit]))?;
        } else {
            if running {
                run(Command::new(format!("/etc/init.d/{unit}")).arg("stop"))?;
            }
            if enabled {
                run(Command::new("systemctl").args(["disable", "--quiet", unit]))?;
            }
            if sysv_enabled {
                run(Command::new("update-rc.d").args([unit, "disable"]))?;
            }
        }
    }
    Ok(())
}

/// bpf-linker is the wanted version and loads the pinned nightly's LLVM major.
fn bpf_linker_ok() -> bool {
    let version_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    // It links libLLVM dynamically (LLVM_PREFIX above): the library name gives the major.
    let llvm_ok = || {
        let Ok(path) = Command::new("sh")
            .args(["-c", "command -v bpf-linker"])
            .output()
        else {
            return false;
        };
        let path = String::from_utf8_lossy(&path.stdout).trim().to_string();
        Command::new("ldd").arg(&path).output().is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!("libLLVM.so.{PINNED_LLVM_MAJOR}"))
        })
    };
    version_ok && llvm_ok()
}

/// `rustc -vV` of a rustup toolchain, without letting rustup download it.
fn rustc_info(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_pinned_commit(info: &str) -> bool {
    info.lines()
        .any(|l| l.strip_prefix("commit-hash: ") == Some(PINNED_COMMIT))
}

/// Makes `PINNED_TOOLCHAIN` exist and be the pinned commit with rust-src.
///
/// It is a `rustup toolchain link` to the official `PINNED_NIGHTLY` or, when
/// the machine's `nightly` is exactly that commit, to that `nightly` (no
/// download). The existing toolchains are never changed or removed.
fn setup_pinned_nightly() -> Result<()> {
    let why = format!(
        "the kernel programs need {PINNED_NIGHTLY} (commit {PINNED_COMMIT}, LLVM \
         {PINNED_LLVM_MAJOR}): bpf-linker reads rustc's LLVM bitcode with its own LLVM \
         {PINNED_LLVM_MAJOR}, so the nightly is pinned in ebpf/nightly.rs"
    );
    if let Some(info) = rustc_info(PINNED_TOOLCHAIN) {
        if !is_pinned_commit(&info) {
            bail!(
                "{why}; the toolchain {PINNED_TOOLCHAIN} is another one:\n{}\nremove it with \
                 `rustup toolchain uninstall {PINNED_TOOLCHAIN}` and run `cargo xtask setup` again",
                info.trim()
            );
        }
        // A link made before rust-src was added: add it to the toolchain the
        // link points at (rustup cannot add components to a linked toolchain).
        if !has_rust_src(PINNED_TOOLCHAIN) {
            let linked = sysroot(PINNED_TOOLCHAIN);
            for candidate in [PINNED_NIGHTLY, "nightly"] {
                if linked.is_some() && sysroot(candidate) == linked {
                    eprintln!(
                        "xtask: adding rust-src to {candidate} (linked as {PINNED_TOOLCHAIN})"
                    );
                    run(Command::new("rustup").args([
                        "component",
                        "add",
                        "rust-src",
                        "--toolchain",
                        candidate,
                    ]))?;
                    break;
                }
            }
        }
        return require_rust_src();
    }

    // The source to link: the official nightly if present, else `nightly` if
    // it is the same commit, else download the official one.
    let mut found = Vec::new();
    let mut source = None;
    for candidate in [PINNED_NIGHTLY, "nightly"] {
        match rustc_info(candidate) {
            Some(info) if is_pinned_commit(&info) => {
                source = Some(candidate);
                break;
            }
            Some(info) => found.push(format!("{candidate}: {}", version_line(&info))),
            None => found.push(format!("{candidate}: not installed")),
        }
    }
    let source = match source {
        Some(s) => s,
        None => {
            eprintln!("xtask: installing {PINNED_NIGHTLY}");
            let installed = run(Command::new("rustup").args([
                "toolchain",
                "install",
                PINNED_NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src,clippy",
            ]));
            match installed {
                Ok(()) if rustc_info(PINNED_NIGHTLY).is_some_and(|i| is_pinned_commit(&i)) => {
                    PINNED_NIGHTLY
                }
                Ok(()) => bail!(
                    "{why}; rustup installed {PINNED_NIGHTLY} but it is not commit {PINNED_COMMIT}"
                ),
                Err(e) => bail!(
                    "{why}; found {}, and rustup could not install it ({e:#}): install \
                     {PINNED_NIGHTLY} (or a `nightly` of that commit) with rust-src, then run \
                     `cargo xtask setup` again",
                    found.join(", ")
                ),
            }
        }
    };
    // Whichever toolchain is linked must carry rust-src: a machine's own
    // `nightly` often comes without it (rustup's minimal profile).
    if !has_rust_src(source) {
        eprintln!("xtask: adding rust-src to {source}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", source]))?;
    }
    let root = sysroot(source).with_context(|| format!("cannot run rustc of {source}"))?;
    eprintln!(
        "xtask: naming {source} ({}) {PINNED_TOOLCHAIN}",
        root.display()
    );
    run(Command::new("rustup")
        .args(["toolchain", "link", PINNED_TOOLCHAIN])
        .arg(&root))?;
    require_rust_src()
}

fn version_line(info: &str) -> &str {
    info.lines().next().unwrap_or("rustc of unknown version")
}

/// The sysroot of a rustup toolchain, without letting rustup download it.
fn sysroot(toolchain: &str) -> Option<PathBuf> {
    let o = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// The standard library sources that `-Z build-std=core` compiles.
fn has_rust_src(toolchain: &str) -> bool {
    sysroot(toolchain).is_some_and(|s| {
        s.join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .is_file()
    })
}

fn require_rust_src() -> Result<()> {
    if !has_rust_src(PINNED_TOOLCHAIN) {
        bail!(
            "{PINNED_TOOLCHAIN} has no rust-src, which `-Z build-std=core` needs for the eBPF \
             target: add it to the toolchain it links to (`rustup component add rust-src \
             --toolchain {PINNED_NIGHTLY}`, or `--toolchain nightly` when it links to nightly)"
        );
    }
    Ok(())
}

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "routebackup"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let bin = workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("routebackup");
    eprintln!("xtask: built {}", bin.display());
    Ok(())
}

fn soak(steps: u32, seed: u64) -> Result<()> {
    require_root("the soak")?;
    build(false)?;
    let bin = workspace_root().join("target/debug/routebackup");
    run(cargo()
        .args([
            "test",
            "--package",
            "routebackup-tests",
            "--test",
            "route_truth",
            "--",
        ])
        .args(["--include-ignored", "--nocapture"])
        .env("ROUTEBACKUP_BIN", &bin)
        .env("ROUTEBACKUP_TRUTH_STEPS", steps.to_string())
        .env("ROUTEBACKUP_TRUTH_SEED", seed.to_string()))
}

fn test(args: &[String]) -> Result<()> {
    require_root("the privileged integration tests")?;
    // The integration tests run the real agent binary.
    build(false)?;
    let bin = workspace_root().join("target/debug/routebackup");
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast", "--"])
        .arg("--include-ignored")
        .args(args)
        .env("ROUTEBACKUP_BIN", &bin)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    // Pass the output through and add up every test binary's result line.
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().rev();
                    let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let n: u64 = n.parse().unwrap_or(0);
                    match kind {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("\ntests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

const BENCHES: &[(&str, &str)] = &[
    ("fastpath", "bench-fastpath"),
    ("routes", "bench-routes"),
    ("failover", "bench-failover"),
    ("live", "bench-live"),
];

fn bench(only: &[String]) -> Result<()> {
    require_root("the benchmarks")?;
    build(true)?;
    let bin = workspace_root().join("target/release/routebackup");
    for (name, target) in BENCHES {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "routebackup-tests",
            "--bin",
            target,
        ])
        .env("ROUTEBACKUP_BIN", &bin);
        run(&mut cmd)?;
    }
    Ok(())
}

fn demo(keep: bool) -> Result<()> {
    require_root("the demo")?;
    build(false)?;
    let bin = workspace_root().join("target/debug/routebackup");
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--package",
        "routebackup-tests",
        "--bin",
        "demo",
        "--",
    ])
    .env("ROUTEBACKUP_BIN", &bin);
    if keep {
        cmd.arg("--keep");
    }
    run(&mut cmd)
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel crate's programs only exist for the BPF target (the host
    // build above sees an empty main): check them as agent/build.rs builds
    // them, with the pinned nightly and a core built from source.
    let mut ebpf = Command::new("rustup");
    ebpf.current_dir(workspace_root().join("ebpf"))
        .args(["run", PINNED_TOOLCHAIN, "cargo", "clippy"])
        .args(["--package", "routebackup-ebpf", "--lib", "--bins"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        // The host toolchain's rustc would otherwise be used.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run(&mut ebpf)
}

/// Installs cargo-deb when `dist` needs it and it is missing or another version.
fn setup_cargo_deb() -> Result<()> {
    let ok = cargo().args(["deb", "--version"]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION)
    });
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} (a few minutes, once)");
    run(cargo().args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}

/// The release binary, its man page and completions (generated by the
/// binary from its clap definitions), and the .deb holding them with
/// dist/'s unit, example config and rt_protos.d entry.
fn dist() -> Result<()> {
    let root = workspace_root();
    // The package's files from the tree (agent/Cargo.toml's
    // [package.metadata.deb] assets): checked before the long build.
    for file in [
        "dist/routebackup.service",
        "dist/routebackup.toml",
        "dist/rt_protos.d/routebackup.conf",
    ] {
        if !root.join(file).is_file() {
            bail!("{file} is missing: the package needs it (see agent/Cargo.toml, [package.metadata.deb] assets)");
        }
    }
    setup_cargo_deb()?;
    build(true)?;
    let bin = root.join("target/release/routebackup");
    let out = root.join("target/dist");
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    let generate = |args: &[&str], to: &Path| -> Result<()> {
        let o = Command::new(&bin)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !o.status.success() {
            bail!(
                "{} {args:?} failed: {}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::fs::write(to, o.stdout).with_context(|| format!("cannot write {}", to.display()))
    };
    let man = out.join("man");
    // Pages of an earlier build (a subcommand may have gone) must not linger.
    if man.exists() {
        std::fs::remove_dir_all(&man)
            .with_context(|| format!("cannot remove {}", man.display()))?;
    }
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    run(Command::new(&bin).arg("manpage").arg(&man))?;
    // Debian policy: man pages gzip -9n (no name or time stamp: reproducible).
    for page in std::fs::read_dir(&man)? {
        run(Command::new("gzip").arg("-9n").arg(page?.path()))?;
    }
    // The unit in dist/ runs /usr/local/bin/routebackup (a hand install);
    // the package installs /usr/bin/routebackup (Debian packages never
    // write /usr/local), so it ships a copy pointing there.
    let unit_src = root.join("dist/routebackup.service");
    let unit = std::fs::read_to_string(&unit_src)
        .with_context(|| format!("cannot read {}", unit_src.display()))?;
    let hand_installed = "ExecStart=/usr/local/bin/routebackup ";
    if !unit.contains(hand_installed) {
        bail!(
            "{} has no `{hand_installed}...` line to point at /usr/bin for the package; update xtask dist",
            unit_src.display()
        );
    }
    let unit_out = out.join("routebackup.service");
    std::fs::write(
        &unit_out,
        unit.replace(hand_installed, "ExecStart=/usr/bin/routebackup "),
    )
    .with_context(|| format!("cannot write {}", unit_out.display()))?;
    for (shell, file) in [
        ("bash", "routebackup.bash"),
        ("zsh", "_routebackup"),
        ("fish", "routebackup.fish"),
    ] {
        generate(&["completions", shell], &completions.join(file))?;
    }
    run(cargo()
        .args(["deb", "--package", "routebackup", "--no-build", "--output"])
        .arg(&out))?;
    eprintln!("xtask: the package is in {}", out.display());
    Ok(())
}
