//! `cargo xtask`: setup, build, test, vmtest, soak, bench, demo, lint, dist, a module
//! each; this file is the command line.
//!
//! `test`, `vmtest`, `bench`, `demo`, `soak` and `dist` run `setup` first, so each works
//! alone on a fresh Debian 12 machine as root; `build` and `lint` only check
//! that setup has run and never install anything or stop host services.

mod bench;
mod build_task;
mod demo;
mod dist;
mod exec;
mod lint;
mod setup;
mod test;
mod vmtest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "routebackup developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install every missing prerequisite (Debian packages, the pinned nightly, bpf-linker).
    Setup,
    /// Build the eBPF object and the agent (which embeds it).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit tests and the privileged network-namespace tests (needs root).
    Test {
        /// Extra arguments for the test binaries (e.g. a name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The kernel matrix: the kernel-dependent privileged tests on Debian's
    /// 5.10, 6.1 and 6.12 kernels (booted with qemu) and on the host's (needs root).
    Vmtest {
        /// 5.10, 6.1, 6.12, host or all (the default); may be repeated.
        #[arg(long = "kernel", value_delimiter = ',')]
        kernels: Vec<String>,
        /// Extra arguments for the test binaries (e.g. a name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and print their tables (needs root).
    Bench {
        /// Only these benches: fastpath, routes, failover, live.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Build a lab of network namespaces and show a failover end to end (needs root).
    Demo {
        /// Leave the lab running for exploring with `routebackup status` and bpftool.
        #[arg(long)]
        keep: bool,
    },
    /// The route-truth differential test at length (needs root): random kernel
    /// changes, the agent's picture compared with the kernel's after each.
    Soak {
        /// Steps per seed (4 seeds); `cargo xtask test` runs 500.
        #[arg(long, default_value_t = 5000)]
        steps: u32,
        /// Added to the 4 built-in seeds, for a different sequence.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// cargo fmt --check and cargo clippy -D warnings on host and kernel crates.
    Lint,
    /// Release build, man page, shell completions and a .deb in target/dist/.
    Dist,
}

// At the crate root so that `setup`, which provides this nightly, and `lint`,
// which checks the kernel crate with it, both see the constants.
include!("../../ebpf/nightly.rs");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::setup(),
        Task::Build { release } => setup::ready().and_then(|()| build_task::build(release)),
        Task::Test { args } => setup::setup().and_then(|()| test::test(&args)),
        Task::Vmtest { kernels, args } => {
            setup::setup().and_then(|()| vmtest::vmtest(&kernels, &args))
        }
        Task::Bench { only } => setup::setup().and_then(|()| bench::bench(&only)),
        Task::Demo { keep } => setup::setup().and_then(|()| demo::demo(keep)),
        Task::Soak { steps, seed } => setup::setup().and_then(|()| test::soak(steps, seed)),
        Task::Lint => setup::ready().and_then(|()| lint::lint()),
        Task::Dist => setup::setup().and_then(|()| dist::dist()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
