//! The bpf(2) commands the agent needs that aya 0.14 does not offer:
//! `BPF_LINK_DETACH`, and `BPF_PROG_GET_FD_BY_ID` for a program another
//! agent attached over netlink (see `attach::xdp_netlink`).
//!
//! Closing a link's last file descriptor detaches its program, but "last" is
//! not ours to know: a child forked by any thread (a hook, pppd, a dialer)
//! holds a copy of every descriptor until it execs, and any process may have
//! opened the pin. The program then stays on the interface after the agent
//! said it was gone. `BPF_LINK_DETACH` takes it off at once, whoever holds
//! the link; the link object lingers, defunct, until its last holder closes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya::programs::links::FdLink;

/// `enum bpf_cmd` values (uapi/linux/bpf.h).
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The leading words of `union bpf_attr`. The commands read only the first
/// one (`prog_id`, `link_id`, `link_detach.link_fd`); the kernel checks that
/// the rest of the size we pass is zero.
#[repr(C)]
#[derive(Default)]
struct Attr {
    first: u32,
    rest: [u32; 3],
}

fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised bpf_attr prefix of the size we pass;
    // the commands only read it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A descriptor of our own for the object `id` (`cmd`: a GET_FD_BY_ID).
fn fd_by_id(cmd: libc::c_long, id: u32) -> io::Result<OwnedFd> {
    let fd = bpf(
        cmd,
        &Attr {
            first: id,
            ..Attr::default()
        },
    )?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A descriptor of our own for the loaded program `id`.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_PROG_GET_FD_BY_ID, id)
}

/// Detaches `link`'s program from its hook now (kernel 5.9+ for XDP links;
/// TCX links always). The caller still closes its own descriptor.
pub fn detach_bpf_link(bpf_link: &FdLink) -> io::Result<()> {
    // aya keeps the link's descriptor private; its id reaches the same link.
    let id = bpf_link.info().map_err(io::Error::other)?.id();
    let fd = fd_by_id(BPF_LINK_GET_FD_BY_ID, id)?;
    let raw = u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?;
    bpf(
        BPF_LINK_DETACH,
        &Attr {
            first: raw,
            ..Attr::default()
        },
    )?;
    Ok(())
}
