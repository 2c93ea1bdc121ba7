//! Echo probes (ICMP, ICMPv6) for `Action::Probe`: one raw socket per
//! address family, opened at the first probe of that family, read through
//! tokio's `AsyncFd` on the daemon's task: no thread, no socket per target.
//!
//! Why raw sockets and not "ping sockets" (`SOCK_DGRAM`, `IPPROTO_ICMP`):
//! ping sockets are refused unless `net.ipv4.ping_group_range` covers the
//! caller's group, and that range is per network namespace and empty
//! (`1 0`) by default in a new one; raw sockets only need `CAP_NET_RAW`,
//! which the agent has wherever it can load BPF programs and change routes.
//! The price: a raw ICMP socket sees every echo reply (and, for ICMPv6,
//! every ICMPv6 message) the host receives; replies are matched by our
//! echo identifier, the sequence number we chose and the target address,
//! and everything else is dropped cheaply.
//!
//! Why `IP_PKTINFO` / `IPV6_PKTINFO` per packet and not `SO_BINDTODEVICE`:
//! binding is per socket, and one socket per family serves every interface.
//! The packet info's ifindex makes the kernel's route lookup for that one
//! packet consider only routes through that interface (IPv4 `fib_table_lookup`
//! skips next hops through other devices when an output interface is given;
//! IPv6 does a strict interface lookup when the source is left to the
//! kernel). That is what a probe of the primary needs: when the primary's
//! route is still in the table, the request leaves through it; the kernel
//! never routes it through a backup interface, even when a backup route is
//! preferred at that moment (IPv4 then assumes the target is on-link on that
//! interface and the probe fails, as it should; IPv6 refuses to send, which
//! is reported as a failed probe). The fast path's steering never sees
//! probes: it runs on the LAN interfaces' ingress, and probes are
//! originated by this host.
//!
//! No crate fits: `surge-ping` opens one socket per client and binds it to
//! one device (`SO_BINDTODEVICE`), so one socket per interface per family,
//! and runs its own receive task; `nix` provides the system calls with
//! their control messages, which is all that is hand-written away.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    recvfrom, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::Report;
use crate::model::{Event, GroupId};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Why a probe could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open a raw {family} socket for probes (the agent needs CAP_NET_RAW)")]
    Open {
        family: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send an echo request to {target} out of ifindex {ifindex}")]
    Send {
        target: IpAddr,
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A probe sent and not answered yet.
#[derive(Debug)]
struct Pending {
    group: GroupId,
    ifindex: u32,
    target: IpAddr,
    seq: u64,
    deadline: Instant,
}

impl Pending {
    fn result(&self, ok: bool) -> Event {
        Event::ProbeResult {
            group: self.group,
            ifindex: self.ifindex,
            target: self.target,
            seq: self.seq,
            ok,
        }
    }
}

/// Sends echo requests and reports their outcome as `Event::ProbeResult`.
#[derive(Debug)]
pub struct Prober {
    v4: Option<AsyncFd<OwnedFd>>,
    v6: Option<AsyncFd<OwnedFd>>,
    /// Our echo identifier (raw sockets do not pick one for us).
    id: u16,
    /// The next echo sequence number on the wire.
    next_wire: u16,
    /// By (target, wire sequence number).
    pending: HashMap<(IpAddr, u16), Pending>,
    /// Results known without waiting (a send that failed).
    ready: VecDeque<Event>,
    /// An open failure per family is logged once.
    open_failed: [bool; 2],
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        Prober {
            v4: None,
            v6: None,
            // Truncated: only has to differ from other pingers on this host.
            id: u16::try_from(std::process::id() & 0xffff).unwrap_or(0),
            next_wire: 1,
            pending: HashMap::new(),
            ready: VecDeque::new(),
            open_failed: [false; 2],
        }
    }

    /// Sends one echo request to `target` out of `ifindex`; its result
    /// comes from `next_result` (not ok after `timeout`).
    pub fn send(
        &mut self,
        group: GroupId,
        target: IpAddr,
        ifindex: u32,
        seq: u64,
        timeout: Duration,
    ) {
        let wire = self.next_wire;
        self.next_wire = self.next_wire.wrapping_add(1);
        let pending = Pending {
            group,
            ifindex,
            target,
            seq,
            deadline: Instant::now() + timeout,
        };
        match self.transmit(target, ifindex, wire) {
            Ok(()) => {
                // A reply to an older probe with the same wire number (after
                // 65536 probes to one target) would be stale: replaced.
                if let Some(old) = self.pending.insert((target, wire), pending) {
                    self.ready.push_back(old.result(false));
                }
            }
            Err(e) => {
                debug!("probe: {}", Report(&e));
                self.ready.push_back(pending.result(false));
            }
        }
    }

    fn transmit(&mut self, target: IpAddr, ifindex: u32, wire: u16) -> Result<(), ProbeError> {
        let id = self.id;
        if let Err(e) = self.socket(target.is_ipv4()) {
            let slot = usize::from(!target.is_ipv4());
            if let Some(logged) = self.open_failed.get_mut(slot) {
                if !*logged {
                    *logged = true;
                    warn!("{}; probes of this family fail", Report(&e));
                }
            }
            return Err(e);
        }
        let fd = self.socket(target.is_ipv4())?;
        let raw = fd.get_ref().as_raw_fd();
        let sent = match target {
            IpAddr::V4(a) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
                    ipi_spec_dst: libc::in_addr { s_addr: 0 },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                send_echo(
                    raw,
                    &echo_request(ICMP_ECHO_REQUEST, id, wire, true),
                    ControlMessage::Ipv4PacketInfo(&info),
                    &SockaddrIn::from(SocketAddrV4::new(a, 0)),
                )
            }
            IpAddr::V6(a) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: Ipv6Addr::UNSPECIFIED.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                // A link-local target needs its zone: the probed interface.
                let scope = if a.is_unicast_link_local() {
                    ifindex
                } else {
                    0
                };
                // The kernel fills in the ICMPv6 checksum (RFC 3542).
                send_echo(
                    raw,
                    &echo_request(ICMPV6_ECHO_REQUEST, id, wire, false),
                    ControlMessage::Ipv6PacketInfo(&info),
                    &SockaddrIn6::from(SocketAddrV6::new(a, 0, 0, scope)),
                )
            }
        };
        sent.map_err(|source| ProbeError::Send {
            target,
            ifindex,
            source: source.into(),
        })
    }

    /// The family's socket, opened on first use.
    fn socket(&mut self, v4: bool) -> Result<&AsyncFd<OwnedFd>, ProbeError> {
        let (slot, family, domain, protocol) = if v4 {
            (
                &mut self.v4,
                "ICMP",
                AddressFamily::Inet,
                SockProtocol::Icmp,
            )
        } else {
            (
                &mut self.v6,
                "ICMPv6",
                AddressFamily::Inet6,
                SockProtocol::IcmpV6,
            )
        };
        if slot.is_none() {
            let open_error = |source: std::io::Error| ProbeError::Open { family, source };
            let fd = socket(
                domain,
                SockType::Raw,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                protocol,
            )
            .map_err(|e| open_error(e.into()))?;
            // SAFETY: the OwnedFd owns its descriptor, which stays open and
            // is not replaced while the AsyncFd owns it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(|e| open_error(e.into_parts().1))?;
            *slot = Some(fd);
        }
        slot.as_ref().ok_or_else(|| ProbeError::Open {
            family,
            source: std::io::Error::other("socket vanished"),
        })
    }

    /// The next probe result. Cancel-safe: nothing is lost when another
    /// branch of a `select!` wins (state changes only once a wait is over).
    /// Never ready while no probe is outstanding.
    pub async fn next_result(&mut self) -> Event {
        enum Woke {
            Readable(bool, std::io::Result<()>),
            Deadline,
        }
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return ev;
            }
            let deadline = self.pending.values().map(|p| p.deadline).min();
            let woke = tokio::select! {
                r = readable(self.v4.as_ref()) => Woke::Readable(true, r),
                r = readable(self.v6.as_ref()) => Woke::Readable(false, r),
                () = sleep_until(deadline) => Woke::Deadline,
            };
            match woke {
                Woke::Deadline => self.expire(),
                Woke::Readable(v4, Ok(())) => self.receive(v4),
                Woke::Readable(v4, Err(e)) => {
                    // Not seen on a raw socket in practice; drop it, the next
                    // probe of that family reopens it.
                    warn!("probe socket failed, reopening it at the next probe: {e}");
                    if v4 {
                        self.v4 = None;
                    } else {
                        self.v6 = None;
                    }
                }
            }
        }
    }

    /// Reports every probe past its deadline as failed.
    fn expire(&mut self) {
        let now = Instant::now();
        let mut late: Vec<(IpAddr, u16)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        late.sort_unstable();
        for k in late {
            if let Some(p) = self.pending.remove(&k) {
                self.ready.push_back(p.result(false));
            }
        }
    }

    /// Reads everything the socket has (without blocking) and matches
    /// replies to pending probes.
    fn receive(&mut self, v4: bool) {
        let Some(fd) = (if v4 {
            self.v4.as_ref()
        } else {
            self.v6.as_ref()
        }) else {
            return;
        };
        let mut buf = [0u8; 1500];
        // `try_io` clears the readiness when the socket would block.
        while let Ok((len, from)) = fd.try_io(Interest::READABLE, |inner| {
            recvfrom::<SockaddrStorage>(inner.as_raw_fd(), &mut buf).map_err(std::io::Error::from)
        }) {
            let data = buf.get(..len).unwrap_or_default();
            let src = from.and_then(|f| {
                f.as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| f.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
            });
            if let (Some(src), Some(wire)) = (src, parse_reply(data, v4, self.id)) {
                if let Some(p) = self.pending.remove(&(src, wire)) {
                    self.ready.push_back(p.result(true));
                }
            }
        }
    }
}

/// One datagram with its packet-info control message, without blocking.
fn send_echo(
    fd: std::os::fd::RawFd,
    packet: &[u8],
    info: ControlMessage<'_>,
    to: &impl SockaddrLike,
) -> nix::Result<()> {
    sendmsg(
        fd,
        &[IoSlice::new(packet)],
        &[info],
        MsgFlags::MSG_DONTWAIT,
        Some(to),
    )
    .map(drop)
}

async fn readable(fd: Option<&AsyncFd<OwnedFd>>) -> std::io::Result<()> {
    match fd {
        Some(fd) => fd.readable().await.map(|mut g| {
            // Only a wake-up: `receive` reads, and clears the readiness
            // when the socket is drained.
            g.retain_ready();
        }),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// An echo request: type, code 0, checksum, identifier, sequence number and
/// a small payload (the identifier again, so a reply is recognisable in a
/// capture). The checksum is computed for ICMP; the kernel does ICMPv6's.
fn echo_request(kind: u8, id: u16, wire: u16, checksum: bool) -> Vec<u8> {
    let mut p = vec![kind, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&wire.to_be_bytes());
    p.extend_from_slice(b"routebackup probe");
    if checksum {
        let sum = internet_checksum(&p);
        if let Some(c) = p.get_mut(2..4) {
            c.copy_from_slice(&sum.to_be_bytes());
        }
    }
    p
}

/// RFC 1071.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded above: fits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The sequence number of an echo reply carrying our identifier. A raw
/// IPv4 socket delivers the IP header too; a raw ICMPv6 socket does not.
fn parse_reply(data: &[u8], v4: bool, id: u16) -> Option<u16> {
    let icmp = if v4 {
        let ihl = usize::from(data.first()? & 0x0f) * 4;
        data.get(ihl..)?
    } else {
        data
    };
    let want = if v4 {
        ICMP_ECHO_REPLY
    } else {
        ICMPV6_ECHO_REPLY
    };
    match icmp {
        [kind, 0, _, _, i0, i1, s0, s1, ..]
            if *kind == want && u16::from_be_bytes([*i0, *i1]) == id =>
        {
            Some(u16::from_be_bytes([*s0, *s1]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_an_echo_request_verifies() {
        let p = echo_request(ICMP_ECHO_REQUEST, 0x1234, 7, true);
        // A correct checksum makes the sum over the whole message 0.
        assert_eq!(internet_checksum(&p), 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn replies_are_matched_by_type_and_identifier() {
        let mut reply = echo_request(ICMP_ECHO_REPLY, 0x1234, 9, true);
        let mut v4 = vec![0x45u8; 1];
        v4.extend_from_slice(&[0; 19]);
        v4.append(&mut reply.clone());
        assert_eq!(parse_reply(&v4, true, 0x1234), Some(9));
        assert_eq!(parse_reply(&v4, true, 0x4321), None, "someone else's ping");
        reply[0] = ICMPV6_ECHO_REPLY;
        assert_eq!(parse_reply(&reply, false, 0x1234), Some(9));
        reply[0] = ICMPV6_ECHO_REQUEST;
        assert_eq!(parse_reply(&reply, false, 0x1234), None, "a request");
        assert_eq!(parse_reply(&reply[..5], false, 0x1234), None, "truncated");
        assert_eq!(parse_reply(&[], true, 0x1234), None);
    }
}
