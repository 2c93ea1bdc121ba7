// The nightly toolchain that builds the kernel crate, pinned to one commit.
// Included (`include!`) by agent/build.rs, which builds the kernel crate with
// it, and by xtask, whose `setup` provides it and whose `lint` checks with it.
//
// Why a pin rather than whatever `nightly` is: rustc hands bpf-linker LLVM
// bitcode, and bpf-linker reads it with the LLVM it was built against. A newer
// nightly on a newer LLVM major emits bitcode that bpf-linker cannot read, so
// the nightly and bpf-linker's LLVM move together, deliberately, here.

/// The rustup toolchain name the eBPF build runs under (`rustup run <name>`).
/// `cargo xtask setup` creates it as a link to `PINNED_NIGHTLY` (or to a
/// `nightly` that is exactly that commit); rustup reserves official names
/// such as `nightly-2026-05-20` for toolchains it downloads itself.
const PINNED_TOOLCHAIN: &str = "routebackup-nightly-2026-05-20";
/// The official nightly of that commit, as `rustup toolchain install` names it.
const PINNED_NIGHTLY: &str = "nightly-2026-05-20";
/// `commit-hash` that `rustc -vV` of the pinned nightly prints.
const PINNED_COMMIT: &str = "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a";
/// LLVM major of the pinned nightly; bpf-linker must be built against it.
const PINNED_LLVM_MAJOR: u32 = 22;
