//! `rb_xdp` and `rb_tc` exercised through BPF_PROG_TEST_RUN on crafted frames,
//! in a fresh namespace with its own bpffs. The fib lookups of XDP need a real
//! backup device: a veth `bk0` (192.0.2.1/24, 2001:db8:b::1/64) with permanent
//! neighbours for the gateways 192.0.2.2 / 2001:db8:b::2.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use routebackup::config::AttachMode;
use routebackup::fastpath::{gateway_bytes, Fastpath, FastpathOptions};
use routebackup::kernel::{Feature, Kernel, Support};
use routebackup_common::{
    GroupStats, SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_GATEWAY_V6,
    FLAG_L3_DEVICE, FLAG_MACS_VALID,
};
use routebackup_tests::frames::{self, FrameSpec};
use routebackup_tests::{BpfFs, Netns};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const BK0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];

const SRC4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 5);
const DST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 5);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 7);

struct Env {
    ns: Netns,
    bpffs: BpfFs,
}

fn env() -> Result<Env> {
    let ns = Netns::new("fp")?;
    ns.sh(
        "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1 && \
         ip link add bk0 address 02:00:00:00:0b:01 type veth peer name bk1 && \
         ip addr add 192.0.2.1/24 dev bk0 && ip addr add 2001:db8:b::1/64 dev bk0 nodad && \
         ip link set bk0 up && ip link set bk1 up && \
         ip neigh add 192.0.2.2 lladdr 02:00:00:00:0b:02 nud permanent dev bk0 && \
         ip neigh add 2001:db8:b::2 lladdr 02:00:00:00:0b:02 nud permanent dev bk0 && \
         ip tuntap add mode tun name tun0 && ip link set tun0 up",
    )?;
    Ok(Env {
        ns,
        bpffs: BpfFs::new()?,
    })
}

/// The kernels a test of the XDP metadata mark runs against: this one as
/// probed, and this one with the mark forced off, so that the fallback (TC
/// examines and counts what XDP passed) runs on every kernel, and the mark
/// wherever the kernel has it.
fn meta_kernels() -> [Kernel; 2] {
    [
        Kernel::host().clone(),
        Kernel::host().without(&[Feature::XdpMetadata]),
    ]
}

/// Whether a test run can show rb_xdp's mark: the kernel has XDP metadata
/// and its test runs hand the metadata area back (5.10's do not; there the
/// assertions on the mark are skipped, and said so, while the rest runs).
fn mark_visible(test: &str, k: &Kernel) -> bool {
    if !k.has(Feature::XdpMetadata) {
        return false;
    }
    let visible = routebackup::kernel::xdp_test_runs_return_metadata();
    if !visible {
        routebackup_tests::needs::skipped(
            &format!("{test} (the mark's assertions)"),
            "this kernel's XDP test runs do not return the metadata area",
        );
    }
    visible
}

/// Whether rb_xdp counts the packets it passes itself: with the mark, or
/// while TC is switched off; otherwise it leaves them to rb_tc.
fn xdp_counts_passes(fp: &Fastpath, k: &Kernel) -> bool {
    k.has(Feature::XdpMetadata) || fp.tc_idle()
}

impl Env {
    /// Runs `f` inside the namespace with a freshly opened fast path (no
    /// interfaces attached: only TestRun), closing it afterwards.
    fn with<T: Send>(&self, f: impl FnOnce(&mut Fastpath, &Ids) -> Result<T> + Send) -> Result<T> {
        self.with_kernel(Kernel::host(), f)
    }

    /// The same on `kernel` (features forced off, see `Kernel::without`).
    fn with_kernel<T: Send>(
        &self,
        kernel: &Kernel,
        f: impl FnOnce(&mut Fastpath, &Ids) -> Result<T> + Send,
    ) -> Result<T> {
        let kernel = kernel.clone();
        let bk0 = self.ns.ifindex("bk0")?;
        let tun0 = self.ns.ifindex("tun0")?;
        let pin = self.bpffs.path().join("rb");
        self.ns.run_in(move || {
            let mut fp = Fastpath::open(&FastpathOptions {
                pin_path: pin,
                interfaces: vec![],
                mode: AttachMode::Tc,
                kernel,
            })?;
            let r = f(&mut fp, &Ids { bk0, tun0 });
            fp.close(false)?;
            r
        })
    }
}

struct Ids {
    bk0: u32,
    tun0: u32,
}

fn steer_gw(group: u32, ifindex: u32, gw: IpAddr) -> SegmentValue {
    SegmentValue {
        group_id: group,
        action: ACTION_STEER,
        backup_ifindex: ifindex,
        flags: if gw.is_ipv4() {
            FLAG_GATEWAY_V4
        } else {
            FLAG_GATEWAY_V6
        },
        gateway: gateway_bytes(gw),
        ..Default::default()
    }
}

fn steer_l3(group: u32, ifindex: u32) -> SegmentValue {
    SegmentValue {
        group_id: group,
        action: ACTION_STEER,
        backup_ifindex: ifindex,
        flags: FLAG_L3_DEVICE,
        gateway: [0; 16],
        ..Default::default()
    }
}

fn pass(group: u32) -> SegmentValue {
    SegmentValue {
        group_id: group,
        action: ACTION_PASS,
        ..Default::default()
    }
}

const GW4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const GW6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 2));

fn stats(fp: &Fastpath, g: u32) -> GroupStats {
    fp.group_stats(g).expect("stats")
}

/// Checks a frame steered by XDP: MACs from the neighbour table, no tag,
/// TTL one lower, valid IPv4 checksum, rest unchanged.
fn assert_xdp_steered(input: &[u8], out: &[u8], tag: bool, v6: bool) {
    let in_l3 = if tag { 18 } else { 14 };
    assert_eq!(
        out.len(),
        input.len() - if tag { 4 } else { 0 },
        "tag removed"
    );
    assert_eq!(
        &out[0..6],
        &GW_MAC,
        "destination MAC from the gateway's neighbour entry"
    );
    assert_eq!(&out[6..12], &BK0_MAC, "source MAC of the backup device");
    assert_eq!(&out[12..14], if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    assert_l3_forwarded(&input[in_l3..], &out[14..], v6);
}

/// The IP packet `out` equals `inp` with TTL/hop limit one lower (and a valid checksum).
fn assert_l3_forwarded(inp: &[u8], out: &[u8], v6: bool) {
    assert_eq!(inp.len(), out.len());
    if v6 {
        assert_eq!(out[7], inp[7] - 1, "hop limit decremented");
        assert_eq!(&out[..7], &inp[..7]);
        assert_eq!(&out[8..], &inp[8..]);
    } else {
        assert_eq!(out[8], inp[8] - 1, "TTL decremented");
        assert!(
            frames::ipv4_checksum_ok(out, 0),
            "IPv4 header checksum valid after the TTL change"
        );
        assert_eq!(&out[..8], &inp[..8]);
        assert_eq!(out[9], inp[9]);
        assert_eq!(&out[12..], &inp[12..]);
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn ipv4_and_ipv6_steered_by_xdp_and_tc() -> Result<()> {
    let env = env()?;
    env.with(|fp, ids| {
        fp.set_segment("198.51.100.0/24".parse()?, steer_gw(1, ids.bk0, GW4))?;
        fp.set_segment("2001:db8:64::/48".parse()?, steer_gw(2, ids.bk0, GW6))?;

        let f4 = frames::ipv4(SRC4, DST4, &FrameSpec::default());
        let r = fp.test_run_xdp(&f4, 1)?;
        assert_eq!(r.verdict, XDP_REDIRECT);
        assert_xdp_steered(&f4, &r.data, false, false);
        let s = stats(fp, 1);
        assert_eq!((s.steered_packets, s.steered_bytes), (1, f4.len() as u64));
        assert_eq!(
            (s.passed_packets, s.redirect_failures, s.deferred_packets),
            (0, 0, 0)
        );

        let r = fp.test_run_tc(&f4, 1)?;
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(
            &r.data[..14],
            &f4[..14],
            "TC leaves L2 to bpf_redirect_neigh"
        );
        assert_l3_forwarded(&f4[14..], &r.data[14..], false);
        assert_eq!(stats(fp, 1).steered_packets, 2);

        let f6 = frames::ipv6(SRC6, DST6, &FrameSpec::default());
        let r = fp.test_run_xdp(&f6, 1)?;
        assert_eq!(r.verdict, XDP_REDIRECT);
        assert_xdp_steered(&f6, &r.data, false, true);
        let r = fp.test_run_tc(&f6, 1)?;
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_l3_forwarded(&f6[14..], &r.data[14..], true);
        let s = stats(fp, 2);
        assert_eq!(s.steered_packets, 2);
        assert_eq!(s.steered_bytes, 2 * f6.len() as u64);

        // A v4 gateway for v6 traffic (the gateway's family decides the lookup).
        fp.set_segment("2001:db8:64::/48".parse()?, steer_gw(2, ids.bk0, GW4))?;
        let r = fp.test_run_xdp(&f6, 1)?;
        assert_eq!(r.verdict, XDP_REDIRECT);
        assert_xdp_steered(&f6, &r.data, false, true);
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn vlan_tags_are_removed_and_ipv4_options_handled() -> Result<()> {
    let env = env()?;
    env.with(|fp, ids| {
        fp.set_segment("198.51.100.0/24".parse()?, steer_gw(1, ids.bk0, GW4))?;
        fp.set_segment("2001:db8:64::/48".parse()?, steer_gw(1, ids.bk0, GW6))?;
        for tpid in [0x8100u16, 0x88a8] {
            let spec = FrameSpec {
                vlan: Some((tpid, 42)),
                ..Default::default()
            };
            let f4 = frames::ipv4(SRC4, DST4, &spec);
            let r = fp.test_run_xdp(&f4, 1)?;
            assert_eq!(r.verdict, XDP_REDIRECT, "tpid {tpid:#x}");
            assert_xdp_steered(&f4, &r.data, true, false);
            let r = fp.test_run_tc(&f4, 1)?;
            assert_eq!(r.verdict, TC_ACT_REDIRECT, "tpid {tpid:#x}");
            assert_eq!(r.data.len(), f4.len() - 4, "TC popped the tag");
            assert_eq!(&r.data[12..14], &[0x08, 0x00]);
            assert_l3_forwarded(&f4[18..], &r.data[14..], false);

            let f6 = frames::ipv6(SRC6, DST6, &spec);
            let r = fp.test_run_xdp(&f6, 1)?;
            assert_eq!(r.verdict, XDP_REDIRECT);
            assert_xdp_steered(&f6, &r.data, true, true);
        }
        for options in [4usize, 12, 40] {
            for ttl in [2u8, 64, 255] {
                let spec = FrameSpec {
                    options,
                    ttl,
                    ..Default::default()
                };
                let f4 = frames::ipv4(SRC4, DST4, &spec);
                let r = fp.test_run_xdp(&f4, 1)?;
                assert_eq!(r.verdict, XDP_REDIRECT, "options {options}");
                assert_xdp_steered(&f4, &r.data, false, false);
                let r = fp.test_run_tc(&f4, 1)?;
                assert_eq!(r.verdict, TC_ACT_REDIRECT);
                assert_l3_forwarded(&f4[14..], &r.data[14..], false);
            }
        }
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn expiring_ttl_fragments_and_l3_backups() -> Result<()> {
    let env = env()?;
    for k in meta_kernels() {
        expiring_ttl_fragments_and_l3_backups_on(&env, &k)?;
    }
    Ok(())
}

fn expiring_ttl_fragments_and_l3_backups_on(env: &Env, kernel: &Kernel) -> Result<()> {
    let mark = mark_visible("expiring_ttl_fragments_and_l3_backups", kernel);
    env.with_kernel(kernel, |fp, ids| {
        fp.set_segment("198.51.100.0/24".parse()?, steer_gw(1, ids.bk0, GW4))?;
        fp.set_segment("2001:db8:64::/48".parse()?, steer_gw(1, ids.bk0, GW6))?;

        // TTL / hop limit 1 (and 0): passed untouched so the kernel answers.
        for ttl in [0u8, 1] {
            let spec = FrameSpec {
                ttl,
                ..Default::default()
            };
            for f in [
                frames::ipv4(SRC4, DST4, &spec),
                frames::ipv6(SRC6, DST6, &spec),
            ] {
                let r = fp.test_run_xdp(&f, 1)?;
                assert_eq!((r.verdict, &r.data), (XDP_PASS, &f));
                assert_eq!(
                    r.meta_counted, mark,
                    "XDP marks the packets it counted as passed for TC, where the kernel lets it"
                );
                let r = fp.test_run_tc(&f, 1)?;
                assert_eq!((r.verdict, &r.data), (TC_ACT_OK, &f));
            }
        }
        // Four frames. TC's test runs carry no metadata, so it counts each
        // one; XDP counts them too only where it can mark them (in real
        // traffic TC then skips them).
        let s = stats(fp, 1);
        let by_xdp = if xdp_counts_passes(fp, kernel) { 4 } else { 0 };
        assert_eq!((s.passed_packets, s.steered_packets), (4 + by_xdp, 0));

        // IPv4 fragments: XDP defers, TC steers.
        for frag in [0x2000u16, 0x0010, 0x2010] {
            let f = frames::ipv4(
                SRC4,
                DST4,
                &FrameSpec {
                    frag,
                    ..Default::default()
                },
            );
            let r = fp.test_run_xdp(&f, 1)?;
            assert_eq!((r.verdict, &r.data), (XDP_PASS, &f), "frag {frag:#x}");
            let r = fp.test_run_tc(&f, 1)?;
            assert_eq!(r.verdict, TC_ACT_REDIRECT);
            assert_l3_forwarded(&f[14..], &r.data[14..], false);
        }
        let s = stats(fp, 1);
        assert_eq!((s.deferred_packets, s.steered_packets), (3, 3));

        // L3 backup (tun): XDP defers, TC pops the tag, decrements and redirects.
        fp.set_segment("203.0.113.0/24".parse()?, steer_l3(3, ids.tun0))?;
        let spec = FrameSpec {
            vlan: Some((0x8100, 7)),
            ..Default::default()
        };
        let f = frames::ipv4(SRC4, Ipv4Addr::new(203, 0, 113, 9), &spec);
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &f));
        let r = fp.test_run_tc(&f, 1)?;
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_eq!(r.data.len(), f.len() - 4);
        assert_l3_forwarded(&f[18..], &r.data[14..], false);
        let s = stats(fp, 3);
        assert_eq!(
            (s.deferred_packets, s.steered_packets, s.redirect_failures),
            (1, 1, 0)
        );
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn fib_failures_and_unresolved_neighbours() -> Result<()> {
    let env = env()?;
    env.with(|fp, ids| {
        // Neighbour not resolved: XDP defers to TC.
        fp.set_segment(
            "198.51.100.0/24".parse()?,
            steer_gw(1, ids.bk0, "192.0.2.3".parse()?),
        )?;
        let f = frames::ipv4(SRC4, DST4, &FrameSpec::default());
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &f));
        assert_eq!(stats(fp, 1).deferred_packets, 1);
        // TC hands it to bpf_redirect_neigh, which resolves it.
        assert_eq!(fp.test_run_tc(&f, 1)?.verdict, TC_ACT_REDIRECT);

        // Gateway not reachable through the backup: failure, untouched.
        fp.set_segment(
            "198.51.100.0/24".parse()?,
            steer_gw(2, ids.bk0, "192.0.9.9".parse()?),
        )?;
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &f));
        let s = stats(fp, 2);
        assert_eq!((s.redirect_failures, s.steered_packets), (1, 0));
        Ok(())
    })?;
    // Forwarding off on the backup: the fib lookup refuses, counted as failure.
    env.ns
        .sh("sysctl -qw net.ipv4.conf.all.forwarding=0 net.ipv4.conf.bk0.forwarding=0")?;
    env.with(|fp, ids| {
        fp.set_segment("198.51.100.0/24".parse()?, steer_gw(1, ids.bk0, GW4))?;
        let f = frames::ipv4(SRC4, DST4, &FrameSpec::default());
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &f));
        assert_eq!(stats(fp, 1).redirect_failures, 1);
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn unmatched_pass_entries_arp_and_truncated_frames_pass_untouched() -> Result<()> {
    let env = env()?;
    for k in meta_kernels() {
        unmatched_pass_entries_arp_and_truncated_frames_pass_untouched_on(&env, &k)?;
    }
    Ok(())
}

fn unmatched_pass_entries_arp_and_truncated_frames_pass_untouched_on(
    env: &Env,
    kernel: &Kernel,
) -> Result<()> {
    let mark = mark_visible(
        "unmatched_pass_entries_arp_and_truncated_frames_pass_untouched",
        kernel,
    );
    env.with_kernel(kernel, |fp, ids| {
        fp.set_segment("198.51.100.0/24".parse()?, steer_gw(1, ids.bk0, GW4))?;
        fp.set_segment("2001:db8:64::/48".parse()?, steer_gw(1, ids.bk0, GW6))?;
        fp.set_segment("192.0.2.0/24".parse()?, pass(2))?;

        // No segment: untouched, not counted anywhere; marked, so that TC
        // does not parse it and look it up a second time.
        let other = frames::ipv4(SRC4, Ipv4Addr::new(8, 8, 8, 8), &FrameSpec::default());
        let other6 = frames::ipv6(SRC6, "2001:db8:1::1".parse()?, &FrameSpec::default());
        for f in [&other, &other6, &frames::arp()] {
            let r = fp.test_run_xdp(f, 1)?;
            assert_eq!((r.verdict, &r.data), (XDP_PASS, f));
            assert_eq!(
                r.meta_counted, mark,
                "XDP marks what it examined for TC, where the kernel lets it"
            );
            let r = fp.test_run_tc(f, 1)?;
            assert_eq!((r.verdict, &r.data), (TC_ACT_OK, f));
        }
        assert_eq!(stats(fp, 1), GroupStats::default());

        // Action pass: untouched, counted as passed.
        let f = frames::ipv4(SRC4, Ipv4Addr::new(192, 0, 2, 50), &FrameSpec::default());
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &f));
        assert_eq!(r.meta_counted, mark);
        let r = fp.test_run_tc(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (TC_ACT_OK, &f));
        // TC's test run has no mark to skip it (see above).
        let s = stats(fp, 2);
        let n = if xdp_counts_passes(fp, kernel) { 2 } else { 1 };
        assert_eq!(
            (s.passed_packets, s.passed_bytes, s.steered_packets),
            (n, n * f.len() as u64, 0)
        );

        // Truncated anywhere inside the headers: untouched, nothing counted.
        let cases = [
            (frames::ipv4(SRC4, DST4, &FrameSpec::default()), 14 + 20),
            (
                frames::ipv4(
                    SRC4,
                    DST4,
                    &FrameSpec {
                        options: 8,
                        ..Default::default()
                    },
                ),
                14 + 28,
            ),
            (
                frames::ipv4(
                    SRC4,
                    DST4,
                    &FrameSpec {
                        vlan: Some((0x8100, 3)),
                        ..Default::default()
                    },
                ),
                18 + 20,
            ),
            (frames::ipv6(SRC6, DST6, &FrameSpec::default()), 14 + 40),
            (
                frames::ipv6(
                    SRC6,
                    DST6,
                    &FrameSpec {
                        vlan: Some((0x88a8, 3)),
                        ..Default::default()
                    },
                ),
                18 + 40,
            ),
        ];
        for (full, headers) in &cases {
            // The kernel's test run needs at least an Ethernet header.
            for len in 14..*headers {
                let f = &full[..len];
                let r = fp
                    .test_run_xdp(f, 1)
                    .map_err(|e| anyhow::Error::from(e).context(format!("xdp len {len}")))?;
                assert_eq!(
                    (r.verdict, r.data.as_slice()),
                    (XDP_PASS, f),
                    "xdp, {len} of {headers} header bytes"
                );
                // The kernel refuses skb test runs whose IP header is
                // incomplete (EINVAL); the parser is shared with XDP above.
                let Ok(r) = fp.test_run_tc(f, 1) else {
                    continue;
                };
                assert_eq!(
                    (r.verdict, r.data.as_slice()),
                    (TC_ACT_OK, f),
                    "tc, {len} of {headers} header bytes"
                );
            }
            // Complete headers are enough.
            let r = fp.test_run_xdp(&full[..*headers], 1)?;
            assert_eq!(r.verdict, XDP_REDIRECT);
        }
        let s = stats(fp, 1);
        assert_eq!(
            (s.passed_packets, s.deferred_packets, s.redirect_failures),
            (0, 0, 0)
        );
        assert_eq!(s.steered_packets, cases.len() as u64);
        // A wrong IP version behind the EtherType is not parsed either.
        let mut bad = frames::ipv4(SRC4, DST4, &FrameSpec::default());
        bad[14] = 0x65;
        let r = fp.test_run_xdp(&bad, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &bad));
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn longest_prefix_wins_and_entries_round_trip() -> Result<()> {
    let env = env()?;
    for k in meta_kernels() {
        longest_prefix_wins_and_entries_round_trip_on(&env, &k)?;
    }
    Ok(())
}

fn longest_prefix_wins_and_entries_round_trip_on(env: &Env, kernel: &Kernel) -> Result<()> {
    env.with_kernel(kernel, |fp, ids| {
        fp.set_segment("10.0.0.0/8".parse()?, steer_gw(1, ids.bk0, GW4))?;
        fp.set_segment("10.1.0.0/16".parse()?, pass(2))?;
        fp.set_segment("10.1.2.0/24".parse()?, steer_l3(3, ids.tun0))?;
        // Host bits are cleared on write.
        fp.set_segment("2001:db8:64::1/48".parse()?, steer_gw(4, ids.bk0, GW6))?;

        for (dst, verdict, group) in [
            (Ipv4Addr::new(10, 200, 0, 1), XDP_REDIRECT, 1),
            (Ipv4Addr::new(10, 1, 9, 1), XDP_PASS, 2),
            (Ipv4Addr::new(10, 1, 2, 3), XDP_PASS, 3),
        ] {
            let before = stats(fp, group);
            let f = frames::ipv4(SRC4, dst, &FrameSpec::default());
            let r = fp.test_run_xdp(&f, 1)?;
            assert_eq!(r.verdict, verdict, "{dst}");
            if verdict == XDP_PASS && group == 2 && !xdp_counts_passes(fp, kernel) {
                // A pass entry's packet without the mark: TC counts it.
                assert_eq!(stats(fp, group), before, "{dst} left to TC");
                fp.test_run_tc(&f, 1)?;
            }
            assert_ne!(stats(fp, group), before, "{dst} counted in group {group}");
        }
        assert_eq!(stats(fp, 3).deferred_packets, 1);

        let mut segs = fp.segments()?;
        segs.sort_by_key(|(p, _)| p.to_string());
        let names: Vec<String> = segs.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.1.2.0/24",
                "2001:db8:64::/48"
            ]
        );
        assert_eq!(segs[2].1, steer_l3(3, ids.tun0));

        // Removing the /24 makes the /16 (pass) match again.
        assert!(fp.remove_segment("10.1.2.0/24".parse()?)?);
        assert!(!fp.remove_segment("10.1.2.0/24".parse()?)?);
        let f = frames::ipv4(SRC4, Ipv4Addr::new(10, 1, 2, 3), &FrameSpec::default());
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!(r.verdict, XDP_PASS);
        if !xdp_counts_passes(fp, kernel) {
            fp.test_run_tc(&f, 1)?;
        }
        assert_eq!(stats(fp, 2).passed_packets, 2);

        // Invalid entries are refused with a reason.
        let e = fp.set_segment(
            "10.9.0.0/16".parse()?,
            SegmentValue {
                action: ACTION_STEER,
                ..Default::default()
            },
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("backup"));
        let e = fp.set_segment("10.9.0.0/16".parse()?, pass(5000));
        assert!(format!("{:#}", e.unwrap_err()).contains("group id"));
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn pinned_maps_survive_reopen_and_stale_layouts_are_replaced() -> Result<()> {
    let env = env()?;
    let pin = env.bpffs.path().join("rb");
    let dir = routebackup::fastpath::layout_dir(&pin);
    let bk0 = env.ns.ifindex("bk0")?;
    let opts = FastpathOptions {
        pin_path: pin.clone(),
        interfaces: vec![],
        mode: AttachMode::Tc,
        kernel: Kernel::host().clone(),
    };
    let entry = move || -> Result<(ipnet::IpNet, SegmentValue)> {
        Ok(("198.51.100.0/24".parse()?, steer_gw(1, bk0, GW4)))
    };
    let o = opts.clone();
    let d = dir.clone();
    env.ns.run_in(move || {
        let mut fp = Fastpath::open(&o)?;
        assert_eq!(
            fp.pin_path(),
            d.as_path(),
            "maps live in the layout's directory"
        );
        let (prefix, value) = entry()?;
        fp.set_segment(prefix, value)?;
        fp.test_run_xdp(&frames::ipv4(SRC4, DST4, &FrameSpec::default()), 1)?;
        drop(fp); // like a crash: maps stay pinned
        let fp = Fastpath::open(&o)?;
        assert_eq!(fp.segments()?, vec![entry()?]);
        assert_eq!(fp.group_stats(1)?.steered_packets, 1);
        drop(fp);
        Ok(())
    })?;

    // The unversioned layout of earlier releases (maps directly under the pin
    // path): moved into the layout's directory with their entries.
    routebackup_tests::sh(&format!(
        "mv {d}/segments_v4 {d}/segments_v6 {d}/stats {p}/ && rm -r {d}",
        d = dir.display(),
        p = pin.display()
    ))?;
    // Another layout version's directory: removed.
    let other = pin.join("v0");
    std::fs::create_dir_all(&other)?;
    routebackup_tests::sh(&format!(
        "bpftool map create {}/segments_v4 type lpm_trie key 8 value 16 entries 16 name segments_v4 flags 1",
        other.display()
    ))?;
    let o = opts.clone();
    let (p2, d2, other2) = (pin.clone(), dir.clone(), other.clone());
    env.ns.run_in(move || {
        let fp = Fastpath::open(&o)?;
        assert_eq!(fp.segments()?, vec![entry()?], "entries carried over");
        assert_eq!(fp.group_stats(1)?.steered_packets, 1);
        assert!(!p2.join("segments_v4").exists() && d2.join("segments_v4").exists());
        assert!(!other2.exists(), "another layout's directory is removed");
        fp.close(false)?;
        assert!(
            !p2.exists(),
            "close(false) removes the pins and directories"
        );
        Ok(())
    })?;

    // A map of another shape under this layout's name: replaced, not reused.
    std::fs::create_dir_all(&dir)?;
    let stale = dir.join("segments_v4");
    routebackup_tests::sh(&format!(
        "bpftool map create {} type lpm_trie key 8 value 16 entries 16 name segments_v4 flags 1",
        stale.display()
    ))?;
    let o = opts.clone();
    env.ns.run_in(move || {
        let mut fp = Fastpath::open(&o)?;
        let (prefix, value) = entry()?;
        fp.set_segment(prefix, value)?;
        assert_eq!(fp.segments()?, vec![entry()?]);
        fp.close(false)?;
        Ok(())
    })?;
    // Not a bpffs: a clear error with the fix.
    let tmp = tempfile::tempdir()?;
    let opts = FastpathOptions {
        pin_path: tmp.path().join("rb"),
        interfaces: vec![],
        mode: AttachMode::Tc,
        kernel: Kernel::host().clone(),
    };
    let msg = format!("{:#}", Fastpath::open(&opts).err().expect("not a bpffs"));
    assert!(msg.contains("mount -t bpf bpf"), "{msg}");
    Ok(())
}

/// MACs cached in the entry (`FLAG_MACS_VALID`): XDP rewrites from them with no
/// fib lookup, so it redirects even when the kernel has no neighbour entry for
/// the gateway; without the flag the same entry is deferred to TC (NO_NEIGH).
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn cached_macs_skip_the_fib_lookup() -> Result<()> {
    const CACHED_DMAC: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x0c];
    const CACHED_SMAC: [u8; 6] = [0x02, 0, 0, 0, 0x0d, 0x0d];
    // A gateway on bk0's subnet without a neighbour entry.
    let unknown_gw4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let unknown_gw6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0x99));
    let env = env()?;
    env.with(|fp, ids| {
        let cached = |group: u32, gw: IpAddr, mtu: u16| SegmentValue {
            flags: steer_gw(group, ids.bk0, gw).flags | FLAG_MACS_VALID,
            dmac: CACHED_DMAC,
            smac: CACHED_SMAC,
            mtu,
            ..steer_gw(group, ids.bk0, gw)
        };
        let f4 = frames::ipv4(SRC4, DST4, &FrameSpec::default());

        // No flag: the fib lookup finds no neighbour, XDP defers to TC.
        fp.set_segment(
            "198.51.100.0/24".parse()?,
            steer_gw(1, ids.bk0, unknown_gw4),
        )?;
        let r = fp.test_run_xdp(&f4, 1)?;
        assert_eq!(r.verdict, XDP_PASS);
        assert_eq!(r.data, f4, "deferred frame untouched");
        let s = stats(fp, 1);
        assert_eq!((s.deferred_packets, s.steered_packets), (1, 0));

        // Flag: redirected with the cached MACs.
        fp.set_segment("198.51.100.0/24".parse()?, cached(1, unknown_gw4, 1500))?;
        fp.set_segment("2001:db8:64::/48".parse()?, cached(1, unknown_gw6, 1500))?;
        for (tag, v6) in [(false, false), (true, false), (false, true), (true, true)] {
            let spec = FrameSpec {
                vlan: tag.then_some((0x8100, 7)),
                ..Default::default()
            };
            let input = if v6 {
                frames::ipv6(SRC6, DST6, &spec)
            } else {
                frames::ipv4(SRC4, DST4, &spec)
            };
            let r = fp.test_run_xdp(&input, 1)?;
            assert_eq!(r.verdict, XDP_REDIRECT, "tag {tag} v6 {v6}");
            let out = &r.data;
            assert_eq!(out.len(), input.len() - if tag { 4 } else { 0 });
            assert_eq!(&out[0..6], &CACHED_DMAC, "destination MAC from the entry");
            assert_eq!(&out[6..12], &CACHED_SMAC, "source MAC from the entry");
            assert_eq!(&out[12..14], if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            let in_l3 = if tag { 18 } else { 14 };
            assert_l3_forwarded(&input[in_l3..], &out[14..], v6);
        }
        let s = stats(fp, 1);
        assert_eq!(
            (s.steered_packets, s.deferred_packets, s.redirect_failures),
            (4, 1, 0)
        );

        // The cached MTU: an IP packet longer than it goes to the kernel
        // untouched (fragmentation / ICMP), one of exactly the MTU is steered.
        let ip_len = u16::try_from(f4.len() - 14)?;
        fp.set_segment(
            "198.51.100.0/24".parse()?,
            cached(1, unknown_gw4, ip_len - 1),
        )?;
        let r = fp.test_run_xdp(&f4, 1)?;
        assert_eq!(r.verdict, XDP_PASS, "oversize frame not redirected");
        assert_eq!(r.data, f4);
        assert_eq!(stats(fp, 1).deferred_packets, 2);
        fp.set_segment("198.51.100.0/24".parse()?, cached(1, unknown_gw4, ip_len))?;
        let r = fp.test_run_xdp(&f4, 1)?;
        assert_eq!(r.verdict, XDP_REDIRECT, "frame of exactly the MTU steered");
        assert_eq!(&r.data[0..6], &CACHED_DMAC);

        // An L3 entry ignores the flag (XDP cannot redirect to it).
        fp.set_segment(
            "198.51.100.0/24".parse()?,
            SegmentValue {
                flags: FLAG_L3_DEVICE | FLAG_MACS_VALID,
                mtu: 1500,
                ..steer_l3(1, ids.tun0)
            },
        )?;
        let r = fp.test_run_xdp(&f4, 1)?;
        assert_eq!(r.verdict, XDP_PASS);
        assert_eq!(r.data, f4);
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn tc_is_switched_off_while_nothing_steers() -> Result<()> {
    let env = env()?;
    for k in meta_kernels() {
        tc_is_switched_off_while_nothing_steers_on(&env, &k)?;
    }
    Ok(())
}

fn tc_is_switched_off_while_nothing_steers_on(env: &Env, kernel: &Kernel) -> Result<()> {
    let pin = env.bpffs.path().join("rb");
    env.with_kernel(kernel, |fp, ids| {
        let seg: ipnet::IpNet = "203.0.113.0/24".parse()?;
        let f = frames::ipv4(SRC4, Ipv4Addr::new(203, 0, 113, 9), &FrameSpec::default());
        let other = frames::ipv4(SRC4, Ipv4Addr::new(8, 8, 8, 8), &FrameSpec::default());
        // Nothing steers: XDP counts the pass entry's packets alone and
        // marks nothing; rb_tc returns at once, neither parsing nor counting.
        fp.set_segment(seg, pass(3))?;
        assert!(fp.tc_idle(), "pass entries need no TC");
        for frame in [&f, &other] {
            let r = fp.test_run_xdp(frame, 1)?;
            assert_eq!((r.verdict, &r.data), (XDP_PASS, frame));
            assert!(!r.meta_counted, "no mark while TC is idle");
            let r = fp.test_run_tc(frame, 1)?;
            assert_eq!((r.verdict, &r.data), (TC_ACT_OK, frame));
        }
        assert_eq!(stats(fp, 3).passed_packets, 1, "counted once, by XDP");

        // An entry only TC can serve (L3 backup): TC works from the first
        // packet after the write.
        fp.set_segment(seg, steer_l3(3, ids.tun0))?;
        assert!(!fp.tc_idle());
        let r = fp.test_run_xdp(&f, 1)?;
        assert_eq!((r.verdict, &r.data, r.meta_counted), (XDP_PASS, &f, false));
        let r = fp.test_run_tc(&f, 1)?;
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_l3_forwarded(&f[14..], &r.data[14..], false);
        // What XDP is done with is marked again, for TC to skip (where the
        // kernel has XDP metadata; else TC examines it again).
        assert_eq!(
            fp.test_run_xdp(&other, 1)?.meta_counted,
            mark_visible("tc_is_switched_off_while_nothing_steers", kernel)
        );

        // An Ethernet entry: XDP steers it, but defers what the agent cannot
        // foresee (here an IPv4 fragment) to TC, so TC stays on.
        fp.set_segment(seg, steer_gw(3, ids.bk0, GW4))?;
        assert!(!fp.tc_idle());
        let frag = frames::ipv4(
            SRC4,
            Ipv4Addr::new(203, 0, 113, 9),
            &FrameSpec {
                frag: 0x2000,
                ..Default::default()
            },
        );
        assert_eq!(fp.test_run_xdp(&frag, 1)?.verdict, XDP_PASS);
        assert_eq!(fp.test_run_tc(&frag, 1)?.verdict, TC_ACT_REDIRECT);
        let s = stats(fp, 3);
        assert_eq!((s.steered_packets, s.deferred_packets), (2, 2));

        // A second steer entry; replacing one by a pass entry keeps TC on,
        // removing the last one switches it off.
        fp.set_segment("203.0.114.0/24".parse()?, steer_l3(4, ids.tun0))?;
        fp.set_segment(seg, pass(3))?;
        assert!(!fp.tc_idle(), "one entry still steers");
        // A reopened fast path (an agent restart) adopts the steering and
        // keeps TC on.
        let again = Fastpath::open(&FastpathOptions {
            pin_path: pin.clone(),
            interfaces: vec![],
            mode: AttachMode::Tc,
            kernel: kernel.clone(),
        })?;
        assert!(!again.tc_idle(), "adopted steering keeps TC on");
        again.close(true)?;
        assert!(fp.remove_segment("203.0.114.0/24".parse()?)?);
        assert!(fp.tc_idle(), "nothing steers any more");
        let before = stats(fp, 3).passed_packets;
        let r = fp.test_run_tc(&f, 1)?;
        assert_eq!((r.verdict, &r.data), (TC_ACT_OK, &f));
        assert_eq!(
            stats(fp, 3).passed_packets,
            before,
            "idle TC counts nothing"
        );
        Ok(())
    })
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn without_fib_lookup_in_xdp_tc_forwards_what_xdp_defers() -> Result<()> {
    const CACHED: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x0c];
    let env = env()?;
    let k = Kernel::host().without(&[Feature::FibLookupXdp]);
    env.with_kernel(&k, |fp, ids| {
        // A resolved gateway: XDP would look it up and redirect; without the
        // helper it defers, and TC forwards through bpf_redirect_neigh.
        fp.set_segment("198.51.100.0/24".parse()?, steer_gw(1, ids.bk0, GW4))?;
        let f4 = frames::ipv4(SRC4, DST4, &FrameSpec::default());
        let r = fp.test_run_xdp(&f4, 1)?;
        assert_eq!((r.verdict, &r.data), (XDP_PASS, &f4), "deferred untouched");
        let r = fp.test_run_tc(&f4, 1)?;
        assert_eq!(r.verdict, TC_ACT_REDIRECT);
        assert_l3_forwarded(&f4[14..], &r.data[14..], false);
        let s = stats(fp, 1);
        assert_eq!((s.deferred_packets, s.steered_packets), (1, 1));

        // Cached MACs need no lookup: XDP still steers those itself.
        fp.set_segment(
            "198.51.100.0/24".parse()?,
            SegmentValue {
                flags: steer_gw(1, ids.bk0, GW4).flags | FLAG_MACS_VALID,
                dmac: CACHED,
                smac: BK0_MAC,
                mtu: 1500,
                ..steer_gw(1, ids.bk0, GW4)
            },
        )?;
        assert_eq!(fp.test_run_xdp(&f4, 1)?.verdict, XDP_REDIRECT);
        Ok(())
    })
}

/// The probe's answer is what the verifier does: claiming XDP metadata on a
/// kernel whose probe said no makes rb_xdp fail to load (and the reverse
/// loads). A probe that lied either way fails here.
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_metadata_probe_agrees_with_the_verifier() -> Result<()> {
    let env = env()?;
    let mut claimed = Kernel::host().clone();
    let probed = claimed.has(Feature::XdpMetadata);
    for c in &mut claimed.capabilities {
        if c.feature == Feature::XdpMetadata {
            c.support = Support::Yes;
        }
    }
    let opened = env.with_kernel(&claimed, |_, _| Ok(()));
    match (probed, opened) {
        (true, Ok(())) => {}
        (false, Err(e)) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("rb_xdp"), "{msg}");
        }
        (true, Err(e)) => panic!("the probe found XDP metadata, but rb_xdp with it failed: {e:#}"),
        (false, Ok(())) => panic!("the probe found no XDP metadata, but rb_xdp with it loaded"),
    }
    // Without it, rb_xdp loads on any kernel.
    env.with_kernel(&Kernel::host().without(&[Feature::XdpMetadata]), |_, _| {
        Ok(())
    })
}
