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
use crate::model::{NextHop, OperState, Route, RouteKey, RouteKind, RTNH_F_DEAD, RTNH_F_LINKDOWN};
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
            tos: 0
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
    let r = &view.routes[&RouteKey {
        table: 254,
        prefix: net("10.0.0.0/8"),
        metric: 0,
        tos: 0,
    }];
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
    let r = &view.routes[&RouteKey {
        table: 254,
        prefix: net("10.0.0.0/8"),
        metric: 0,
        tos: 0,
    }];
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
    assert_eq!(deletes, vec![net("10.0.0.0/8")]);
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
