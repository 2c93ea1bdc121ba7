//! The next-hop MAC cache of steered Ethernet backups, kept by the fast
//! path's executor (`entries`).
//!
//! The neighbour executor (`neighbours::Neighbours`) follows the kernel's
//! neighbour entries of the next hops the steered groups use and reports
//! changes; this side keeps the last usable state per next hop and works out
//! which steer entries a report rewrites. Reports are applied on the
//! daemon's task (the dataplane's `next_event` hands them over), only to
//! groups steered to that (ifindex, gateway) at that moment, which orders
//! them with `Steer`/`Unsteer` without locks.

use std::collections::HashMap;

use ipnet::IpNet;
use routebackup_common::SegmentValue;
use tracing::{debug, info};

use super::neighbours::{NextHopKey, NextHopL2, NextHopState};
use super::segments::{steer_entry, SteerEntry};
use super::steering::{next_hops, Steering};
use crate::model::{GroupId, SteerTarget};

#[derive(Default)]
pub(super) struct NextHops {
    /// Last usable L2 state of each watched next hop.
    cache: HashMap<NextHopKey, NextHopL2>,
}

impl NextHops {
    /// The steer entry of one segment, with the cached MACs when known.
    pub fn entry(&self, group: GroupId, to: &SteerTarget, prefix: &IpNet) -> SteerEntry {
        steer_entry(group, to, prefix, |key| self.cache.get(&key).copied())
    }

    /// Forgets the cached state of the next hops `steering` does not use
    /// any more (the next outage learns them anew).
    pub fn forget_unused(&mut self, steering: &Steering) {
        let keys = next_hops(steering);
        self.cache.retain(|k, _| keys.contains(k));
    }

    /// Takes in a report: returns the entries to rewrite, those of every
    /// group steered to exactly that (ifindex, gateway) now, with or without
    /// the cached MACs. Reports about next hops nobody steers to any more
    /// (late ones, after an `Unsteer` or a switch of link) change nothing.
    pub fn apply(
        &mut self,
        state: NextHopState,
        steering: &Steering,
    ) -> Vec<(IpNet, SegmentValue)> {
        let key = state.key;
        let in_use = steering.iter().any(|(g, (to, segments))| {
            segments
                .iter()
                .any(|p| self.entry(*g, to, p).next_hop == Some(key))
        });
        if !in_use {
            debug!(
                "next hop {} on ifindex {}: not steered to now, report ignored",
                key.1, key.0
            );
            return Vec::new();
        }
        if self.cache.get(&key).copied() == state.l2 {
            return Vec::new();
        }
        match state.l2 {
            Some(l2) => {
                info!(
                    "next hop {} on ifindex {}: MAC {}, from {} (MTU {}); XDP forwards with these, without a fib lookup",
                    key.1,
                    key.0,
                    fmt_mac(l2.dmac),
                    fmt_mac(l2.smac),
                    l2.mtu
                );
                self.cache.insert(key, l2);
            }
            None => {
                info!(
                    "next hop {} on ifindex {}: no usable neighbour entry; XDP falls back to bpf_fib_lookup and TC resolves it",
                    key.1, key.0
                );
                self.cache.remove(&key);
            }
        }
        let mut writes = Vec::new();
        for (g, (to, segments)) in steering {
            for prefix in segments {
                let e = self.entry(*g, to, prefix);
                if e.next_hop == Some(key) {
                    writes.push((*prefix, e.value));
                }
            }
        }
        writes
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LinkId;
    use routebackup_common::FLAG_MACS_VALID;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn reports_rewrite_only_groups_steered_to_that_next_hop() {
        let gw = Ipv4Addr::new(192, 0, 2, 1);
        let key = (9, IpAddr::V4(gw));
        let to = SteerTarget {
            link: LinkId(0),
            ifindex: 9,
            l3: false,
            gateway_v4: Some(gw),
            gateway_v6: None,
        };
        let prefix: IpNet = "10.1.0.0/16".parse().unwrap();
        let l2 = NextHopL2 {
            dmac: [2, 0, 0, 0, 0, 1],
            smac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
        };
        let mut nh = NextHops::default();
        let learned = NextHopState { key, l2: Some(l2) };
        // Nobody steered to it: a late report changes nothing.
        assert!(nh.apply(learned, &Steering::new()).is_empty());
        assert!(nh.cache.is_empty());

        let steering = Steering::from([(GroupId(4), (to, vec![prefix]))]);
        let writes = nh.apply(learned, &steering);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].0, prefix);
        assert_eq!(writes[0].1.flags & FLAG_MACS_VALID, FLAG_MACS_VALID);
        assert_eq!(writes[0].1.dmac, l2.dmac);
        // The same state again: nothing to write.
        assert!(nh.apply(learned, &steering).is_empty());
        // Neighbour gone: the entry goes back to the fib lookup.
        let writes = nh.apply(NextHopState { key, l2: None }, &steering);
        assert_eq!(writes[0].1.flags & FLAG_MACS_VALID, 0);
        // Unsteered: the cache forgets it.
        nh.apply(learned, &steering);
        nh.forget_unused(&Steering::new());
        assert!(nh.cache.is_empty());
    }
}
