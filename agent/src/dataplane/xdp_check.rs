//! Whether an Ethernet backup really takes the packets XDP redirects to it;
//! where it does not, its groups are steered through TC (`FLAG_TC_ONLY`:
//! XDP passes the packets on, the TC program redirects them as skbs).
//!
//! A native XDP redirect hands frames to the target's `ndo_xdp_xmit`. A
//! device without it (xdp-features lack `NETDEV_XDP_ACT_NDO_XMIT`; a veth
//! whose peer has neither an XDP program nor GRO) drops every one of them
//! silently while the XDP program counts them as steered. Two checks:
//!
//! - Before steering to a backup (and every second while steered, which also
//!   follows a peer's GRO being switched off or on), the backup's
//!   xdp-features from the `netdev` generic-netlink family.
//! - While steered, every second: the group's steered counter against the
//!   backup's transmit counters (IFLA_STATS64). Fewer than half of the
//!   packets steered in that second transmitted means the redirect does not
//!   work whatever the features say: that backup goes to TC for as long as
//!   groups steer to it, with a warning, counted and shown in `status`. The
//!   comparison is on transmitted packets, not drops: a failed redirect into
//!   a veth without NAPI shows in none of its drop counters (seen here:
//!   "bk0 transmitted 4 of 2003 packets ..., 0 dropped or failed").
//!
//! Only with native XDP attached: generic XDP redirects skbs through the
//! normal transmit path, and TC-only attachments never redirect in XDP.
//! A backup nothing steers to any more is forgotten: the next outage checks
//! it anew.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::steering::Steering;
use crate::error::Report;
use crate::model::{GroupId, LinkId};
use crate::netlink::codec;
use crate::netlink::genl::{Netdev, NETDEV_XDP_ACT_NDO_XMIT};
use crate::netlink::socket::Requests;
use crate::netlink::{decode, LinkTx};
use crate::status::TcFallback;

/// How often the counters and features of steered backups are compared.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Fewer steered packets in one interval than this prove nothing.
const MIN_STEERED: u64 = 32;

/// Why a backup is TC-only.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reason {
    /// Its xdp-features lack NDO_XMIT.
    NotRedirectTarget { features: u64 },
    /// Steered packets were not transmitted.
    NotTransmitted {
        steered: u64,
        transmitted: u64,
        lost: u64,
    },
}

impl Reason {
    fn text(&self, ifname: &str) -> String {
        match self {
            Reason::NotRedirectTarget { features } => format!(
                "{ifname} cannot be an XDP redirect target (xdp-features {features:#x} lack \
                 NDO_XMIT; a veth needs XDP or GRO on its peer)"
            ),
            Reason::NotTransmitted {
                steered,
                transmitted,
                lost,
            } => format!(
                "{ifname} transmitted {transmitted} of {steered} packets XDP redirected to it \
                 in {}s ({lost} dropped or failed)",
                CHECK_INTERVAL.as_secs()
            ),
        }
    }
}

/// The last counters of a steered group: (backup ifindex, steered, tx).
type Sample = (u32, u64, LinkTx);

/// What one observation of a steered group changes.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    None,
    ToTc(Reason),
    BackToXdp,
}

/// The pure part: decisions from observed features and counters.
#[derive(Default)]
struct Verdicts {
    tc_only: HashMap<u32, Reason>,
    samples: HashMap<GroupId, Sample>,
}

impl Verdicts {
    /// Takes in the features of backup `ifindex` (None: unknown) before or
    /// while steering to it.
    fn features(&mut self, ifindex: u32, features: Option<u64>) -> Change {
        let Some(f) = features else {
            return Change::None;
        };
        let target = f & NETDEV_XDP_ACT_NDO_XMIT != 0;
        match self.tc_only.get(&ifindex) {
            None if !target => {
                let r = Reason::NotRedirectTarget { features: f };
                self.tc_only.insert(ifindex, r.clone());
                Change::ToTc(r)
            }
            Some(Reason::NotRedirectTarget { .. }) if target => {
                self.tc_only.remove(&ifindex);
                Change::BackToXdp
            }
            _ => Change::None,
        }
    }

    /// Takes in a steered group's counters: its steered packets and its
    /// backup's transmit counters (None: unknown).
    fn counters(
        &mut self,
        group: GroupId,
        ifindex: u32,
        steered: u64,
        tx: Option<LinkTx>,
    ) -> Change {
        let Some(tx) = tx else {
            self.samples.remove(&group);
            return Change::None;
        };
        let last = self.samples.insert(group, (ifindex, steered, tx));
        if self.tc_only.contains_key(&ifindex) {
            return Change::None;
        }
        let Some((last_if, last_steered, last_tx)) = last else {
            return Change::None;
        };
        if last_if != ifindex {
            return Change::None;
        }
        let steered = steered.saturating_sub(last_steered);
        let transmitted = tx.packets.saturating_sub(last_tx.packets);
        let lost = tx.lost.saturating_sub(last_tx.lost);
        if steered >= MIN_STEERED && transmitted.saturating_mul(2) < steered {
            let r = Reason::NotTransmitted {
                steered,
                transmitted,
                lost,
            };
            self.tc_only.insert(ifindex, r.clone());
            return Change::ToTc(r);
        }
        Change::None
    }

    /// Forgets backups and groups nothing steers any more.
    fn retain(&mut self, steering: &Steering) {
        self.tc_only
            .retain(|i, _| steering.values().any(|(to, _)| to.ifindex == *i));
        self.samples.retain(|g, _| steering.contains_key(g));
    }
}

pub(super) struct XdpCheck {
    /// Native XDP is attached somewhere: only then do redirects need checks.
    native: bool,
    netdev: Option<Netdev>,
    links: Option<Requests>,
    verdicts: Verdicts,
    /// TC-only backups as `status` shows them (link name, reason text).
    shown: HashMap<u32, (String, String)>,
    fallbacks: u64,
    tick: tokio::time::Interval,
}

impl XdpCheck {
    /// Inside the tokio runtime. Without the netdev family (`xdp_features`
    /// false: the kernel probe found none, or it was forced off) only the
    /// counters are compared.
    pub fn new(native: bool, xdp_features: bool) -> XdpCheck {
        let netdev = if native && xdp_features {
            Netdev::open()
                .map_err(|e| {
                    warn!(
                        "cannot read xdp-features ({}); backups are checked by their transmit counters only",
                        Report(&e)
                    );
                })
                .ok()
        } else {
            None
        };
        let links = if native {
            Requests::open("backup transmit counters")
                .map_err(|e| warn!("cannot read transmit counters: {}", Report(&e)))
                .ok()
        } else {
            None
        };
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        XdpCheck {
            native,
            netdev,
            links,
            verdicts: Verdicts::default(),
            shown: HashMap::new(),
            fallbacks: 0,
            tick,
        }
    }

    /// Whether XDP must leave backup `ifindex` to TC.
    pub fn tc_only(&self, ifindex: u32) -> bool {
        self.verdicts.tc_only.contains_key(&ifindex)
    }

    fn features(&self, ifindex: u32) -> Option<u64> {
        let netdev = self.netdev.as_ref()?;
        match netdev.xdp_features(ifindex) {
            Ok(f) => f,
            Err(e) => {
                debug!("xdp-features of ifindex {ifindex}: {}", Report(&e));
                None
            }
        }
    }

    fn tx(&self, ifindex: u32) -> Option<LinkTx> {
        let links = self.links.as_ref()?;
        let mut body = vec![0u8; codec::IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        links
            .get(
                "a backup's transmit counters",
                codec::RTM_GETLINK,
                &body,
                codec::RTM_NEWLINK,
                |m| decode::link_tx(m).ok().flatten(),
            )
            .map_err(|e| debug!("transmit counters of ifindex {ifindex}: {}", Report(&e)))
            .ok()
            .flatten()
    }

    /// Before steering to an Ethernet backup: checks it can be a redirect
    /// target. Returns true when its verdict changed.
    pub fn admit(&mut self, ifindex: u32, l3: bool, link: &str, ifname: &str) -> bool {
        if !self.native || l3 {
            return false;
        }
        let f = self.features(ifindex);
        let change = self.verdicts.features(ifindex, f);
        self.apply(ifindex, link, ifname, change)
    }

    fn apply(&mut self, ifindex: u32, link: &str, ifname: &str, change: Change) -> bool {
        match change {
            Change::None => false,
            Change::ToTc(reason) => {
                let text = reason.text(ifname);
                match reason {
                    Reason::NotRedirectTarget { .. } => {
                        info!("steering link {link} through TC, not XDP: {text}");
                    }
                    Reason::NotTransmitted { .. } => {
                        self.fallbacks += 1;
                        warn!("falling back to TC for link {link}: {text}");
                    }
                }
                self.shown.insert(ifindex, (link.to_string(), text));
                true
            }
            Change::BackToXdp => {
                info!("link {link}: {ifname} can be an XDP redirect target again; steering through XDP");
                self.shown.remove(&ifindex);
                true
            }
        }
    }

    /// Waits for the next periodic check.
    pub async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// The periodic check of every steered Ethernet backup. `steered` reads
    /// a group's steered counter, `names` a link's (name, interface).
    /// Returns the backups whose verdict changed: their entries need
    /// rewriting.
    pub fn check(
        &mut self,
        steering: &Steering,
        steered: impl Fn(GroupId) -> Option<u64>,
        names: impl Fn(LinkId) -> (String, String),
    ) -> Vec<u32> {
        self.verdicts.retain(steering);
        self.shown
            .retain(|i, _| self.verdicts.tc_only.contains_key(i));
        let mut changed = Vec::new();
        if !self.native {
            return changed;
        }
        let mut groups: Vec<_> = steering.iter().filter(|(_, (to, _))| !to.l3).collect();
        groups.sort_by_key(|(g, _)| **g);
        for (group, (to, _)) in groups {
            let (link, ifname) = names(to.link);
            let f = self.features(to.ifindex);
            let mut change = self.verdicts.features(to.ifindex, f);
            if change == Change::None {
                let tx = self.tx(to.ifindex);
                let count = steered(*group);
                change = match count {
                    Some(n) => self.verdicts.counters(*group, to.ifindex, n, tx),
                    None => Change::None,
                };
            }
            if self.apply(to.ifindex, &link, &ifname, change) && !changed.contains(&to.ifindex) {
                changed.push(to.ifindex);
            }
        }
        changed
    }

    /// TC-only backups and the number of fallbacks after failed transmits.
    pub fn status(&self) -> (Vec<TcFallback>, u64) {
        let mut list: Vec<TcFallback> = self
            .shown
            .iter()
            .map(|(ifindex, (link, reason))| TcFallback {
                link: link.clone(),
                ifindex: *ifindex,
                reason: reason.clone(),
            })
            .collect();
        list.sort_by(|a, b| (&a.link, a.ifindex).cmp(&(&b.link, b.ifindex)));
        (list, self.fallbacks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SteerTarget;

    fn tx(packets: u64, lost: u64) -> LinkTx {
        LinkTx { packets, lost }
    }

    fn steering(ifindex: u32) -> Steering {
        let to = SteerTarget {
            link: LinkId(0),
            ifindex,
            l3: false,
            gateway_v4: None,
            gateway_v6: None,
        };
        HashMap::from([(GroupId(0), (to, vec!["10.0.0.0/8".parse().unwrap()]))])
    }

    #[test]
    fn features_decide_before_steering_and_follow_changes() {
        let mut v = Verdicts::default();
        // BASIC|REDIRECT|NDO_XMIT: a redirect target.
        assert_eq!(v.features(9, Some(0x7)), Change::None);
        // Unknown features change nothing.
        assert_eq!(v.features(9, None), Change::None);
        // The veth's peer lost GRO: NDO_XMIT gone.
        assert_eq!(
            v.features(9, Some(0x3)),
            Change::ToTc(Reason::NotRedirectTarget { features: 0x3 })
        );
        assert_eq!(v.features(9, Some(0x3)), Change::None);
        // And back.
        assert_eq!(v.features(9, Some(0x7)), Change::BackToXdp);
        assert!(!v.tc_only.contains_key(&9));
    }

    #[test]
    fn steered_but_not_transmitted_falls_back() {
        let mut v = Verdicts::default();
        // First sample: nothing to compare with.
        assert_eq!(
            v.counters(GroupId(0), 9, 1_000, Some(tx(50, 0))),
            Change::None
        );
        // 1,000 steered, 990 transmitted (other traffic may add more): fine.
        assert_eq!(
            v.counters(GroupId(0), 9, 2_000, Some(tx(1_040, 0))),
            Change::None
        );
        // Too few packets to judge.
        assert_eq!(
            v.counters(GroupId(0), 9, 2_020, Some(tx(1_040, 20))),
            Change::None
        );
        // 1,000 steered, 10 transmitted, 990 dropped: fall back.
        assert_eq!(
            v.counters(GroupId(0), 9, 3_020, Some(tx(1_050, 1_010))),
            Change::ToTc(Reason::NotTransmitted {
                steered: 1_000,
                transmitted: 10,
                lost: 990
            })
        );
        // Once TC-only, counters do not decide again; features never undo it.
        assert_eq!(
            v.counters(GroupId(0), 9, 9_000, Some(tx(1_050, 9_000))),
            Change::None
        );
        assert_eq!(v.features(9, Some(0x7)), Change::None);
        assert!(v.tc_only.contains_key(&9));
        // Nothing steers to it any more: forgotten.
        v.retain(&HashMap::new());
        assert!(v.tc_only.is_empty() && v.samples.is_empty());
    }

    #[test]
    fn a_switch_of_backup_or_unknown_counters_restart_the_comparison() {
        let mut v = Verdicts::default();
        assert_eq!(
            v.counters(GroupId(0), 9, 1_000, Some(tx(0, 0))),
            Change::None
        );
        // Same group, another backup: the old sample does not compare.
        assert_eq!(
            v.counters(GroupId(0), 7, 5_000, Some(tx(0, 0))),
            Change::None
        );
        assert_eq!(v.counters(GroupId(0), 7, 5_100, None), Change::None);
        assert_eq!(
            v.counters(GroupId(0), 7, 9_000, Some(tx(0, 0))),
            Change::None
        );
        assert!(v.tc_only.is_empty());
        // Kept while steered.
        v.retain(&steering(7));
        assert!(v.samples.contains_key(&GroupId(0)));
    }

    #[test]
    fn reasons_name_the_device_and_the_fix() {
        let r = Reason::NotRedirectTarget { features: 0x23 };
        assert_eq!(
            r.text("bk0"),
            "bk0 cannot be an XDP redirect target (xdp-features 0x23 lack NDO_XMIT; a veth needs XDP or GRO on its peer)"
        );
        let r = Reason::NotTransmitted {
            steered: 1_000,
            transmitted: 10,
            lost: 990,
        };
        assert!(r.text("bk0").contains("transmitted 10 of 1000"));
    }
}
