//! The fast path on real traffic between namespaces:
//!
//! ```text
//!  lan (10.10.0.2) --- e-lan [edge, fast path] e-pri --- primary (p0 10.20.0.2)
//!                                              e-bk  --- backup  (b0 10.30.0.2)
//!                                              tun0  (L3 backup, read by the test)
//! ```
//! 198.51.100.0/24 is routed to primary; primary and backup both own
//! 198.51.100.7 and route back to the LAN, so pings succeed either way and the
//! rx counters of p0 / b0 tell which way the packets went.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use routebackup::config::AttachMode;
use routebackup::fastpath::{
    gateway_bytes, Attachment, Fastpath, FastpathError, FastpathOptions, Via, XdpAttach,
};
use routebackup::kernel::{Feature, Kernel};
use routebackup_common::{
    SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_L3_DEVICE,
};
use routebackup_tests::{veth, BpfFs, Netns};

const PINGS: u64 = 20;

struct Topo {
    lan: Netns,
    edge: Netns,
    primary: Netns,
    backup: Netns,
    bpffs: BpfFs,
}

fn topo() -> Result<Topo> {
    let lan = Netns::new("lan")?;
    let edge = Netns::new("edge")?;
    let primary = Netns::new("pri")?;
    let backup = Netns::new("bk")?;
    veth(&lan, "lan0", "10.10.0.2/24", &edge, "e-lan", "10.10.0.1/24")?;
    veth(
        &edge,
        "e-pri",
        "10.20.0.1/24",
        &primary,
        "p0",
        "10.20.0.2/24",
    )?;
    veth(&edge, "e-bk", "10.30.0.1/24", &backup, "b0", "10.30.0.2/24")?;
    lan.sh("ip route add default via 10.10.0.1")?;
    edge.sh(
        "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1 && \
         ip route add 198.51.100.0/24 via 10.20.0.2 && \
         ip tuntap add mode tun name tun0 && ip link set tun0 up",
    )?;
    for (ns, gw) in [(&primary, "10.20.0.1"), (&backup, "10.30.0.1")] {
        ns.sh(&format!(
            "ip addr add 198.51.100.7/32 dev lo && ip route add default via {gw}"
        ))?;
    }
    // Native XDP redirect into a veth needs NAPI on the receiving peer:
    // GRO from 5.13, an XDP program before.
    backup.sh("ethtool -K b0 gro on")?;
    backup.sh(&format!(
        "ip link set dev b0 xdpdrv pinned {}",
        routebackup_tests::pass_xdp_pin().display()
    ))?;
    // Resolve the backup gateway so XDP can forward from the first packet.
    edge.sh("ping -c1 -W1 10.30.0.2 >/dev/null")?;
    Ok(Topo {
        lan,
        edge,
        primary,
        backup,
        bpffs: BpfFs::new()?,
    })
}

fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64> {
    let s = ns.sh(&format!("ip -s -j link show dev {ifname}"))?;
    let v: serde_json::Value = serde_json::from_str(&s)?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("no rx packets in ip -s -j link")
}

/// Which uplink the next `PINGS` echo requests to 198.51.100.7 take.
#[derive(Debug, PartialEq)]
enum Path {
    Primary,
    Backup,
}

fn ping_path(t: &Topo) -> Result<Path> {
    let (p0, b0) = (rx_packets(&t.primary, "p0")?, rx_packets(&t.backup, "b0")?);
    let out = t
        .lan
        .output(&format!("ping -c {PINGS} -i 0.01 -W 1 198.51.100.7"))?;
    if !out.status.success() {
        bail!("ping failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let (dp, db) = (
        rx_packets(&t.primary, "p0")? - p0,
        rx_packets(&t.backup, "b0")? - b0,
    );
    match (dp >= PINGS, db >= PINGS) {
        (true, false) if db < PINGS / 2 => Ok(Path::Primary),
        (false, true) if dp < PINGS / 2 => Ok(Path::Backup),
        _ => bail!("mixed paths: primary rx +{dp}, backup rx +{db}"),
    }
}

fn steer_eth(t: &Topo) -> Result<SegmentValue> {
    Ok(SegmentValue {
        group_id: 7,
        action: ACTION_STEER,
        backup_ifindex: t.edge.ifindex("e-bk")?,
        flags: FLAG_GATEWAY_V4,
        gateway: gateway_bytes("10.30.0.2".parse()?),
        ..Default::default()
    })
}

fn opts(t: &Topo, mode: AttachMode) -> FastpathOptions {
    FastpathOptions {
        pin_path: t.bpffs.path().join("routebackup"),
        interfaces: vec!["e-lan".into()],
        mode,
        kernel: Kernel::host().clone(),
    }
}

fn segment() -> ipnet::IpNet {
    "198.51.100.0/24".parse().expect("prefix")
}

fn check_ethernet_backup(t: &Topo, mode: AttachMode, expect_xdp: XdpAttach) -> Result<()> {
    let value = steer_eth(t)?;
    let o = opts(t, mode);
    t.edge.run_in(|| {
        let mut fp = Fastpath::open(&o)?;
        let att: Vec<Attachment> = fp.attachments();
        assert_eq!(att.len(), 1);
        assert_eq!(
            (
                att[0].interface.as_str(),
                att[0].xdp,
                att[0].tc,
                att[0].adopted
            ),
            ("e-lan", expect_xdp, true, false)
        );

        assert_eq!(
            ping_path(t)?,
            Path::Primary,
            "{mode:?}: no entry, kernel route"
        );
        assert_eq!(
            fp.group_stats(7)?,
            routebackup_common::GroupStats::default()
        );

        fp.set_segment(segment(), value)?;
        assert_eq!(ping_path(t)?, Path::Backup, "{mode:?}: steered");
        let s = fp.group_stats(7)?;
        assert_eq!(s.steered_packets, PINGS, "{mode:?}: {s:?}");
        assert_eq!(s.redirect_failures, 0);
        if expect_xdp != XdpAttach::None {
            assert_eq!(
                s.deferred_packets, 0,
                "{mode:?}: XDP forwards with a resolved neighbour"
            );
        }

        // bpftool shows readable keys and values.
        let dump = routebackup_tests::sh(&format!(
            "bpftool -j map dump pinned {}/segments_v4",
            routebackup::fastpath::layout_dir(&o.pin_path).display()
        ))?;
        for needle in [
            "\"prefix_len\":24",
            "198",
            "\"group_id\":7",
            "\"backup_ifindex\"",
            "\"gateway\"",
        ] {
            assert!(
                dump.replace(' ', "").contains(needle),
                "{needle} missing in {dump}"
            );
        }

        // An action-pass entry: kernel route, each packet counted once even
        // with XDP and TC both attached.
        fp.set_segment(
            segment(),
            SegmentValue {
                group_id: 8,
                action: ACTION_PASS,
                ..Default::default()
            },
        )?;
        // Nothing steers: TC is switched off where XDP runs (XDP counts
        // alone), and stays on without XDP (TC counts).
        assert_eq!(
            fp.tc_idle(),
            expect_xdp != XdpAttach::None,
            "{mode:?}: TC switched off while nothing steers"
        );
        assert_eq!(ping_path(t)?, Path::Primary);
        assert_eq!(
            fp.group_stats(8)?.passed_packets,
            PINGS,
            "{mode:?}: passed counted once"
        );

        fp.remove_segment(segment())?;
        assert_eq!(ping_path(t)?, Path::Primary);
        // Someone else holds the kept bpf links (a child forked by another
        // thread that has not exec'd yet, a tool that opened the pins):
        // closing them must still take the programs off.
        // Only bpf links are pinned: TC over netlink (no TCX before 6.6)
        // and XDP over netlink have none.
        let k = &o.kernel;
        let want_tc = if k.has(Feature::Tcx) {
            Via::Tcx
        } else {
            Via::Netlink
        };
        let want_xdp = if k.has(Feature::XdpLink) {
            Via::BpfLink
        } else {
            Via::Netlink
        };
        assert_eq!(
            att[0].tc_mechanism,
            Some(want_tc),
            "TC as the kernel allows"
        );
        if expect_xdp != XdpAttach::None {
            assert_eq!(
                att[0].xdp_mechanism,
                Some(want_xdp),
                "XDP as the kernel allows"
            );
        }
        let held = hold_bpf_links(&o.pin_path)?;
        let pinned = |via: Option<Via>| usize::from(via.is_some_and(Via::pinned));
        let expected = pinned(att[0].tc_mechanism) + pinned(att[0].xdp_mechanism);
        assert_eq!(
            held.len(),
            expected,
            "kept bpf links (TC, XDP): {:?}",
            att[0]
        );
        for fd in &held {
            assert_ne!(bpf_link_ifindex(fd)?, 0, "attached before close");
        }
        fp.close(false)?;
        // Detached at once: the edge's interface carries no program any more
        // (this bpftool predates TCX: the links' own view covers TC).
        let link = t.edge.sh("ip -d link show dev e-lan")?;
        assert!(!link.contains("xdp"), "{link}");
        for fd in &held {
            assert_eq!(
                bpf_link_ifindex(fd)?,
                0,
                "{mode:?}: a held bpf link still attached"
            );
        }
        Ok(())
    })
}

/// The interface a bpf link is attached to (BPF_OBJ_GET_INFO_BY_FD; XDP and
/// TCX links both report it first in their part of `bpf_link_info`), 0 once
/// detached.
fn bpf_link_ifindex(fd: &OwnedFd) -> Result<u32> {
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // type, id, prog_id, then the union (8-aligned) whose first word is ifindex.
    let mut info = [0u32; 16];
    let attr = InfoByFd {
        bpf_fd: u32::try_from(fd.as_raw_fd())?,
        info_len: u32::try_from(size_of_val(&info))?,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points to a buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::from_ref(&attr),
            size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        bail!(
            "BPF_OBJ_GET_INFO_BY_FD: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(info[4])
}

/// Opens every kept link under `pin_path` (BPF_OBJ_GET), as a second holder.
fn hold_bpf_links(pin_path: &std::path::Path) -> Result<Vec<OwnedFd>> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let dir = routebackup::fastpath::layout_dir(pin_path).join("links");
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        let attr = ObjGet {
            pathname: c.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: attr points to a NUL-terminated path that outlives the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET,
                std::ptr::from_ref(&attr),
                size_of::<ObjGet>(),
            )
        };
        if fd < 0 {
            bail!(
                "BPF_OBJ_GET {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the kernel just returned this descriptor and nothing else owns it.
        fds.push(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) });
    }
    Ok(fds)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn ethernet_backup_generic_xdp() -> Result<()> {
    check_ethernet_backup(&topo()?, AttachMode::XdpGeneric, XdpAttach::Generic)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn ethernet_backup_native_xdp() -> Result<()> {
    check_ethernet_backup(&topo()?, AttachMode::Xdp, XdpAttach::Native)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn ethernet_backup_auto_uses_native_on_veth() -> Result<()> {
    check_ethernet_backup(&topo()?, AttachMode::Auto, XdpAttach::Native)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn ethernet_backup_tc_only() -> Result<()> {
    check_ethernet_backup(&topo()?, AttachMode::Tc, XdpAttach::None)
}

/// Opens tun0 (persistent, created by `ip tuntap`) in the current namespace.
fn xdp_on(t: &Topo) -> Result<bool> {
    Ok(t.edge.sh("ip -d link show dev e-lan")?.contains("xdp"))
}

/// With XDP links forced off, XDP goes on through netlink (IFLA_XDP):
/// steering works the same, detach takes it off at once, and `close(true)`
/// leaves it on, recorded, for the next `open` to adopt.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn xdp_over_netlink_when_xdp_links_are_forced_off() -> Result<()> {
    let t = topo()?;
    let value = steer_eth(&t)?;
    let mut o = opts(&t, AttachMode::Xdp);
    o.kernel = Kernel::host().without(&[Feature::XdpLink]);
    t.edge.run_in(|| {
        let mut fp = Fastpath::open(&o)?;
        let a = fp.attachments().remove(0);
        assert_eq!(
            (a.xdp, a.xdp_mechanism),
            (XdpAttach::Native, Some(Via::Netlink))
        );
        assert!(xdp_on(&t)?, "no XDP program on e-lan");
        fp.set_segment(segment(), value)?;
        assert_eq!(ping_path(&t)?, Path::Backup, "steered over netlink XDP");
        let s = fp.group_stats(7)?;
        assert_eq!((s.steered_packets, s.deferred_packets), (PINGS, 0), "{s:?}");

        assert!(fp.detach("e-lan")?);
        assert!(!xdp_on(&t)?, "XDP still on e-lan after detach");
        fp.attach("e-lan", AttachMode::Xdp)?;
        assert!(xdp_on(&t)?, "no XDP program on e-lan after attach");
        fp.close(true)?;
        assert!(xdp_on(&t)?, "XDP not kept on e-lan without the agent");
        assert!(is_kept(&kept_at(&o, Some(Via::Netlink), "xdp-native")));
        let fp = Fastpath::open(&o)?;
        let a = fp.attachments().remove(0);
        assert_eq!((a.adopted, a.xdp_mechanism), (true, Some(Via::Netlink)));
        fp.close(false)?;
        assert!(!xdp_on(&t)?, "XDP left on e-lan after close(false)");
        Ok(())
    })
}

fn open_tun(name: &str) -> Result<OwnedFd> {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let path = c"/dev/net/tun";
    // SAFETY: plain open of a device node.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    if fd < 0 {
        bail!("open /dev/net/tun: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "IFF_TUN | IFF_NO_PI is 0x1001, within ifr_flags (a short)"
    )]
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF takes a struct ifreq, which IfReq matches in size and layout.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } != 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Echo requests to 198.51.100.7 read from the tun within `within`, with their TTLs.
fn read_tun_echoes(fd: &OwnedFd, want: u64, within: Duration) -> Vec<u8> {
    let mut ttls = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < within && (ttls.len() as u64) < want {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let p = &buf[..n.cast_unsigned()];
        if p.len() >= 28
            && p[0] >> 4 == 4
            && p[9] == 1
            && p[16..20] == Ipv4Addr::new(198, 51, 100, 7).octets()
            && p[20] == 8
        {
            ttls.push(p[8]);
        }
    }
    ttls
}

fn check_l3_backup(t: &Topo, mode: AttachMode) -> Result<()> {
    let tun0 = t.edge.ifindex("tun0")?;
    let o = opts(t, mode);
    t.edge.run_in(|| {
        let tun = open_tun("tun0")?;
        let mut fp = Fastpath::open(&o)?;
        fp.set_segment(
            segment(),
            SegmentValue {
                group_id: 3,
                action: ACTION_STEER,
                backup_ifindex: tun0,
                flags: FLAG_L3_DEVICE,
                gateway: [0; 16],
                ..Default::default()
            },
        )?;
        let (p0, b0) = (rx_packets(&t.primary, "p0")?, rx_packets(&t.backup, "b0")?);
        // Nobody answers through the tun: ping fails, that is expected.
        t.lan
            .output(&format!("ping -c {PINGS} -i 0.01 -W 1 198.51.100.7"))?;
        let ttls = read_tun_echoes(&tun, PINGS, Duration::from_secs(3));
        assert_eq!(
            ttls.len() as u64,
            PINGS,
            "{mode:?}: every echo request came out of the tun"
        );
        assert!(
            ttls.iter().all(|&ttl| ttl == 63),
            "{mode:?}: TTL decremented once: {ttls:?}"
        );
        assert!(
            rx_packets(&t.primary, "p0")? - p0 < PINGS / 2,
            "not sent to the primary"
        );
        assert!(rx_packets(&t.backup, "b0")? - b0 < PINGS / 2);
        let s = fp.group_stats(3)?;
        assert_eq!(s.steered_packets, PINGS, "{s:?}");
        if mode != AttachMode::Tc {
            assert_eq!(
                s.deferred_packets, PINGS,
                "XDP hands L3 backups to TC: {s:?}"
            );
        }
        Ok(fp.close(false)?)
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn l3_backup_tun_with_xdp_and_tc() -> Result<()> {
    check_l3_backup(&topo()?, AttachMode::Auto)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn l3_backup_tun_tc_only() -> Result<()> {
    check_l3_backup(&topo()?, AttachMode::Tc)
}

/// Where the agent keeps e-lan's attachment of `kind` (`xdp-native`, `tc`)
/// made through `via`: a bpf link's pin under `links/`, a netlink
/// attachment's record under `netlink/`.
fn kept_at(o: &FastpathOptions, via: Option<Via>, kind: &str) -> PathBuf {
    let dir = if via.is_some_and(Via::pinned) {
        "links"
    } else {
        "netlink"
    };
    routebackup::fastpath::layout_dir(&o.pin_path)
        .join(dir)
        .join(format!("{kind}_e-lan"))
}

/// A pin, or a record (a symlink to nowhere: `exists` would follow it).
fn is_kept(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// bpftool's view of e-lan: the ids of the programs on its XDP hook and in
/// its netlink (clsact) TC filters. (This bpftool predates TCX, whose
/// links `bpftool link` shows.)
fn hooked(t: &Topo) -> Result<(Vec<u64>, Vec<u64>)> {
    let v: serde_json::Value = serde_json::from_str(&t.edge.sh("bpftool -j net show dev e-lan")?)?;
    let ids = |hook: &str| {
        v[0][hook]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_u64())
            .collect()
    };
    Ok((ids("xdp"), ids("tc")))
}

/// How many bpf links run program `id`.
fn bpf_links_running(t: &Topo, id: u32) -> Result<usize> {
    let links: serde_json::Value = serde_json::from_str(&t.edge.sh("bpftool -j link show")?)?;
    Ok(links.as_array().map_or(0, |a| {
        a.iter()
            .filter(|l| l["prog_id"].as_u64() == Some(u64::from(id)))
            .count()
    }))
}

/// "N packets transmitted, M received" of ping's summary.
fn ping_summary(out: &str) -> Result<(u64, u64)> {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in {out:?}"))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(str::parse::<u64>);
    Ok((
        numbers.next().context("transmitted")??,
        numbers.next().context("received")??,
    ))
}

/// Steering with the attachments `kernel` makes: kept by `close(true)`,
/// steering alone while no agent runs, and adopted by the next `open`
/// under a continuous ping, which the kept programs and then the adopted
/// ones steer whole: not one echo request takes the kernel's route.
fn check_restart_keeps_steering(kernel: &Kernel) -> Result<()> {
    let t = topo()?;
    let value = steer_eth(&t)?;
    let mut o = opts(&t, AttachMode::Auto);
    o.kernel = kernel.clone();
    let first = t.edge.run_in(|| {
        let mut fp = Fastpath::open(&o)?;
        fp.set_segment(segment(), value)?;
        assert_eq!(ping_path(&t)?, Path::Backup);
        let a = fp.attachments().remove(0);
        fp.close(true)?;
        Ok(a)
    })?;
    let xdp_kept = kept_at(&o, first.xdp_mechanism, "xdp-native");
    let tc_kept = kept_at(&o, first.tc_mechanism, "tc");
    assert!(
        is_kept(&xdp_kept) && is_kept(&tc_kept),
        "close(true) keeps both attachments: {first:?}"
    );
    // No agent running: the kept attachments keep steering.
    assert_eq!(
        ping_path(&t)?,
        Path::Backup,
        "steering continues without the agent"
    );

    // A ping runs across the adoption (stopped once it is done).
    let pinger = t
        .lan
        .command("exec ping -i 0.005 -W 1 -q 198.51.100.7")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(200));
    let result = t.edge.run_in(|| {
        let fp = Fastpath::open(&o)?;
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(pinger.id().cast_signed(), libc::SIGINT) };
        let out = pinger.wait_with_output()?;
        let (sent, received) = ping_summary(&String::from_utf8_lossy(&out.stdout))?;
        // The last request may still have been on its way back.
        assert!(
            received + 1 >= sent,
            "{received} of {sent} echoes came back"
        );
        let att = fp.attachments();
        assert!(
            att[0].adopted && att[0].xdp == XdpAttach::Native && att[0].tc,
            "{att:?}"
        );
        assert_eq!(
            (att[0].xdp_mechanism, att[0].tc_mechanism),
            (first.xdp_mechanism, first.tc_mechanism),
            "adopted through the mechanisms that kept them"
        );
        assert!(
            is_kept(&xdp_kept) && is_kept(&tc_kept),
            "adopted attachments stay kept (they must outlive this agent too)"
        );
        assert_eq!(fp.segments()?, vec![(segment(), value)]);
        // Every echo request of the continuous ping was steered: none went
        // by while the programs changed hands.
        assert_eq!(
            fp.group_stats(7)?.steered_packets,
            2 * PINGS + sent,
            "counters survive, and count every request of the continuous ping"
        );
        assert_eq!(ping_path(&t)?, Path::Backup);
        // Only one program per hook: the adoption replaced, not added.
        let (xdp_id, tc_id) = fp.program_ids()?;
        let (xdp_ids, tc_filters) = hooked(&t)?;
        assert_eq!(xdp_ids, [u64::from(xdp_id)], "e-lan's XDP program");
        if att[0].xdp_mechanism == Some(Via::BpfLink) {
            assert_eq!(bpf_links_running(&t, xdp_id)?, 1);
        }
        if att[0].tc_mechanism == Some(Via::Netlink) {
            assert_eq!(tc_filters, [u64::from(tc_id)], "e-lan's TC filters");
        } else {
            assert!(
                tc_filters.is_empty(),
                "a TC filter beside TCX: {tc_filters:?}"
            );
            assert_eq!(bpf_links_running(&t, tc_id)?, 1, "TCX links of rb_tc");
        }
        Ok(fp.close(false)?)
    });
    result?;
    assert_eq!(ping_path(&t)?, Path::Primary, "close(false) stops steering");
    assert_eq!(
        hooked(&t)?,
        (vec![], vec![]),
        "close(false) takes the programs off"
    );
    assert!(
        !routebackup::fastpath::layout_dir(&o.pin_path).exists(),
        "close(false) removes the pins and records"
    );
    Ok(())
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn restart_keeps_steering() -> Result<()> {
    check_restart_keeps_steering(Kernel::host())
}

/// The same with XDP and TC attached over netlink, as kernels before 5.9
/// and 6.6 do: the records under netlink/ lead the next agent to them.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn restart_keeps_steering_over_netlink() -> Result<()> {
    check_restart_keeps_steering(&Kernel::host().without(&[Feature::XdpLink, Feature::Tcx]))
}

/// e-lan's netlink TC filters as `tc filter show` lists them.
fn tc_filters(t: &Topo) -> Result<String> {
    t.edge.sh("tc filter show dev e-lan ingress")
}

/// The records lead only to our own programs: where someone else's took
/// the recorded place, the next agent leaves it alone and attaches anew
/// (XDP then cannot, and says so), never removing theirs.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn netlink_records_never_lead_to_someone_elses_program() -> Result<()> {
    let t = topo()?;
    let mut o = opts(&t, AttachMode::Xdp);
    o.kernel = Kernel::host().without(&[Feature::XdpLink, Feature::Tcx]);
    t.edge.run_in(|| {
        Fastpath::open(&o)?.close(true)?;
        let ours = tc_filters(&t)?;
        let pref = ours
            .split_whitespace()
            .skip_while(|w| *w != "pref")
            .nth(1)
            .with_context(|| format!("no pref in {ours}"))?
            .to_string();
        // Someone else's programs where the records point: XDP (the
        // object's trivial rb_floor, loaded by this process), and a classic
        // BPF filter (no match) at the recorded TC priority and handle.
        t.edge.sh(&format!(
            "ip link set dev e-lan xdp off && tc filter del dev e-lan ingress pref {pref} && \
             tc filter add dev e-lan ingress pref {pref} handle 1 protocol all \
             bpf bytecode '1,6 0 0 0,'"
        ))?;
        let mut other = aya::EbpfLoader::new().load(routebackup::fastpath::object())?;
        let floor: &mut aya::programs::Xdp = other
            .program_mut(routebackup_common::PROG_FLOOR)
            .context("no rb_floor")?
            .try_into()?;
        floor.load()?;
        let floor_id = u64::from(floor.info()?.id());
        floor.attach("e-lan", aya::programs::XdpMode::Driver)?;

        let refused = Fastpath::open(&o).map(|fp| fp.attachments());
        assert!(
            matches!(refused, Err(FastpathError::XdpAttach { .. })),
            "{refused:?}"
        );
        assert_eq!(hooked(&t)?.0, [floor_id], "their XDP program stays");

        // Theirs gone from XDP: ours goes on anew, and TC beside theirs.
        drop(other);
        let fp = Fastpath::open(&o)?;
        let a = fp.attachments().remove(0);
        assert!(!a.adopted, "adopted someone else's: {a:?}");
        let (xdp_id, tc_id) = fp.program_ids()?;
        assert_eq!(
            hooked(&t)?,
            (vec![u64::from(xdp_id)], vec![u64::from(tc_id)])
        );
        let filters = tc_filters(&t)?;
        assert!(filters.contains("bytecode"), "their filter went: {filters}");
        fp.close(false)?;
        let filters = tc_filters(&t)?;
        assert!(
            filters.contains("bytecode") && !filters.contains("rb_tc"),
            "close(false) takes ours off, and only ours: {filters}"
        );
        Ok(())
    })
}
