//! Builds the kernel programs (ebpf/) with aya-build for bpfel-unknown-none and
//! leaves the object in OUT_DIR, where `fastpath` embeds it. aya-build sets the
//! BTF flags (`-Cdebuginfo=2 -Clink-arg=--btf`) and reruns on any change under
//! ebpf/, so a stale object is never embedded.
use std::process::Command;

use anyhow::{bail, Context as _};

include!("../ebpf/nightly.rs");

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        // Unit tests that never load BPF may skip the kernel build; the agent
        // then embeds an empty object and refuses to load it with a clear error.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("routebackup-ebpf");
        std::fs::write(&out, b"")?;
    } else {
        check_pinned_nightly()?;
    }
    // aya-build forwards everything the inner cargo prints as build warnings;
    // keep only real compiler messages (errors and warnings still come through).
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "routebackup-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(PINNED_TOOLCHAIN),
    )
}

/// Fails early, saying what to do, when the pinned toolchain is missing or is
/// no longer the pinned commit (aya-build would only say that `rustc -vV`
/// failed, or build bitcode bpf-linker cannot read).
fn check_pinned_nightly() -> anyhow::Result<()> {
    let need = format!(
        "the kernel programs are built with the rustup toolchain {PINNED_TOOLCHAIN} \
         ({PINNED_NIGHTLY}, commit {PINNED_COMMIT}, LLVM {PINNED_LLVM_MAJOR}, the LLVM \
         bpf-linker is built against)"
    );
    let out = Command::new("rustup")
        .args(["run", PINNED_TOOLCHAIN, "rustc", "-vV"])
        // Never download from a build script: `cargo xtask setup` provides it.
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .with_context(|| format!("cannot run rustup: {need}; install rustup"))?;
    if !out.status.success() {
        bail!(
            "{need}, but rustup cannot run it ({}): run `cargo xtask setup`",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let info = String::from_utf8_lossy(&out.stdout);
    if !info
        .lines()
        .any(|l| l.strip_prefix("commit-hash: ") == Some(PINNED_COMMIT))
    {
        bail!(
            "{need}, but {PINNED_TOOLCHAIN} is now:\n{}\nrun `rustup toolchain uninstall \
             {PINNED_TOOLCHAIN}` and `cargo xtask setup`",
            info.trim()
        );
    }
    Ok(())
}
