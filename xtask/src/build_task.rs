//! `build`: the eBPF object and the agent that embeds it.

use anyhow::Result;

use crate::exec::{cargo, run, workspace_root};

pub fn build(release: bool) -> Result<()> {
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
