//! The rtnetlink wire format the agent reads and writes by hand: the
//! constants (each defined once, here), message framing, attribute walking,
//! request builders and the errno of an NLMSG_ERROR.
//!
//! Hand-written because the hot path needs it: a full-table dump is up to
//! 1M route messages, and these iterators look at them in place, without
//! allocating (see `watcher::routes`). Values are in host byte order, as the
//! kernel sends them (`linux/netlink.h`, `linux/rtnetlink.h`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// Message types (linux/netlink.h, linux/rtnetlink.h).
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
pub const RTM_GETNEIGH: u16 = 30;
pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;

// nlmsg_flags.
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_APPEND: u16 = 0x800;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

// Multicast groups (enum rtnetlink_groups).
pub const RTNLGRP_LINK: u32 = 1;
pub const RTNLGRP_NEIGH: u32 = 3;
pub const RTNLGRP_IPV4_IFADDR: u32 = 5;
pub const RTNLGRP_IPV4_ROUTE: u32 = 7;
pub const RTNLGRP_IPV6_IFADDR: u32 = 9;
pub const RTNLGRP_IPV6_ROUTE: u32 = 11;
pub const RTNLGRP_NEXTHOP: u32 = 32;

// struct rtmsg and its attributes.
pub const RTMSG_LEN: usize = 12;
pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_PRIORITY: u16 = 6;
pub const RTA_PREFSRC: u16 = 7;
pub const RTA_MULTIPATH: u16 = 9;
pub const RTA_TABLE: u16 = 15;
pub const RTA_VIA: u16 = 18;
pub const RTA_NH_ID: u16 = 30;
pub const RTM_F_CLONED: u32 = 0x200;
/// struct rtnexthop (one hop of RTA_MULTIPATH).
pub const RTNH_LEN: usize = 8;

// rtm_type.
pub const RTN_UNICAST: u8 = 1;
pub const RTN_BLACKHOLE: u8 = 6;
pub const RTN_UNREACHABLE: u8 = 7;
pub const RTN_PROHIBIT: u8 = 8;

// struct nhmsg and its attributes (linux/nexthop.h).
pub const NHMSG_LEN: usize = 8;
pub const NHA_ID: u16 = 1;
pub const NHA_GROUP: u16 = 2;
pub const NHA_BLACKHOLE: u16 = 4;
pub const NHA_OIF: u16 = 5;
pub const NHA_GATEWAY: u16 = 6;
/// struct nexthop_grp { u32 id; u8 weight; u8 weight_high; u16 resvd2 }.
pub const NEXTHOP_GRP_LEN: usize = 8;

// Header sizes of the dump requests for links and addresses.
pub const IFINFOMSG_LEN: usize = 16;
pub const IFADDRMSG_LEN: usize = 8;

// Neighbour states that hold a usable link-layer address (linux/neighbour.h).
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_STALE: u16 = 0x04;
pub const NUD_DELAY: u16 = 0x08;
pub const NUD_PROBE: u16 = 0x10;
pub const NUD_NOARP: u16 = 0x40;
pub const NUD_PERMANENT: u16 = 0x80;

/// The name of a message type, for errors and logs.
pub fn kind_name(kind: u16) -> &'static str {
    match kind {
        NLMSG_NOOP => "NLMSG_NOOP",
        NLMSG_ERROR => "NLMSG_ERROR",
        NLMSG_DONE => "NLMSG_DONE",
        NLMSG_OVERRUN => "NLMSG_OVERRUN",
        RTM_NEWLINK => "RTM_NEWLINK",
        RTM_DELLINK => "RTM_DELLINK",
        RTM_GETLINK => "RTM_GETLINK",
        RTM_NEWADDR => "RTM_NEWADDR",
        RTM_DELADDR => "RTM_DELADDR",
        RTM_GETADDR => "RTM_GETADDR",
        RTM_NEWROUTE => "RTM_NEWROUTE",
        RTM_DELROUTE => "RTM_DELROUTE",
        RTM_GETROUTE => "RTM_GETROUTE",
        RTM_NEWNEIGH => "RTM_NEWNEIGH",
        RTM_DELNEIGH => "RTM_DELNEIGH",
        RTM_GETNEIGH => "RTM_GETNEIGH",
        RTM_NEWNEXTHOP => "RTM_NEWNEXTHOP",
        RTM_DELNEXTHOP => "RTM_DELNEXTHOP",
        RTM_GETNEXTHOP => "RTM_GETNEXTHOP",
        _ => "netlink",
    }
}

/// One netlink message: type, flags and payload (after the 16-byte header).
#[derive(Clone, Copy, Debug)]
pub struct RawMsg<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Iterates over the netlink messages of one datagram; stops at the first
/// malformed header.
pub struct Messages<'a> {
    buf: &'a [u8],
}

pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = RawMsg<'a>;
    fn next(&mut self) -> Option<RawMsg<'a>> {
        let len = u32_at(self.buf, 0)? as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let msg = RawMsg {
            kind: u16_at(self.buf, 4)?,
            flags: u16_at(self.buf, 6)?,
            seq: u32_at(self.buf, 8)?,
            payload: self.buf.get(NLMSG_HDRLEN..len)?,
        };
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some(msg)
    }
}

/// Netlink messages and attributes are padded to 4 bytes.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Iterates over (type, value) of the attributes in `buf`; stops at the
/// first malformed one.
pub struct Attrs<'a> {
    buf: &'a [u8],
}

pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let len = u16_at(self.buf, 0)? as usize;
        let kind = u16_at(self.buf, 2)? & 0x3fff; // strip NLA_F_NESTED / NET_BYTEORDER
        if len < 4 || len > self.buf.len() {
            self.buf = &[];
            return None;
        }
        let value = self.buf.get(4..len)?;
        self.buf = self.buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, value))
    }
}

pub fn attr_u32(v: &[u8]) -> Option<u32> {
    u32_at(v, 0)
}

/// An address attribute of `family` (extra bytes are ignored).
pub fn ip_from(family: u8, v: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(v.get(..4)?).ok()?,
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(v.get(..16)?).ok()?,
        ))),
        _ => None,
    }
}

/// A dump request: nlmsghdr + the family header (`body`), NLM_F_DUMP.
pub fn dump_request(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    request(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, body)
}

/// A get request for one object: nlmsghdr (NLM_F_REQUEST) + `body` (family
/// header and attributes, already encoded).
pub fn get_request(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    request(kind, NLM_F_REQUEST, seq, body)
}

/// A change request for one existing object (NLM_F_REQUEST | NLM_F_ACK |
/// NLM_F_REPLACE): the kernel answers with an NLMSG_ERROR ack.
pub fn change_request(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    request(kind, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE, seq, body)
}

/// Appends one netlink attribute (padded to 4 bytes) to `buf`.
pub fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    // Attribute values here are addresses and small integers; a longer one
    // is a bug in the caller, and the kernel would reject the wrong length.
    let wire_len = u16::try_from(len).unwrap_or(u16::MAX);
    buf.extend_from_slice(&wire_len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(body);
    v
}

/// The errno of an NLMSG_ERROR payload (0 = ack).
pub fn error_code(payload: &[u8]) -> i32 {
    u32_at(payload, 0).map_or(0, |e| -(e.cast_signed()))
}
