//! The decision engine: pure, no I/O, no clock reads, no async.
//!
//! `Engine::handle` takes one `model::Event` (with the caller's monotonic time)
//! and returns the `model::Action`s to carry out, in order. Every decision
//! comes with an `Action::Notice` (emitted before the actions it explains).
//!
//! Submodules: `routes` (kernel state and the primary-up rule), `group` (the
//! per-group state machine), `links` (backup link attempts and readiness),
//! `gateway` (next hops for Ethernet backups).
//!
//! Choices where the brief left room:
//! - `always-up` links never get `LinkUp` or `LinkDown`; the engine only waits
//!   (up to `up_timeout`) for their interface to be ready. That is all the
//!   engine knows of a link's driver: its `Profile` (`always_up`), never
//!   which driver it is.
//! - A link whose interface is already ready when a group picks it is used at
//!   once, without `LinkUp` (it is released with `LinkDown` as usual), unless
//!   a session of ours on it failed or was released since: then the
//!   interface may be a leftover, and it is redialled and must be seen not
//!   ready, then ready.
//! - A released link is `Releasing` until the driver reports its `down`
//!   done (`Event::LinkReleased`, one per `LinkDown`); that wait is bounded by
//!   the driver's own time limits, not by `up_timeout`.
//! - A link that drops while in use (or is reported failed while up) gets
//!   `LinkDown`, and every group steering to it starts a new round at once,
//!   beginning with the *next* link of its list and wrapping around, so the
//!   dropped link is retried last (a one-link group redials at once).
//! - The retry backoff of a group uses its first link's `retry_interval`,
//!   doubling per consecutive failed round, capped at 5 minutes.
//! - Next hops through an interface that was deleted (`InterfaceDelete`) never
//!   count, whatever its name was, until the ifindex reappears.
//! - `LinkStatus::attempts` counts failed attempts (timeouts, driver failures,
//!   drops while in use).

mod gateway;
mod group;
mod links;
mod prearm;
mod probe;
mod reconfigure;
mod routes;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, GroupConfig, LinkConfig, MatchMode, VerifyConfig};
use crate::ids::Slots;
use crate::model::{
    Action, EngineStatus, Event, GroupId, GroupState, GroupStatus, HoldingRoute, LinkId, LinkState,
    LinkStatus, Millis, SegmentStatus, SteerTarget,
};
use crate::segments::{MatchRule, SegmentIndex};

pub use gateway::derive as derive_gateways;
pub use reconfigure::slotted;

/// The longest retry backoff.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_mins(5);

struct GroupRt {
    name: String,
    segments: Vec<IpNet>,
    primary_up: Vec<bool>,
    up_count: usize,
    links: Vec<LinkId>,
    match_mode: MatchMode,
    allow_default: bool,
    activate_delay: Duration,
    deactivate_delay: Duration,
    retry_base: Duration,
    state: GroupState,
    since: Millis,
    /// The link being tried (`activating`), steered to (`backup`) or held (`holding`).
    active: Option<LinkId>,
    /// Position in `links` where the current round started, and links tried so far.
    round_start: usize,
    round_tried: usize,
    /// Errors of the links that failed in the current round, for the notice.
    round_errors: Vec<String>,
    /// Consecutive rounds in which every link failed.
    failed_rounds: u32,
    /// Some while the fast path steers this group.
    steer: Option<SteerTarget>,
    /// `AdoptSteering` seen before `Synced`.
    adopt: Option<LinkId>,
    /// Added or changed by a reload: its segments' routes are not known yet
    /// (the watcher re-dumps with the new filter), so the group is not
    /// evaluated until the next `Synced`.
    awaiting_routes: bool,
    /// Probing the primary path (`probe`), if configured.
    probe: Option<probe::ProbeRt>,
}

impl GroupRt {
    /// A group without segments (the config refuses one) is never lost.
    fn lost(&self) -> bool {
        self.up_count == 0 && !self.segments.is_empty()
    }
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts: two from the config, two about the current session"
)]
struct LinkRt {
    name: String,
    interface: String,
    always_up: bool,
    require_address: bool,
    up_timeout: Duration,
    gateway_v4: Option<Ipv4Addr>,
    gateway_v6: Option<Ipv6Addr>,
    /// `prearm` and `route_metric` of the link's config.
    prearm: bool,
    route_metric: u32,
    /// Families the link carries (its gateways', else its groups'
    /// segments'): `require_address` wants a usable address in one of them.
    families: Families,
    state: LinkState,
    /// Connecting while the interface still looked ready from a session that
    /// ended (failed, or taken down by us): readiness counts only after it
    /// was seen not ready once.
    stale_ready: bool,
    /// A session of ours on this link ended (failure or release) and no
    /// attempt has made it ready since: its interface, if still there, is a
    /// leftover (a `command` link's interface can outlive its process).
    ended: bool,
    /// Id of the last `LinkUp`; driver reports of other attempts are old.
    attempt: u64,
    /// `LinkDown`s sent whose `LinkReleased` has not come yet.
    downs_in_flight: u32,
    attempts: u32,
    last_error: Option<String>,
    /// `verify`: one probe through the link must answer before steering.
    verify: Option<VerifyConfig>,
    /// The current session passed its verification.
    verified: bool,
    /// The verification probe in flight: (seq, ifindex).
    verifying: Option<(u64, u32)>,
}

/// The address families link `id` carries: those of its configured
/// gateways, else those of the segments of the groups that list it (both
/// when neither says).
fn link_families(config: &Config, id: LinkId) -> Families {
    let both = Families { v4: true, v6: true };
    let Some(l) = config.links.get(id) else {
        return both;
    };
    if l.gateway_v4.is_some() || l.gateway_v6.is_some() {
        return Families {
            v4: l.gateway_v4.is_some(),
            v6: l.gateway_v6.is_some(),
        };
    }
    let segments = config
        .groups
        .values()
        .filter(|g| g.links.contains(&id))
        .flat_map(|g| g.segments.iter());
    let (mut v4, mut v6) = (false, false);
    for s in segments {
        match s {
            IpNet::V4(_) => v4 = true,
            IpNet::V6(_) => v6 = true,
        }
    }
    if v4 || v6 {
        Families { v4, v6 }
    } else {
        both
    }
}

/// IP address families.
#[derive(Clone, Copy, Debug)]
struct Families {
    v4: bool,
    v6: bool,
}

impl LinkRt {
    /// A link as configured, down. Its families start as both;
    /// `Engine::refresh_families` narrows them once the groups are known.
    fn new(l: &LinkConfig) -> LinkRt {
        LinkRt {
            name: l.name.clone(),
            interface: l.interface.clone(),
            always_up: l.driver.profile().always_up,
            require_address: l.require_address,
            up_timeout: l.up_timeout,
            gateway_v4: l.gateway_v4,
            gateway_v6: l.gateway_v6,
            prearm: l.prearm,
            route_metric: l.route_metric,
            families: Families { v4: true, v6: true },
            state: LinkState::Down,
            stale_ready: false,
            ended: false,
            attempt: 0,
            downs_in_flight: 0,
            attempts: 0,
            last_error: None,
            verify: l.verify,
            verified: false,
            verifying: None,
        }
    }
}

impl GroupRt {
    /// A group as configured, in `primary` (`n_links`: link slots in the
    /// config).
    fn new(g: &GroupConfig, config: &Config, n_links: usize) -> GroupRt {
        let links: Vec<LinkId> = g
            .links
            .iter()
            .copied()
            .filter(|l| l.index() < n_links)
            .collect();
        let retry_base = links
            .first()
            .and_then(|l| config.links.get(*l))
            .map_or(Duration::from_secs(5), |l| l.retry_interval);
        GroupRt {
            name: g.name.clone(),
            segments: g.segments.clone(),
            primary_up: vec![false; g.segments.len()],
            up_count: 0,
            links,
            match_mode: g.match_mode,
            allow_default: g.allow_default,
            activate_delay: g.activate_delay,
            deactivate_delay: g.deactivate_delay,
            retry_base,
            state: GroupState::Primary,
            since: 0,
            active: None,
            round_start: 0,
            round_tried: 0,
            round_errors: Vec::new(),
            failed_rounds: 0,
            steer: None,
            adopt: None,
            awaiting_routes: false,
            probe: g.probe.clone().map(probe::ProbeRt::new),
        }
    }
}

/// Where a segment lives: (group, index in the group's segment list).
type SegRef = (GroupId, usize);

/// Dynamic route backup state for every group and link of a config.
pub struct Engine {
    synced: bool,
    tables: HashSet<u32>,
    net: routes::Net,
    /// Segments by prefix, to re-evaluate only those a route can affect.
    index: SegmentIndex<SegRef>,
    /// Vacant where the slotted config is (see `reconfigure`).
    groups: Slots<GroupId, GroupRt>,
    links: Slots<LinkId, LinkRt>,
    /// The last attempt id handed out (`Action::LinkUp`).
    last_attempt: u64,
    /// The last seq of a link's verification probe.
    last_probe_seq: u64,
    /// Per group, what is pre-armed (`prearm`).
    armed: HashMap<GroupId, prearm::Armed>,
    /// Where pre-armed routes go: the first watched table.
    prearm_table: u32,
}

impl Engine {
    pub fn new(config: &Config) -> Engine {
        let links = config.links.map(LinkRt::new);
        let groups = config
            .groups
            .map(|g| GroupRt::new(g, config, links.slot_count()));
        let mut engine = Engine {
            synced: false,
            tables: config.agent.tables.iter().copied().collect(),
            net: routes::Net::new(config.backup_interfaces()),
            index: SegmentIndex::new(std::iter::empty()),
            groups,
            links,
            last_attempt: 0,
            last_probe_seq: 0,
            armed: HashMap::new(),
            prearm_table: prearm::prearm_table(config),
        };
        engine.rebuild_index();
        engine.refresh_families(config);
        engine
    }

    /// Recomputes the address families each link carries (they depend on
    /// its gateways and on the segments of the groups that use it).
    fn refresh_families(&mut self, config: &Config) {
        for (id, l) in self.links.iter_mut() {
            l.families = link_families(config, id);
        }
    }

    /// Indexes every group's segments by prefix.
    fn rebuild_index(&mut self) {
        self.index = SegmentIndex::new(self.groups.iter().flat_map(|(gid, g)| {
            let rule = MatchRule::new(g.match_mode, g.allow_default);
            g.segments
                .iter()
                .enumerate()
                .map(move |(i, s)| (*s, rule, (gid, i)))
        }));
    }

    /// Applies one event at time `now` and returns the actions it calls for.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        // Route events can only change the pre-arming of the segments they
        // match; anything else may change a link's readiness or a group's state.
        let route_prefixes = match &event {
            Event::RouteUpsert(r) => Some(vec![r.key.prefix]),
            Event::RouteDelete(k) => Some(vec![k.prefix]),
            _ => None,
        };
        self.dispatch(now, event, &mut out);
        self.kick_probes(now, &mut out);
        match route_prefixes {
            Some(prefixes) => self.prearm_prefixes(&prefixes, &mut out),
            None => self.prearm_all(&mut out),
        }
        out
    }

    fn dispatch(&mut self, now: Millis, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::RouteUpsert(route) => {
                if self.tables.contains(&route.key.table) {
                    let prefix = route.key.prefix;
                    self.net.upsert_route(route);
                    self.reevaluate_prefixes(now, &[prefix], out);
                }
            }
            Event::RouteDelete(key) => {
                // Also outside the watched tables: a reload that stops
                // watching a table drops its routes this way (the watcher's
                // re-dump reports them gone).
                self.net.delete_route(&key);
                self.reevaluate_prefixes(now, &[key.prefix], out);
            }
            Event::NexthopUpsert(nh) => {
                let prefixes = self.net.upsert_nexthop(nh);
                self.reevaluate_prefixes(now, &prefixes, out);
            }
            Event::NexthopDelete(id) => {
                let prefixes = self.net.delete_nexthop(id);
                self.reevaluate_prefixes(now, &prefixes, out);
            }
            Event::InterfaceUpsert(info) => {
                if self.net.upsert_link(info) {
                    self.reevaluate_all(now, out);
                }
                self.links_changed(now, out);
            }
            Event::InterfaceDelete(ifindex) => {
                if self.net.delete_link(ifindex) {
                    self.reevaluate_all(now, out);
                }
                self.links_changed(now, out);
            }
            Event::AddressAdd(a) => {
                self.net.add_address(a);
                self.links_changed(now, out);
            }
            Event::AddressDelete(a) => {
                self.net.delete_address(&a);
                self.links_changed(now, out);
            }
            Event::Synced => {
                for g in self.groups.values_mut() {
                    g.awaiting_routes = false;
                }
                self.on_synced(now, out);
            }
            Event::TimerFired(timer) => {
                if self.synced {
                    self.on_timer(now, timer, out);
                }
            }
            Event::LinkFailed {
                link,
                attempt,
                error,
            } => self.on_link_failed(now, link, attempt, error, out),
            Event::LinkReleased { link } => self.on_link_released(now, link, out),
            Event::AdoptSteering { group, link } => {
                if self.synced {
                    // Only meaningful at start-up; the engine already decided.
                } else if let Some(g) = self.groups.get_mut(group) {
                    g.adopt = Some(link);
                }
            }
            Event::ProbeResult {
                group,
                ifindex,
                seq,
                ok,
                ..
            } => {
                if !self.on_verify_result(now, ifindex, seq, ok, out) {
                    self.on_probe_result(now, group, ifindex, seq, ok, out);
                }
            }
        }
    }

    /// The current state of every group, segment and link.
    /// Slots left vacant by a reload (see `reconfigure`) are not shown.
    pub fn status(&self) -> EngineStatus {
        let groups = self
            .groups
            .values()
            .map(|g| GroupStatus {
                name: g.name.clone(),
                state: g.state,
                active_link: g
                    .active
                    .and_then(|l| self.links.get(l))
                    .map(|l| l.name.clone()),
                since_ms: g.since,
                segments: g
                    .segments
                    .iter()
                    .zip(&g.primary_up)
                    .map(|(p, up)| {
                        let verdict = self.net.segment_primary(p, g.match_mode, g.allow_default);
                        let probed_down = verdict.as_ref().ok().and_then(|r| {
                            g.probe.as_ref().and_then(|pr| {
                                pr.why_down(r.ifindex, &self.net.iface_name(r.ifindex))
                            })
                        });
                        let (held_by, why_not) = match verdict {
                            Ok(_) if probed_down.is_some() => (None, probed_down),
                            Ok(r) => (
                                Some(HoldingRoute {
                                    prefix: r.prefix,
                                    via: r.gateway,
                                    dev: self.net.iface_name(r.ifindex),
                                    proto: group::protocol_name(r.protocol),
                                    table: r.table,
                                    metric: r.metric,
                                }),
                                None,
                            ),
                            Err(why) => (None, Some(why.to_string())),
                        };
                        SegmentStatus {
                            prefix: *p,
                            primary_up: *up,
                            steered: g.steer.is_some(),
                            held_by,
                            why_not,
                        }
                    })
                    .collect(),
            })
            .collect();
        let links = self
            .links
            .iter()
            .map(|(i, l)| LinkStatus {
                name: l.name.clone(),
                interface: l.interface.clone(),
                state: self.reported_link_state(i, l),
                ifindex: self.net.ifindex_of(&l.interface),
                attempts: l.attempts,
                last_error: l.last_error.clone(),
            })
            .collect();
        EngineStatus {
            synced: self.synced,
            groups,
            links,
        }
    }

    /// The id of the last `LinkUp` of `link` (0 before any).
    #[cfg(test)]
    pub(crate) fn current_attempt(&self, link: LinkId) -> u64 {
        self.links.get(link).map_or(0, |l| l.attempt)
    }

    /// Whether `Event::Synced` was seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// A group's name, for log lines (cheaper than `status()`).
    pub fn group_name(&self, group: GroupId) -> Option<&str> {
        self.groups.get(group).map(|g| g.name.as_str())
    }

    /// The group whose current attempt uses `link` (the one a `LinkUp` is for).
    pub fn group_using(&self, link: LinkId) -> Option<&str> {
        self.groups
            .values()
            .find(|g| g.active == Some(link))
            .map(|g| g.name.as_str())
    }

    /// The link whose interface has `ifindex` now, with its name.
    pub fn link_on(&self, ifindex: u32) -> Option<(LinkId, &str)> {
        self.links
            .iter()
            .find(|(_, l)| self.net.ifindex_of(&l.interface) == Some(ifindex))
            .map(|(id, l)| (id, l.name.as_str()))
    }

    /// A group's state and active link, without its segments (cheaper than
    /// `status()`): what the daemon compares around each event.
    pub fn group_state(&self, group: GroupId) -> Option<(GroupState, Option<LinkId>)> {
        self.groups.get(group).map(|g| (g.state, g.active))
    }

    /// A link's state as `status()` reports it, and its failed attempts.
    pub fn link_state(&self, link: LinkId) -> Option<(LinkState, u32)> {
        let l = self.links.get(link)?;
        Some((self.reported_link_state(link, l), l.attempts))
    }

    /// An `always-up` link is up whenever its interface is ready, even though
    /// the engine never brought it up.
    fn reported_link_state(&self, i: LinkId, l: &LinkRt) -> LinkState {
        if l.always_up && l.state == LinkState::Down && self.link_ready(i) {
            LinkState::Up
        } else {
            l.state
        }
    }

    /// Recomputes the segments that routes at `prefixes` can affect, then
    /// lets their groups react.
    fn reevaluate_prefixes(&mut self, now: Millis, prefixes: &[IpNet], out: &mut Vec<Action>) {
        let mut refs = Vec::new();
        for p in prefixes {
            refs.extend(self.index.matching(p));
        }
        let mut touched: Vec<GroupId> = Vec::new();
        for (g, i) in refs {
            if self.update_segment(g, i) {
                touched.push(g);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        touched.retain(|g| self.groups.get(*g).is_some_and(|gr| !gr.awaiting_routes));
        for g in touched {
            self.evaluate_group(now, g, out);
        }
    }

    fn reevaluate_all(&mut self, now: Millis, out: &mut Vec<Action>) {
        for g in self.groups.all_ids() {
            let n = self.groups.get(g).map_or(0, |g| g.segments.len());
            for i in 0..n {
                self.update_segment(g, i);
            }
            if self.groups.get(g).is_some_and(|gr| !gr.awaiting_routes) {
                self.evaluate_group(now, g, out);
            }
        }
    }

    /// Recomputes one segment; returns true when its primary-up flag changed.
    fn update_segment(&mut self, g: GroupId, i: usize) -> bool {
        let Some(group) = self.groups.get(g) else {
            return false;
        };
        let Some(seg) = group.segments.get(i) else {
            return false;
        };
        let up = self
            .net
            .segment_primary(seg, group.match_mode, group.allow_default)
            .is_ok_and(|r| !self.probe_down(g, r.ifindex));
        let Some(group) = self.groups.get_mut(g) else {
            return false;
        };
        let Some(flag) = group.primary_up.get_mut(i) else {
            return false;
        };
        if *flag == up {
            return false;
        }
        *flag = up;
        if up {
            group.up_count += 1;
        } else {
            group.up_count = group.up_count.saturating_sub(1);
        }
        true
    }
}
