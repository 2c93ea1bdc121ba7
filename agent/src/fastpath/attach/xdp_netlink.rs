//! XDP over netlink (IFLA_XDP), for kernels without XDP links or with the
//! probe's `xdp-link` forced off. The device, not a link, holds the program:
//! nothing can be pinned, so a restart of the agent attaches it again, and
//! the agent takes it off itself (on detach, and when it lets go of it).
//!
//! aya 0.14 keeps its IFLA_XDP request private, so the agent sends its own
//! through its netlink sockets. aya sends its own only when the kernel
//! refuses an XDP link that the probe said it has; `xdp_bpf_link` then hands
//! the attachment it made here (`on_device`).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use aya::programs::{ProgramError, ProgramFd, Xdp};
use aya::sys::SyscallError;
use aya::Ebpf;
use routebackup_common::PROG_XDP;

use super::{AttachError, Detach, Held, Hook, Mechanism, Target, Via, XdpAttach};
use crate::fastpath::program_mut;
use crate::netlink::codec::push_attr;
use crate::netlink::socket::Requests;
use crate::netlink::NetlinkError;

// uapi/linux/rtnetlink.h, if_link.h.
const RTM_SETLINK: u16 = 19;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const NLA_F_NESTED: u16 = 1 << 15;
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

pub(super) struct Netlink;

fn mode_flags(mode: XdpAttach) -> u32 {
    match mode {
        XdpAttach::Native => XDP_FLAGS_DRV_MODE,
        _ => XDP_FLAGS_SKB_MODE,
    }
}

/// RTM_SETLINK with IFLA_XDP: program `fd` on `ifindex`, or none (-1) where
/// `expected` is the program that must be there.
fn set_xdp(ifindex: u32, fd: i32, flags: u32, expected: Option<i32>) -> Result<(), NetlinkError> {
    let mut xdp = Vec::new();
    push_attr(&mut xdp, IFLA_XDP_FD, &fd.to_ne_bytes());
    push_attr(&mut xdp, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(e) = expected {
        push_attr(&mut xdp, IFLA_XDP_EXPECTED_FD, &e.to_ne_bytes());
    }
    // struct ifinfomsg: family (AF_UNSPEC) and padding, type, index, flags, change.
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&[0u8; 8]);
    push_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &xdp);
    Requests::open("XDP over netlink")?.change(
        "the XDP program of an interface",
        RTM_SETLINK,
        &body,
    )
}

/// The program on a device: taken off when dropped, if it is still ours.
struct OnDevice {
    ifname: String,
    ifindex: u32,
    mode: u32,
    /// Our program, named to the kernel so that only it is taken off.
    prog: ProgramFd,
}

impl Drop for OnDevice {
    fn drop(&mut self) {
        let ours = self.prog.as_fd().as_raw_fd();
        if let Err(e) = set_xdp(self.ifindex, -1, self.mode | XDP_FLAGS_REPLACE, Some(ours)) {
            tracing::warn!(
                "cannot take the XDP program off {} (`ip link set dev {} xdp off` does): {}",
                self.ifname,
                self.ifname,
                crate::error::chain(&e)
            );
        }
    }
}

impl Held for OnDevice {
    fn via(&self) -> Via {
        Via::Netlink
    }

    fn detach(self: Box<Self>, _how: &Detach<'_>) {
        drop(self);
    }
}

/// A descriptor of our program of its own, which outlives a dropped `Ebpf`.
fn our_program(ebpf: &mut Ebpf) -> Result<ProgramFd, AttachError> {
    let xdp: &mut Xdp = program_mut(ebpf, PROG_XDP)?;
    let prog = xdp.fd().map_err(AttachError::Refused)?;
    prog.try_clone().map_err(|io_error| {
        AttachError::Refused(ProgramError::SyscallError(SyscallError {
            call: "dup",
            io_error,
        }))
    })
}

fn held(at: &Target<'_>, prog: ProgramFd) -> Box<dyn Held> {
    Box::new(OnDevice {
        ifname: at.ifname.to_string(),
        ifindex: at.ifindex,
        mode: mode_flags(at.xdp_mode),
        prog,
    })
}

/// Holds what is on `at` already: our program, put there over netlink.
pub(super) fn on_device(ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
    Ok(held(at, our_program(ebpf)?))
}

impl Mechanism for Netlink {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        let prog = our_program(ebpf)?;
        // Never over someone else's program (as `ip link set xdp` without -force).
        let flags = mode_flags(at.xdp_mode) | XDP_FLAGS_UPDATE_IF_NOEXIST;
        set_xdp(at.ifindex, prog.as_fd().as_raw_fd(), flags, None).map_err(|e| {
            AttachError::Refused(ProgramError::SyscallError(SyscallError {
                call: "RTM_SETLINK IFLA_XDP",
                io_error: match e.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::other(crate::error::chain(&e)),
                },
            }))
        })?;
        Ok(held(at, prog))
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Xdp, Via::Netlink)
    }
}
