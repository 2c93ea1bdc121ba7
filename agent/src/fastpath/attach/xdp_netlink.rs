//! XDP over netlink (IFLA_XDP), for kernels without XDP links or with the
//! probe's `xdp-link` forced off. The device, not a link, holds the program,
//! whatever happens to the agent; the agent records it under `netlink/`
//! (netlink_record.rs). The next agent that finds the recorded program still
//! on the device adopts it: one IFLA_XDP request puts its own program in
//! place of that one (XDP_FLAGS_REPLACE with the old program as
//! IFLA_XDP_EXPECTED_FD, Linux 5.7, older than any kernel the agent runs
//! on), so XDP never leaves the device. Detach takes it off while it is
//! still ours.
//!
//! aya 0.14 keeps its IFLA_XDP request private, so the agent sends its own
//! through its netlink sockets. aya sends its own only when the kernel
//! refuses an XDP link that the probe said it has; `xdp_bpf_link` then hands
//! the attachment it made here (`on_device`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use aya::programs::{ProgramError, ProgramFd, Xdp};
use aya::sys::SyscallError;
use aya::Ebpf;
use routebackup_common::PROG_XDP;

use super::netlink_record::{self, On, Record};
use super::{AttachError, Detach, Held, Hook, Mechanism, Target, Via, XdpAttach};
use crate::fastpath::{program_id, program_mut, sys, FastpathError, Result};
use crate::netlink::codec::{attr_u32, attrs, push_attr, RTM_GETLINK, RTM_NEWLINK};
use crate::netlink::socket::Requests;
use crate::netlink::NetlinkError;

// uapi/linux/rtnetlink.h, if_link.h.
const RTM_SETLINK: u16 = 19;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const NLA_F_NESTED: u16 = 1 << 15;
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;
/// sizeof(struct ifinfomsg).
const IFINFOMSG_LEN: usize = 16;

pub(super) struct Netlink;

fn mode_flags(mode: XdpAttach) -> u32 {
    match mode {
        XdpAttach::Native => XDP_FLAGS_DRV_MODE,
        _ => XDP_FLAGS_SKB_MODE,
    }
}

/// struct ifinfomsg of `ifindex`: family (AF_UNSPEC) and padding, type,
/// index, flags, change.
fn ifinfomsg(ifindex: u32) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&[0u8; 8]);
    body
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
    let mut body = ifinfomsg(ifindex);
    push_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &xdp);
    Requests::open("XDP over netlink")?.change(
        "the XDP program of an interface",
        RTM_SETLINK,
        &body,
    )
}

/// The kernel id of the program on `ifindex`'s XDP hook in `mode` (None:
/// no program there, or no such device).
fn attached(ifindex: u32, mode: XdpAttach) -> Result<Option<u32>, NetlinkError> {
    let want = match mode {
        XdpAttach::Native => IFLA_XDP_DRV_PROG_ID,
        _ => IFLA_XDP_SKB_PROG_ID,
    };
    Requests::open("XDP over netlink")?.get(
        "the XDP program of an interface",
        RTM_GETLINK,
        &ifinfomsg(ifindex),
        RTM_NEWLINK,
        |msg| {
            let (_, xdp) =
                attrs(msg.payload.get(IFINFOMSG_LEN..)?).find(|(k, _)| *k == IFLA_XDP)?;
            attrs(xdp)
                .find(|(k, _)| *k == want)
                .and_then(|(_, v)| attr_u32(v))
        },
    )
}

/// What the kernel said to a request, as aya reports a refused attach.
fn refused(call: &'static str, e: &NetlinkError) -> ProgramError {
    ProgramError::SyscallError(SyscallError {
        call,
        io_error: match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(crate::error::chain(e)),
        },
    })
}

/// Takes program `expected` (a descriptor of it) off `ifindex` in `mode`,
/// and only that one.
fn take_off(ifname: &str, ifindex: u32, mode: XdpAttach, expected: RawFd) {
    match set_xdp(
        ifindex,
        -1,
        mode_flags(mode) | XDP_FLAGS_REPLACE,
        Some(expected),
    ) {
        Ok(()) => {}
        // Another program is there now: not ours to take off.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => tracing::warn!(
            "cannot take the XDP program off {ifname} (`ip link set dev {ifname} xdp off` \
             does): {}",
            crate::error::chain(&e)
        ),
    }
}

/// Our program on a device, recorded at `record`. Dropping it leaves both
/// in place (as a crash does), for the next agent to adopt.
struct OnDevice {
    ifname: String,
    ifindex: u32,
    mode: XdpAttach,
    /// Our program, named to the kernel so that only it is taken off.
    prog: ProgramFd,
    record: PathBuf,
}

impl Held for OnDevice {
    fn via(&self) -> Via {
        Via::Netlink
    }

    fn detach(self: Box<Self>, _how: &Detach<'_>) {
        take_off(
            &self.ifname,
            self.ifindex,
            self.mode,
            self.prog.as_fd().as_raw_fd(),
        );
        netlink_record::remove(&self.record);
    }
}

/// A descriptor of our program of its own (which outlives a dropped
/// `Ebpf`), and its kernel id.
fn our_program(ebpf: &mut Ebpf) -> Result<(ProgramFd, u32), AttachError> {
    let xdp: &mut Xdp = program_mut(ebpf, PROG_XDP)?;
    let id = program_id(PROG_XDP, xdp.info())?;
    let prog = xdp.fd().map_err(AttachError::Refused)?;
    let prog = prog.try_clone().map_err(|io_error| {
        AttachError::Refused(ProgramError::SyscallError(SyscallError {
            call: "dup",
            io_error,
        }))
    })?;
    Ok((prog, id))
}

fn record(at: &Target<'_>, prog_id: u32, replacing: Option<u32>) -> Record {
    Record {
        interface: at.ifname.to_string(),
        ifindex: at.ifindex,
        prog_id,
        replacing,
        on: On::XdpNetlink { mode: at.xdp_mode },
    }
}

fn held(at: &Target<'_>, prog: ProgramFd) -> Box<dyn Held> {
    Box::new(OnDevice {
        ifname: at.ifname.to_string(),
        ifindex: at.ifindex,
        mode: at.xdp_mode,
        prog,
        record: at.record.clone(),
    })
}

/// Holds what is on `at` already: our program, put there over netlink. It
/// is recorded now; without a record it is taken off again.
pub(super) fn on_device(ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
    let (prog, id) = our_program(ebpf)?;
    if let Err(e) = netlink_record::write(&at.record, &record(at, id, None)) {
        take_off(at.ifname, at.ifindex, at.xdp_mode, prog.as_fd().as_raw_fd());
        return Err(e.into());
    }
    Ok(held(at, prog))
}

impl Mechanism for Netlink {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        let (prog, id) = our_program(ebpf)?;
        // Recorded before it is attached: a crash in between leaves a
        // record of nothing, which the next agent finds stale, rather than
        // a program nobody recorded.
        netlink_record::write(&at.record, &record(at, id, None))?;
        // Never over someone else's program (as `ip link set xdp` without -force).
        let flags = mode_flags(at.xdp_mode) | XDP_FLAGS_UPDATE_IF_NOEXIST;
        if let Err(e) = set_xdp(at.ifindex, prog.as_fd().as_raw_fd(), flags, None) {
            netlink_record::remove(&at.record);
            return Err(AttachError::Refused(refused("RTM_SETLINK IFLA_XDP", &e)));
        }
        Ok(held(at, prog))
    }

    fn adopt(&self, ebpf: &mut Ebpf, kept: &Path, at: &Target<'_>) -> Result<Box<dyn Held>> {
        let rec = netlink_record::read(kept)?;
        let stale = |why: String| FastpathError::RecordStale {
            path: kept.to_path_buf(),
            why,
        };
        if rec.on != (On::XdpNetlink { mode: at.xdp_mode }) {
            return Err(stale(format!(
                "it records {}, its name says {} XDP",
                rec.on.place(),
                at.xdp_mode.name()
            )));
        }
        let found =
            attached(at.ifindex, at.xdp_mode).map_err(|source| FastpathError::NetlinkQuery {
                interface: at.ifname.to_string(),
                what: "the XDP program",
                source,
            })?;
        if let Some(why) = rec.stale(Some(at.ifindex), found) {
            return Err(stale(why));
        }
        let old = found.unwrap_or_default();
        let adopt_error = |source| FastpathError::RecordAdopt {
            path: kept.to_path_buf(),
            program: PROG_XDP,
            source: Box::new(source),
        };
        let old_fd = sys::prog_fd_by_id(old).map_err(|io_error| {
            adopt_error(ProgramError::SyscallError(SyscallError {
                call: "BPF_PROG_GET_FD_BY_ID",
                io_error,
            }))
        })?;
        let (prog, id) = our_program(ebpf).map_err(|e| match e {
            AttachError::Refused(e) => adopt_error(e),
            AttachError::Failed(e) => e,
        })?;
        netlink_record::write(kept, &record(at, id, Some(old)))?;
        set_xdp(
            at.ifindex,
            prog.as_fd().as_raw_fd(),
            mode_flags(at.xdp_mode) | XDP_FLAGS_REPLACE,
            Some(old_fd.as_raw_fd()),
        )
        .map_err(|e| adopt_error(refused("RTM_SETLINK IFLA_XDP", &e)))?;
        netlink_record::write(kept, &record(at, id, None))?;
        Ok(held(at, prog))
    }

    fn release(&self, kept: &Path) {
        if let Ok(rec) = netlink_record::read(kept) {
            if let On::XdpNetlink { mode } = rec.on {
                match attached(rec.ifindex, mode) {
                    Ok(Some(found)) if rec.ours(found) => match sys::prog_fd_by_id(found) {
                        Ok(fd) => take_off(&rec.interface, rec.ifindex, mode, fd.as_raw_fd()),
                        Err(e) => tracing::warn!(
                            "cannot take the recorded XDP program {found} off {} (`ip link \
                             set dev {} xdp off` does): {}",
                            rec.interface,
                            rec.interface,
                            crate::error::Report(&e)
                        ),
                    },
                    // Gone, or someone else's.
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        "cannot read the XDP program of {} to take the recorded one off: {}",
                        rec.interface,
                        crate::error::chain(&e)
                    ),
                }
            }
        }
        netlink_record::remove(kept);
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Xdp, Via::Netlink)
    }
}
