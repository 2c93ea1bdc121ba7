//! Translation of raw rtnetlink messages into `model` types.
//!
//! Route messages are first checked with a cheap scan of the header and the
//! RTA_TABLE / RTA_DST attributes (no allocation); only routes that pass the
//! `SegmentFilter` are decoded fully. Nexthop objects (RTM_NEWNEXTHOP) are not
//! covered by netlink-packet-route 0.34, and the few attributes the watcher
//! needs from links and addresses are simpler to read directly, so all
//! decoding here works on the wire format (`linux/rtnetlink.h`,
//! `linux/nexthop.h`, `linux/if_link.h`, `linux/if_addr.h`) and ignores
//! attributes it does not know.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::filter::SegmentFilter;
use crate::model::{
    AddressInfo, InterfaceInfo, NextHop, NexthopObject, OperState, Route, RouteKey, RouteKind,
};

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

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_APPEND: u16 = 0x800;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTA_NH_ID: u16 = 30;
const RTM_F_CLONED: u32 = 0x200;
const RTMSG_LEN: usize = 12;
const RTNH_LEN: usize = 8;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHMSG_LEN: usize = 8;

const IFLA_IFNAME: u16 = 3;
const IFLA_OPERSTATE: u16 = 16;
const IFINFOMSG_LEN: usize = 16;
const IFF_UP: u32 = 1;
const ARPHRD_ETHER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFADDRMSG_LEN: usize = 8;

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

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Iterates over (type, value) of the attributes in `buf`.
struct Attrs<'a> {
    buf: &'a [u8],
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
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

fn attr_u32(v: &[u8]) -> Option<u32> {
    u32_at(v, 0)
}

fn ip_from(family: u8, v: &[u8]) -> Option<IpAddr> {
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

/// What a route message means once it passed the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// RTM_NEWROUTE; `replace` = NLM_F_REPLACE, `append` = NLM_F_APPEND.
    New {
        route: Route,
        replace: bool,
        append: bool,
    },
    /// RTM_DELROUTE with the next hops the message named (maybe a subset of
    /// a multipath route).
    Del { route: Route },
}

/// The outcome of looking at a route message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteVerdict {
    /// Not in a watched table, no monitored segment, a cloned/cache entry or
    /// a source-specific route: dropped without decoding.
    Filtered,
    Relevant(RouteChange),
    /// Passed the filter but could not be decoded.
    Malformed(String),
}

/// Looks at RTM_NEWROUTE/RTM_DELROUTE. Allocates only for relevant routes.
pub fn route(msg: &RawMsg<'_>, filter: &SegmentFilter) -> RouteVerdict {
    let p = msg.payload;
    let Some(hdr) = p.get(..RTMSG_LEN) else {
        return RouteVerdict::Malformed("route message shorter than rtmsg".into());
    };
    let (family, dst_len, src_len, tos, hdr_table, protocol, rtype) =
        (hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[7]);
    let rtm_flags = u32_at(hdr, 8).unwrap_or(0);
    if src_len != 0 || rtm_flags & RTM_F_CLONED != 0 {
        return RouteVerdict::Filtered;
    }
    let body = p.get(RTMSG_LEN..).unwrap_or(&[]);
    let mut table = u32::from(hdr_table);
    let mut dst: Option<&[u8]> = None;
    for (kind, v) in attrs(body) {
        match kind {
            RTA_TABLE => table = attr_u32(v).unwrap_or(table),
            RTA_DST => dst = Some(v),
            _ => {}
        }
    }
    if !filter.watches_table(table) {
        return RouteVerdict::Filtered;
    }
    let prefix = match family {
        AF_INET => {
            let a = match dst {
                Some(v) => match v.get(..4) {
                    Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => return RouteVerdict::Malformed("short RTA_DST".into()),
                },
                None => 0,
            };
            if dst_len > 32 || !filter.matches_v4(a, dst_len) {
                return RouteVerdict::Filtered;
            }
            IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), dst_len).map(|n| n.trunc())
        }
        AF_INET6 => {
            let a = match dst {
                Some(v) => match v.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
                    Some(b) => u128::from_be_bytes(b),
                    None => return RouteVerdict::Malformed("short RTA_DST".into()),
                },
                None => 0,
            };
            if dst_len > 128 || !filter.matches_v6(a, dst_len) {
                return RouteVerdict::Filtered;
            }
            IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), dst_len).map(|n| n.trunc())
        }
        _ => return RouteVerdict::Filtered,
    };
    let Ok(prefix) = prefix else {
        return RouteVerdict::Malformed(format!("bad prefix length {dst_len}"));
    };
    let mut route = Route {
        key: RouteKey {
            table,
            prefix,
            metric: 0,
            tos,
        },
        protocol,
        kind: route_kind(rtype),
        nexthops: Vec::new(),
        nh_id: None,
    };
    let mut single = NextHop {
        ifindex: None,
        gateway: None,
        flags: 0,
    };
    for (kind, v) in attrs(body) {
        match kind {
            RTA_PRIORITY => route.key.metric = attr_u32(v).unwrap_or(0),
            RTA_OIF => single.ifindex = attr_u32(v),
            RTA_GATEWAY => single.gateway = ip_from(family, v),
            RTA_VIA => single.gateway = via(v),
            RTA_NH_ID => route.nh_id = attr_u32(v),
            RTA_MULTIPATH => match multipath(family, v) {
                Some(hops) => route.nexthops = hops,
                None => return RouteVerdict::Malformed("bad RTA_MULTIPATH".into()),
            },
            _ => {}
        }
    }
    if route.nh_id.is_some() {
        route.nexthops.clear();
    } else if route.nexthops.is_empty() && (single.ifindex.is_some() || single.gateway.is_some()) {
        route.nexthops.push(single);
    }
    let change = if msg.kind == RTM_DELROUTE {
        RouteChange::Del { route }
    } else {
        RouteChange::New {
            route,
            replace: msg.flags & NLM_F_REPLACE != 0,
            append: msg.flags & NLM_F_APPEND != 0,
        }
    };
    RouteVerdict::Relevant(change)
}

fn route_kind(t: u8) -> RouteKind {
    match t {
        1 => RouteKind::Unicast,
        6 => RouteKind::Blackhole,
        7 => RouteKind::Unreachable,
        8 => RouteKind::Prohibit,
        other => RouteKind::Other(other),
    }
}

/// RTA_VIA: struct rtvia { u16 family; u8 addr[] } (IPv4 route via an IPv6 gateway).
fn via(v: &[u8]) -> Option<IpAddr> {
    let fam = u16_at(v, 0)?;
    ip_from(u8::try_from(fam).ok()?, v.get(2..)?)
}

/// RTA_MULTIPATH: a sequence of struct rtnexthop { u16 len; u8 flags; u8
/// hops; i32 ifindex } each followed by its own attributes.
fn multipath(family: u8, mut v: &[u8]) -> Option<Vec<NextHop>> {
    let mut hops = Vec::new();
    while v.len() >= RTNH_LEN {
        let len = usize::from(u16_at(v, 0)?);
        if len < RTNH_LEN || len > v.len() {
            return None;
        }
        let flags = u32::from(*v.get(2)?);
        let ifindex = u32_at(v, 4)?;
        let mut hop = NextHop {
            ifindex: (ifindex != 0).then_some(ifindex),
            gateway: None,
            flags,
        };
        for (kind, a) in attrs(v.get(RTNH_LEN..len)?) {
            match kind {
                RTA_GATEWAY => hop.gateway = ip_from(family, a),
                RTA_VIA => hop.gateway = via(a),
                _ => {}
            }
        }
        hops.push(hop);
        v = v.get(align4(len)..).unwrap_or(&[]);
    }
    Some(hops)
}

/// RTM_NEWNEXTHOP / RTM_DELNEXTHOP: struct nhmsg { u8 family, scope,
/// protocol, resvd; u32 flags } + NHA_* attributes.
pub fn nexthop(msg: &RawMsg<'_>) -> Result<NexthopObject, String> {
    let p = msg.payload;
    let hdr = p
        .get(..NHMSG_LEN)
        .ok_or("nexthop message shorter than nhmsg")?;
    let family = hdr[0];
    let mut nh = NexthopObject {
        id: 0,
        ifindex: None,
        gateway: None,
        blackhole: false,
        group: Vec::new(),
        flags: u32_at(hdr, 4).unwrap_or(0),
    };
    for (kind, v) in attrs(p.get(NHMSG_LEN..).unwrap_or(&[])) {
        match kind {
            NHA_ID => nh.id = attr_u32(v).unwrap_or(0),
            NHA_OIF => nh.ifindex = attr_u32(v),
            NHA_GATEWAY => nh.gateway = ip_from(family, v),
            NHA_BLACKHOLE => nh.blackhole = true,
            // struct nexthop_grp { u32 id; u8 weight; u8 weight_high; u16 resvd2 }
            NHA_GROUP => nh.group = v.chunks_exact(8).filter_map(|c| u32_at(c, 0)).collect(),
            _ => {}
        }
    }
    if nh.id == 0 {
        return Err("nexthop message without NHA_ID".into());
    }
    Ok(nh)
}

/// RTM_NEWLINK / RTM_DELLINK: struct ifinfomsg { u8 family, pad; u16 type;
/// i32 index; u32 flags; u32 change } + IFLA_* attributes.
pub fn link(msg: &RawMsg<'_>) -> Result<InterfaceInfo, String> {
    let p = msg.payload;
    let hdr = p
        .get(..IFINFOMSG_LEN)
        .ok_or("link message shorter than ifinfomsg")?;
    let arphrd = u16_at(hdr, 2).unwrap_or(0);
    let ifindex = u32_at(hdr, 4).unwrap_or(0);
    let flags = u32_at(hdr, 8).unwrap_or(0);
    let mut info = InterfaceInfo {
        ifindex,
        name: String::new(),
        admin_up: flags & IFF_UP != 0,
        oper: OperState::Other,
        l3: arphrd != ARPHRD_ETHER,
    };
    for (kind, v) in attrs(p.get(IFINFOMSG_LEN..).unwrap_or(&[])) {
        match kind {
            IFLA_IFNAME => {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                info.name = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            IFLA_OPERSTATE => {
                info.oper = match v.first() {
                    Some(0) => OperState::Unknown,
                    Some(2) => OperState::Down,
                    Some(6) => OperState::Up,
                    _ => OperState::Other,
                }
            }
            _ => {}
        }
    }
    if ifindex == 0 {
        return Err("link message without an interface index".into());
    }
    Ok(info)
}

/// The layer-2 facts of an interface (RTM_NEWLINK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkL2 {
    pub ifindex: u32,
    /// IFLA_ADDRESS when it is a 6-byte (Ethernet) address.
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// RTM_NEWLINK / RTM_DELLINK: the interface's MAC and MTU.
pub fn link_l2(msg: &RawMsg<'_>) -> Result<LinkL2, String> {
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_MTU: u16 = 4;
    let p = msg.payload;
    let hdr = p
        .get(..IFINFOMSG_LEN)
        .ok_or("link message shorter than ifinfomsg")?;
    let ifindex = u32_at(hdr, 4).unwrap_or(0);
    if ifindex == 0 {
        return Err("link message without an interface index".into());
    }
    let mut l2 = LinkL2 {
        ifindex,
        mac: None,
        mtu: None,
    };
    for (kind, v) in attrs(p.get(IFINFOMSG_LEN..).unwrap_or(&[])) {
        match kind {
            IFLA_ADDRESS => l2.mac = <[u8; 6]>::try_from(v).ok(),
            IFLA_MTU => l2.mtu = attr_u32(v),
            _ => {}
        }
    }
    Ok(l2)
}

/// A neighbour table entry (RTM_NEWNEIGH / RTM_DELNEIGH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourInfo {
    pub ifindex: u32,
    pub address: IpAddr,
    /// NUD_* state bits.
    pub state: u16,
    /// NDA_LLADDR when it is a 6-byte (Ethernet) address.
    pub lladdr: Option<[u8; 6]>,
}

const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;

impl NeighbourInfo {
    /// The link-layer address when the entry is usable for forwarding
    /// (REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP; not INCOMPLETE,
    /// FAILED or NONE).
    pub fn usable_lladdr(&self) -> Option<[u8; 6]> {
        let valid = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT;
        if self.state & valid != 0 {
            self.lladdr
        } else {
            None
        }
    }
}

/// RTM_NEWNEIGH / RTM_DELNEIGH: struct ndmsg { u8 family, pad1; u16 pad2;
/// i32 ifindex; u16 state; u8 flags; u8 type } + NDA_* attributes. Ok(None)
/// for entries that are not IPv4/IPv6 neighbours (bridge fdb, proxy entries).
pub fn neighbour(msg: &RawMsg<'_>) -> Result<Option<NeighbourInfo>, String> {
    const NDMSG_LEN: usize = 12;
    const NDA_DST: u16 = 1;
    const NDA_LLADDR: u16 = 2;
    const NTF_PROXY: u8 = 0x08;
    let p = msg.payload;
    let hdr = p
        .get(..NDMSG_LEN)
        .ok_or("neighbour message shorter than ndmsg")?;
    let family = hdr[0];
    if (family != AF_INET && family != AF_INET6) || hdr[10] & NTF_PROXY != 0 {
        return Ok(None);
    }
    let ifindex = u32_at(hdr, 4).unwrap_or(0);
    let state = u16_at(hdr, 8).unwrap_or(0);
    let (mut address, mut lladdr) = (None, None);
    for (kind, v) in attrs(p.get(NDMSG_LEN..).unwrap_or(&[])) {
        match kind {
            NDA_DST => address = ip_from(family, v),
            NDA_LLADDR => lladdr = <[u8; 6]>::try_from(v).ok(),
            _ => {}
        }
    }
    let address = address.ok_or("neighbour message without NDA_DST")?;
    Ok(Some(NeighbourInfo {
        ifindex,
        address,
        state,
        lladdr,
    }))
}

/// RTM_NEWADDR / RTM_DELADDR: struct ifaddrmsg { u8 family, prefixlen,
/// flags, scope; u32 index } + IFA_* attributes.
pub fn address(msg: &RawMsg<'_>) -> Result<Option<AddressInfo>, String> {
    let p = msg.payload;
    let hdr = p
        .get(..IFADDRMSG_LEN)
        .ok_or("address message shorter than ifaddrmsg")?;
    let (family, plen) = (hdr[0], hdr[1]);
    if family != AF_INET && family != AF_INET6 {
        return Ok(None);
    }
    let ifindex = u32_at(hdr, 4).unwrap_or(0);
    let (mut address, mut local) = (None, None);
    for (kind, v) in attrs(p.get(IFADDRMSG_LEN..).unwrap_or(&[])) {
        match kind {
            IFA_ADDRESS => address = ip_from(family, v),
            IFA_LOCAL => local = ip_from(family, v),
            _ => {}
        }
    }
    let Some(mine) = local.or(address) else {
        return Err("address message without IFA_LOCAL or IFA_ADDRESS".into());
    };
    let local = IpNet::new(mine, plen).map_err(|_| format!("bad prefix length {plen}"))?;
    let peer = address.filter(|a| *a != mine);
    Ok(Some(AddressInfo {
        ifindex,
        local,
        peer,
    }))
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
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_REPLACE: u16 = 0x100;
    request(kind, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE, seq, body)
}

/// Appends one netlink attribute (padded to 4 bytes) to `buf`.
pub fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

fn request(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + body.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(body);
    v
}

/// The errno of an NLMSG_ERROR payload (0 = ack).
pub fn error_code(payload: &[u8]) -> i32 {
    u32_at(payload, 0).map(|e| -(e as i32)).unwrap_or(0)
}
