//! `test`, whose last line (`tests: N passed, N failed, N skipped`) sums
//! every test binary's result line for CI, and `soak`, the route-truth
//! differential test at length.

use anyhow::{bail, Context, Result};

use crate::build_task::build;
use crate::exec::{cargo, require_root, run, workspace_root};

pub fn soak(steps: u32, seed: u64) -> Result<()> {
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

pub fn test(args: &[String]) -> Result<()> {
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
