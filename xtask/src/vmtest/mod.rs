//! `vmtest`: the kernel matrix. The privileged tests whose outcome depends
//! on the kernel run on Debian's kernels (5.10, 6.1, 6.12), each booted with
//! qemu over this machine's root (virtme-ng), and on the host's own kernel;
//! one report line per kernel.
//!
//! - Kernels are Debian's packages, fetched through a private apt
//!   configuration (`kernels`) into [`CACHE`], which outlives clones.
//! - The guest runs a script (`guest`) that loads the kernel's own modules
//!   (`modprobe -d`, nothing is installed on the host), runs each test
//!   binary and leaves its output and result in a directory shared with the
//!   host. Console output is kept beside it for when a guest dies.
//! - KVM where it boots, TCG otherwise: the first guest of a run tries KVM
//!   with a short deadline (on this machine kind KVM guests hang after
//!   decompression). Under TCG everything is 10-40 times slower, so the
//!   tests' deadlines are stretched (`ROUTEBACKUP_TEST_TIME_SCALE`); what
//!   they measure (loss, order, which path) is not.
//! - Tests that need what a kernel lacks skip themselves, naming the feature
//!   (`routebackup_tests::needs`, answered by the agent's probe); the report
//!   lists them.

mod guest;
mod kernels;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build_task::build;
use crate::exec::{cargo, require_root, run, workspace_root};
use crate::setup::install_debs;
use crate::test::Tally;
use kernels::SUITES;

/// Where kernels, virtme-ng and the runs' output live: outside the clone, so
/// a fresh clone on the same machine fetches nothing again. Not under
/// /var/cache: virtme-ng mounts a tmpfs there in the guest.
const CACHE: &str = "/var/lib/routebackup-vmtest";

/// The test binaries of the matrix: those whose outcome depends on the
/// kernel (attachment mechanisms, program loading, adoption after a crash,
/// the XDP fallback, route and nexthop dumps, steering on the wire). The
/// others (config, engine, hooks, metrics, reload, the failover lab's
/// engine timings, the routing daemons' and the package's tests) exercise
/// nothing a kernel version changes beyond what these cover, and run on the
/// host only, in `cargo xtask test`: under emulation (10-40 times slower)
/// they would cost most of CI's hour and prove nothing more.
const MATRIX_TESTS: &[&str] = &[
    "kernel",
    "fastpath_progs",
    "fastpath_netns",
    "crash",
    "xdp_fallback",
    "watcher_netns",
];

/// virtme-ng, pinned: its command line and guest init change between releases.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// How a guest is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }

    /// How much longer the tests may wait for anything: KVM guests are a
    /// little slower than the host, TCG ones 10-40 times.
    fn time_scale(self) -> u32 {
        match self {
            Accel::Kvm => 3,
            Accel::Tcg => 30,
        }
    }
}

/// One kernel's outcome.
struct Outcome {
    kernel: String,
    shipped_by: &'static str,
    release: String,
    accel: Option<Accel>,
    tally: Tally,
    failed: Vec<String>,
    skipped: Vec<(String, String)>,
    /// A guest that died, hung or never ran the tests.
    broken: Option<String>,
    took: Duration,
}

pub fn vmtest(selection: &[String], args: &[String]) -> Result<()> {
    require_root("the kernel matrix (qemu, network namespaces, BPF)")?;
    let chosen = choose(selection)?;
    let cache = PathBuf::from(CACHE);
    std::fs::create_dir_all(&cache)?;
    let vng = if chosen.iter().any(|k| k != "host") {
        Some(vm_setup(&cache)?)
    } else {
        None
    };
    build(false)?;
    let binaries = test_binaries()?;
    let mut outcomes = Vec::new();
    let mut accel = std::env::var("ROUTEBACKUP_VM_ACCEL")
        .ok()
        .map(|a| match a.as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => bail!("ROUTEBACKUP_VM_ACCEL={a}: say kvm or tcg"),
        })
        .transpose()?;
    for name in &chosen {
        let started = Instant::now();
        let outcome = if name == "host" {
            run_on_host(&cache, &binaries, args)?
        } else {
            let suite = SUITES
                .iter()
                .find(|s| s.name == name)
                .expect("choose() accepts only known kernels");
            let unpacked = kernels::fetch(&cache.join("kernels"), suite)?;
            let vng = vng.as_deref().expect("vm_setup ran for a guest kernel");
            let accel = *accel.get_or_insert_with(|| probe_kvm(vng, &cache, &unpacked));
            let first = guest::run(vng, &cache, suite, &unpacked, accel, &binaries, args)?;
            match &first.broken {
                // A guest whose kernel died (seen once: an int3 oops in the
                // XDP dispatcher of 6.12 under TCG) says nothing about the
                // tests it did not run: boot it once more, and say so.
                Some(why) if first.tally.failed == 0 => {
                    println!("\nkernel {name}: the guest broke ({why});\n  booting it once more");
                    guest::run(vng, &cache, suite, &unpacked, accel, &binaries, args)?
                }
                _ => first,
            }
        };
        let outcome = Outcome {
            took: started.elapsed(),
            ..outcome
        };
        print_outcome(&outcome);
        outcomes.push(outcome);
    }
    print_table(&outcomes);
    let bad: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.broken.is_some() || o.tally.failed > 0 || o.tally.passed == 0)
        .map(|o| o.kernel.as_str())
        .collect();
    if !bad.is_empty() {
        bail!("the kernel matrix failed on {}", bad.join(", "));
    }
    Ok(())
}

/// `--kernel` values, in the order they run; `all` (the default) is every
/// Debian kernel, oldest first, then the host.
fn choose(selection: &[String]) -> Result<Vec<String>> {
    let every = || {
        SUITES
            .iter()
            .map(|s| s.name.to_string())
            .chain(["host".to_string()])
    };
    if selection.is_empty() || selection.iter().any(|s| s == "all") {
        return Ok(every().collect());
    }
    for s in selection {
        if !every().any(|k| &k == s) {
            bail!(
                "unknown kernel {s:?}: say one of {}, host or all",
                SUITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(selection.to_vec())
}

/// qemu, busybox (virtme-ng's guest init) and depmod from Debian; virtme-ng
/// from PyPI into its own virtualenv in the cache, so no system Python is
/// touched. Returns the `vng` to run.
fn vm_setup(cache: &Path) -> Result<PathBuf> {
    install_debs(&["qemu-system-x86", "busybox-static", "kmod"])?;
    let venv = cache.join("venv");
    let vng = venv.join("bin/vng");
    let pinned = venv.join(format!("{VIRTME_NG}.installed"));
    if !pinned.exists() {
        eprintln!("xtask: installing {VIRTME_NG} into {}", venv.display());
        let python = ["python3", "/usr/bin/python3"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .args(["-c", "import venv, ensurepip"])
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .context("no python3 with venv and ensurepip: install python3-venv")?;
        run(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", VIRTME_NG]))?;
        std::fs::write(&pinned, "")?;
    }
    Ok(vng)
}

/// Tries one short KVM boot; TCG when it does not come back in time.
fn probe_kvm(vng: &Path, cache: &Path, kernel: &kernels::Unpacked) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("xtask: no /dev/kvm: guests run under TCG (slow)");
        return Accel::Tcg;
    }
    let ok = guest::boots(vng, cache, kernel, Duration::from_mins(1));
    if ok {
        eprintln!("xtask: KVM boots guests: using it");
        Accel::Kvm
    } else {
        eprintln!("xtask: a KVM guest did not come back within 60 s: guests run under TCG (10-40 times slower; the tests' deadlines are stretched)");
        Accel::Tcg
    }
}

/// (name, path) of the matrix's test binaries, built now.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = cargo()
        .args([
            "test",
            "--package",
            "routebackup-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["kind"][0] == "test"
            && MATRIX_TESTS.contains(&name)
        {
            if let Some(exe) = msg["executable"].as_str() {
                found.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }
    found.sort_by_key(|(name, _)| MATRIX_TESTS.iter().position(|t| t == name));
    if found.len() != MATRIX_TESTS.len() {
        bail!(
            "cargo built {} of the {} matrix test binaries",
            found.len(),
            MATRIX_TESTS.len()
        );
    }
    Ok(found)
}

/// The same binaries on this machine's kernel, with the same script.
fn run_on_host(cache: &Path, binaries: &[(String, PathBuf)], args: &[String]) -> Result<Outcome> {
    let out = cache.join("run/host");
    let script = guest::script(&out, None, 1, binaries, args)?;
    let status = Command::new("sh")
        .arg(&script)
        .current_dir(workspace_root())
        .status()
        .context("cannot run the matrix script")?;
    let mut outcome = guest::collect(&out, "host", "this machine", None);
    if !status.success() && outcome.broken.is_none() {
        outcome.broken = Some(format!("the script failed: {status}"));
    }
    Ok(outcome)
}

fn print_outcome(o: &Outcome) {
    println!(
        "\nkernel {} ({}), {}: {} passed, {} failed, {} skipped in {:.1} min",
        o.kernel,
        o.release,
        o.accel.map_or("host", Accel::name),
        o.tally.passed.saturating_sub(o.skipped.len() as u64),
        o.tally.failed,
        o.tally.ignored + o.skipped.len() as u64,
        o.took.as_secs_f64() / 60.0
    );
    for f in &o.failed {
        println!("  FAILED {f}");
    }
    for (t, why) in &o.skipped {
        println!("  skipped {t}: {why}");
    }
    if let Some(b) = &o.broken {
        println!("  BROKEN: {b}");
    }
}

fn print_table(outcomes: &[Outcome]) {
    println!("\n| kernel | shipped by | release | run | passed | failed | skipped | minutes |");
    println!("|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            o.kernel,
            o.shipped_by,
            o.release,
            match o.accel {
                Some(Accel::Kvm) => "qemu, KVM",
                Some(Accel::Tcg) => "qemu, TCG",
                None => "host",
            },
            o.tally.passed.saturating_sub(o.skipped.len() as u64),
            o.tally.failed + u64::from(o.broken.is_some()),
            o.tally.ignored + o.skipped.len() as u64,
            o.took.as_secs_f64() / 60.0
        );
    }
}
