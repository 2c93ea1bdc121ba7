//! Next hops for steering onto an Ethernet backup link.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::model::AddressInfo;

/// The IPv4 and IPv6 next hops to use on a backup link: the configured
/// gateway if set; else the peer of a point-to-point address; else the other
/// end of an IPv4 /30 or /31 (IPv6 /127); else none. L3 links get none (no
/// neighbour resolution happens on them).
pub fn derive(
    l3: bool,
    configured_v4: Option<Ipv4Addr>,
    configured_v6: Option<Ipv6Addr>,
    addresses: &[AddressInfo],
) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    if l3 {
        return (None, None);
    }
    let v4 = configured_v4.or_else(|| {
        addresses.iter().find_map(|a| match a.peer {
            Some(IpAddr::V4(p)) => Some(p),
            _ => None,
        })
    });
    let v4 = v4.or_else(|| {
        addresses.iter().find_map(|a| match a.local {
            IpNet::V4(n) => other_end_v4(n.addr(), n.prefix_len()),
            IpNet::V6(_) => None,
        })
    });
    let v6 = configured_v6.or_else(|| {
        addresses.iter().find_map(|a| match a.peer {
            Some(IpAddr::V6(p)) => Some(p),
            _ => None,
        })
    });
    let v6 = v6.or_else(|| {
        addresses.iter().find_map(|a| match a.local {
            IpNet::V6(n) if n.prefix_len() == 127 => Some(Ipv6Addr::from(u128::from(n.addr()) ^ 1)),
            _ => None,
        })
    });
    (v4, v6)
}

fn other_end_v4(local: Ipv4Addr, len: u8) -> Option<Ipv4Addr> {
    let a = u32::from(local);
    match len {
        31 => Some(Ipv4Addr::from(a ^ 1)),
        30 => match a & 3 {
            1 => Some(Ipv4Addr::from(a + 1)),
            2 => Some(Ipv4Addr::from(a - 1)),
            // network or broadcast address as local: no usable peer
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(local: &str, peer: Option<&str>) -> AddressInfo {
        AddressInfo {
            ifindex: 5,
            local: local.parse().unwrap(),
            peer: peer.map(|p| p.parse().unwrap()),
        }
    }

    #[test]
    fn derivation_table() {
        let cfg4: Ipv4Addr = "192.0.2.9".parse().unwrap();
        let cfg6: Ipv6Addr = "fe80::9".parse().unwrap();
        #[expect(
            clippy::type_complexity,
            reason = "a table of cases reads best as tuples"
        )]
        let cases: &[(
            &str,
            bool,
            Option<Ipv4Addr>,
            Option<Ipv6Addr>,
            Vec<AddressInfo>,
            Option<&str>,
            Option<&str>,
        )] = &[
            (
                "configured wins",
                false,
                Some(cfg4),
                Some(cfg6),
                vec![addr("10.0.0.1/30", None)],
                Some("192.0.2.9"),
                Some("fe80::9"),
            ),
            (
                "p2p peer",
                false,
                None,
                None,
                vec![addr("10.64.0.1/32", Some("10.64.0.2"))],
                Some("10.64.0.2"),
                None,
            ),
            (
                "v6 p2p peer",
                false,
                None,
                None,
                vec![addr("2001:db8::1/128", Some("2001:db8::2"))],
                None,
                Some("2001:db8::2"),
            ),
            (
                "/30 low",
                false,
                None,
                None,
                vec![addr("10.0.0.1/30", None)],
                Some("10.0.0.2"),
                None,
            ),
            (
                "/30 high",
                false,
                None,
                None,
                vec![addr("10.0.0.2/30", None)],
                Some("10.0.0.1"),
                None,
            ),
            (
                "/30 network addr",
                false,
                None,
                None,
                vec![addr("10.0.0.0/30", None)],
                None,
                None,
            ),
            (
                "/31 even",
                false,
                None,
                None,
                vec![addr("10.0.0.4/31", None)],
                Some("10.0.0.5"),
                None,
            ),
            (
                "/31 odd",
                false,
                None,
                None,
                vec![addr("10.0.0.5/31", None)],
                Some("10.0.0.4"),
                None,
            ),
            (
                "/127",
                false,
                None,
                None,
                vec![addr("2001:db8::/127", None)],
                None,
                Some("2001:db8::1"),
            ),
            (
                "/24 gives nothing",
                false,
                None,
                None,
                vec![addr("10.0.0.1/24", None)],
                None,
                None,
            ),
            ("no address", false, None, None, vec![], None, None),
            (
                "l3 gets nothing",
                true,
                Some(cfg4),
                Some(cfg6),
                vec![addr("10.0.0.1/30", None)],
                None,
                None,
            ),
        ];
        for (name, l3, c4, c6, addrs, want4, want6) in cases {
            let (g4, g6) = derive(*l3, *c4, *c6, addrs);
            assert_eq!(g4, want4.map(|s| s.parse().unwrap()), "{name}");
            assert_eq!(g6, want6.map(|s| s.parse().unwrap()), "{name}");
        }
    }
}
