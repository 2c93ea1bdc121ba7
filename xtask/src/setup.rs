//! `setup` installs what the build, the tests and the demo need (Debian
//! packages, the pinned nightly with rust-src, bpf-linker) and keeps the
//! host's routing daemons off; `ready` is the check `build` and `lint` run
//! instead, which never installs anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::exec::{require_root, run};
use crate::{PINNED_COMMIT, PINNED_LLVM_MAJOR, PINNED_NIGHTLY, PINNED_TOOLCHAIN};

/// Debian packages the build, the tests and the demo need, besides LLVM's
/// (`llvm_packages`).
const DEB_PACKAGES: &[&str] = &[
    // bpf-linker's build
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
    // runtime and tests
    "bpftool",
    "iproute2",
    "iputils-ping",
    "tcpdump",
    "ethtool",
    "procps",
    "util-linux",
    // routing daemons run inside the test namespaces (tests/tests/daemons.rs)
    "frr",
    "bird2",
];

/// Services of `DEB_PACKAGES` that Debian enables (and may start) on install:
/// the tests start their own daemons per namespace, never the host's.
/// (service, the pid file its host instance writes).
const HOST_SERVICES: &[(&str, &str)] = &[
    ("frr", "/run/frr/watchfrr.pid"),
    ("bird", "/run/bird/bird.pid"),
];

/// LLVM of the pinned nightly, which bpf-linker is built against.
fn llvm_packages() -> [String; 2] {
    [
        format!("llvm-{PINNED_LLVM_MAJOR}-dev"),
        format!("libpolly-{PINNED_LLVM_MAJOR}-dev"),
    ]
}

const BPF_LINKER_VERSION: &str = "0.13.0";

fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs what is missing; quick when everything is there.
pub fn setup() -> Result<()> {
    let llvm = llvm_packages();
    let wanted: Vec<&str> = DEB_PACKAGES
        .iter()
        .copied()
        .chain(llvm.iter().map(String::as_str))
        .collect();
    install_debs(&wanted)?;
    keep_host_services_off()?;

    setup_pinned_nightly()?;

    if !bpf_linker_ok() {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {PINNED_LLVM_MAJOR} (a few minutes, once)"
        );
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{PINNED_LLVM_MAJOR}"),
                ])
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{PINNED_LLVM_MAJOR}")),
        )?;
    }
    Ok(())
}

/// Installs those of `packages` that are missing (from the host's own
/// sources); quick when none is.
pub fn install_debs(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if !missing.is_empty() {
        require_root("installing Debian packages")?;
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

/// What `build` and `lint` need, checked without installing anything or
/// touching host services: those two run on a developer's box as it is.
pub fn ready() -> Result<()> {
    let mut missing = Vec::new();
    if !has_rust_src(PINNED_TOOLCHAIN) {
        missing.push(format!("the toolchain {PINNED_TOOLCHAIN} with rust-src"));
    }
    if !bpf_linker_ok() {
        missing.push(format!(
            "bpf-linker {BPF_LINKER_VERSION} built against LLVM {PINNED_LLVM_MAJOR}"
        ));
    }
    if !missing.is_empty() {
        bail!(
            "missing {}: run `cargo xtask setup` once (as root: it installs Debian packages)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Stops and disables the routing daemons' host services that the packages'
/// postinst enabled (and started, where no policy-rc.d forbids it): the
/// daemons belong in the test namespaces only. Quick when already off.
fn keep_host_services_off() -> Result<()> {
    let systemd_running = Path::new("/run/systemd/system").exists();
    for &(unit, pid_file) in HOST_SERVICES {
        // `is-enabled` reads the unit symlinks, with or without a running systemd.
        let enabled = Command::new("systemctl")
            .args(["is-enabled", "--quiet", unit])
            .status()
            .is_ok_and(|s| s.success());
        let sysv_enabled = std::fs::read_dir("/etc/rc2.d").is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy() == format!("S01{unit}"))
        });
        // The host instance's pid file, not a process name: the tests' own
        // daemons in their namespaces must not count.
        let running = std::fs::read_to_string(pid_file)
            .is_ok_and(|pid| Path::new(&format!("/proc/{}", pid.trim())).exists());
        if !(enabled || sysv_enabled || running) {
            continue;
        }
        require_root("disabling the host's routing daemon services")?;
        eprintln!("xtask: stopping and disabling the host service {unit} (the tests run their own daemons in namespaces)");
        if systemd_running {
            run(Command::new("systemctl").args(["disable", "--now", unit]))?;
        } else {
            if running {
                run(Command::new(format!("/etc/init.d/{unit}")).arg("stop"))?;
            }
            if enabled {
                run(Command::new("systemctl").args(["disable", "--quiet", unit]))?;
            }
            if sysv_enabled {
                run(Command::new("update-rc.d").args([unit, "disable"]))?;
            }
        }
    }
    Ok(())
}

/// bpf-linker is the wanted version and loads the pinned nightly's LLVM major.
fn bpf_linker_ok() -> bool {
    let version_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    // It links libLLVM dynamically (LLVM_PREFIX above): the library name gives the major.
    let llvm_ok = || {
        let Ok(path) = Command::new("sh")
            .args(["-c", "command -v bpf-linker"])
            .output()
        else {
            return false;
        };
        let path = String::from_utf8_lossy(&path.stdout).trim().to_string();
        Command::new("ldd").arg(&path).output().is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!("libLLVM.so.{PINNED_LLVM_MAJOR}"))
        })
    };
    version_ok && llvm_ok()
}

/// `rustc -vV` of a rustup toolchain, without letting rustup download it.
fn rustc_info(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_pinned_commit(info: &str) -> bool {
    info.lines()
        .any(|l| l.strip_prefix("commit-hash: ") == Some(PINNED_COMMIT))
}

/// Makes `PINNED_TOOLCHAIN` exist and be the pinned commit with rust-src.
///
/// It is a `rustup toolchain link` to the official `PINNED_NIGHTLY` or, when
/// the machine's `nightly` is exactly that commit, to that `nightly` (no
/// download). The existing toolchains are never changed or removed.
fn setup_pinned_nightly() -> Result<()> {
    let why = format!(
        "the kernel programs need {PINNED_NIGHTLY} (commit {PINNED_COMMIT}, LLVM \
         {PINNED_LLVM_MAJOR}): bpf-linker reads rustc's LLVM bitcode with its own LLVM \
         {PINNED_LLVM_MAJOR}, so the nightly is pinned in ebpf/nightly.rs"
    );
    if let Some(info) = rustc_info(PINNED_TOOLCHAIN) {
        if !is_pinned_commit(&info) {
            bail!(
                "{why}; the toolchain {PINNED_TOOLCHAIN} is another one:\n{}\nremove it with \
                 `rustup toolchain uninstall {PINNED_TOOLCHAIN}` and run `cargo xtask setup` again",
                info.trim()
            );
        }
        // A link made before rust-src was added: add it to the toolchain the
        // link points at (rustup cannot add components to a linked toolchain).
        if !has_rust_src(PINNED_TOOLCHAIN) {
            let linked = sysroot(PINNED_TOOLCHAIN);
            for candidate in [PINNED_NIGHTLY, "nightly"] {
                if linked.is_some() && sysroot(candidate) == linked {
                    eprintln!(
                        "xtask: adding rust-src to {candidate} (linked as {PINNED_TOOLCHAIN})"
                    );
                    run(Command::new("rustup").args([
                        "component",
                        "add",
                        "rust-src",
                        "--toolchain",
                        candidate,
                    ]))?;
                    break;
                }
            }
        }
        return require_rust_src();
    }

    // The source to link: the official nightly if present, else `nightly` if
    // it is the same commit, else download the official one.
    let mut found = Vec::new();
    let mut source = None;
    for candidate in [PINNED_NIGHTLY, "nightly"] {
        match rustc_info(candidate) {
            Some(info) if is_pinned_commit(&info) => {
                source = Some(candidate);
                break;
            }
            Some(info) => found.push(format!("{candidate}: {}", version_line(&info))),
            None => found.push(format!("{candidate}: not installed")),
        }
    }
    let source = match source {
        Some(s) => s,
        None => {
            eprintln!("xtask: installing {PINNED_NIGHTLY}");
            let installed = run(Command::new("rustup").args([
                "toolchain",
                "install",
                PINNED_NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src,clippy",
            ]));
            match installed {
                Ok(()) if rustc_info(PINNED_NIGHTLY).is_some_and(|i| is_pinned_commit(&i)) => {
                    PINNED_NIGHTLY
                }
                Ok(()) => bail!(
                    "{why}; rustup installed {PINNED_NIGHTLY} but it is not commit {PINNED_COMMIT}"
                ),
                Err(e) => bail!(
                    "{why}; found {}, and rustup could not install it ({e:#}): install \
                     {PINNED_NIGHTLY} (or a `nightly` of that commit) with rust-src, then run \
                     `cargo xtask setup` again",
                    found.join(", ")
                ),
            }
        }
    };
    // Whichever toolchain is linked must carry rust-src: a machine's own
    // `nightly` often comes without it (rustup's minimal profile).
    if !has_rust_src(source) {
        eprintln!("xtask: adding rust-src to {source}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", source]))?;
    }
    let root = sysroot(source).with_context(|| format!("cannot run rustc of {source}"))?;
    eprintln!(
        "xtask: naming {source} ({}) {PINNED_TOOLCHAIN}",
        root.display()
    );
    run(Command::new("rustup")
        .args(["toolchain", "link", PINNED_TOOLCHAIN])
        .arg(&root))?;
    require_rust_src()
}

fn version_line(info: &str) -> &str {
    info.lines().next().unwrap_or("rustc of unknown version")
}

/// The sysroot of a rustup toolchain, without letting rustup download it.
fn sysroot(toolchain: &str) -> Option<PathBuf> {
    let o = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// The standard library sources that `-Z build-std=core` compiles.
fn has_rust_src(toolchain: &str) -> bool {
    sysroot(toolchain).is_some_and(|s| {
        s.join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .is_file()
    })
}

fn require_rust_src() -> Result<()> {
    if !has_rust_src(PINNED_TOOLCHAIN) {
        bail!(
            "{PINNED_TOOLCHAIN} has no rust-src, which `-Z build-std=core` needs for the eBPF \
             target: add it to the toolchain it links to (`rustup component add rust-src \
             --toolchain {PINNED_NIGHTLY}`, or `--toolchain nightly` when it links to nightly)"
        );
    }
    Ok(())
}
