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
    let skip_log = workspace_root().join("target/test-skips.log");
    let _ = std::fs::remove_file(&skip_log);
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast", "--"])
        .arg("--include-ignored")
        .args(args)
        .env("ROUTEBACKUP_BIN", &bin)
        .env("ROUTEBACKUP_SKIP_LOG", &skip_log)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    // Pass the output through and add up every test binary's result line.
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            tally.add(&line);
        }
    }
    let status = child.wait()?;
    let skips = read_skips(&skip_log);
    for (test, why) in &skips {
        println!("skipped {test}: {why}");
    }
    println!(
        "\ntests: {} passed, {} failed, {} skipped",
        tally.passed.saturating_sub(skips.len() as u64),
        tally.failed,
        tally.ignored + skips.len() as u64
    );
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// libtest's result lines added up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds `line` when it is a result line
    /// (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`).
    pub fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// The tests that skipped themselves for a feature the kernel lacks
/// (`routebackup_tests::needs`): (test, why), one line each in the log.
pub fn read_skips(log: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, w)| (t.to_string(), w.to_string()))
        .collect()
}
