use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::{NeighbourMessage, NeighbourState};

use super::*;
use crate::netlink::codec::{
    get_request, messages, push_attr, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNEIGH,
};

fn emit(m: &impl Emitable) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    m.emit(&mut b);
    b
}

fn first(bytes: &[u8]) -> RawMsg<'_> {
    messages(bytes).next().unwrap()
}

#[test]
fn neighbour_from_the_crates_encoding() {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = 7;
    m.header.state = NeighbourState::Stale;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
            "10.0.2.2".parse::<IpAddr>().unwrap(),
        )));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 2]));
    let b = get_request(RTM_NEWNEIGH, 0, &emit(&m));
    let n = neighbour(&first(&b)).unwrap().unwrap();
    assert_eq!(
        n,
        NeighbourInfo {
            ifindex: 7,
            address: "10.0.2.2".parse().unwrap(),
            state: NUD_STALE,
            lladdr: Some([2, 0, 0, 0, 0, 2]),
        }
    );
    assert_eq!(n.usable_lladdr(), Some([2, 0, 0, 0, 0, 2]));

    // Proxy entries and bridge fdb entries are not neighbours.
    m.header.flags = NeighbourFlags::Proxy;
    let b = get_request(RTM_NEWNEIGH, 0, &emit(&m));
    assert_eq!(neighbour(&first(&b)), Ok(None));
    m.header.flags = NeighbourFlags::empty();
    m.header.family = AddressFamily::Bridge;
    m.attributes.clear();
    let b = get_request(RTM_NEWNEIGH, 0, &emit(&m));
    assert_eq!(neighbour(&first(&b)), Ok(None));

    // IPv4 without NDA_DST, and a truncated ndmsg: errors naming the problem.
    m.header.family = AddressFamily::Inet;
    let b = get_request(RTM_NEWNEIGH, 0, &emit(&m));
    let e = neighbour(&first(&b)).unwrap_err();
    assert_eq!(e.problem, Malformed::Missing("NDA_DST"));
    assert_eq!(
        e.to_string(),
        "malformed RTM_NEWNEIGH message: no NDA_DST attribute"
    );
    let b = get_request(RTM_NEWNEIGH, 0, &[2, 0, 0, 0]);
    assert_eq!(
        neighbour(&first(&b)).unwrap_err().problem,
        Malformed::ShortHeader("ndmsg")
    );
}

#[test]
fn link_l2_from_the_crates_encoding() {
    let mut l = LinkMessage::default();
    l.header.index = 4;
    l.attributes
        .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]));
    l.attributes.push(LinkAttribute::Mtu(1400));
    let b = get_request(RTM_NEWLINK, 0, &emit(&l));
    assert_eq!(
        link_l2(&first(&b)).unwrap(),
        LinkL2 {
            ifindex: 4,
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: Some(1400)
        }
    );
    l.header.index = 0;
    let b = get_request(RTM_NEWLINK, 0, &emit(&l));
    assert_eq!(
        link_l2(&first(&b)).unwrap_err().problem,
        Malformed::NoIfindex
    );
}

#[test]
fn bridge_port_messages_are_not_the_interface() {
    let mut l = LinkMessage::default();
    l.header.index = 4;
    l.attributes.push(LinkAttribute::IfName("eth9".into()));
    let b = get_request(RTM_NEWLINK, 0, &emit(&l));
    assert_eq!(link(&first(&b)).unwrap().unwrap().name, "eth9");
    // The same interface reported as a bridge port (AF_BRIDGE): its
    // RTM_DELLINK only means it left the bridge.
    l.header.interface_family = AddressFamily::Bridge;
    let b = get_request(RTM_NEWLINK, 0, &emit(&l));
    assert_eq!(link(&first(&b)), Ok(None));
}

#[test]
fn tentative_and_dad_failed_addresses_are_not_addresses_yet() {
    use netlink_packet_route::address::{AddressHeaderFlags, AddressMessage};
    let mut a = AddressMessage::default();
    a.header.family = AddressFamily::Inet6;
    a.header.prefix_len = 64;
    a.header.index = 3;
    a.attributes
        .push(AddressAttribute::Address("fe80::1".parse().unwrap()));
    let decode = |a: &AddressMessage| {
        let b = get_request(RTM_NEWADDR, 0, &emit(a));
        // true: skipped as not an address yet.
        address(&first(&b)).unwrap().is_none()
    };
    assert!(!decode(&a));
    // The header's 8 flag bits.
    a.header.flags = AddressHeaderFlags::Tentative;
    assert!(decode(&a));
    // IFA_FLAGS supersedes them (DAD passed since).
    a.attributes
        .push(AddressAttribute::Flags(AddressFlags::Permanent));
    assert!(!decode(&a));
    a.header.flags = AddressHeaderFlags::empty();
    a.attributes.pop();
    a.attributes
        .push(AddressAttribute::Flags(AddressFlags::Dadfailed));
    assert!(decode(&a));
}

#[test]
fn an_attribute_the_crate_rejects_does_not_hide_the_rest() {
    let mut l = LinkMessage::default();
    l.header.index = 4;
    l.header.link_layer_type = LinkLayerType::Ether;
    let mut body = emit(&l);
    // IFLA_MTU (4) with 2 bytes: netlink-packet-route refuses it, and
    // with it LinkMessage::parse refuses the whole message.
    push_attr(&mut body, 4, &[0xdc, 0x05]);
    push_attr(&mut body, 3, b"eth9\0"); // IFLA_IFNAME
    assert!(<LinkMessage as Parseable<[u8]>>::parse(&body).is_err());
    let b = get_request(RTM_NEWLINK, 0, &body);
    let info = link(&first(&b)).unwrap().unwrap();
    assert_eq!(
        (info.ifindex, info.name.as_str(), info.l3),
        (4, "eth9", false)
    );
    assert_eq!(link_l2(&first(&b)).unwrap().mtu, None);
}
