//! `cargo xtask`: setup, build, test, bench, demo, lint.
//!
//! Every command that needs prerequisites runs `setup` first, so each works
//! alone on a fresh Debian 12 machine as root.

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
    /// Install every missing prerequisite (Debian packages, nightly rust-src, bpf-linker).
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
        /// Only these benches: fastpath, routes, failover.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Build a lab of network namespaces and show a failover end to end (needs root).
    Demo {
        /// Leave the lab running for exploring with `routebackup status` and bpftool.
        #[arg(long)]
        keep: bool,
    },
    /// cargo fmt --check and cargo clippy -D warnings on host and kernel crates.
    Lint,
}

/// Debian packages the build, the tests and the demo need.
const DEB_PACKAGES: &[&str] = &[
    // bpf-linker against LLVM 22 (the nightly's LLVM)
    "llvm-22-dev",
    "libpolly-22-dev",
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
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup(),
        Task::Build { release } => setup().and_then(|()| build(release)),
        Task::Test { args } => setup().and_then(|()| test(&args)),
        Task::Bench { only } => setup().and_then(|()| bench(&only)),
        Task::Demo { keep } => setup().and_then(|()| demo(keep)),
        Task::Lint => setup().and_then(|()| lint()),
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

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
    let missing: Vec<&str> = DEB_PACKAGES
        .iter()
        .copied()
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

    let nightly_ok = succeeds(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--version"]));
    if !nightly_ok {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .output()
        .context("cannot run rustup")?;
    if !String::from_utf8_lossy(&components.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }

    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    if !linker_ok {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)"
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
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
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
    ]))
}
