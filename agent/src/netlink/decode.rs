//! Decoding of the rarer rtnetlink objects into `model` types: nexthop
//! objects, links, addresses and neighbour entries. (Routes, which come by the
//! million, are prefiltered in place by `watcher::routes`.)
//!
//! Links, addresses and neighbours are read with netlink-packet-route's header
//! and attribute types. Each attribute is parsed on its own and one the crate
//! refuses is skipped, rather than using `LinkMessage::parse` & co., which
//! reject a whole message when any single attribute does not match the
//! crate's idea of it (a driver-specific IFLA_LINKINFO of a newer kernel, say):
//! the watcher must keep seeing such an interface's name and state.
//!
//! Nexthop objects (RTM_NEWNEXTHOP, `linux/nexthop.h`) are decoded by hand:
//! netlink-packet-route 0.34 has no type for them.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{Emitable, NlaBuffer, NlasIterator, Parseable, ParseableParametrized};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeader};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkLayerType, State};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader,
};
use netlink_packet_route::AddressFamily;

use super::codec::{
    self, attr_u32, attrs, ip_from, u32_at, RawMsg, NEXTHOP_GRP_LEN, NHA_BLACKHOLE, NHA_GATEWAY,
    NHA_GROUP, NHA_ID, NHA_OIF, NHMSG_LEN, NUD_DELAY, NUD_NOARP, NUD_PERMANENT, NUD_PROBE,
    NUD_REACHABLE, NUD_STALE,
};
use crate::model::{AddressInfo, InterfaceInfo, NexthopObject, OperState};

/// A message that could not be decoded: its type and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {} message: {problem}", codec::kind_name(*.kind))]
pub struct DecodeError {
    /// The netlink message type (RTM_*).
    pub kind: u16,
    pub problem: Malformed,
}

/// What was wrong with a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than its {0} header")]
    ShortHeader(&'static str),
    #[error("no {0} attribute")]
    Missing(&'static str),
    #[error("{0} is too short")]
    ShortAttribute(&'static str),
    #[error("{0} cannot be decoded")]
    BadAttribute(&'static str),
    #[error("prefix length {0} is out of range")]
    PrefixLength(u8),
    #[error("no interface index")]
    NoIfindex,
}

impl DecodeError {
    pub fn new(msg: &RawMsg<'_>, problem: Malformed) -> DecodeError {
        DecodeError {
            kind: msg.kind,
            problem,
        }
    }
}

/// The attributes after a `header_len`-byte family header that the crate can
/// parse; iteration stops at the first malformed attribute header, like
/// `codec::attrs`.
fn lenient_attrs<'a, T>(
    payload: &'a [u8],
    header_len: usize,
    parse: impl Fn(&NlaBuffer<&'a [u8]>) -> Option<T> + 'a,
) -> impl Iterator<Item = T> + 'a {
    NlasIterator::new(payload.get(header_len..).unwrap_or(&[]))
        .map_while(Result::ok)
        .filter_map(move |nla| parse(&nla))
}

/// RTM_NEWNEXTHOP / RTM_DELNEXTHOP: struct nhmsg { u8 family, scope,
/// protocol, resvd; u32 flags } + NHA_* attributes.
pub fn nexthop(msg: &RawMsg<'_>) -> Result<NexthopObject, DecodeError> {
    let p = msg.payload;
    let hdr = p
        .get(..NHMSG_LEN)
        .ok_or_else(|| DecodeError::new(msg, Malformed::ShortHeader("nhmsg")))?;
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
            NHA_GROUP => {
                nh.group = v
                    .chunks_exact(NEXTHOP_GRP_LEN)
                    .filter_map(|c| u32_at(c, 0))
                    .collect();
            }
            _ => {}
        }
    }
    if nh.id == 0 {
        return Err(DecodeError::new(msg, Malformed::Missing("NHA_ID")));
    }
    Ok(nh)
}

/// The header and parseable attributes of RTM_NEWLINK / RTM_DELLINK.
fn link_parts<'a>(
    msg: &RawMsg<'a>,
) -> Result<(LinkHeader, impl Iterator<Item = LinkAttribute> + 'a), DecodeError> {
    let hdr = LinkHeader::parse(msg.payload)
        .map_err(|_| DecodeError::new(msg, Malformed::ShortHeader("ifinfomsg")))?;
    let family = hdr.interface_family;
    let attrs = lenient_attrs(msg.payload, hdr.buffer_len(), move |nla| {
        LinkAttribute::parse_with_param(nla, family).ok()
    });
    Ok((hdr, attrs))
}

/// RTM_NEWLINK / RTM_DELLINK: the interface's name and states. Ok(None) for
/// messages of another family (AF_BRIDGE port events, whose RTM_DELLINK
/// means "left the bridge", not "deleted"): they are not the interface
/// itself, which the kernel reports with AF_UNSPEC (rtnl_fill_ifinfo).
pub fn link(msg: &RawMsg<'_>) -> Result<Option<InterfaceInfo>, DecodeError> {
    let (hdr, attributes) = link_parts(msg)?;
    if hdr.interface_family != AddressFamily::Unspec {
        return Ok(None);
    }
    let mut info = InterfaceInfo {
        ifindex: hdr.index,
        name: String::new(),
        admin_up: hdr.flags.contains(LinkFlags::Up),
        oper: OperState::Other,
        // Not Ethernet (ppp, tun, ...): next hops need no neighbour resolution.
        l3: hdr.link_layer_type != LinkLayerType::Ether,
    };
    for a in attributes {
        match a {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::OperState(state) => {
                info.oper = match state {
                    State::Unknown => OperState::Unknown,
                    State::Down => OperState::Down,
                    State::Up => OperState::Up,
                    _ => OperState::Other,
                }
            }
            _ => {}
        }
    }
    if info.ifindex == 0 {
        return Err(DecodeError::new(msg, Malformed::NoIfindex));
    }
    Ok(Some(info))
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
pub fn link_l2(msg: &RawMsg<'_>) -> Result<LinkL2, DecodeError> {
    let (hdr, attributes) = link_parts(msg)?;
    if hdr.index == 0 {
        return Err(DecodeError::new(msg, Malformed::NoIfindex));
    }
    let mut l2 = LinkL2 {
        ifindex: hdr.index,
        mac: None,
        mtu: None,
    };
    for a in attributes {
        match a {
            LinkAttribute::Address(mac) => l2.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::Mtu(mtu) => l2.mtu = Some(mtu),
            _ => {}
        }
    }
    Ok(l2)
}

/// An interface's transmit counters (IFLA_STATS64 of RTM_NEWLINK).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkTx {
    pub packets: u64,
    /// `tx_dropped + tx_errors`: what the device took and did not send. Not
    /// every driver counts failed XDP redirects here (a veth without NAPI
    /// counts them nowhere in these stats).
    pub lost: u64,
}

/// RTM_NEWLINK: the transmit counters; None without IFLA_STATS64.
pub fn link_tx(msg: &RawMsg<'_>) -> Result<Option<LinkTx>, DecodeError> {
    let (_, attributes) = link_parts(msg)?;
    Ok(attributes.into_iter().find_map(|a| match a {
        LinkAttribute::Stats64(s) => Some(LinkTx {
            packets: s.tx_packets,
            lost: s.tx_dropped.saturating_add(s.tx_errors),
        }),
        _ => None,
    }))
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

impl NeighbourInfo {
    /// Whether the kernel's neighbour state machine owns the entry: not
    /// PERMANENT or NOARP, which someone set on purpose (`ip neigh replace
    /// ... nud permanent`, a NOARP device) and which must stay as they are.
    pub fn kernel_owned(&self) -> bool {
        self.state & (NUD_PERMANENT | NUD_NOARP) == 0
    }

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

/// RTM_NEWNEIGH / RTM_DELNEIGH. Ok(None) for entries that are not IPv4/IPv6
/// neighbours (bridge fdb, proxy entries).
pub fn neighbour(msg: &RawMsg<'_>) -> Result<Option<NeighbourInfo>, DecodeError> {
    let hdr = NeighbourHeader::parse(msg.payload)
        .map_err(|_| DecodeError::new(msg, Malformed::ShortHeader("ndmsg")))?;
    let family = hdr.family;
    if !matches!(family, AddressFamily::Inet | AddressFamily::Inet6)
        || hdr.flags.contains(NeighbourFlags::Proxy)
    {
        return Ok(None);
    }
    let (mut address, mut lladdr) = (None, None);
    let attributes = lenient_attrs(msg.payload, hdr.buffer_len(), move |nla| {
        NeighbourAttribute::parse_with_param(nla, family).ok()
    });
    for a in attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                address = Some(IpAddr::V4(a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                address = Some(IpAddr::V6(a));
            }
            NeighbourAttribute::LinkLayerAddress(mac) => {
                lladdr = <[u8; 6]>::try_from(mac.as_slice()).ok();
            }
            _ => {}
        }
    }
    let address = address.ok_or_else(|| DecodeError::new(msg, Malformed::Missing("NDA_DST")))?;
    Ok(Some(NeighbourInfo {
        ifindex: hdr.ifindex,
        address,
        state: u16::from(hdr.state),
        lladdr,
    }))
}

/// RTM_NEWADDR / RTM_DELADDR: the local address and prefix, and the peer of
/// a point-to-point address. Ok(None) for families other than IPv4/IPv6 and
/// for tentative (or DAD-failed) IPv6 addresses.
pub fn address(msg: &RawMsg<'_>) -> Result<Option<AddressInfo>, DecodeError> {
    let hdr = AddressHeader::parse(msg.payload)
        .map_err(|_| DecodeError::new(msg, Malformed::ShortHeader("ifaddrmsg")))?;
    if !matches!(hdr.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return Ok(None);
    }
    let (mut address, mut local) = (None, None);
    let mut flags = u32::from(hdr.flags.bits());
    let attributes = lenient_attrs(msg.payload, hdr.buffer_len(), |nla| {
        AddressAttribute::parse(nla).ok()
    });
    for a in attributes {
        match a {
            AddressAttribute::Address(a) => address = Some(a),
            AddressAttribute::Local(a) => local = Some(a),
            // IFA_FLAGS: all 32 bits of the flags (the header has 8).
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    // An IPv6 address still in (or failed) duplicate address detection
    // cannot be used, and the kernel does not announce it: the dump lists
    // it, but RTM_NEWADDR only comes once DAD completed
    // (addrconf_dad_completed → ipv6_ifa_notify). It is no address yet.
    if flags & (AddressFlags::Tentative | AddressFlags::Dadfailed).bits() != 0 {
        return Ok(None);
    }
    let Some(mine) = local.or(address) else {
        return Err(DecodeError::new(
            msg,
            Malformed::Missing("IFA_LOCAL or IFA_ADDRESS"),
        ));
    };
    let local = IpNet::new(mine, hdr.prefix_len)
        .map_err(|_| DecodeError::new(msg, Malformed::PrefixLength(hdr.prefix_len)))?;
    let peer = address.filter(|a| *a != mine);
    Ok(Some(AddressInfo {
        ifindex: hdr.index,
        local,
        peer,
    }))
}

#[cfg(test)]
mod tests;
