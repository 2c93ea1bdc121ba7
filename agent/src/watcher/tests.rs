//! Message translation, filtering and view semantics on netlink messages built
//! in memory with netlink-packet-route's encoders (so the wire format is the
//! library's, not this module's own idea of it).
#![expect(
    clippy::cast_possible_truncation,
    clippy::many_single_char_names,
    reason = "hand-built test messages are small; hops named a..e read like the kernel's"
)]

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::Emitable;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage, State};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteNextHop, RouteNextHopFlags, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;

use super::routes::{self, RouteChange, RouteVerdict};
use super::*;
use crate::config::MatchMode;
use crate::model::{
    NextHop, OperState, Route, RouteAlias, RouteKey, RouteKind, RTNH_F_DEAD, RTNH_F_LINKDOWN,
};
use crate::netlink::codec;
use crate::netlink::decode;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// nlmsghdr + payload.
fn frame(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut v = Vec::new();
    v.extend_from_slice(&(len as u32).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn emit<T: Emitable>(m: &T) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    m.emit(&mut b);
    b
}

fn raddr(a: IpAddr) -> RouteAddress {
    RouteAddress::from(a)
}

/// A route message: prefix, table (attribute), protocol, metric, attrs.
fn route_msg(
    prefix: &str,
    table: u32,
    proto: RouteProtocol,
    metric: u32,
    extra: Vec<RouteAttribute>,
) -> RouteMessage {
    let p = net(prefix);
    let mut m = RouteMessage::default();
    m.header.address_family = if p.addr().is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = p.prefix_len();
    m.header.table = if table < 256 { table as u8 } else { 252 };
    m.header.protocol = proto;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    if p.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(raddr(p.addr())));
    }
    m.attributes.push(RouteAttribute::Table(table));
    m.attributes.push(RouteAttribute::Priority(metric));
    m.attributes.extend(extra);
    m
}

fn hop(ifindex: u32, gw: &str, flags: RouteNextHopFlags) -> RouteNextHop {
    let mut h = RouteNextHop::default();
    h.interface_index = ifindex;
    h.flags = flags;
    h.attributes.push(RouteAttribute::Gateway(raddr(ip(gw))));
    h
}

fn filter() -> SegmentFilter {
    SegmentFilter::new(
        &[254, 100],
        &[
            (net("10.1.0.0/16"), MatchMode::Covering, false),
            (net("2001:db8:1::/48"), MatchMode::Exact, false),
        ],
    )
}

fn verdict(kind: u16, flags: u16, m: &RouteMessage) -> RouteVerdict {
    let bytes = frame(kind, flags, &emit(m));
    let msg = codec::messages(&bytes).next().unwrap();
    routes::route(&msg, &filter())
}

fn relevant(kind: u16, flags: u16, m: &RouteMessage) -> RouteChange {
    match verdict(kind, flags, m) {
        RouteVerdict::Relevant(c) => c,
        other => panic!("expected a relevant route, got {other:?}"),
    }
}

/// The only route of `prefix` in `view`.
fn by_prefix<'a>(view: &'a KernelView, prefix: &str) -> &'a Route {
    let mut found = view.routes.values().filter(|r| r.key.prefix == net(prefix));
    let r = found.next().expect("a route");
    assert!(found.next().is_none(), "one route of {prefix}");
    r
}

fn new_route(c: RouteChange) -> Route {
    match c {
        RouteChange::New { route, .. } => route,
        other @ RouteChange::Del { .. } => panic!("expected New, got {other:?}"),
    }
}

#[test]
fn single_path_ipv4_route() {
    let m = route_msg(
        "10.0.0.0/8",
        254,
        RouteProtocol::Bgp,
        20,
        vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(raddr(ip("192.0.2.1"))),
        ],
    );
    let r = new_route(relevant(codec::RTM_NEWROUTE, 0x400, &m));
    assert_eq!(
        r.key,
        RouteKey {
            table: 254,
            prefix: net("10.0.0.0/8"),
            metric: 20,
            tos: 0,
            alias: RouteAlias::Ipv4 {
                rtype: 1,
                protocol: 186,
                scope: 0,
                prefsrc: None,
                nh_id: None,
                hops: vec![(Some(3), Some(ip("192.0.2.1")))],
            }
        }
    );
    assert_eq!(r.protocol, 186);
    assert_eq!(r.kind, RouteKind::Unicast);
    assert_eq!(
        r.nexthops,
        vec![NextHop {
            ifindex: Some(3),
            gateway: Some(ip("192.0.2.1")),
            flags: 0
        }]
    );
    assert_eq!(r.nh_id, None);
}

#[test]
fn filter_drops_other_tables_and_prefixes() {
    let other_table = route_msg(
        "10.1.0.0/16",
        5,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    assert_eq!(
        verdict(codec::RTM_NEWROUTE, 0, &other_table),
        RouteVerdict::Filtered
    );
    let unrelated = route_msg(
        "10.2.0.0/16",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    assert_eq!(
        verdict(codec::RTM_NEWROUTE, 0, &unrelated),
        RouteVerdict::Filtered
    );
    let default = route_msg(
        "0.0.0.0/0",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    assert_eq!(
        verdict(codec::RTM_NEWROUTE, 0, &default),
        RouteVerdict::Filtered
    );
    let more_specific = route_msg(
        "10.1.2.0/24",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    assert_eq!(
        verdict(codec::RTM_NEWROUTE, 0, &more_specific),
        RouteVerdict::Filtered
    );
    // A table id above 255 only in RTA_TABLE (the header says 252).
    let big = route_msg(
        "10.1.0.0/16",
        1000,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    assert_eq!(
        verdict(codec::RTM_NEWROUTE, 0, &big),
        RouteVerdict::Filtered
    );
    let in_100 = route_msg(
        "10.1.0.0/16",
        100,
        RouteProtocol::Ospf,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    let r = new_route(relevant(codec::RTM_NEWROUTE, 0, &in_100));
    assert_eq!((r.key.table, r.protocol), (100, 188));
}

#[test]
fn multipath_with_flags_and_kernel_protocol() {
    let m = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Kernel,
        0,
        vec![RouteAttribute::MultiPath(vec![
            hop(3, "192.0.2.1", RouteNextHopFlags::empty()),
            hop(
                4,
                "198.51.100.1",
                RouteNextHopFlags::Linkdown | RouteNextHopFlags::Dead,
            ),
        ])],
    );
    let r = new_route(relevant(codec::RTM_NEWROUTE, 0, &m));
    assert_eq!(r.protocol, 2);
    assert_eq!(
        r.nexthops,
        vec![
            NextHop {
                ifindex: Some(3),
                gateway: Some(ip("192.0.2.1")),
                flags: 0
            },
            NextHop {
                ifindex: Some(4),
                gateway: Some(ip("198.51.100.1")),
                flags: RTNH_F_DEAD | RTNH_F_LINKDOWN
            },
        ]
    );
}

#[test]
fn nexthop_object_route_and_blackhole_kind() {
    let m = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Bgp,
        20,
        vec![RouteAttribute::NhId(7)],
    );
    let r = new_route(relevant(codec::RTM_NEWROUTE, 0, &m));
    assert_eq!((r.nh_id, r.nexthops.len()), (Some(7), 0));
    let mut b = route_msg("10.1.0.0/16", 254, RouteProtocol::Static, 0, vec![]);
    b.header.kind = RouteType::BlackHole;
    let r = new_route(relevant(codec::RTM_NEWROUTE, 0, &b));
    assert_eq!((r.kind, r.nexthops.len()), (RouteKind::Blackhole, 0));
}

#[test]
fn nexthop_objects_single_group_blackhole() {
    fn nh(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut p = vec![AF_INET, 0, 4, 0, 0, 0, 0, 0];
        for (t, v) in attrs {
            let len = 4 + v.len();
            p.extend_from_slice(&(len as u16).to_ne_bytes());
            p.extend_from_slice(&t.to_ne_bytes());
            p.extend_from_slice(v);
            while p.len() % 4 != 0 {
                p.push(0);
            }
        }
        frame(codec::RTM_NEWNEXTHOP, 0, &p)
    }
    let single = nh(&[
        (1, 5u32.to_ne_bytes().to_vec()),
        (5, 3u32.to_ne_bytes().to_vec()),
        (6, vec![192, 0, 2, 1]),
    ]);
    let o = decode::nexthop(&codec::messages(&single).next().unwrap()).unwrap();
    assert_eq!(
        (o.id, o.ifindex, o.gateway, o.blackhole),
        (5, Some(3), Some(ip("192.0.2.1")), false)
    );
    let mut grp = Vec::new();
    for id in [5u32, 6] {
        grp.extend_from_slice(&id.to_ne_bytes());
        grp.extend_from_slice(&[1, 0, 0, 0]);
    }
    let group = nh(&[(1, 9u32.to_ne_bytes().to_vec()), (2, grp)]);
    let o = decode::nexthop(&codec::messages(&group).next().unwrap()).unwrap();
    assert_eq!((o.id, o.group.clone()), (9, vec![5, 6]));
    let bh = nh(&[(1, 10u32.to_ne_bytes().to_vec()), (4, vec![])]);
    assert!(
        decode::nexthop(&codec::messages(&bh).next().unwrap())
            .unwrap()
            .blackhole
    );
    let no_id = nh(&[(5, 3u32.to_ne_bytes().to_vec())]);
    assert!(decode::nexthop(&codec::messages(&no_id).next().unwrap()).is_err());
}

#[test]
fn links_and_addresses() {
    let mut l = LinkMessage::default();
    l.header.index = 9;
    l.header.link_layer_type = LinkLayerType::Ppp;
    l.header.flags = LinkFlags::Up | LinkFlags::Running;
    l.attributes.push(LinkAttribute::IfName("ppp0".into()));
    l.attributes.push(LinkAttribute::OperState(State::Unknown));
    let b = frame(codec::RTM_NEWLINK, 0, &emit(&l));
    let info = decode::link(&codec::messages(&b).next().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        info,
        crate::model::InterfaceInfo {
            ifindex: 9,
            name: "ppp0".into(),
            admin_up: true,
            oper: OperState::Unknown,
            l3: true
        }
    );
    l.header.link_layer_type = LinkLayerType::Ether;
    l.header.flags = LinkFlags::empty();
    l.attributes[1] = LinkAttribute::OperState(State::Down);
    let b = frame(codec::RTM_NEWLINK, 0, &emit(&l));
    let info = decode::link(&codec::messages(&b).next().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.admin_up, info.oper, info.l3),
        (false, OperState::Down, false)
    );

    let mut a = AddressMessage::default();
    a.header.family = AddressFamily::Inet;
    a.header.prefix_len = 32;
    a.header.index = 9;
    a.attributes.push(AddressAttribute::Local(ip("100.64.0.2")));
    a.attributes
        .push(AddressAttribute::Address(ip("100.64.0.1")));
    let b = frame(codec::RTM_NEWADDR, 0, &emit(&a));
    let info = decode::address(&codec::messages(&b).next().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.ifindex, info.local, info.peer),
        (9, net("100.64.0.2/32"), Some(ip("100.64.0.1")))
    );
}

#[test]
fn tentative_ipv6_addresses_are_not_addresses_yet() {
    use netlink_packet_route::address::AddressFlags;
    let mut a = AddressMessage::default();
    a.header.family = AddressFamily::Inet6;
    a.header.prefix_len = 64;
    a.header.index = 9;
    a.attributes.push(AddressAttribute::Address(ip("fe80::1")));
    a.attributes.push(AddressAttribute::Flags(
        AddressFlags::Tentative | AddressFlags::Permanent,
    ));
    let b = frame(codec::RTM_NEWADDR, 0x2, &emit(&a));
    assert_eq!(
        decode::address(&codec::messages(&b).next().unwrap()),
        Ok(None)
    );
    a.attributes.pop();
    a.attributes
        .push(AddressAttribute::Flags(AddressFlags::Permanent));
    let b = frame(codec::RTM_NEWADDR, 0, &emit(&a));
    assert!(decode::address(&codec::messages(&b).next().unwrap())
        .unwrap()
        .is_some());
}

#[test]
fn several_messages_in_one_datagram_and_truncation() {
    let m = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    let mut buf = frame(codec::RTM_NEWROUTE, 0, &emit(&m));
    buf.extend(frame(codec::NLMSG_DONE, 2, &[0, 0, 0, 0]));
    let kinds: Vec<u16> = codec::messages(&buf).map(|m| m.kind).collect();
    assert_eq!(kinds, vec![codec::RTM_NEWROUTE, codec::NLMSG_DONE]);
    // A header claiming more bytes than there are ends the iteration.
    let mut bad = frame(codec::RTM_NEWROUTE, 0, &emit(&m));
    bad.truncate(30);
    assert_eq!(codec::messages(&bad).count(), 0);
    // Garbage after the rtmsg header: relevant but no panic.
    let mut junk = frame(codec::RTM_NEWROUTE, 0, &emit(&m));
    junk.extend_from_slice(&[0xff; 3]);
    assert!(codec::messages(&junk).next().is_some());
}

/// Feeds raw messages through `apply_message`, returning the events.
fn feed(view: &mut KernelView, msgs: &[Vec<u8>]) -> Vec<Event> {
    let stats = WatcherStats::default();
    let mut out = Vec::new();
    for m in msgs {
        for msg in codec::messages(m) {
            apply_message(view, &filter(), &stats, &msg, &mut out);
        }
    }
    out
}

fn v6_route(hops: Vec<RouteNextHop>) -> RouteMessage {
    let mut attrs = vec![];
    if hops.len() == 1 {
        let h = &hops[0];
        attrs.push(RouteAttribute::Oif(h.interface_index));
        attrs.extend(h.attributes.clone());
    } else {
        attrs.push(RouteAttribute::MultiPath(hops));
    }
    route_msg("2001:db8:1::/48", 254, RouteProtocol::Static, 1024, attrs)
}

#[test]
fn ipv6_append_replace_and_delete_one_nexthop() {
    let mut view = KernelView::default();
    let a = hop(3, "fe80::1", RouteNextHopFlags::empty());
    let b = hop(4, "fe80::2", RouteNextHopFlags::empty());
    let c = hop(5, "fe80::3", RouteNextHopFlags::empty());
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            0x400,
            &emit(&v6_route(vec![a.clone()])),
        )],
    );
    assert_eq!(ev.len(), 1);
    // NLM_F_APPEND with only the new sibling: merged.
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            0x400 | 0x800,
            &emit(&v6_route(vec![b.clone()])),
        )],
    );
    let Event::RouteUpsert(r) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(r.nexthops.len(), 2);
    // A notification listing the whole set again changes nothing.
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            0x800,
            &emit(&v6_route(vec![a.clone(), b.clone()])),
        )],
    );
    assert!(ev.is_empty(), "{ev:?}");
    // Deleting one sibling keeps the others.
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_DELROUTE,
            0,
            &emit(&v6_route(vec![a.clone()])),
        )],
    );
    let Event::RouteUpsert(r) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        r.nexthops,
        vec![NextHop {
            ifindex: Some(4),
            gateway: Some(ip("fe80::2")),
            flags: 0
        }]
    );
    // NLM_F_REPLACE replaces the whole set.
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            0x100,
            &emit(&v6_route(vec![c.clone()])),
        )],
    );
    let Event::RouteUpsert(r) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        r.nexthops,
        vec![NextHop {
            ifindex: Some(5),
            gateway: Some(ip("fe80::3")),
            flags: 0
        }]
    );
    // Deleting the last one removes the route.
    let ev = feed(
        &mut view,
        &[frame(codec::RTM_DELROUTE, 0, &emit(&v6_route(vec![c])))],
    );
    assert!(matches!(&ev[..], [Event::RouteDelete(k)] if k.prefix == net("2001:db8:1::/48")));
    assert!(view.routes.is_empty());
}

fn link(ifindex: u32, up: bool, oper: OperState) -> crate::model::InterfaceInfo {
    crate::model::InterfaceInfo {
        ifindex,
        name: format!("if{ifindex}"),
        admin_up: up,
        oper,
        l3: false,
    }
}

#[test]
fn link_down_flushes_ipv4_routes_and_marks_multipath_dead() {
    let mut view = KernelView::default();
    let mut out = Vec::new();
    view.link_upsert(link(3, true, OperState::Up), &mut out);
    view.link_upsert(link(4, true, OperState::Up), &mut out);
    let single = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    let multi = route_msg(
        "10.0.0.0/8",
        254,
        RouteProtocol::Bgp,
        0,
        vec![RouteAttribute::MultiPath(vec![
            hop(3, "192.0.2.1", RouteNextHopFlags::empty()),
            hop(4, "192.0.2.2", RouteNextHopFlags::empty()),
        ])],
    );
    feed(
        &mut view,
        &[
            frame(codec::RTM_NEWROUTE, 0, &emit(&single)),
            frame(codec::RTM_NEWROUTE, 0, &emit(&multi)),
        ],
    );
    assert_eq!(view.routes.len(), 2);
    out.clear();
    // Carrier loss: next hops through if3 get LINKDOWN, nothing is removed.
    view.link_upsert(link(3, true, OperState::Down), &mut out);
    assert_eq!(view.routes.len(), 2);
    assert!(view.routes.values().all(|r| r
        .nexthops
        .iter()
        .all(|h| (h.ifindex == Some(3)) == (h.flags & RTNH_F_LINKDOWN != 0))));
    // Admin down: the single-path route is flushed, the multipath one keeps if4.
    out.clear();
    view.link_upsert(link(3, false, OperState::Down), &mut out);
    assert!(out
        .iter()
        .any(|e| matches!(e, Event::RouteDelete(k) if k.prefix == net("10.1.0.0/16"))));
    let r = by_prefix(&view, "10.0.0.0/8");
    assert_eq!(
        r.nexthops
            .iter()
            .filter(|h| h.flags & RTNH_F_DEAD != 0)
            .count(),
        1
    );
    // Back up: the multipath route is alive again.
    out.clear();
    view.link_upsert(link(3, true, OperState::Up), &mut out);
    let r = by_prefix(&view, "10.0.0.0/8");
    assert!(r.nexthops.iter().all(|h| h.flags == 0));
}

#[test]
fn nexthop_delete_removes_dependent_routes_and_group_members() {
    let mut view = KernelView::default();
    let mut out = Vec::new();
    let nh = |id, ifindex, group: Vec<u32>| crate::model::NexthopObject {
        id,
        ifindex,
        gateway: None,
        blackhole: false,
        group,
        flags: 0,
    };
    view.nexthop_upsert(nh(1, Some(3), vec![]), &mut out);
    view.nexthop_upsert(nh(2, Some(4), vec![]), &mut out);
    view.nexthop_upsert(nh(10, None, vec![1, 2]), &mut out);
    let via1 = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Bgp,
        0,
        vec![RouteAttribute::NhId(1)],
    );
    let via10 = route_msg(
        "10.0.0.0/8",
        254,
        RouteProtocol::Bgp,
        0,
        vec![RouteAttribute::NhId(10)],
    );
    feed(
        &mut view,
        &[
            frame(codec::RTM_NEWROUTE, 0, &emit(&via1)),
            frame(codec::RTM_NEWROUTE, 0, &emit(&via10)),
        ],
    );
    out.clear();
    view.nexthop_delete(1, &mut out);
    assert!(out.contains(&Event::NexthopDelete(1)));
    assert!(out
        .iter()
        .any(|e| matches!(e, Event::RouteDelete(k) if k.prefix == net("10.1.0.0/16"))));
    assert!(out
        .iter()
        .any(|e| matches!(e, Event::NexthopUpsert(n) if n.id == 10 && n.group == vec![2])));
    assert_eq!(view.routes.len(), 1);
}

#[test]
fn reconcile_emits_the_difference() {
    let mut current = KernelView::default();
    let mut out = Vec::new();
    current.link_upsert(link(3, true, OperState::Up), &mut out);
    current.link_upsert(link(4, true, OperState::Up), &mut out);
    let keep = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    let gone = route_msg(
        "10.0.0.0/8",
        254,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    let changed = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Static,
        5,
        vec![RouteAttribute::Oif(3)],
    );
    feed(
        &mut current,
        &[
            frame(codec::RTM_NEWROUTE, 0, &emit(&keep)),
            frame(codec::RTM_NEWROUTE, 0, &emit(&gone)),
            frame(codec::RTM_NEWROUTE, 0, &emit(&changed)),
        ],
    );
    // The fresh dump: if4 vanished, 10.0.0.0/8 vanished, the metric-5 route
    // moved to if4... which vanished; say it moved to if3 via a gateway.
    let mut fresh = KernelView::default();
    fresh.link_upsert(link(3, true, OperState::Up), &mut out);
    let changed2 = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Static,
        5,
        vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(raddr(ip("192.0.2.9"))),
        ],
    );
    let added = route_msg(
        "10.1.0.0/16",
        100,
        RouteProtocol::Static,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    feed(
        &mut fresh,
        &[
            frame(codec::RTM_NEWROUTE, 0, &emit(&keep)),
            frame(codec::RTM_NEWROUTE, 0, &emit(&changed2)),
            frame(codec::RTM_NEWROUTE, 0, &emit(&added)),
        ],
    );
    let expected_fresh = fresh.clone();
    let ev = current.reconcile(fresh);
    assert_eq!(current, expected_fresh);
    let upserts: Vec<(u32, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RouteUpsert(r) => Some((r.key.table, r.key.metric)),
            _ => None,
        })
        .collect();
    assert_eq!(upserts, vec![(100, 0), (254, 5)]);
    let deletes: Vec<IpNet> = ev
        .iter()
        .filter_map(|e| match e {
            Event::RouteDelete(k) => Some(k.prefix),
            _ => None,
        })
        .collect();
    // The metric-5 route's next hop changed: for IPv4 that is another alias
    // (another fib_info), so the old one is deleted.
    assert_eq!(deletes, vec![net("10.0.0.0/8"), net("10.1.0.0/16")]);
    assert_eq!(ev.last(), Some(&Event::InterfaceDelete(4)));
    // Reconciling with an identical view emits nothing.
    let same = current.clone();
    assert!(current.reconcile(same).is_empty());
}

#[test]
fn filtered_route_costs_no_event() {
    let mut view = KernelView::default();
    let m = route_msg(
        "172.16.0.0/12",
        254,
        RouteProtocol::Bgp,
        0,
        vec![RouteAttribute::Oif(3)],
    );
    assert!(feed(&mut view, &[frame(codec::RTM_NEWROUTE, 0, &emit(&m))]).is_empty());
    assert!(view.routes.is_empty());
}

/// An IPv4 address on `ifindex` as the watcher records it.
fn addr(ifindex: u32, local: &str) -> crate::model::AddressInfo {
    crate::model::AddressInfo {
        ifindex,
        local: net(local),
        peer: None,
    }
}

/// Whether `view` holds a unicast route of `prefix` with a next hop that is
/// neither dead nor linkdown.
fn usable(view: &KernelView, prefix: &str) -> bool {
    view.routes.values().any(|r| {
        r.key.prefix == net(prefix)
            && r.kind == RouteKind::Unicast
            && r.nexthops
                .iter()
                .any(|h| h.flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) == 0)
    })
}

#[test]
fn single_path_flags_come_from_rtm_flags() {
    // A re-dump (or re-announcement) of a route whose device has no carrier
    // reports RTNH_F_LINKDOWN in the rtmsg header, not in a next hop.
    let mut m = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Static,
        0,
        vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(raddr(ip("192.0.2.1"))),
        ],
    );
    m.header.flags = netlink_packet_route::route::RouteFlags::Linkdown;
    let mut view = KernelView::default();
    feed(&mut view, &[frame(codec::RTM_NEWROUTE, 0x2, &emit(&m))]);
    assert_eq!(
        by_prefix(&view, "10.1.0.0/16").nexthops[0].flags,
        RTNH_F_LINKDOWN
    );
    assert!(!usable(&view, "10.1.0.0/16"));
    // RTM_F_* bits above the low byte are not next-hop flags.
    m.header.flags = netlink_packet_route::route::RouteFlags::from_bits_retain(0x1000);
    let mut view = KernelView::default();
    feed(&mut view, &[frame(codec::RTM_NEWROUTE, 0x2, &emit(&m))]);
    assert!(usable(&view, "10.1.0.0/16"));
}

#[test]
fn carrier_loss_flushes_nexthop_objects_and_their_routes() {
    let mut view = KernelView::default();
    let mut out = Vec::new();
    view.link_upsert(link(3, true, OperState::Up), &mut out);
    view.link_upsert(link(4, true, OperState::Up), &mut out);
    let nh = |id, ifindex: Option<u32>, group: Vec<u32>| crate::model::NexthopObject {
        id,
        ifindex,
        gateway: None,
        blackhole: false,
        group,
        flags: 0,
    };
    view.nexthop_upsert(nh(1, Some(3), vec![]), &mut out);
    view.nexthop_upsert(nh(2, Some(4), vec![]), &mut out);
    view.nexthop_upsert(nh(10, None, vec![1, 2]), &mut out);
    view.nexthop_upsert(nh(11, None, vec![1]), &mut out);
    let r = |metric, id| {
        route_msg(
            "10.1.0.0/16",
            254,
            RouteProtocol::Bgp,
            metric,
            vec![RouteAttribute::NhId(id)],
        )
    };
    feed(
        &mut view,
        &[
            frame(codec::RTM_NEWROUTE, 0x2, &emit(&r(1, 1))),
            frame(codec::RTM_NEWROUTE, 0x2, &emit(&r(2, 10))),
            frame(codec::RTM_NEWROUTE, 0x2, &emit(&r(3, 11))),
        ],
    );
    assert_eq!(view.routes.len(), 3);
    // The peer of if3 goes down: carrier loss, no admin change.
    out.clear();
    view.link_upsert(link(3, true, OperState::Other), &mut out);
    // nexthop_flush_dev: nh 1 and the group left empty (11) go, with their
    // routes; group 10 keeps member 2 and its route.
    assert_eq!(
        view.nexthops.keys().copied().collect::<Vec<_>>(),
        vec![2, 10]
    );
    assert_eq!(view.nexthops[&10].group, vec![2]);
    let left: Vec<Option<u32>> = view.routes.values().map(|r| r.nh_id).collect();
    assert_eq!(left, vec![Some(10)]);
    assert!(out.contains(&Event::NexthopDelete(1)));
}

#[test]
fn aliases_are_kept_apart_as_the_kernel_keeps_them() {
    let unicast = route_msg(
        "10.1.0.0/16",
        254,
        RouteProtocol::Boot,
        0,
        vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(raddr(ip("192.0.2.1"))),
        ],
    );
    let mut blackhole = route_msg("10.1.0.0/16", 254, RouteProtocol::Boot, 0, vec![]);
    blackhole.header.kind = RouteType::BlackHole;
    let mut view = KernelView::default();
    // ip route add (NLM_F_CREATE|EXCL), then ip route append blackhole.
    feed(
        &mut view,
        &[
            frame(codec::RTM_NEWROUTE, 0x400, &emit(&unicast)),
            frame(
                codec::RTM_NEWROUTE,
                0x400 | codec::NLM_F_APPEND,
                &emit(&blackhole),
            ),
        ],
    );
    assert_eq!(view.routes.len(), 2);
    assert!(usable(&view, "10.1.0.0/16"));
    // Deleting the blackhole alias leaves the unicast one.
    let ev = feed(
        &mut view,
        &[frame(codec::RTM_DELROUTE, 0, &emit(&blackhole))],
    );
    assert_eq!(ev.len(), 1);
    assert_eq!(by_prefix(&view, "10.1.0.0/16").kind, RouteKind::Unicast);
    // ip route prepend blackhole: first; ip route replace then replaces the
    // first alias (the blackhole), whatever its type.
    feed(
        &mut view,
        &[frame(codec::RTM_NEWROUTE, 0x400, &emit(&blackhole))],
    );
    let mut other = unicast.clone();
    other
        .attributes
        .retain(|a| !matches!(a, RouteAttribute::Gateway(_)));
    other
        .attributes
        .push(RouteAttribute::Gateway(raddr(ip("192.0.2.7"))));
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            0x400 | codec::NLM_F_REPLACE,
            &emit(&other),
        )],
    );
    assert!(matches!(ev[0], Event::RouteUpsert(_)), "{ev:?}");
    assert!(matches!(ev[1], Event::RouteDelete(_)), "{ev:?}");
    assert_eq!(view.routes.len(), 2);
    assert!(view.routes.values().all(|r| r.kind == RouteKind::Unicast));
    // Replacing a nexthop object re-announces the routes using it with
    // NLM_F_REPLACE: a replace of an alias that exists changes nothing else.
    let ev = feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            codec::NLM_F_REPLACE,
            &emit(&unicast),
        )],
    );
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(view.routes.len(), 2);
    // A different metric is another slot, not an alias.
    let mut m5 = unicast.clone();
    m5.attributes
        .retain(|a| !matches!(a, RouteAttribute::Priority(_)));
    m5.attributes.push(RouteAttribute::Priority(5));
    feed(&mut view, &[frame(codec::RTM_NEWROUTE, 0x400, &emit(&m5))]);
    assert_eq!(view.routes.len(), 3);
}

#[test]
fn ipv6_blackhole_beside_a_gateway_route() {
    let mut view = KernelView::default();
    let gw = v6_route(vec![]);
    let mut gw = gw;
    gw.attributes.push(RouteAttribute::Oif(3));
    gw.attributes
        .push(RouteAttribute::Gateway(raddr(ip("2001:db8:f::1"))));
    let mut bh = v6_route(vec![]);
    bh.header.kind = RouteType::BlackHole;
    bh.attributes.push(RouteAttribute::Oif(1));
    feed(
        &mut view,
        &[
            frame(codec::RTM_NEWROUTE, 0x400, &emit(&gw)),
            frame(codec::RTM_NEWROUTE, 0x400 | codec::NLM_F_APPEND, &emit(&bh)),
        ],
    );
    assert_eq!(view.routes.len(), 2);
    feed(&mut view, &[frame(codec::RTM_DELROUTE, 0, &emit(&bh))]);
    assert_eq!(by_prefix(&view, "2001:db8:1::/48").kind, RouteKind::Unicast);
    // `ip -6 route replace unreachable P`: no other non-ECMP route at the
    // metric, so the kernel replaces the first route there (the gateway one).
    let mut unreachable = v6_route(vec![]);
    unreachable.header.kind = RouteType::Unreachable;
    unreachable.attributes.push(RouteAttribute::Oif(1));
    feed(
        &mut view,
        &[frame(
            codec::RTM_NEWROUTE,
            0x400 | codec::NLM_F_REPLACE,
            &emit(&unreachable),
        )],
    );
    assert_eq!(
        by_prefix(&view, "2001:db8:1::/48").kind,
        RouteKind::Unreachable
    );
}

#[test]
fn deleting_an_address_flushes_routes_with_it_as_source() {
    let mut view = KernelView::default();
    let mut out = Vec::new();
    view.link_upsert(link(3, true, OperState::Up), &mut out);
    view.address_add(addr(3, "192.0.2.2/24"), &mut out);
    view.address_add(addr(3, "192.0.2.3/24"), &mut out);
    let with_src = |table, src: &str| {
        route_msg(
            "10.1.0.0/16",
            table,
            RouteProtocol::Static,
            0,
            vec![
                RouteAttribute::Oif(3),
                RouteAttribute::Gateway(raddr(ip("192.0.2.1"))),
                RouteAttribute::PrefSource(raddr(ip(src))),
            ],
        )
    };
    feed(
        &mut view,
        &[
            frame(codec::RTM_NEWROUTE, 0x2, &emit(&with_src(254, "192.0.2.3"))),
            frame(codec::RTM_NEWROUTE, 0x2, &emit(&with_src(100, "192.0.2.3"))),
            frame(codec::RTM_NEWROUTE, 0x2, &emit(&with_src(254, "192.0.2.2"))),
        ],
    );
    assert_eq!(view.routes.len(), 3);
    // The secondary goes: the main-table route with it as source goes too
    // (fib_sync_down_addr), the table-100 one stays, so does the other.
    out.clear();
    view.address_delete(addr(3, "192.0.2.3/24"), &mut out);
    let mut left: Vec<(u32, RouteAlias)> = view
        .routes
        .keys()
        .map(|k| (k.table, k.alias.clone()))
        .collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|(t, a)| *t == 100
        && matches!(a, RouteAlias::Ipv4 { prefsrc: Some(p), .. } if p.to_string() == "192.0.2.3")));
    assert!(left.iter().any(|(t, a)| *t == 254
        && matches!(a, RouteAlias::Ipv4 { prefsrc: Some(p), .. } if p.to_string() == "192.0.2.2")));
    // The same address still on another interface: nothing is flushed.
    view.address_add(addr(3, "192.0.2.4/24"), &mut out);
    view.address_add(addr(4, "192.0.2.2/32"), &mut out);
    view.address_delete(addr(3, "192.0.2.2/24"), &mut out);
    assert!(view.routes.keys().any(|k| k.table == 254
        && matches!(
            &k.alias,
            RouteAlias::Ipv4 {
                prefsrc: Some(_),
                ..
            }
        )));
}

#[test]
fn divergences_name_what_differs() {
    let mut a = KernelView::default();
    let mut out = Vec::new();
    a.link_upsert(link(3, true, OperState::Up), &mut out);
    let b = a.clone();
    assert!(a.divergences(&b).is_empty());
    feed(
        &mut a,
        &[frame(
            codec::RTM_NEWROUTE,
            0x2,
            &emit(&route_msg(
                "10.1.0.0/16",
                254,
                RouteProtocol::Static,
                0,
                vec![RouteAttribute::Oif(3)],
            )),
        )],
    );
    let d = a.divergences(&b);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("route ") && d[0].contains("10.1.0.0/16") && d[0].ends_with("kernel None"),
        "{d:?}"
    );
}

#[test]
fn an_overrun_first_sends_what_the_view_already_applied() {
    // A batch applied to the view up to an NLMSG_OVERRUN: its events must
    // reach the engine, since the re-dump is reconciled against the view.
    let (tx, mut rx) = mpsc::channel(1024);
    let mut w = Worker {
        batch: RecvBatch::new(),
        config: WatcherConfig {
            filter: filter(),
            resync_interval: Duration::ZERO,
            nexthops: true,
        },
        tx,
        stats: Arc::new(WatcherStats::default()),
        events: socket::open("a test's events").unwrap(),
        reconfigured: std::sync::mpsc::channel().1,
        view: KernelView::default(),
        out: Vec::new(),
    };
    // A table-100 route this host does not have (the test's own table).
    let m = route_msg(
        "10.1.0.0/16",
        100,
        RouteProtocol::Static,
        77,
        vec![RouteAttribute::Oif(3)],
    );
    let b = frame(codec::RTM_NEWROUTE, 0, &emit(&m));
    let msg = codec::messages(&b).next().unwrap();
    assert!(apply_message(
        &mut w.view,
        &w.config.filter,
        &w.stats,
        &msg,
        &mut w.out
    ));
    assert!(w.overrun());
    let mut got = Vec::new();
    while let Ok(e) = rx.try_recv() {
        got.push(e);
    }
    let upsert = got
        .iter()
        .position(|e| matches!(e, Event::RouteUpsert(r) if r.key.metric == 77));
    let delete = got
        .iter()
        .position(|e| matches!(e, Event::RouteDelete(k) if k.metric == 77));
    assert!(
        matches!((upsert, delete), (Some(u), Some(d)) if u < d),
        "{got:?}"
    );
}
