//! Link drivers and kernel routes, run in-process inside a fresh network
//! namespace (a dedicated thread that entered the namespace and runs a
//! current-thread tokio runtime; the processes it spawns inherit the namespace).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use routebackup::config::{DriverConfig, LinkConfig};
use routebackup::dataplane::kernel_routes::{KernelRoutes, RTPROT_ROUTEBACKUP};
use routebackup::ids::LinkId;
use routebackup::links::driver::always_up::AlwaysUp;
use routebackup::links::driver::command::Command;
use routebackup::links::driver::interface::Interface;
use routebackup::links::driver::pppd::Pppd;
use routebackup::links::{DriverEvent, DriverState, LinkDrivers, Timeouts};
use routebackup_tests::Netns;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Runs `f` on a thread inside `ns` with a current-thread runtime.
fn in_netns<F, Fut>(ns: &Netns, f: F) -> Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>>,
{
    let path = ns.path();
    std::thread::spawn(move || -> Result<()> {
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on a valid namespace fd affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })
    .join()
    .map_err(|_| anyhow!("netns thread panicked"))?
}

fn link(name: &str, interface: &str, driver: DriverConfig) -> LinkConfig {
    LinkConfig {
        name: name.into(),
        interface: interface.into(),
        driver,
        gateway_v4: None,
        gateway_v6: None,
        require_address: false,
        up_timeout: Duration::from_secs(10),
        retry_interval: Duration::from_secs(5),
        kernel_routes: false,
        route_metric: 1024,
        verify: None,
        prearm: true,
    }
}

fn command(up: &[&str], down: &[&str]) -> DriverConfig {
    DriverConfig::Command(Command {
        up: up.iter().map(ToString::to_string).collect(),
        down: down.iter().map(ToString::to_string).collect(),
    })
}

fn quick() -> Timeouts {
    Timeouts {
        term_grace: Duration::from_millis(500),
        down_command: Duration::from_secs(5),
    }
}

fn drivers(links: &[LinkConfig], pid_dir: &Path) -> (LinkDrivers, UnboundedReceiver<DriverEvent>) {
    let (tx, rx) = unbounded_channel();
    (
        LinkDrivers::with_options(&links.to_vec().into(), tx, quick(), pid_dir.to_path_buf()),
        rx,
    )
}

/// The next failure report (finished `down`s are skipped).
async fn next_failure(rx: &mut UnboundedReceiver<DriverEvent>) -> Result<(usize, String)> {
    next_failure_of(rx)
        .await
        .map(|(link, _, error)| (link, error))
}

/// The next failure report with its attempt id.
async fn next_failure_of(rx: &mut UnboundedReceiver<DriverEvent>) -> Result<(usize, u64, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(DriverEvent::Failed {
                link,
                attempt,
                error,
            })) => return Ok((link.index(), attempt, error)),
            Ok(Some(DriverEvent::Released { .. })) => {}
            Ok(None) => bail!("report channel closed"),
            Err(_) => bail!("no failure reported within 10 s"),
        }
    }
}

/// No failure reported within `wait` (finished `down`s are fine).
async fn no_report(rx: &mut UnboundedReceiver<DriverEvent>, wait: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(DriverEvent::Released { .. })) => {}
            Ok(Some(r)) => bail!("unexpected report {r:?}"),
            _ => return Ok(()),
        }
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out waiting for {what}")
}

/// 1 if `name` is administratively up, 0 if down, None if it does not exist
/// (asked with `ip`, which runs in this thread's namespace; /sys would show
/// the namespace of whoever mounted it).
fn if_flags(name: &str) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show", "dev", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let flags = v.get(0)?.get("flags")?.as_array()?.clone();
    Some(u32::from(flags.iter().any(|f| f == "UP")))
}

fn if_exists(name: &str) -> bool {
    if_flags(name).is_some()
}

fn sh(cmd: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True if `pid` no longer runs (gone, or a zombie waiting for a reaper that is not us).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// True if `pid` is gone from /proc entirely (exited and reaped: no zombie).
fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn running_pid(d: &LinkDrivers, link: usize) -> Option<u32> {
    match d.state(LinkId(link)) {
        DriverState::Running { pid } => Some(pid),
        _ => None,
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn interface_driver_toggles_admin_state() -> Result<()> {
    let ns = Netns::new("lif")?;
    ns.sh("ip link add wan1 type veth peer name wan1p")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    in_netns(&ns, move || async move {
        let links = [
            link("wan", "wan1", DriverConfig::Interface(Interface)),
            link("lte", "wwan0", DriverConfig::Interface(Interface)),
            link("hot", "wan1", DriverConfig::AlwaysUp(AlwaysUp)),
        ];
        let (d, mut rx) = drivers(&links, &dir);
        assert_eq!(if_flags("wan1"), Some(0), "wan1 starts down");
        d.up(LinkId(0), 1, "hq");
        d.settle(LinkId(0)).await;
        assert_eq!(
            if_flags("wan1"),
            Some(1),
            "up sets wan1 administratively up"
        );
        assert_eq!(d.state(LinkId(0)), DriverState::Up);

        // always-up never takes its interface down.
        d.up(LinkId(2), 1, "hq");
        d.down(LinkId(2));
        d.settle(LinkId(2)).await;
        assert_eq!(if_flags("wan1"), Some(1), "always-up leaves wan1 up");
        assert_eq!(d.state(LinkId(2)), DriverState::Up);

        d.down(LinkId(0));
        d.settle(LinkId(0)).await;
        assert_eq!(
            if_flags("wan1"),
            Some(0),
            "down sets wan1 administratively down"
        );
        assert_eq!(d.state(LinkId(0)), DriverState::Idle);
        no_report(&mut rx, Duration::from_millis(100)).await?;

        d.up(LinkId(1), 1, "hq");
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 1);
        assert_eq!(error, "interface wwan0 does not exist");
        d.shutdown(false).await;
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn command_driver_runs_up_and_down_with_environment() -> Result<()> {
    let ns = Netns::new("lcmd")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let env_file = dir.join("env");
    in_netns(&ns, move || async move {
        let up = format!(
            "ip link add $ROUTEBACKUP_INTERFACE type veth peer name dialp && \
             echo \"$ROUTEBACKUP_LINK $ROUTEBACKUP_GROUP $ROUTEBACKUP_INTERFACE\" > {}",
            env_file.display()
        );
        let links = [link(
            "dial",
            "dial0",
            command(&["/bin/sh", "-c", &up], &["ip", "link", "del", "dial0"]),
        )];
        let (d, mut rx) = drivers(&links, &dir);
        d.up(LinkId(0), 1, "hq");
        wait_for("the up command to finish", || {
            d.state(LinkId(0)) == DriverState::Up
        })
        .await?;
        assert!(if_exists("dial0"), "up created dial0");
        assert_eq!(std::fs::read_to_string(&env_file)?.trim(), "dial hq dial0");
        d.down(LinkId(0));
        d.settle(LinkId(0)).await;
        assert!(!if_exists("dial0"), "down deleted dial0");
        assert!(!if_exists("dialp"));
        assert_eq!(d.state(LinkId(0)), DriverState::Idle);
        no_report(&mut rx, Duration::from_millis(200)).await?;
        d.shutdown(false).await;
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn command_failures_are_reported_clearly() -> Result<()> {
    let ns = Netns::new("lfail")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    in_netns(&ns, move || async move {
        let links = [
            link(
                "a",
                "a0",
                command(
                    &[
                        "/bin/sh",
                        "-c",
                        "echo dialing >&2; echo 'modem not found' >&2; exit 3",
                    ],
                    &[],
                ),
            ),
            link("b", "b0", command(&["/nonexistent/dialer", "--now"], &[])),
            link(
                "c",
                "c0",
                command(&["/bin/sh", "-c", "sleep 0.3; exit 7"], &[]),
            ),
            link(
                "d",
                "d0",
                command(&["/bin/sh", "-c", "sleep 0.3; kill -KILL $$"], &[]),
            ),
        ];
        let (d, mut rx) = drivers(&links, &dir);

        d.up(LinkId(0), 1, "hq");
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 0);
        assert!(error.contains("exited with status 3"), "{error}");
        assert!(error.contains("dialing | modem not found"), "{error}");
        assert_eq!(d.state(LinkId(0)), DriverState::Idle);

        d.up(LinkId(1), 1, "hq");
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 1);
        assert!(error.contains("/nonexistent/dialer"), "{error}");
        assert!(error.contains("No such file or directory"), "{error}");

        // Supervised: running first, then its exit is a failure.
        d.up(LinkId(2), 1, "hq");
        d.settle(LinkId(2)).await;
        let pid = running_pid(&d, 2).context("the up command should be supervised")?;
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 2);
        assert!(error.contains("exited with status 7"), "{error}");
        assert!(reaped(pid), "the exited up command was reaped");

        d.up(LinkId(3), 1, "hq");
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 3);
        assert!(error.contains("killed by signal 9 (SIGKILL)"), "{error}");
        no_report(&mut rx, Duration::from_millis(100)).await?;
        d.shutdown(false).await;
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn down_kills_a_hanging_up_without_reporting_it() -> Result<()> {
    let ns = Netns::new("lhang")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let marker = dir.join("down-ran");
    let grandchild = dir.join("grandchild");
    in_netns(&ns, move || async move {
        // `a` dies on SIGTERM; `b` ignores it (and so does its child), so it
        // needs SIGKILL after the grace period.
        let up_b = format!(
            "trap '' TERM; sleep 1000 & echo $! > {}; wait",
            grandchild.display()
        );
        let marker_s = marker.display().to_string();
        let links = [
            link(
                "a",
                "a0",
                command(&["sleep", "1000"], &["touch", &marker_s]),
            ),
            link("b", "b0", command(&["/bin/sh", "-c", &up_b], &[])),
        ];
        let (d, mut rx) = drivers(&links, &dir);
        for id in (0..2).map(LinkId) {
            d.up(id, 1, "hq");
            d.settle(id).await;
        }
        let pid_a = running_pid(&d, 0).context("a runs")?;
        let pid_b = running_pid(&d, 1).context("b runs")?;
        wait_for("the grandchild pid", || grandchild.exists()).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let gc: u32 = std::fs::read_to_string(&grandchild)?.trim().parse()?;
        assert!(!dead(gc));

        for (id, pid) in [(LinkId(0), pid_a), (LinkId(1), pid_b)] {
            let start = Instant::now();
            d.down(id);
            d.settle(id).await;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "down took {:?}",
                start.elapsed()
            );
            assert!(reaped(pid), "up process {pid} was killed and reaped");
            assert_eq!(d.state(id), DriverState::Idle);
        }
        assert!(
            marker.exists(),
            "the down command ran after the up process was stopped"
        );
        wait_for("the grandchild to die", || dead(gc)).await?;
        no_report(&mut rx, Duration::from_millis(300)).await?;
        d.shutdown(false).await;
        Ok(())
    })
}

/// A pppd wrapper pointing the stand-in at a per-test peers directory.
fn fake_pppd(dir: &Path) -> Result<PathBuf> {
    let wrapper = dir.join("pppd");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nFAKE_PPPD_PEERS_DIR={} exec {} \"$@\"\n",
            dir.display(),
            env!("CARGO_BIN_EXE_fake-pppd")
        ),
    )?;
    sh(&format!("chmod +x {}", wrapper.display()))?;
    Ok(wrapper)
}

fn pppd_link(name: &str, interface: &str, peer: &str, pppd_path: &Path) -> LinkConfig {
    link(
        name,
        interface,
        DriverConfig::Pppd(Pppd {
            peer: peer.into(),
            pppd_path: pppd_path.to_path_buf(),
        }),
    )
}

/// (local, peer) of the first IPv4 address on `name`.
fn ptp_address(name: &str) -> Option<(String, String)> {
    let out = sh(&format!("ip -j -4 addr show dev {name}")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    let a = v.get(0)?.get("addr_info")?.get(0)?;
    Some((
        a.get("local")?.as_str()?.to_string(),
        a.get("address")?.as_str()?.to_string(),
    ))
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn pppd_driver_against_the_stand_in() -> Result<()> {
    let ns = Netns::new("lppp")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    in_netns(&ns, move || async move {
        let pppd = fake_pppd(&dir)?;
        let piddir = format!("fake-piddir {}\n", dir.display());
        std::fs::write(dir.join("isp"), format!("10.64.0.2:10.64.0.1\n{piddir}"))?;
        std::fs::write(
            dir.join("flaky"),
            format!("10.65.0.2:10.65.0.1\nfake-die-after 300\n{piddir}"),
        )?;
        std::fs::write(dir.join("broken"), "bogus-option\n")?;
        std::fs::write(dir.join("stubborn"), format!("fake-ignore-term\n{piddir}"))?;
        let links = [
            pppd_link("lte", "ppp-lte", "isp", &pppd),
            pppd_link("flaky", "ppp-flaky", "flaky", &pppd),
            pppd_link("broken", "ppp-broken", "broken", &pppd),
            pppd_link("stub", "ppp-stub", "stubborn", &pppd),
        ];
        let (d, mut rx) = drivers(&links, &dir);

        // Up: the interface appears with the name and address, pid file written.
        d.up(LinkId(0), 1, "hq");
        wait_for("ppp-lte with its address", || {
            ptp_address("ppp-lte").is_some()
        })
        .await?;
        assert_eq!(
            ptp_address("ppp-lte"),
            Some(("10.64.0.2".into(), "10.64.0.1".into()))
        );
        assert_eq!(if_flags("ppp-lte"), Some(1));
        let pid = running_pid(&d, 0).context("pppd is supervised")?;
        let pidfile = dir.join("ppp-lte.pid");
        wait_for("the pid file", || pidfile.exists()).await?;
        assert_eq!(
            std::fs::read_to_string(&pidfile)?.lines().next(),
            Some(pid.to_string().as_str())
        );
        // Down: SIGTERM, the interface goes, no failure reported.
        d.down(LinkId(0));
        d.settle(LinkId(0)).await;
        assert!(!if_exists("ppp-lte"));
        assert!(!pidfile.exists());
        assert!(reaped(pid));
        no_report(&mut rx, Duration::from_millis(200)).await?;

        // pppd dying on its own is a failure with pppd's meaning of the status.
        d.up(LinkId(1), 1, "hq");
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 1);
        assert!(error.contains("exited with status 16"), "{error}");
        assert!(error.contains("modem hanging up"), "{error}");
        wait_for("ppp-flaky to vanish", || !if_exists("ppp-flaky")).await?;

        // An options error.
        d.up(LinkId(2), 1, "hq");
        let (link, error) = next_failure(&mut rx).await?;
        assert_eq!(link, 2);
        assert!(
            error.contains("status 2 (an error in the options given"),
            "{error}"
        );
        assert!(
            error.contains("unrecognized option 'bogus-option'"),
            "{error}"
        );

        // A pppd ignoring SIGTERM is killed after the grace period.
        d.up(LinkId(3), 1, "hq");
        wait_for("ppp-stub", || if_exists("ppp-stub")).await?;
        let pid = running_pid(&d, 3).context("stub runs")?;
        d.down(LinkId(3));
        d.settle(LinkId(3)).await;
        assert!(reaped(pid));
        assert!(!if_exists("ppp-stub"));
        no_report(&mut rx, Duration::from_millis(200)).await?;
        d.shutdown(false).await;
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn kept_pppd_is_stopped_by_the_next_agent() -> Result<()> {
    let ns = Netns::new("lkeep")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    in_netns(&ns, move || async move {
        let pppd = fake_pppd(&dir)?;
        std::fs::write(dir.join("isp"), format!("fake-piddir {}\n", dir.display()))?;
        let links = [pppd_link("lte", "ppp-keep", "isp", &pppd)];
        let (first, mut rx1) = drivers(&links, &dir);
        first.up(LinkId(0), 1, "hq");
        wait_for("ppp-keep", || ptp_address("ppp-keep").is_some()).await?;
        wait_for("the pid file", || dir.join("ppp-lte.pid").exists()).await?;
        let pid = running_pid(&first, 0).context("pppd runs")?;
        first.shutdown(true).await;
        assert!(
            !dead(pid) && if_exists("ppp-keep"),
            "keep leaves pppd running"
        );
        no_report(&mut rx1, Duration::from_millis(100)).await?;

        // The restarted agent does not dial again, and takes it down through the pid file.
        let (second, mut rx2) = drivers(&links, &dir);
        second.up(LinkId(0), 1, "hq");
        second.settle(LinkId(0)).await;
        assert_eq!(
            second.state(LinkId(0)),
            DriverState::Up,
            "the running pppd is adopted"
        );
        second.down(LinkId(0));
        second.settle(LinkId(0)).await;
        wait_for("the kept pppd to stop", || {
            dead(pid) && !if_exists("ppp-keep")
        })
        .await?;
        // It ended through SIGTERM (its clean exit removes the pid file), even
        // though its output pipes closed with the first agent.
        assert!(
            !dir.join("ppp-lte.pid").exists(),
            "the kept pppd exited cleanly"
        );
        no_report(&mut rx2, Duration::from_millis(100)).await?;
        second.shutdown(false).await;
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn kernel_routes_install_and_remove() -> Result<()> {
    let ns = Netns::new("lrt")?;
    ns.sh("ip link add bk0 type veth peer name bk0p && ip link set bk0p up && ip link set bk0 up && ip addr add 192.0.2.1/24 dev bk0")?;
    ns.sh("ip route add 10.30.0.0/16 dev bk0 table 100")?; // not ours: must survive
                                                           // Netns::ifindex reads /sys, which nsenter --net leaves showing the host's interfaces.
    let link: serde_json::Value = serde_json::from_str(&ns.sh("ip -j link show dev bk0")?)?;
    let ifindex = u32::try_from(link[0]["ifindex"].as_u64().context("ifindex of bk0")?)?;
    in_netns(&ns, move || async move {
        let kr = KernelRoutes::new().map_err(|e| anyhow!(e))?;
        let p1: ipnet::IpNet = "10.10.0.0/16".parse()?;
        let p2: ipnet::IpNet = "10.20.0.0/16".parse()?;
        let p6: ipnet::IpNet = "2001:db8:5::/48".parse()?;
        kr.install(p1, ifindex, None, 1024, 100)
            .await
            .map_err(|e| anyhow!(e))?;
        kr.install(p2, ifindex, Some("192.0.2.254".parse()?), 1024, 100)
            .await
            .map_err(|e| anyhow!(e))?;
        kr.install(p6, ifindex, None, 1024, 100)
            .await
            .map_err(|e| anyhow!(e))?;
        // Installing again is idempotent (replace).
        kr.install(p1, ifindex, None, 1024, 100)
            .await
            .map_err(|e| anyhow!(e))?;
        let err = kr
            .install(p1, ifindex, Some("2001:db8::1".parse()?), 1024, 100)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("address family"), "{err}");

        let v4: serde_json::Value = serde_json::from_str(&sh("ip -j route show table 100")?)?;
        let find = |dst: &str| {
            v4.as_array()
                .and_then(|a| a.iter().find(|r| r["dst"] == dst))
                .cloned()
        };
        let r1 = find("10.10.0.0/16").context("10.10.0.0/16 installed")?;
        assert_eq!(r1["dev"], "bk0");
        assert_eq!(r1["metric"], 1024);
        assert_eq!(
            r1["protocol"].to_string().trim_matches('"'),
            RTPROT_ROUTEBACKUP.to_string()
        );
        assert_eq!(r1["scope"], "link");
        let r2 = find("10.20.0.0/16").context("10.20.0.0/16 installed")?;
        assert_eq!(r2["gateway"], "192.0.2.254");
        let v6 = sh("ip -6 route show table 100")?;
        assert!(
            v6.contains("2001:db8:5::/48 dev bk0 proto 252 metric 1024"),
            "{v6}"
        );

        let ours = kr.list_ours(Some(100)).await.map_err(|e| anyhow!(e))?;
        assert_eq!(ours.len(), 3, "{ours:?}");
        assert!(kr
            .list_ours(Some(101))
            .await
            .map_err(|e| anyhow!(e))?
            .is_empty());

        kr.remove(p1, 1024, 100).await.map_err(|e| anyhow!(e))?;
        kr.remove(p1, 1024, 100).await.map_err(|e| anyhow!(e))?; // already gone: fine
        assert!(!sh("ip route show table 100")?.contains("10.10.0.0/16"));
        assert_eq!(
            kr.remove_all_ours(Some(100))
                .await
                .map_err(|e| anyhow!(e))?,
            2
        );
        assert_eq!(
            sh("ip route show table 100")?.trim(),
            "10.30.0.0/16 dev bk0 scope link"
        );
        assert!(sh("ip -6 route show table 100")?.trim().is_empty());
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn reports_carry_the_attempt_id_and_every_down_is_answered() -> Result<()> {
    let ns = Netns::new("latt")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    in_netns(&ns, move || async move {
        let links = [link(
            "dial",
            "dial0",
            command(&["/bin/sh", "-c", "sleep 0.2; exit 3"], &["true"]),
        )];
        let (d, mut rx) = drivers(&links, &dir);
        d.up(LinkId(0), 7, "hq");
        let (link, attempt, _) = next_failure_of(&mut rx).await?;
        assert_eq!((link, attempt), (0, 7), "the exit ends attempt 7");
        d.up(LinkId(0), 8, "hq");
        let (_, attempt, _) = next_failure_of(&mut rx).await?;
        assert_eq!(attempt, 8);
        d.down(LinkId(0));
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(DriverEvent::Released { link: LinkId(0) })) => {}
            other => bail!("expected the down to be reported finished, got {other:?}"),
        }
        d.shutdown(false).await;
        Ok(())
    })
}
