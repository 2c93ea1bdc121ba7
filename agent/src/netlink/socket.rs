//! NETLINK_ROUTE sockets: opening, multicast subscription, the receive buffer,
//! batched event reads, dumps and single get/change requests.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::codec::{
    change_request, dump_request, error_code, get_request, messages, RawMsg, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_DUMP_INTR,
};
use super::NetlinkError;

/// Opens a NETLINK_ROUTE socket bound to a kernel-chosen port, in the calling
/// thread's network namespace. `purpose` names it in errors.
pub fn open(purpose: &'static str) -> Result<Socket, NetlinkError> {
    open_protocol(NETLINK_ROUTE, purpose)
}

/// The same on another netlink protocol (NETLINK_GENERIC).
fn open_protocol(protocol: isize, purpose: &'static str) -> Result<Socket, NetlinkError> {
    let open = || -> io::Result<Socket> {
        let mut s = Socket::new(protocol)?;
        s.bind_auto()?;
        Ok(s)
    };
    open().map_err(|source| NetlinkError::Open { purpose, source })
}

/// Joins the multicast group `group` (RTNLGRP_*; `name` for errors).
pub fn join(s: &mut Socket, group: u32, name: &'static str) -> Result<(), NetlinkError> {
    s.add_membership(group)
        .map_err(|source| NetlinkError::Join {
            group: name,
            source,
        })
}

/// Makes reads on `s` return EAGAIN instead of blocking.
pub fn set_non_blocking(s: &mut Socket) -> Result<(), NetlinkError> {
    s.set_non_blocking(true)
        .map_err(|source| NetlinkError::SetOption {
            option: "O_NONBLOCK",
            source,
        })
}

fn set_option<T>(
    s: &Socket,
    opt: libc::c_int,
    name: &'static str,
    value: &T,
) -> Result<(), NetlinkError> {
    // SAFETY: `value` points to a live T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_ref::<T>(value).cast(),
            libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    if r != 0 {
        return Err(NetlinkError::SetOption {
            option: name,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Asks for a receive buffer of `size` bytes: SO_RCVBUFFORCE (beyond
/// net.core.rmem_max; needs CAP_NET_ADMIN), else SO_RCVBUF (capped by
/// rmem_max). An event burst larger than the buffer is an overrun.
pub fn set_rcvbuf(s: &Socket, size: usize) -> Result<(), NetlinkError> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    set_option(s, libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE", &v)
        .or_else(|_| set_option(s, libc::SO_RCVBUF, "SO_RCVBUF", &v))
}

/// Bounds every blocking read on `s` to `timeout` (then EAGAIN).
pub fn set_recv_timeout(s: &Socket, timeout: Duration) -> Result<(), NetlinkError> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    set_option(s, libc::SO_RCVTIMEO, "SO_RCVTIMEO", &tv)
}

/// Waits up to `timeout` for `fd` to be readable. A poll interrupted by a
/// signal (or failing) counts as not readable: callers poll in a loop.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, ms) > 0 }
}

/// Reads one datagram into `buf`. A datagram larger than `buf` lost messages
/// and is reported as ENOBUFS, like a socket overrun.
fn recv(s: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0); // not negative: checked above
    if n > buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
    }
    Ok(n)
}

/// Receive buffer for dumps: the kernel sends at most 32 KiB per dump chunk.
pub const DUMP_BUF: usize = 64 << 10;

/// Sends the dump request `kind` with `body` (the family header) as `seq` on
/// the blocking socket `s` and hands every answer to `each`, until
/// NLMSG_DONE. `what` names the dump in errors; `buf` is at least
/// [`DUMP_BUF`] bytes. Returns true when the kernel flagged the dump as
/// interrupted by a concurrent change (NLM_F_DUMP_INTR): the answers may
/// then be inconsistent.
pub fn dump(
    s: &Socket,
    buf: &mut [u8],
    what: &'static str,
    kind: u16,
    seq: u32,
    body: &[u8],
    mut each: impl FnMut(&RawMsg<'_>),
) -> Result<bool, NetlinkError> {
    let req = dump_request(kind, seq, body);
    s.send(&req, 0)
        .map_err(|source| NetlinkError::Send { what, source })?;
    let mut interrupted = false;
    loop {
        let n = recv(s, buf).map_err(|source| NetlinkError::Recv { what, source })?;
        for msg in messages(&buf[..n]) {
            if msg.seq != seq {
                continue;
            }
            if msg.flags & NLM_F_DUMP_INTR != 0 {
                interrupted = true;
            }
            match msg.kind {
                NLMSG_DONE => return Ok(interrupted),
                NLMSG_ERROR => match error_code(msg.payload) {
                    0 => return Ok(interrupted),
                    code => return Err(NetlinkError::refused(what, code)),
                },
                _ => each(&msg),
            }
        }
    }
}

/// A blocking socket for single requests whose answers come at once
/// (RTM_GET* of one object, acked changes); every read is bounded.
pub struct Requests {
    socket: Socket,
    seq: AtomicU32,
}

/// A kernel that never answers must not hang the caller.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

impl Requests {
    pub fn open(purpose: &'static str) -> Result<Requests, NetlinkError> {
        Requests::open_protocol(NETLINK_ROUTE, purpose)
    }

    /// The same on another netlink protocol (NETLINK_GENERIC).
    pub fn open_protocol(protocol: isize, purpose: &'static str) -> Result<Requests, NetlinkError> {
        let socket = open_protocol(protocol, purpose)?;
        set_recv_timeout(&socket, ANSWER_TIMEOUT)?;
        Ok(Requests {
            socket,
            seq: AtomicU32::new(1),
        })
    }

    /// Sends the get request `kind` with `body` and decodes the first answer
    /// of kind `want`; Ok(None) when the kernel answers ENOENT/ENODEV (no
    /// such object).
    pub fn get<T>(
        &self,
        what: &'static str,
        kind: u16,
        body: &[u8],
        want: u16,
        decode: impl Fn(&RawMsg<'_>) -> Option<T>,
    ) -> Result<Option<T>, NetlinkError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.exchange(what, &get_request(kind, seq, body), seq, want, decode)
    }

    /// Sends the change request `kind` with `body` (NLM_F_ACK |
    /// NLM_F_REPLACE) and waits for the ack; a missing object (ENOENT/ENODEV)
    /// is fine.
    pub fn change(&self, what: &'static str, kind: u16, body: &[u8]) -> Result<(), NetlinkError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // No message kind is u16::MAX: only the ack ends the exchange.
        self.exchange(
            what,
            &change_request(kind, seq, body),
            seq,
            u16::MAX,
            |_| Some(()),
        )
        .map(|_| ())
    }

    fn exchange<T>(
        &self,
        what: &'static str,
        req: &[u8],
        seq: u32,
        want: u16,
        decode: impl Fn(&RawMsg<'_>) -> Option<T>,
    ) -> Result<Option<T>, NetlinkError> {
        self.socket
            .send(req, 0)
            .map_err(|source| NetlinkError::Send { what, source })?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(|source| NetlinkError::Recv { what, source })?;
            for msg in messages(buf.get(..n).unwrap_or(&[])) {
                if msg.seq != seq {
                    continue;
                }
                if msg.kind == NLMSG_ERROR {
                    let code = error_code(msg.payload);
                    if code == libc::ENOENT || code == libc::ENODEV || code == 0 {
                        return Ok(None);
                    }
                    return Err(NetlinkError::refused(what, code));
                }
                if msg.kind == want {
                    return Ok(decode(&msg));
                }
            }
        }
    }
}

/// Datagrams read per recvmmsg(2) call.
pub const BATCH: usize = 64;
/// Bytes per datagram slot (event messages are single routes/links).
const SLOT: usize = 16 << 10;

/// What one [`RecvBatch::recv`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// This many datagrams (at most [`BATCH`]); read them with `datagram`.
    Datagrams(usize),
    /// Nothing queued.
    Empty,
    /// The kernel dropped events (ENOBUFS), or a datagram did not fit a slot:
    /// the caller's picture is stale.
    Overrun,
    /// A signal interrupted the read; try again.
    Interrupted,
}

/// Buffers for reading up to `BATCH` event datagrams in one system call.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
        }
    }

    /// Reads queued datagrams from the event socket `s` without blocking.
    pub fn recv(&mut self, s: &Socket) -> Result<Received, NetlinkError> {
        let base = self.buf.as_mut_ptr();
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is
        // a valid value.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iov[i] = libc::iovec {
                // SAFETY: slot i lies within `buf` (BATCH * SLOT bytes).
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: SLOT,
            };
            hdrs[i].msg_hdr.msg_iov = &raw mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points to its own iovec over its own slot.
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                hdrs.as_mut_ptr(),
                libc::c_uint::try_from(BATCH).unwrap_or(libc::c_uint::MAX),
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(Received::Empty),
                Some(libc::ENOBUFS) => Ok(Received::Overrun),
                Some(libc::EINTR) => Ok(Received::Interrupted),
                _ => Err(NetlinkError::Recv {
                    what: "the event stream",
                    source: e,
                }),
            };
        }
        let n = usize::try_from(n).unwrap_or(0); // not negative: checked above
        for (len, h) in self.lens.iter_mut().zip(hdrs.iter()).take(n) {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return Ok(Received::Overrun);
            }
            *len = h.msg_len as usize;
        }
        Ok(Received::Datagrams(n))
    }

    /// Datagram `i` of the last `recv`.
    pub fn datagram(&self, i: usize) -> &[u8] {
        let start = i * SLOT;
        self.buf
            .get(start..start + self.lens[i].min(SLOT))
            .unwrap_or(&[])
    }
}
