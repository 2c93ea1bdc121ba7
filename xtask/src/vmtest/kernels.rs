//! Debian's kernels for the matrix: fetched as the distribution ships them
//! (the `linux-image-amd64` of each suite), through a private apt
//! configuration, so the host's sources, lists and installed packages stay
//! untouched; unpacked once into the cache with their modules indexed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::exec::run;

/// A kernel of the matrix.
pub struct Suite {
    /// What `--kernel` takes and the report prints.
    pub name: &'static str,
    /// Debian's suite whose `linux-image-amd64` it is.
    pub codename: &'static str,
    /// Which boxes run it, for the report.
    pub shipped_by: &'static str,
}

pub const SUITES: &[Suite] = &[
    Suite {
        name: "5.10",
        codename: "bullseye",
        shipped_by: "Debian 11",
    },
    Suite {
        name: "6.1",
        codename: "bookworm",
        shipped_by: "Debian 12, OpenWrt 23/24",
    },
    Suite {
        name: "6.12",
        codename: "trixie",
        shipped_by: "Debian 13",
    },
];

/// Signs every Debian suite; Debian 12 ships it with apt.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org/debian";

/// An unpacked kernel package.
pub struct Unpacked {
    /// `uname -r` of the kernel, e.g. `6.1.0-50-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// What `modprobe -d` takes: the directory holding `lib/modules/<release>`
    /// (trixie puts modules under `usr/`).
    pub module_root: PathBuf,
}

/// apt with its own sources, lists and cache under `dir`: only `suite`.
fn private_apt(dir: &Path, suite: &str, program: &str) -> Result<Command> {
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    std::fs::create_dir_all(lists.join("partial"))?;
    std::fs::create_dir_all(cache.join("archives/partial"))?;
    let sources = dir.join("sources.list");
    std::fs::write(
        &sources,
        format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"),
    )?;
    let mut cmd = Command::new(program);
    for (key, value) in [
        ("Dir::Etc::sourcelist", sources.as_path()),
        ("Dir::Etc::sourceparts", Path::new("-")),
        ("Dir::State::Lists", lists.as_path()),
        ("Dir::Cache", cache.as_path()),
    ] {
        cmd.arg("-o").arg(format!("{key}={}", value.display()));
    }
    // The cache is root's; apt's unprivileged download user cannot write it.
    cmd.args(["-o", "APT::Sandbox::User=root"]);
    cmd.current_dir(dir);
    Ok(cmd)
}

/// Fetches and unpacks `suite`'s kernel under `cache` unless done before.
pub fn fetch(cache: &Path, suite: &Suite) -> Result<Unpacked> {
    let dir = cache.join(suite.codename);
    let done = dir.join("unpacked");
    if let Ok(release) = std::fs::read_to_string(&done) {
        if let Some(found) = locate(&dir.join("root"), release.trim()) {
            return Ok(found);
        }
    }
    eprintln!(
        "xtask: fetching the kernel of Debian {} ({})",
        suite.codename, suite.name
    );
    run(private_apt(&dir, suite.codename, "apt-get")?.args(["update", "-q"]))?;
    // The metapackage names the suite's current kernel package.
    let out = private_apt(&dir, suite.codename, "apt-cache")?
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("cannot run apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(package) = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
    else {
        bail!(
            "Debian {}'s linux-image-amd64 names no kernel package; apt-cache said:\n{text}{}",
            suite.codename,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let release = package.trim_start_matches("linux-image-").to_string();
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    for old in std::fs::read_dir(&debs)?.flatten() {
        std::fs::remove_file(old.path())?;
    }
    run(private_apt(&dir, suite.codename, "apt-get")?
        .args(["download", "-q", &package])
        .current_dir(&debs))?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb of {package}"))?;
    let root = dir.join("root");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let found = locate(&root, &release)
        .with_context(|| format!("{} holds no vmlinuz-{release} or modules", deb.display()))?;
    // The package leaves the module index to its postinst, which never ran.
    run(Command::new("depmod")
        .arg("-b")
        .arg(&found.module_root)
        .arg(&release))?;
    std::fs::write(&done, &release)?;
    Ok(found)
}

fn locate(root: &Path, release: &str) -> Option<Unpacked> {
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let module_root = [root.to_path_buf(), root.join("usr")]
        .into_iter()
        .find(|r| r.join("lib/modules").join(release).is_dir())?;
    vmlinuz.is_file().then(|| Unpacked {
        release: release.to_string(),
        vmlinuz,
        module_root,
    })
}
