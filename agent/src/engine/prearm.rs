//! Pre-arming (README "Zero-loss switchover"): while a group's backup link
//! is ready and its primary still up, the kernel gets a route per segment
//! via the backup with a metric worse than every other route to that
//! prefix. When the primary route is deleted the kernel falls back to it
//! inside the deletion, as it does for a floating static route, and
//! forwards over the backup until the fast path takes over; nothing is lost
//! while the agent hears about the deletion.
//!
//! Which link: the one a group in `backup` or `holding` uses, when its
//! `prearm` is on and it is up and ready; otherwise the first of the group's
//! `always-up` links with `prearm` on that is ready. A link that is not
//! always-up is pre-armed only while a group holds it: anywhere else its
//! interface may vanish with its session.
//!
//! Which segments: those whose primary route has exactly the segment's
//! prefix and sits in the first watched table (where the routes go), so the
//! pre-armed route, at the same prefix and a worse metric, cannot change
//! forwarding while any primary is there. A segment held by a shorter
//! covering prefix (`match = "covering"`) is not pre-armed at all: a route
//! for the segment would be more specific than the primary and take its
//! traffic at once, and a route for the covering prefix would send every
//! destination under it, monitored or not, over the backup once the primary
//! goes. A pre-armed segment that loses its primary stays armed (that is the
//! point) at its metric until the group's link stops qualifying.
//!
//! These routes leave through a backup interface, so they never count as
//! primary, and their protocol ([`RTPROT_ROUTEBACKUP`]) keeps them out of
//! the metric they must be worse than.
//!
//! Their metric is at least [`PREARM_METRIC_FLOOR`]: routing daemons that
//! import foreign kernel routes must rank them below their own (see there).

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::config::{Config, RT_TABLE_MAIN};
use crate::model::{
    Action, GroupId, GroupState, LinkId, LinkState, Notice, SteerTarget, RTPROT_ROUTEBACKUP,
};

use super::Engine;

/// The lowest metric of a pre-armed route: 255 in the top byte. FRR's zebra
/// learns routes other programs put in the kernel and takes their
/// administrative distance from the metric's top byte (zebra/rt_netlink.c);
/// with a small metric the distance is 0, which beats BGP's 20, and zebra
/// withdraws its BGP route in favour of ours (tests/tests/daemons.rs showed
/// it). At 255 (the largest distance) zebra keeps its own route best and ours
/// behind it, while the kernel, which only compares metrics, still falls back
/// to ours inside the primary's deletion. BIRD ignores foreign routes unless
/// told to `learn` them.
pub const PREARM_METRIC_FLOOR: u32 = 255 << 24;

/// What one group has pre-armed.
pub(super) struct Armed {
    target: SteerTarget,
    /// Segment → metric of its route.
    routes: BTreeMap<IpNet, u32>,
}

/// The actions for routes to install (or replace) and segments to disarm.
fn push_changes(
    group: GroupId,
    target: &SteerTarget,
    routes: Vec<(IpNet, u32)>,
    segments: Vec<IpNet>,
    out: &mut Vec<Action>,
) {
    if !routes.is_empty() {
        out.push(Action::Prearm {
            group,
            target: *target,
            routes,
        });
    }
    if !segments.is_empty() {
        out.push(Action::Disarm { group, segments });
    }
}

/// The table pre-armed routes go to: the first watched one.
pub(super) fn prearm_table(config: &Config) -> u32 {
    config
        .agent
        .tables
        .first()
        .copied()
        .unwrap_or(RT_TABLE_MAIN)
}

impl Engine {
    /// Whether `link` may carry pre-armed routes (`held`: a group in
    /// `backup` or `holding` uses it).
    fn can_prearm(&self, link: LinkId, held: bool) -> bool {
        let Some(l) = self.links.get(link) else {
            return false;
        };
        l.prearm && (l.always_up || (held && l.state == LinkState::Up)) && self.link_ready(link)
    }

    /// The link group `g` pre-arms over now, if any (see the module doc).
    fn prearm_target(&self, g: GroupId) -> Option<SteerTarget> {
        if !self.synced {
            return None;
        }
        let gr = self.groups.get(g)?;
        if gr.awaiting_routes {
            return None;
        }
        if matches!(gr.state, GroupState::Backup | GroupState::Holding) {
            if let Some(l) = gr.active.filter(|l| self.can_prearm(*l, true)) {
                return self.steer_target(l);
            }
        }
        let link = gr
            .links
            .iter()
            .copied()
            .find(|l| self.can_prearm(*l, false))?;
        self.steer_target(link)
    }

    /// The metric segment `i` of group `g` should be pre-armed at via
    /// `target` (`prev`: its metric now, if armed), or `None`.
    fn segment_metric(
        &self,
        g: GroupId,
        i: usize,
        target: &SteerTarget,
        prev: Option<u32>,
    ) -> Option<u32> {
        let gr = self.groups.get(g)?;
        let seg = gr.segments.get(i)?;
        // A kernel route over Ethernet needs a next hop of the segment's family.
        let has_gateway = match seg {
            IpNet::V4(_) => target.gateway_v4.is_some(),
            IpNet::V6(_) => target.gateway_v6.is_some(),
        };
        if !target.l3 && !has_gateway {
            return None;
        }
        let floor = self
            .links
            .get(target.link)
            .map_or(0, |l| l.route_metric)
            .max(PREARM_METRIC_FLOOR);
        match self
            .net
            .exact_primary_metric(seg, self.prearm_table, RTPROT_ROUTEBACKUP)
        {
            // Worse than every route the kernel has there; none is worse
            // than u32::MAX, so such a segment cannot be pre-armed.
            Some(max) => Some(floor.max(max.checked_add(1)?)),
            // Lost: keep what is armed, the kernel forwards over it now.
            None if !gr.primary_up.get(i).copied().unwrap_or(true) => prev,
            // Held by a covering route, or a primary in another table only.
            None => None,
        }
    }

    /// Brings every group's pre-arming up to date.
    pub(super) fn prearm_all(&mut self, out: &mut Vec<Action>) {
        // Vacant slots and slots past the end included: a group removed by
        // a reload loses its routes here.
        let mut groups: Vec<GroupId> = self.groups.all_ids().collect();
        let end = self.groups.slot_count();
        groups.extend(self.armed.keys().filter(|g| g.index() >= end));
        for g in groups {
            self.prearm_group(g, out);
        }
    }

    /// Brings the pre-arming of the segments routes at `prefixes` can
    /// affect up to date.
    pub(super) fn prearm_prefixes(&mut self, prefixes: &[IpNet], out: &mut Vec<Action>) {
        let mut refs = Vec::new();
        for p in prefixes {
            refs.extend(self.index.matching(p));
        }
        refs.sort_unstable();
        refs.dedup();
        let mut by_group: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
        for (g, i) in refs {
            by_group.entry(g).or_default().push(i);
        }
        for (g, segs) in by_group {
            let target = self.prearm_target(g);
            let same = target.is_some() && self.armed.get(&g).map(|a| a.target) == target;
            match target {
                Some(t) if same => self.prearm_segments(g, &t, &segs, out),
                _ => self.prearm_group(g, out),
            }
        }
    }

    /// Updates segments `segs` of group `g`, armed via `target` already.
    fn prearm_segments(
        &mut self,
        g: GroupId,
        target: &SteerTarget,
        segs: &[usize],
        out: &mut Vec<Action>,
    ) {
        let mut install = Vec::new();
        let mut remove = Vec::new();
        for &i in segs {
            let Some(seg) = self.segment(g, i) else {
                continue;
            };
            let prev = self.armed.get(&g).and_then(|a| a.routes.get(&seg)).copied();
            match (self.segment_metric(g, i, target, prev), prev) {
                (Some(m), p) if p != Some(m) => install.push((seg, m)),
                (None, Some(_)) => remove.push(seg),
                _ => {}
            }
        }
        let Some(armed) = self.armed.get_mut(&g) else {
            return;
        };
        for (seg, m) in &install {
            armed.routes.insert(*seg, *m);
        }
        for seg in &remove {
            armed.routes.remove(seg);
        }
        push_changes(g, target, install, remove, out);
    }

    fn segment(&self, g: GroupId, i: usize) -> Option<IpNet> {
        self.groups.get(g)?.segments.get(i).copied()
    }

    /// Recomputes group `g`'s pre-arming from scratch.
    fn prearm_group(&mut self, g: GroupId, out: &mut Vec<Action>) {
        let target = self.prearm_target(g);
        let old = self.armed.remove(&g);
        let Some(target) = target else {
            if let Some(old) = old.filter(|o| !o.routes.is_empty()) {
                let name = self.link_name(old.target.link);
                self.prearm_notice(g, &format!("no longer pre-armed via link {name}"), out);
                out.push(Action::Disarm {
                    group: g,
                    segments: old.routes.into_keys().collect(),
                });
            }
            return;
        };
        let same_target = old.as_ref().is_some_and(|o| o.target == target);
        let n = self.groups.get(g).map_or(0, |gr| gr.segments.len());
        let mut routes = BTreeMap::new();
        for i in 0..n {
            let Some(seg) = self.segment(g, i) else {
                continue;
            };
            let prev = old
                .as_ref()
                .filter(|_| same_target)
                .and_then(|o| o.routes.get(&seg))
                .copied();
            if let Some(m) = self.segment_metric(g, i, &target, prev) {
                routes.insert(seg, m);
            }
        }
        let old_routes = old.map(|o| o.routes).unwrap_or_default();
        // Moved to another link: every route is replaced; else only the
        // segments whose metric changed.
        let install: Vec<(IpNet, u32)> = routes
            .iter()
            .filter(|(s, m)| !same_target || old_routes.get(s) != Some(m))
            .map(|(s, m)| (*s, *m))
            .collect();
        let remove: Vec<IpNet> = old_routes
            .keys()
            .filter(|s| !routes.contains_key(s))
            .copied()
            .collect();
        if !same_target && !routes.is_empty() {
            let name = self.link_name(target.link);
            let k = routes.len();
            let plural = if k == 1 { "" } else { "s" };
            self.prearm_notice(g, &format!("pre-armed {k} segment{plural} via link {name} (kernel routes behind the primary)"),
                out,
            );
        } else if !same_target && !old_routes.is_empty() {
            let name = self.link_name(target.link);
            self.prearm_notice(g, &format!("no segment to pre-arm via link {name}"), out);
        }
        push_changes(g, &target, install, remove, out);
        self.armed.insert(g, Armed { target, routes });
    }

    /// A notice for group `g`, also when a reload left its slot vacant.
    fn prearm_notice(&self, g: GroupId, text: &str, out: &mut Vec<Action>) {
        let name = self
            .groups
            .get(g)
            .map_or_else(|| format!("#{g}"), |gr| gr.name.clone());
        out.push(Action::Notice(Notice::group(&name, text)));
    }

    /// Segment → metric of what group `g` has pre-armed (tests, status).
    #[cfg(test)]
    pub(crate) fn prearmed(&self, g: GroupId) -> Vec<(IpNet, u32)> {
        self.armed
            .get(&g)
            .map(|a| a.routes.iter().map(|(s, m)| (*s, *m)).collect())
            .unwrap_or_default()
    }
}
