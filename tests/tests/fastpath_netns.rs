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
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use routebackup::config::AttachMode;
use routebackup::fastpath::{
    gateway_bytes, Attachment, Fastpath, FastpathError, FastpathOptions, Via, XdpAttach,
};
use routebackup::kernel::{Feature, Kernel};
use routebackup_common::{
    SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_L3_DEVICE, FLAG_MACS_VALID,
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
    // Native XDP redirect into a veth needs NAPI on the receiving peer.
    backup.sh("ethtool -K b0 gro on")?;
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

/// The MAC of `ifname` in `ns`.
fn mac(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let json: serde_json::Value =
        serde_json::from_str(&ns.sh(&format!("ip -j link show dev {ifname}"))?)?;
    let text = json[0]["address"].as_str().context("no address")?;
    let mut out = [0u8; 6];
    let parts: Vec<&str> = text.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "not a MAC: {text:?}");
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16)?;
    }
    Ok(out)
}

/// Where `bpf_redirect_neigh` takes no next hop (5.10 reads it as flags and
/// drops the packet: no steering to an Ethernet backup there), TC forwards
/// to the gateway with the MACs `bpf_fib_lookup` finds, or the cached ones,
/// and leaves the packet to the kernel's routes while neither knows them.
/// Forced here on any kernel; the kernel matrix runs it where it is real.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn tc_to_a_gateway_without_neigh_nexthop() -> Result<()> {
    let t = topo()?;
    let mut o = opts(&t, AttachMode::Tc);
    o.kernel = Kernel::host().without(&[Feature::NeighNexthop]);
    t.edge.run_in(|| {
        let mut fp = Fastpath::open(&o)?;
        // No neighbour entry for the gateway: the kernel routes the packets
        // (to the primary here), counted as deferred.
        t.edge.sh("ip neigh flush dev e-bk")?;
        fp.set_segment(segment(), steer_eth(&t)?)?;
        assert_eq!(ping_path(&t)?, Path::Primary, "deferred to the kernel");
        let s = fp.group_stats(7)?;
        assert_eq!((s.steered_packets, s.deferred_packets), (0, PINGS), "{s:?}");

        // The neighbour known: bpf_fib_lookup finds the MACs.
        t.edge.sh("ping -c1 -W2 10.30.0.2")?;
        assert_eq!(ping_path(&t)?, Path::Backup, "steered with fib lookup");
        let s = fp.group_stats(7)?;
        assert_eq!(
            (s.steered_packets, s.redirect_failures),
            (PINGS, 0),
            "{s:?}"
        );

        // Cached MACs: no lookup needed, even with the entry gone.
        let dmac = mac(&t.backup, "b0")?;
        let smac = mac(&t.edge, "e-bk")?;
        t.edge.sh("ip neigh flush dev e-bk")?;
        fp.set_segment(
            segment(),
            SegmentValue {
                flags: FLAG_GATEWAY_V4 | FLAG_MACS_VALID,
                dmac,
                smac,
                mtu: 1500,
                ..steer_eth(&t)?
            },
        )?;
        assert_eq!(ping_path(&t)?, Path::Backup, "steered with cached MACs");
        let s = fp.group_stats(7)?;
        assert_eq!(
            (s.steered_packets, s.redirect_failures),
            (2 * PINGS, 0),
            "{s:?}"
        );
        fp.close(false)?;
        Ok(())
    })
}

/// Opens tun0 (persistent, created by `ip tuntap`) in the current namespace.
fn xdp_on(t: &Topo) -> Result<bool> {
    Ok(t.edge.sh("ip -d link show dev e-lan")?.contains("xdp"))
}

/// With XDP links forced off, XDP goes on through netlink (IFLA_XDP):
/// steering works the same, detach takes it off at once, and as nothing can
/// keep it, `close(true)` says so and takes it off too.
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
        let kept = fp.close(true);
        assert!(
            matches!(&kept, Err(FastpathError::KeepAttachments { interfaces }) if interfaces == &["e-lan"]),
            "{kept:?}"
        );
        assert!(!xdp_on(&t)?, "XDP left on e-lan without the agent");
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

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn restart_keeps_steering() -> Result<()> {
    let t = topo()?;
    let value = steer_eth(&t)?;
    let o = opts(&t, AttachMode::Auto);
    let links = routebackup::fastpath::layout_dir(&o.pin_path).join("links");
    t.edge.run_in(|| {
        let mut fp = Fastpath::open(&o)?;
        fp.set_segment(segment(), value)?;
        assert_eq!(ping_path(&t)?, Path::Backup);
        fp.close(true)?;
        assert!(links.join("xdp-native_e-lan").exists() && links.join("tc_e-lan").exists());
        Ok(())
    })?;
    // No agent running: the kept bpf links keep steering.
    assert_eq!(
        ping_path(&t)?,
        Path::Backup,
        "steering continues without the agent"
    );

    t.edge.run_in(|| {
        let fp = Fastpath::open(&o)?;
        let att = fp.attachments();
        assert!(
            att[0].adopted && att[0].xdp == XdpAttach::Native && att[0].tc,
            "{att:?}"
        );
        assert!(
            links.join("xdp-native_e-lan").exists() && links.join("tc_e-lan").exists(),
            "adopted bpf links stay pinned (they must outlive this agent too)"
        );
        assert_eq!(fp.segments()?, vec![(segment(), value)]);
        assert_eq!(ping_path(&t)?, Path::Backup);
        assert_eq!(
            fp.group_stats(7)?.steered_packets,
            3 * PINGS,
            "counters survive too"
        );
        // Only one program per hook: the adoption replaced, not added.
        let (xdp_id, tc_id) = fp.program_ids()?;
        let links: serde_json::Value = serde_json::from_str(&t.edge.sh("bpftool -j link show")?)?;
        let ours = |id: u32| {
            links.as_array().map_or(0, |a| {
                a.iter()
                    .filter(|l| l["prog_id"].as_u64() == Some(u64::from(id)))
                    .count()
            })
        };
        assert_eq!(
            (ours(xdp_id), ours(tc_id)),
            (1, 1),
            "the kept bpf links now run the new programs: {links}"
        );
        Ok(fp.close(false)?)
    })?;
    assert_eq!(ping_path(&t)?, Path::Primary, "close(false) stops steering");
    assert!(!links.exists(), "close(false) removes the pins");
    Ok(())
}
