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
//!   (up to `up_timeout`) for their interface to be ready.
//! - A link whose interface is already ready when a group picks it is used at
//!   once, without `LinkUp` (it is released with `LinkDown` as usual).
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
#[cfg(test)]
mod proptests;
mod routes;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, DriverConfig, MatchMode};
use crate::model::{
    Action, EngineStatus, Event, GroupId, GroupState, GroupStatus, LinkId, LinkState, LinkStatus,
    Millis, SegmentStatus, SteerTarget,
};
use crate::segments::{MatchRule, SegmentIndex};

pub use gateway::derive as derive_gateways;

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
}

impl GroupRt {
    fn lost(&self) -> bool {
        self.up_count == 0
    }
}

struct LinkRt {
    name: String,
    interface: String,
    always_up: bool,
    require_address: bool,
    up_timeout: Duration,
    gateway_v4: Option<Ipv4Addr>,
    gateway_v6: Option<Ipv6Addr>,
    state: LinkState,
    /// Connecting after a failure while the interface still looked ready:
    /// readiness counts only after it was seen not ready once.
    stale_ready: bool,
    attempts: u32,
    last_error: Option<String>,
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
    groups: Vec<GroupRt>,
    links: Vec<LinkRt>,
}

impl Engine {
    pub fn new(config: &Config) -> Engine {
        let links: Vec<LinkRt> = config
            .links
            .iter()
            .map(|l| LinkRt {
                name: l.name.clone(),
                interface: l.interface.clone(),
                always_up: matches!(l.driver, DriverConfig::AlwaysUp),
                require_address: l.require_address,
                up_timeout: l.up_timeout,
                gateway_v4: l.gateway_v4,
                gateway_v6: l.gateway_v6,
                state: LinkState::Down,
                stale_ready: false,
                attempts: 0,
                last_error: None,
            })
            .collect();
        let index = SegmentIndex::new(config.groups.iter().enumerate().flat_map(|(gid, g)| {
            let rule = MatchRule::new(g.match_mode, g.allow_default);
            g.segments
                .iter()
                .enumerate()
                .map(move |(i, s)| (*s, rule, (gid, i)))
        }));
        let groups = config
            .groups
            .iter()
            .map(|g| {
                let group_links: Vec<LinkId> = g
                    .links
                    .iter()
                    .copied()
                    .filter(|l| *l < links.len())
                    .collect();
                let retry_base = group_links
                    .first()
                    .and_then(|l| config.links.get(*l))
                    .map_or(Duration::from_secs(5), |l| l.retry_interval);
                GroupRt {
                    name: g.name.clone(),
                    segments: g.segments.clone(),
                    primary_up: vec![false; g.segments.len()],
                    up_count: 0,
                    links: group_links,
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
                }
            })
            .collect();
        Engine {
            synced: false,
            tables: config.agent.tables.iter().copied().collect(),
            net: routes::Net::new(config.backup_interfaces()),
            index,
            groups,
            links,
        }
    }

    /// Applies one event at time `now` and returns the actions it calls for.
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::RouteUpsert(route) => {
                if self.tables.contains(&route.key.table) {
                    let prefix = route.key.prefix;
                    self.net.upsert_route(route);
                    self.reevaluate_prefixes(now, &[prefix], &mut out);
                }
            }
            Event::RouteDelete(key) => {
                if self.tables.contains(&key.table) {
                    self.net.delete_route(&key);
                    self.reevaluate_prefixes(now, &[key.prefix], &mut out);
                }
            }
            Event::NexthopUpsert(nh) => {
                let prefixes = self.net.upsert_nexthop(nh);
                self.reevaluate_prefixes(now, &prefixes, &mut out);
            }
            Event::NexthopDelete(id) => {
                let prefixes = self.net.delete_nexthop(id);
                self.reevaluate_prefixes(now, &prefixes, &mut out);
            }
            Event::InterfaceUpsert(info) => {
                if self.net.upsert_link(info) {
                    self.reevaluate_all(now, &mut out);
                }
                self.links_changed(now, &mut out);
            }
            Event::InterfaceDelete(ifindex) => {
                if self.net.delete_link(ifindex) {
                    self.reevaluate_all(now, &mut out);
                }
                self.links_changed(now, &mut out);
            }
            Event::AddressAdd(a) => {
                self.net.add_address(a);
                self.links_changed(now, &mut out);
            }
            Event::AddressDelete(a) => {
                self.net.delete_address(&a);
                self.links_changed(now, &mut out);
            }
            Event::Synced => self.on_synced(now, &mut out),
            Event::TimerFired(timer) => {
                if self.synced {
                    self.on_timer(now, timer, &mut out);
                }
            }
            Event::LinkFailed { link, error } => self.on_link_failed(now, link, error, &mut out),
            Event::AdoptSteering { group, link } => {
                if self.synced {
                    // Only meaningful at start-up; the engine already decided.
                } else if let Some(g) = self.groups.get_mut(group) {
                    g.adopt = Some(link);
                }
            }
        }
        out
    }

    /// The current state of every group, segment and link.
    pub fn status(&self) -> EngineStatus {
        let groups = self
            .groups
            .iter()
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
                    .map(|(p, up)| SegmentStatus {
                        prefix: *p,
                        primary_up: *up,
                        steered: g.steer.is_some(),
                    })
                    .collect(),
            })
            .collect();
        let links = self
            .links
            .iter()
            .enumerate()
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
            .iter()
            .find(|g| g.active == Some(link))
            .map(|g| g.name.as_str())
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
        let mut touched: Vec<usize> = Vec::new();
        for (g, i) in refs {
            if self.update_segment(g, i) {
                touched.push(g);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for g in touched {
            self.evaluate_group(now, g, out);
        }
    }

    fn reevaluate_all(&mut self, now: Millis, out: &mut Vec<Action>) {
        for g in 0..self.groups.len() {
            let n = self.groups.get(g).map_or(0, |g| g.segments.len());
            for i in 0..n {
                self.update_segment(g, i);
            }
            self.evaluate_group(now, g, out);
        }
    }

    /// Recomputes one segment; returns true when its primary-up flag changed.
    fn update_segment(&mut self, g: usize, i: usize) -> bool {
        let Some(group) = self.groups.get(g) else {
            return false;
        };
        let Some(seg) = group.segments.get(i) else {
            return false;
        };
        let up = self
            .net
            .segment_primary(seg, group.match_mode, group.allow_default)
            .is_some();
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
