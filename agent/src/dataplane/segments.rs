//! The segment map entries: what a `pass` and a `steer` entry hold, and the
//! start-up reconciliation of the (possibly pinned) maps with the config.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use routebackup_common::{
    SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_GATEWAY_V6, FLAG_L3_DEVICE,
    FLAG_MACS_VALID,
};
use tracing::info;

use super::neighbours::{NextHopKey, NextHopL2};
use super::DataplaneError;
use crate::config::Config;
use crate::fastpath::{gateway_bytes, Fastpath};
use crate::model::{GroupId, SteerTarget};

/// The entry of an unsteered segment: traffic follows the kernel's route,
/// counted for the group.
pub(super) fn pass_value(group: GroupId) -> SegmentValue {
    SegmentValue {
        group_id: map_group_id(group),
        action: ACTION_PASS,
        ..SegmentValue::default()
    }
}

/// A steered segment's entry and what it depends on.
pub(super) struct SteerEntry {
    pub value: SegmentValue,
    /// The next hop whose MACs the entry can carry: only an Ethernet backup
    /// with a gateway has one.
    pub next_hop: Option<NextHopKey>,
}

/// The steer entry of one segment, with the next hop's MACs when `macs`
/// knows them.
pub(super) fn steer_entry(
    group: GroupId,
    to: &SteerTarget,
    prefix: &IpNet,
    macs: impl Fn(NextHopKey) -> Option<NextHopL2>,
) -> SteerEntry {
    let mut value = SegmentValue {
        group_id: map_group_id(group),
        action: ACTION_STEER,
        backup_ifindex: to.ifindex,
        flags: if to.l3 { FLAG_L3_DEVICE } else { 0 },
        gateway: [0; 16],
        ..SegmentValue::default()
    };
    // The gateway of the segment's family; else the other one (the
    // neighbour lookup only needs an address on the backup's link).
    let gateway: Option<IpAddr> = match prefix {
        IpNet::V4(_) => to
            .gateway_v4
            .map(IpAddr::V4)
            .or(to.gateway_v6.map(IpAddr::V6)),
        IpNet::V6(_) => to
            .gateway_v6
            .map(IpAddr::V6)
            .or(to.gateway_v4.map(IpAddr::V4)),
    };
    let gw = match gateway {
        Some(gw) if !to.l3 => gw,
        _ => {
            return SteerEntry {
                value,
                next_hop: None,
            }
        }
    };
    value.flags |= if gw.is_ipv4() {
        FLAG_GATEWAY_V4
    } else {
        FLAG_GATEWAY_V6
    };
    value.gateway = gateway_bytes(gw);
    let key = (to.ifindex, gw);
    if let Some(l2) = macs(key) {
        value.flags |= FLAG_MACS_VALID;
        value.dmac = l2.dmac;
        value.smac = l2.smac;
        value.mtu = l2.mtu;
    }
    SteerEntry {
        value,
        next_hop: Some(key),
    }
}

/// Brings the segment maps in line with the config: removes entries no group
/// owns any more, writes a `pass` entry for every configured segment that has
/// none, and keeps the others as they are (a previous agent's steering).
/// Returns the (group, backup ifindex) pairs still steered, for adoption.
pub(super) fn reconcile(
    fastpath: &mut Fastpath,
    config: &Config,
) -> Result<Vec<(GroupId, u32)>, DataplaneError> {
    let mut owner: HashMap<IpNet, GroupId> = HashMap::new();
    for (g, group) in config.groups.iter() {
        for s in &group.segments {
            owner.insert(*s, g);
        }
    }
    let mut adoptable = Vec::new();
    let existing = fastpath
        .segments()
        .map_err(|e| DataplaneError::ReadSegments {
            pin_path: config.agent.pin_path.clone(),
            source: Box::new(e),
        })?;
    let mut present: HashMap<IpNet, SegmentValue> = HashMap::new();
    for (prefix, value) in existing {
        match owner.get(&prefix) {
            Some(&g) if value.group_id == map_group_id(g) => {
                if value.action == ACTION_STEER && !adoptable.contains(&(g, value.backup_ifindex)) {
                    adoptable.push((g, value.backup_ifindex));
                }
                present.insert(prefix, value);
            }
            _ => {
                info!("removing fast-path entry {prefix}: no group monitors it any more");
                fastpath
                    .remove_segment(prefix)
                    .map_err(|e| DataplaneError::WriteSegment {
                        prefix,
                        source: Box::new(e),
                    })?;
            }
        }
    }
    for (prefix, &g) in &owner {
        if !present.contains_key(prefix) {
            fastpath.set_segment(*prefix, pass_value(g)).map_err(|e| {
                DataplaneError::WriteSegment {
                    prefix: *prefix,
                    source: Box::new(e),
                }
            })?;
        }
    }
    Ok(adoptable)
}

/// The group's slot in the maps. Config caps groups at `MAX_GROUPS`; an id
/// that did not fit would become `u32::MAX`, which the fast path refuses to
/// write rather than aliasing another group.
pub(super) fn map_group_id(group: GroupId) -> u32 {
    u32::try_from(group.index()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LinkId;
    use std::net::Ipv4Addr;

    fn target(l3: bool) -> SteerTarget {
        SteerTarget {
            link: LinkId(0),
            ifindex: 9,
            l3,
            gateway_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            gateway_v6: None,
        }
    }

    #[test]
    fn steer_entries() {
        let v4: IpNet = "10.1.0.0/16".parse().unwrap();
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        let gw = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let l2 = NextHopL2 {
            dmac: [2, 0, 0, 0, 0, 1],
            smac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
        };

        // Ethernet backup, MACs not known yet: the fib lookup does the work.
        let e = steer_entry(GroupId(3), &target(false), &v4, |_| None);
        assert_eq!(e.next_hop, Some((9, gw)));
        assert_eq!(e.value.flags, FLAG_GATEWAY_V4);
        assert_eq!((e.value.action, e.value.group_id), (ACTION_STEER, 3));
        // MACs known for that next hop.
        let e = steer_entry(GroupId(3), &target(false), &v4, |k| {
            (k == (9, gw)).then_some(l2)
        });
        assert_eq!(e.value.flags, FLAG_GATEWAY_V4 | FLAG_MACS_VALID);
        assert_eq!((e.value.dmac, e.value.mtu), (l2.dmac, 1500));
        // An IPv6 segment borrows the IPv4 gateway for the neighbour lookup.
        let e = steer_entry(GroupId(3), &target(false), &v6, |_| None);
        assert_eq!(e.next_hop, Some((9, gw)));
        // L3 device: no MAC header, so no next hop to follow.
        let e = steer_entry(GroupId(3), &target(true), &v4, |_| Some(l2));
        assert_eq!(e.next_hop, None);
        assert_eq!(e.value.flags, FLAG_L3_DEVICE);
        assert_eq!(pass_value(GroupId(3)).action, ACTION_PASS);
    }
}
