//! Route messages (RTM_NEWROUTE / RTM_DELROUTE) as `RouteChange`s.
//!
//! A route message is first checked with a cheap scan of the header and the
//! RTA_TABLE / RTA_DST attributes, in place and without allocating (a full
//! table is up to 1M routes); only routes that pass the `SegmentFilter` are
//! decoded fully. Attributes the watcher does not use are ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::filter::SegmentFilter;
use crate::model::{NextHop, Route, RouteAlias, RouteKey, RouteKind};
use crate::netlink::codec::{
    align4, attr_u32, attrs, ip_from, u16_at, u32_at, RawMsg, AF_INET, AF_INET6, NLM_F_APPEND,
    NLM_F_MULTI, NLM_F_REPLACE, RTA_DST, RTA_GATEWAY, RTA_MULTIPATH, RTA_NH_ID, RTA_OIF,
    RTA_PREFSRC, RTA_PRIORITY, RTA_TABLE, RTA_VIA, RTMSG_LEN, RTM_DELROUTE, RTM_F_CLONED, RTNH_LEN,
    RTN_BLACKHOLE, RTN_PROHIBIT, RTN_UNICAST, RTN_UNREACHABLE,
};
use crate::netlink::{DecodeError, Malformed};

/// What a route message means once it passed the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// RTM_NEWROUTE; `replace` = NLM_F_REPLACE, `append` = NLM_F_APPEND;
    /// `prepend`: a notification with neither (`ip route add`/`prepend`),
    /// for which IPv4 puts the new alias first (fib_table_insert); dumped
    /// routes (NLM_F_MULTI) come in the kernel's order and are neither.
    New {
        route: Route,
        replace: bool,
        append: bool,
        prepend: bool,
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
    Malformed(DecodeError),
}

/// Looks at RTM_NEWROUTE/RTM_DELROUTE. Allocates only for relevant routes.
pub fn route(msg: &RawMsg<'_>, filter: &SegmentFilter) -> RouteVerdict {
    let p = msg.payload;
    let Some(hdr) = p.get(..RTMSG_LEN) else {
        return malformed(msg, Malformed::ShortHeader("rtmsg"));
    };
    let (family, dst_len, src_len, tos, hdr_table, protocol, scope, rtype) = (
        hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7],
    );
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
                    None => return malformed(msg, Malformed::ShortAttribute("RTA_DST")),
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
                    None => return malformed(msg, Malformed::ShortAttribute("RTA_DST")),
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
        return malformed(msg, Malformed::PrefixLength(dst_len));
    };
    let mut route = Route {
        key: RouteKey {
            table,
            prefix,
            metric: 0,
            tos,
            alias: RouteAlias::default(),
        },
        protocol,
        kind: route_kind(rtype),
        nexthops: Vec::new(),
        nh_id: None,
    };
    // A single-path route's next-hop flags (RTNH_F_LINKDOWN, RTNH_F_DEAD)
    // are in rtm_flags (fib_dump_info / rt6_fill_node copy them there via
    // fib_nexthop_info); the RTM_F_* bits are above the low byte.
    let mut single = NextHop {
        ifindex: None,
        gateway: None,
        flags: rtm_flags & 0xff,
    };
    let mut prefsrc = None;
    for (kind, v) in attrs(body) {
        match kind {
            RTA_PRIORITY => route.key.metric = attr_u32(v).unwrap_or(0),
            RTA_OIF => single.ifindex = attr_u32(v),
            RTA_GATEWAY => single.gateway = ip_from(family, v),
            RTA_VIA => single.gateway = via(v),
            RTA_PREFSRC => prefsrc = ip_from(family, v),
            RTA_NH_ID => route.nh_id = attr_u32(v),
            RTA_MULTIPATH => match multipath(family, v) {
                Some(hops) => route.nexthops = hops,
                None => return malformed(msg, Malformed::BadAttribute("RTA_MULTIPATH")),
            },
            _ => {}
        }
    }
    if route.nh_id.is_some() {
        route.nexthops.clear();
    } else if route.nexthops.is_empty() && (single.ifindex.is_some() || single.gateway.is_some()) {
        route.nexthops.push(single);
    }
    route.key.alias = alias(&route, scope, rtype, prefsrc);
    let change = if msg.kind == RTM_DELROUTE {
        RouteChange::Del { route }
    } else {
        RouteChange::New {
            route,
            replace: msg.flags & NLM_F_REPLACE != 0,
            append: msg.flags & NLM_F_APPEND != 0,
            prepend: msg.flags & (NLM_F_REPLACE | NLM_F_APPEND | NLM_F_MULTI) == 0,
        }
    };
    RouteVerdict::Relevant(change)
}

/// Which alias of its (table, prefix, metric, tos) `route` is (see `RouteAlias`).
fn alias(route: &Route, scope: u8, rtype: u8, prefsrc: Option<IpAddr>) -> RouteAlias {
    if route.key.prefix.addr().is_ipv4() {
        return RouteAlias::Ipv4 {
            rtype,
            protocol: route.protocol,
            scope,
            prefsrc: match prefsrc {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            },
            nh_id: route.nh_id,
            hops: route
                .nexthops
                .iter()
                .map(|h| (h.ifindex, h.gateway))
                .collect(),
        };
    }
    // rt6_qualify_for_ecmp: no nexthop object and a gateway.
    let ecmp = route.kind == RouteKind::Unicast
        && route.nh_id.is_none()
        && !route.nexthops.is_empty()
        && route.nexthops.iter().all(|h| h.gateway.is_some());
    if ecmp {
        return RouteAlias::Ipv6Ecmp;
    }
    let first = route.nexthops.first();
    RouteAlias::Ipv6 {
        rtype,
        nh_id: route.nh_id,
        ifindex: first.and_then(|h| h.ifindex),
        gateway: first.and_then(|h| h.gateway),
    }
}

fn route_kind(t: u8) -> RouteKind {
    match t {
        RTN_UNICAST => RouteKind::Unicast,
        RTN_BLACKHOLE => RouteKind::Blackhole,
        RTN_UNREACHABLE => RouteKind::Unreachable,
        RTN_PROHIBIT => RouteKind::Prohibit,
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

fn malformed(msg: &RawMsg<'_>, problem: Malformed) -> RouteVerdict {
    RouteVerdict::Malformed(DecodeError::new(msg, problem))
}
