//! `lint`: fmt and clippy on the host crates, clippy on the kernel crate.

use std::process::Command;

use anyhow::Result;

use crate::exec::{cargo, run, workspace_root};
use crate::PINNED_TOOLCHAIN;

pub fn lint() -> Result<()> {
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
