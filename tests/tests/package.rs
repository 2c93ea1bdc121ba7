//! The Debian package `cargo xtask dist` builds: installed with `dpkg -i`
//! on this machine, its example config passes `routebackup check`, its man
//! page is found by `man -w`, its rt_protos.d entry names protocol 252; then
//! purged, leaving the machine as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

const PACKAGE: &str = "routebackup";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Runs `program args`; its stdout, or an error with what it said.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", PACKAGE])
        .is_ok_and(|s| s.contains("installed") && !s.contains("not-installed"))
}

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if let Err(e) = run("dpkg", &["--purge", PACKAGE]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// The newest .deb in target/dist/.
fn package_file() -> Result<PathBuf> {
    let dir = workspace().join("target/dist");
    let mut debs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("no {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    debs.sort();
    debs.pop()
        .map(|(_, p)| p)
        .with_context(|| format!("no .deb in {}", dir.display()))
}

#[test]
#[ignore = "needs root and dpkg: run with cargo xtask test"]
fn deb_installs_checks_and_purges_cleanly() -> Result<()> {
    ensure!(
        !installed(),
        "{PACKAGE} is already installed here; this test installs and purges it, so it refuses to run"
    );
    // Build (or bring up to date) the package from this tree. The xtask
    // binary `cargo xtask test` runs from is called directly: `cargo run`
    // would wait for the debug build directory, which the running `cargo
    // test` may hold. (dist builds in release/, a directory of its own.)
    let xtask = workspace().join("target/debug/xtask");
    let mut dist = if xtask.is_file() {
        Command::new(&xtask)
    } else {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.arg("xtask");
        c
    };
    let status = dist
        .arg("dist")
        .current_dir(workspace())
        .status()
        .context("cannot run xtask dist")?;
    ensure!(status.success(), "cargo xtask dist failed: {status}");
    let deb = package_file()?;
    let deb = deb.to_str().context("package path is not UTF-8")?;

    // Every file the package holds must be new to this machine, so that
    // purging it leaves the machine as it was.
    let contents = run("dpkg-deb", &["--contents", deb])?;
    let files: Vec<String> = contents
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    for f in &files {
        ensure!(!Path::new(f).exists(), "{f} exists before the install");
    }
    for want in [
        "/usr/bin/routebackup",
        "/lib/systemd/system/routebackup.service",
        "/etc/routebackup/routebackup.toml",
        "/etc/iproute2/rt_protos.d/routebackup.conf",
        "/usr/share/man/man1/routebackup.1.gz",
        "/usr/share/man/man1/routebackup-run.1.gz",
        "/usr/share/bash-completion/completions/routebackup",
        "/usr/share/zsh/vendor-completions/_routebackup",
        "/usr/share/fish/vendor_completions.d/routebackup.fish",
    ] {
        ensure!(
            files.iter().any(|f| f == want),
            "{want} not in the package:\n{contents}"
        );
    }

    let purge = Purge;
    run("dpkg", &["-i", deb])?;
    let conffiles = run("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE])?;
    ensure!(
        conffiles.contains("/etc/routebackup/routebackup.toml"),
        "the example config is not a conffile: {conffiles:?}"
    );
    // The unit runs the binary the package installed.
    let unit = std::fs::read_to_string("/lib/systemd/system/routebackup.service")?;
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|cmd| cmd.split_whitespace().next())
        .context("the unit has no ExecStart")?;
    ensure!(exec == "/usr/bin/routebackup", "the unit runs {exec}");
    let normalised = run("/usr/bin/routebackup", &["check"])?;
    ensure!(normalised.contains("[[group]]"), "{normalised}");
    for (page, file) in [
        (PACKAGE, "/usr/share/man/man1/routebackup.1.gz"),
        (
            "routebackup-run",
            "/usr/share/man/man1/routebackup-run.1.gz",
        ),
    ] {
        let man = run("man", &["-w", page])?;
        ensure!(man.trim() == file, "man -w {page}: {man}");
    }
    // iproute2 reads the name of protocol 252 from rt_protos.d.
    let proto = run(
        "ip",
        &["route", "show", "table", "all", "proto", "routebackup"],
    );
    ensure!(
        proto.is_ok(),
        "ip does not know protocol routebackup: {proto:?}"
    );
    let completion = run(
        "bash",
        &[
            "-c",
            ". /usr/share/bash-completion/completions/routebackup && complete -p routebackup",
        ],
    )?;
    ensure!(completion.contains("routebackup"), "{completion}");

    drop(purge);
    ensure!(!installed(), "{PACKAGE} is still installed after the purge");
    for f in &files {
        ensure!(!Path::new(f).exists(), "{f} is left after the purge");
    }
    ensure!(
        !Path::new("/etc/routebackup").exists(),
        "/etc/routebackup is left after the purge"
    );
    Ok(())
}
