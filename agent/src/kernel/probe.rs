//! The probes: each tries the real thing once and keeps the kernel's answer.
//!
//! Attachments are tried in a network namespace of their own (a thread that
//! unshares one), on its loopback device: nothing on the box is touched, and
//! whatever the probe attached goes away with the namespace.

use std::os::fd::AsFd;

use super::sys::{self, add_imm, call, exit, mov_imm, mov_reg, store_dw, Insn, ProgType};
use super::{Capability, Feature, Kernel, Support};
use crate::netlink::codec;
use crate::netlink::genl::Netdev;
use crate::netlink::socket::Requests;

/// Helper ids (`enum bpf_func_id`).
const FN_XDP_ADJUST_META: i32 = 54;
const FN_FIB_LOOKUP: i32 = 69;
const FN_REDIRECT_NEIGH: i32 = 152;

const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const FP: u8 = 10;

/// `bpf_xdp_adjust_meta(ctx, -4)`, as `rb_xdp` calls it.
const XDP_META: [Insn; 4] = [
    mov_imm(R2, -4),
    call(FN_XDP_ADJUST_META),
    mov_imm(R0, XDP_PASS),
    exit(),
];

/// `bpf_fib_lookup(ctx, &zeroed_params, 64, 0)`, returning `ret`.
fn fib_lookup(ret: i32) -> Vec<Insn> {
    let mut v: Vec<Insn> = (1..=8i16).map(|i| store_dw(FP, -8 * i, 0)).collect();
    v.extend([
        mov_reg(R2, FP),
        add_imm(R2, -64),
        mov_imm(R3, 64),
        mov_imm(R4, 0),
        call(FN_FIB_LOOKUP),
        mov_imm(R0, ret),
        exit(),
    ]);
    v
}

/// `bpf_redirect_neigh(1, NULL, 0, 0)`, as `rb_tc` calls it without a gateway.
const REDIRECT_NEIGH: [Insn; 7] = [
    mov_imm(R1, 1),
    mov_imm(R2, 0),
    mov_imm(R3, 0),
    mov_imm(R4, 0),
    call(FN_REDIRECT_NEIGH),
    mov_imm(R0, 0),
    exit(),
];

const XDP_RETURN_PASS: [Insn; 2] = [mov_imm(R0, XDP_PASS), exit()];
const XDP_RETURN_DROP: [Insn; 2] = [mov_imm(R0, XDP_DROP), exit()];
const TC_RETURN_OK: [Insn; 2] = [mov_imm(R0, 0), exit()];

/// The loopback device of a new network namespace.
const LO: u32 = 1;

fn loads(ty: ProgType, insns: &[Insn]) -> Support {
    match sys::load(ty, insns) {
        Ok(_) => Support::Yes,
        Err(sys::Refused { said, .. }) => Support::No { kernel_said: said },
    }
}

fn from_io(r: std::io::Result<()>) -> Support {
    match r {
        Ok(()) => Support::Yes,
        Err(e) => Support::No {
            kernel_said: e.to_string(),
        },
    }
}

fn live_frames() -> Support {
    let prog = match sys::load(ProgType::Xdp, &XDP_RETURN_DROP) {
        Ok(p) => p,
        Err(sys::Refused { said, .. }) => {
            return Support::Unknown {
                why: format!("a trivial XDP program did not load: {said}"),
            }
        }
    };
    // An Ethernet frame of zeros: the program drops it anyway. A kernel
    // before live frames may ignore the flag and run a plain test run, which
    // reports the program's XDP_DROP; a live run reports no verdict (0).
    match sys::test_run(prog.as_fd(), &[0u8; 64], sys::BPF_F_TEST_XDP_LIVE_FRAMES) {
        Ok(retval) if retval == XDP_DROP.unsigned_abs() => Support::No {
            kernel_said: "the flag was ignored: the program ran as a plain test run".into(),
        },
        Ok(_) => Support::Yes,
        Err(e) => Support::No {
            kernel_said: e.to_string(),
        },
    }
}

/// Whether an XDP test run hands back the metadata area in front of the
/// frame (5.10's do not: they return the frame from `data`). Not a feature
/// of the agent, which never reads the area back: the tests of the mark
/// need it to see the mark.
pub fn xdp_test_runs_return_metadata() -> bool {
    let Ok(prog) = sys::load(ProgType::Xdp, &XDP_META) else {
        return false;
    };
    let frame = [0u8; 64];
    matches!(
        sys::test_run_sized(prog.as_fd(), &frame, 0),
        Ok((_, size)) if size as usize == frame.len() + 4
    )
}

fn nexthop_objects() -> Support {
    let requests = match Requests::open("the nexthop probe") {
        Ok(r) => r,
        Err(e) => {
            return Support::Unknown {
                why: crate::error::chain(&e),
            }
        }
    };
    // struct nhmsg (8 bytes) + NHA_ID = 1 (id 1 rarely exists; ENOENT is
    // an answer from a kernel that knows nexthop objects).
    let mut body = vec![0u8; 8];
    codec::push_attr(&mut body, 1, &1u32.to_ne_bytes());
    match requests.get(
        "nexthop 1",
        codec::RTM_GETNEXTHOP,
        &body,
        codec::RTM_NEWNEXTHOP,
        |_| Some(()),
    ) {
        Ok(_) => Support::Yes,
        Err(e) => Support::No {
            kernel_said: crate::error::chain(&e),
        },
    }
}

fn xdp_features() -> Support {
    match Netdev::open() {
        Ok(_) => Support::Yes,
        Err(e) => Support::No {
            kernel_said: crate::error::chain(&e),
        },
    }
}

/// XDP link, its detach, and TCX, on the loopback of a fresh namespace.
fn attachments() -> [(Feature, Support); 3] {
    let unknown = |why: String| {
        [Feature::XdpLink, Feature::LinkDetach, Feature::Tcx]
            .map(|f| (f, Support::Unknown { why: why.clone() }))
    };
    let probe = || -> Result<[(Feature, Support); 3], String> {
        // SAFETY: unshare affects only this thread, which ends after the probe.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot make a probe network namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        let xdp = sys::load(ProgType::Xdp, &XDP_RETURN_PASS)
            .map_err(|r| format!("a trivial XDP program did not load: {}", r.said))?;
        let tc = sys::load(ProgType::SchedCls, &TC_RETURN_OK)
            .map_err(|r| format!("a trivial TC program did not load: {}", r.said))?;
        let (xdp_link, detach) = match sys::bpf_link_create(xdp.as_fd(), LO, sys::BPF_XDP) {
            Ok(link) => (Support::Yes, from_io(sys::bpf_link_detach(link.as_fd()))),
            Err(e) => (
                Support::No {
                    kernel_said: e.to_string(),
                },
                Support::Unknown {
                    why: "no XDP link to detach".into(),
                },
            ),
        };
        let tcx = from_io(sys::bpf_link_create(tc.as_fd(), LO, sys::BPF_TCX_INGRESS).map(drop));
        Ok([
            (Feature::XdpLink, xdp_link),
            (Feature::LinkDetach, detach),
            (Feature::Tcx, tcx),
        ])
    };
    match std::thread::scope(|s| s.spawn(probe).join()) {
        Ok(Ok(r)) => r,
        Ok(Err(why)) => unknown(why),
        Err(_) => unknown("the probe thread failed".into()),
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "(unknown release)".into(), |r| r.trim().to_string())
}

pub(super) fn probe() -> Kernel {
    // Without the right to load programs every answer would be a "no" that
    // says nothing about the kernel (`check` as a user, a unit without
    // CAP_BPF): say so instead.
    if let Err(sys::Refused {
        errno: Some(libc::EPERM),
        said,
    }) = sys::load(ProgType::Xdp, &XDP_RETURN_PASS)
    {
        let why = format!(
            "not allowed to load BPF programs ({said}): run as root, or with CAP_BPF, \
             CAP_NET_ADMIN and CAP_SYS_ADMIN"
        );
        return Kernel {
            release: release(),
            capabilities: Feature::ALL
                .into_iter()
                .map(|feature| Capability {
                    feature,
                    support: Support::Unknown { why: why.clone() },
                })
                .collect(),
        };
    }
    let mut found = vec![
        (Feature::XdpMetadata, loads(ProgType::Xdp, &XDP_META)),
        (
            Feature::FibLookupXdp,
            loads(ProgType::Xdp, &fib_lookup(XDP_PASS)),
        ),
        (
            Feature::FibLookupTc,
            loads(ProgType::SchedCls, &fib_lookup(0)),
        ),
        (
            Feature::RedirectNeigh,
            loads(ProgType::SchedCls, &REDIRECT_NEIGH),
        ),
        (Feature::XdpFeatures, xdp_features()),
        (Feature::LiveFrames, live_frames()),
        (Feature::NexthopObjects, nexthop_objects()),
    ];
    found.extend(attachments());
    let capabilities = Feature::ALL
        .into_iter()
        .map(|feature| Capability {
            feature,
            support: found.iter().find(|(f, _)| *f == feature).map_or_else(
                || Support::Unknown {
                    why: "not probed".into(),
                },
                |(_, s)| s.clone(),
            ),
        })
        .collect();
    Kernel {
        release: release(),
        capabilities,
    }
}
