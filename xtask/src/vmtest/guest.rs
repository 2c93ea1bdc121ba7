//! One kernel's run: the script the guest (or the host) runs, booting the
//! guest with virtme-ng, and reading back what the script left.
//!
//! The guest sees this machine's root read-only (9p) and one writable
//! directory, the run's output directory: the script writes each test
//! binary's output, its exit code and time there, and `done` last, so a
//! guest that panicked, hung or ran out of time is told from one whose
//! tests failed.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::kernels::{Suite, Unpacked};
use super::{Accel, Outcome};
use crate::exec::workspace_root;
use crate::test::{read_skips, Tally};

/// Modules the tests need that Debian builds as modules (veth pairs, tun
/// devices, clsact and cls_bpf for TC over netlink).
const MODULES: &[&str] = &["veth", "tun", "sch_ingress", "cls_bpf"];

/// The longest one kernel's run may take before its guest is killed.
fn budget() -> Duration {
    let minutes = std::env::var("ROUTEBACKUP_VM_TIMEOUT_MIN")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(40);
    Duration::from_secs(60 * minutes)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the script into a fresh `out` and returns its path.
/// `module_root`: where the booted kernel's modules are (None on the host).
pub(super) fn script(
    out: &Path,
    module_root: Option<&Path>,
    time_scale: u32,
    binaries: &[(String, PathBuf)],
    args: &[String],
) -> Result<PathBuf> {
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let o = quote(&out.display().to_string());
    let mut s = format!(
        "#!/bin/sh\n# Written by `cargo xtask vmtest`: the matrix's tests on the running kernel.\n\
         uname -r > {o}/release\n"
    );
    if let Some(root) = module_root {
        s += &format!(
            "for m in {}; do modprobe -d {} $m >> {o}/modprobe.log 2>&1 || echo \"modprobe $m failed\" >> {o}/modprobe.log; done\n",
            MODULES.join(" "),
            quote(&root.display().to_string())
        );
    }
    let bin = workspace_root().join("target/debug/routebackup");
    s += &format!(
        "export ROUTEBACKUP_BIN={} ROUTEBACKUP_TEST_TIME_SCALE={time_scale} ROUTEBACKUP_SKIP_LOG={o}/skips\n\
         \"$ROUTEBACKUP_BIN\" kernel > {o}/kernel.txt 2>&1\n\
         cd {}\n",
        quote(&bin.display().to_string()),
        quote(&workspace_root().display().to_string())
    );
    // Emulated CPUs are few and slow: one test at a time keeps every
    // test's deadlines meaningful.
    let threads = if module_root.is_some() {
        " --test-threads 1"
    } else {
        ""
    };
    let extra: Vec<String> = args.iter().map(|a| quote(a)).collect();
    for (name, exe) in binaries {
        s += &format!(
            "s=$(date +%s)\n{} --include-ignored{threads} {} > {o}/{name}.log 2>&1\n\
             echo \"{name} $? $(( $(date +%s) - s ))\" >> {o}/results\n",
            quote(&exe.display().to_string()),
            extra.join(" ")
        );
    }
    s += &format!("echo done > {o}/done\n");
    let path = out.join("run.sh");
    std::fs::write(&path, s)?;
    Ok(path)
}

fn vng_command(vng: &Path, kernel: &Unpacked, accel: Accel, memory: &str) -> Command {
    let mut cmd = Command::new(vng);
    cmd.arg("--verbose")
        .arg("--run")
        .arg(&kernel.vmlinuz)
        // virtiofs needs a daemon per guest; 9p is in every kernel here.
        .arg("--force-9p")
        .args(["--memory", memory, "--cpus", "2"]);
    if accel == Accel::Tcg {
        cmd.arg("--disable-kvm");
    }
    // Its own process group, so qemu dies with it on a deadline.
    cmd.process_group(0);
    cmd
}

/// Runs `cmd` with stdout and stderr into `log`; false when it failed or
/// was killed at `deadline`.
fn run_until(cmd: &mut Command, log: &Path, deadline: Duration) -> Result<bool> {
    let file = std::fs::File::create(log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if started.elapsed() > deadline {
            // SAFETY: kill has no memory effects; the group is the child's own.
            unsafe { libc::kill(-child.id().cast_signed(), libc::SIGKILL) };
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether a guest with `kernel` boots and runs a command within `deadline`.
pub(super) fn boots(vng: &Path, cache: &Path, kernel: &Unpacked, deadline: Duration) -> bool {
    let dir = cache.join("run/kvm-probe");
    let _ = std::fs::create_dir_all(&dir);
    let mut cmd = vng_command(vng, kernel, Accel::Kvm, "1G");
    cmd.args(["--exec", "true"]);
    run_until(&mut cmd, &dir.join("console.log"), deadline).unwrap_or(false)
}

/// Boots `suite`'s kernel and runs the matrix in it.
pub(super) fn run(
    vng: &Path,
    cache: &Path,
    suite: &Suite,
    kernel: &Unpacked,
    accel: Accel,
    binaries: &[(String, PathBuf)],
    args: &[String],
) -> Result<Outcome> {
    let out = cache.join("run").join(suite.name);
    let script = script(
        &out,
        Some(&kernel.module_root),
        accel.time_scale(),
        binaries,
        args,
    )?;
    // The console goes beside, not into, the guest's writable directory.
    let console = cache
        .join("run")
        .join(format!("{}.console.log", suite.name));
    eprintln!(
        "xtask: booting {} ({}) under {}; console in {}",
        suite.name,
        kernel.release,
        accel.name(),
        console.display()
    );
    let mut cmd = vng_command(vng, kernel, accel, "4G");
    cmd.arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(format!("sh {}", script.display()));
    let deadline = budget();
    let exited = run_until(&mut cmd, &console, deadline)?;
    let mut outcome = collect(&out, suite.name, suite.shipped_by, Some(accel));
    if outcome.broken.is_some() {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let why = if exited {
            "the guest stopped before the tests ended"
        } else {
            "the guest failed or ran out of time"
        };
        outcome.broken = Some(format!(
            "{why} ({} min allowed; console {}):\n    {}",
            deadline.as_secs() / 60,
            console.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
        ));
    }
    Ok(outcome)
}

/// Reads what the script left in `out`.
pub(super) fn collect(
    out: &Path,
    kernel: &str,
    shipped_by: &'static str,
    accel: Option<Accel>,
) -> Outcome {
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut tally = Tally::default();
    let mut failed = Vec::new();
    for line in read("results").lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(code)) = (words.next(), words.next()) else {
            continue;
        };
        let log = read(&format!("{name}.log"));
        let before = tally;
        for l in log.lines() {
            tally.add(l);
            if let Some(test) = l
                .strip_prefix("test ")
                .and_then(|t| t.strip_suffix(" ... FAILED"))
            {
                failed.push(format!("{name}::{test}"));
            }
        }
        if code != "0" && tally.failed == before.failed {
            // A binary that died without a result line (a panic outside a
            // test, a signal) failed as a whole.
            tally.failed += 1;
            failed.push(format!("{name} (exit {code}, no test result)"));
        }
    }
    Outcome {
        kernel: kernel.to_string(),
        shipped_by,
        release: read("release").trim().to_string(),
        accel,
        tally,
        failed,
        skipped: read_skips(&out.join("skips")),
        broken: (!out.join("done").exists()).then(|| "the tests did not finish".to_string()),
        took: Duration::ZERO,
    }
}
