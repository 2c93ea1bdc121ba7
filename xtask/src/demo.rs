//! `demo`: a lab of network namespaces showing a failover end to end.

use anyhow::Result;

use crate::build_task::build;
use crate::exec::{cargo, require_root, run, workspace_root};

pub fn demo(keep: bool) -> Result<()> {
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
