//! The kernel probe as operators meet it: `routebackup kernel` (table, JSON,
//! forcing, bad names), and the running agent's start-up line, `status` and
//! attachments with a feature forced off (TCX: TC then hangs off clsact as
//! a netlink filter, which `tc filter show` lists and a TCX link does not).
//!
//! Build the agent first: `cargo build -p routebackup` (or set ROUTEBACKUP_BIN).

use anyhow::{ensure, Context, Result};
use routebackup::kernel::{Feature, Kernel, Support};
use routebackup::status::{AttachmentReport, Via};
use routebackup_tests::agent::{one_group_config, Agent};
use routebackup_tests::{agent_bin, Netns};

fn kernel_cli(args: &[&str], env: &[(&str, &str)]) -> Result<std::process::Output> {
    let mut cmd = std::process::Command::new(agent_bin());
    cmd.arg("kernel")
        .args(args)
        .env_remove("ROUTEBACKUP_KERNEL_WITHOUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().context("running routebackup kernel")
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn routebackup_kernel_reports_what_the_probe_found_and_what_was_forced() -> Result<()> {
    // The JSON is the same answer the library's probe gives in this process.
    let out = kernel_cli(&["--json"], &[])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Kernel = serde_json::from_slice(&out.stdout)?;
    let host = Kernel::host();
    assert_eq!(cli.capabilities.len(), Feature::ALL.len());
    for f in Feature::ALL {
        assert_eq!(
            cli.support(f).usable(),
            host.has(f),
            "{f}: the CLI and the library disagree"
        );
        assert!(
            !matches!(cli.support(f), Support::Unknown { .. } | Support::Forced),
            "{f} was probed as root: {:?}",
            cli.support(f)
        );
    }

    // The table names each feature with the Linux that brought it, and for
    // each missing one what the kernel said and what it costs.
    let out = kernel_cli(&[], &[])?;
    let table = String::from_utf8(out.stdout)?;
    for f in Feature::ALL {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(f.name()))
            .with_context(|| format!("no line for {f} in\n{table}"))?;
        assert!(line.contains(&format!("(Linux {})", f.since())), "{line}");
        if !host.has(f) {
            assert!(table.contains(f.without()), "{f}'s cost missing:\n{table}");
        }
    }
    assert!(
        table.contains("the agent can run on this kernel"),
        "{table}"
    );

    // Forcing, by flag and by environment, and a name that is no feature.
    for (args, env) in [
        (vec!["--json", "--without", "tcx,xdp-features"], vec![]),
        (
            vec!["--json"],
            vec![("ROUTEBACKUP_KERNEL_WITHOUT", "tcx, xdp-features")],
        ),
    ] {
        let out = kernel_cli(&args, &env)?;
        let k: Kernel = serde_json::from_slice(&out.stdout)?;
        assert_eq!(k.support(Feature::Tcx), &Support::Forced);
        assert_eq!(k.support(Feature::XdpFeatures), &Support::Forced);
        assert_eq!(
            k.support(Feature::NexthopObjects),
            cli.support(Feature::NexthopObjects)
        );
    }
    let out = kernel_cli(&["--without", "xdp-meta"], &[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown feature \"xdp-meta\"") && err.contains("xdp-metadata"),
        "{err}"
    );

    // `check` says the same on stderr after the normalised config, and
    // refuses a kernel the agent cannot run on.
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("rb.toml");
    std::fs::write(&cfg, one_group_config("tc"))?;
    let check = |env: &[(&str, &str)]| -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(agent_bin());
        cmd.arg("check").arg("--config").arg(&cfg);
        cmd.env_remove("ROUTEBACKUP_KERNEL_WITHOUT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(cmd.output()?)
    };
    let out = check(&[])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("kernel {}:", host.release)), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[group]]"));
    let out = check(&[("ROUTEBACKUP_KERNEL_WITHOUT", "redirect-neigh")])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Linux 5.10 or later"), "{err}");

    // Without an essential feature the answer is no, with the oldest Linux.
    let out = kernel_cli(&["--without", "redirect-neigh"], &[])?;
    let table = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(1));
    assert!(table.contains("the agent cannot run here"), "{table}");
    assert!(table.contains("Linux 5.10 or later"), "{table}");
    Ok(())
}

fn lab(name: &str) -> Result<Netns> {
    let ns = Netns::new(name)?;
    ns.sh(
        "ip link set lo up && \
         ip link add lan0 type veth peer name lan0p && ip link set lan0p up && ip link set lan0 up && \
         ip link add bk0 type veth peer name bk0p && ip link set bk0p up && ip link set bk0 up",
    )?;
    Ok(ns)
}

/// lan0's attachment as status shows it.
fn lan0(status: &routebackup::control::StatusReport) -> Result<&AttachmentReport> {
    status
        .fastpath
        .as_ref()
        .and_then(|f| f.attachments.first())
        .context("status has no attachment")
}

/// How status says TC is attached to lan0.
fn tc_mechanism(status: &routebackup::control::StatusReport) -> Result<Via> {
    lan0(status)?
        .tc_mechanism
        .context("status names no TC mechanism")
}

/// Whether TC ingress of lan0 holds a netlink (clsact) filter.
fn netlink_tc_filter(ns: &Netns) -> Result<bool> {
    let out = ns.sh("tc filter show dev lan0 ingress 2>/dev/null || true")?;
    Ok(out.contains("rb_tc"))
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_agent_logs_and_reports_the_kernel_and_honours_a_forced_fallback() -> Result<()> {
    // As probed: TCX where the kernel has it (no netlink filter).
    let ns = lab("kp1")?;
    let agent = Agent::start(&ns, "", &one_group_config("tc"))?;
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("INFO") && l.contains(&format!("kernel {}:", Kernel::host().release)))
        .with_context(|| format!("no kernel line at start:\n{log}"))?;
    for f in Feature::ALL {
        assert!(line.contains(f.name()), "{f} missing from {line}");
    }
    let status = agent.status()?;
    let reported = status
        .fastpath
        .as_ref()
        .and_then(|f| f.kernel.clone())
        .context("status has no kernel")?;
    assert_eq!(&reported, Kernel::host());
    assert_eq!(
        netlink_tc_filter(&ns)?,
        !Kernel::host().has(Feature::Tcx),
        "TC is a netlink filter exactly where the kernel has no TCX"
    );
    let want = if Kernel::host().has(Feature::Tcx) {
        Via::Tcx
    } else {
        Via::Netlink
    };
    assert_eq!(
        tc_mechanism(&status)?,
        want,
        "status names the TC mechanism"
    );
    assert!(
        status.render().contains(&format!("tc {}", want.name())),
        "the human status names the TC mechanism"
    );
    drop(agent);

    // TCX forced off: said at start, shown in status, and TC hangs off clsact.
    let ns = lab("kp2")?;
    let agent = Agent::start_with(
        &ns,
        "ROUTEBACKUP_KERNEL_WITHOUT=tcx",
        "",
        &one_group_config("tc"),
    )?;
    let log = agent.log();
    assert!(log.contains("tcx (forced off)"), "{log}");
    assert!(
        log.contains("TC attached over netlink (not pinnable)"),
        "{log}"
    );
    let status = agent.status()?;
    let k = status
        .fastpath
        .as_ref()
        .and_then(|f| f.kernel.clone())
        .context("status has no kernel")?;
    assert_eq!(k.support(Feature::Tcx), &Support::Forced);
    assert_eq!(tc_mechanism(&status)?, Via::Netlink);
    assert!(
        netlink_tc_filter(&ns)?,
        "TCX forced off, yet no netlink TC filter"
    );
    drop(agent);

    // XDP links forced off: XDP goes on over netlink, as status says.
    let ns = lab("kp3")?;
    let config = one_group_config("auto");
    let agent = Agent::start_with(&ns, "ROUTEBACKUP_KERNEL_WITHOUT=xdp-link", "", &config)?;
    let status = agent.status()?;
    let a = lan0(&status)?;
    assert_eq!(a.xdp_mechanism, Some(Via::Netlink), "{a:?}");
    assert!(
        status.render().contains("xdp netlink"),
        "{}",
        status.render()
    );
    let link = ns.sh("ip -d link show dev lan0")?;
    assert!(link.contains("xdp"), "no XDP program on lan0: {link}");
    Ok(())
}
