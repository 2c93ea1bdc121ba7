//! `bench`: the benchmark binaries of the tests crate, on a release build.

use anyhow::Result;

use crate::build_task::build;
use crate::exec::{cargo, require_root, run, workspace_root};

const BENCHES: &[(&str, &str)] = &[
    ("fastpath", "bench-fastpath"),
    ("routes", "bench-routes"),
    ("failover", "bench-failover"),
    ("live", "bench-live"),
];

pub fn bench(only: &[String]) -> Result<()> {
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
