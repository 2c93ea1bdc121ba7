//! Builds the kernel programs (ebpf/) with aya-build for bpfel-unknown-none and
//! leaves the object in OUT_DIR, where `fastpath` embeds it. aya-build sets the
//! BTF flags (`-Cdebuginfo=2 -Clink-arg=--btf`) and reruns on any change under
//! ebpf/, so a stale object is never embedded.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    if skip {
        // Unit tests that never load BPF may skip the kernel build; the agent
        // then embeds an empty object and refuses to load it with a clear error.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("routebackup-ebpf");
        std::fs::write(&out, b"")?;
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
        aya_build::Toolchain::default(),
    )
}
