//! The `routebackup status` document, owned here: the daemon fills it from
//! the engine, the watcher and the action sink, `routebackup status` reads
//! it back, and the control socket carries it. Its types are its own (the
//! fast path's, the drivers' and the kernel probe's internals are converted
//! into them by their owners), so `status --json` changes only when this
//! module does. It depends on the model alone (and the kernel probe's
//! answer, itself a plain report).

pub mod fastpath;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use fastpath::{
    AttachmentReport, DataplaneStatus, DriverReport, DriverStatus, GroupCounters, TcFallback, Via,
    XdpReport,
};

use crate::model::{EngineStatus, GroupState, HoldingRoute, LinkStatus, Millis};

/// What `routebackup status --json` prints. Built by the daemon from the
/// engine's `EngineStatus` plus wall-clock times and watcher counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    /// False until the initial netlink dump reached the engine.
    pub synced: bool,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    pub groups: Vec<GroupReport>,
    pub links: Vec<LinkStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher: Option<WatcherReport>,
    /// Filled by the fast path (maps, attach points, counters, drivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fastpath: Option<DataplaneStatus>,
    /// The config file, when it was last loaded, the last reload's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub state: GroupState,
    pub active_link: Option<String>,
    /// When the group entered `state`, RFC 3339 UTC.
    pub since: String,
    /// The same instant in the engine's clock (ms since agent start).
    pub since_ms: Millis,
    /// Seconds the group has been in `state`.
    pub since_s_ago: u64,
    pub segments: Vec<SegmentReport>,
    /// The last switchover's route event → steering entry written, in µs
    /// (the agent's own timestamps).
    #[serde(default)]
    pub last_steer_latency_us: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentReport {
    pub prefix: String,
    pub primary_up: bool,
    pub steered: bool,
    /// The route that holds the segment primary-up.
    #[serde(default)]
    pub held_by: Option<HoldingRoute>,
    /// Why no route does ("no route", "blackhole route P (table T)", ...).
    #[serde(default)]
    pub why_not: Option<String>,
}

impl SegmentReport {
    /// "10.0.0.0/8 via 10.0.1.2 dev wan0 proto bgp table 254 metric 20", or
    /// the reason none holds it.
    pub fn route_text(&self) -> String {
        match (&self.held_by, &self.why_not) {
            (Some(r), _) => {
                let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
                format!(
                    "{}{via} dev {} proto {} table {} metric {}",
                    r.prefix,
                    r.dev,
                    r.proto.trim_start_matches("proto "),
                    r.table,
                    r.metric
                )
            }
            (None, Some(why)) => why.clone(),
            (None, None) => "-".to_string(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatcherReport {
    /// Route messages the initial dump held.
    pub initial_routes: u64,
    /// Agent start to `Synced`, in ms.
    pub initial_sync_ms: u64,
    /// Route messages seen since start (dumps and events).
    pub routes_seen: u64,
    /// Routes currently relevant to a segment.
    pub routes_watched: u64,
    pub overruns: u64,
    pub resyncs: u64,
    /// Differences between the agent's route view and the kernel that a
    /// periodic re-dump found (and corrected); anything but 0 is a bug.
    #[serde(default)]
    pub view_divergences: u64,
}

impl StatusReport {
    /// `now` is the engine clock (ms since `started`, the agent's wall-clock start).
    pub fn from_engine(status: &EngineStatus, now: Millis, started: SystemTime) -> StatusReport {
        let groups = status
            .groups
            .iter()
            .map(|g| GroupReport {
                name: g.name.clone(),
                state: g.state,
                active_link: g.active_link.clone(),
                since: humantime::format_rfc3339_seconds(
                    started + Duration::from_millis(g.since_ms),
                )
                .to_string(),
                since_ms: g.since_ms,
                since_s_ago: now.saturating_sub(g.since_ms) / 1000,
                segments: g
                    .segments
                    .iter()
                    .map(|s| SegmentReport {
                        prefix: s.prefix.to_string(),
                        primary_up: s.primary_up,
                        steered: s.steered,
                        held_by: s.held_by.clone(),
                        why_not: s.why_not.clone(),
                    })
                    .collect(),
                last_steer_latency_us: None,
            })
            .collect();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            synced: status.synced,
            uptime_s: now / 1000,
            groups,
            links: status.links.clone(),
            watcher: None,
            fastpath: None,
            config: None,
        }
    }

    /// The human-readable form of `routebackup status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let sync = if self.synced {
            "synced"
        } else {
            "initial sync in progress"
        };
        s.push_str(&format!(
            "routebackup {}: {sync}, up {}\n",
            self.version,
            humantime::format_duration(Duration::from_secs(self.uptime_s))
        ));
        if let Some(c) = &self.config {
            render_config(&mut s, c);
        }
        if let Some(w) = &self.watcher {
            s.push_str(&format!(
                "routes: {} relevant of {} seen; initial sync {} ms; {} overruns, {} resyncs, {} view divergences\n",
                w.routes_watched, w.routes_seen, w.initial_sync_ms, w.overruns, w.resyncs, w.view_divergences
            ));
        }
        for g in &self.groups {
            s.push_str(&format!(
                "\ngroup {}: {}{} since {} ({} ago)\n",
                g.name,
                g.state,
                g.active_link
                    .as_deref()
                    .map(|l| format!(" via {l}"))
                    .unwrap_or_default(),
                g.since,
                humantime::format_duration(Duration::from_secs(g.since_s_ago))
            ));
            let w = g
                .segments
                .iter()
                .map(|x| x.prefix.len())
                .max()
                .unwrap_or(7)
                .max(7);
            s.push_str(&format!(
                "  {:<w$}  {:<7}  {:<7}  {}\n",
                "SEGMENT", "PRIMARY", "STEERED", "ROUTE (or why none)"
            ));
            for seg in &g.segments {
                s.push_str(&format!(
                    "  {:<w$}  {:<7}  {:<7}  {}\n",
                    seg.prefix,
                    if seg.primary_up { "up" } else { "down" },
                    if seg.steered { "yes" } else { "no" },
                    seg.route_text()
                ));
            }
        }
        if !self.links.is_empty() {
            let nw = self
                .links
                .iter()
                .map(|l| l.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let iw = self
                .links
                .iter()
                .map(|l| l.interface.len())
                .max()
                .unwrap_or(9)
                .max(9);
            s.push_str(&format!(
                "\n{:<nw$}  {:<iw$}  {:<10}  {:>8}  LAST ERROR\n",
                "LINK", "INTERFACE", "STATE", "FAILURES"
            ));
            for l in &self.links {
                s.push_str(&format!(
                    "{:<nw$}  {:<iw$}  {:<10}  {:>8}  {}\n",
                    l.name,
                    l.interface,
                    l.state,
                    l.attempts,
                    l.last_error.as_deref().unwrap_or("-")
                ));
            }
        }
        if let Some(fp) = &self.fastpath {
            render_fastpath(&mut s, fp);
        }
        s
    }
}

/// The fast path's part of the human status: attach points, link drivers,
/// counters per group, kernel routes.
fn render_fastpath(s: &mut String, fp: &DataplaneStatus) {
    s.push_str(&format!("\nfast path ({})\n", fp.pin_path.display()));
    if let Some(k) = &fp.kernel {
        s.push_str(&format!("  {}\n", k.summary()));
    }
    for a in &fp.attachments {
        let xdp = match a.xdp {
            XdpReport::Native => "native",
            XdpReport::Generic => "generic",
            XdpReport::None => "none",
        };
        let via: Vec<String> = [("xdp", a.xdp_mechanism), ("tc", a.tc_mechanism)]
            .into_iter()
            .filter_map(|(hook, m)| m.map(|m| format!("{hook} {}", m.name())))
            .collect();
        s.push_str(&format!(
            "  {} (ifindex {}): xdp {xdp}, tc {}{}{}\n",
            a.interface,
            a.ifindex,
            if a.tc { "attached" } else { "not attached" },
            if a.adopted { ", adopted" } else { "" },
            if via.is_empty() {
                String::new()
            } else {
                format!(" (via {})", via.join(", "))
            }
        ));
    }
    if !fp.groups.is_empty() {
        s.push_str(&format!(
            "  {:<16} {:>12} {:>14} {:>12} {:>10} {:>9}\n",
            "GROUP", "STEERED PKTS", "STEERED BYTES", "PASSED PKTS", "DEFERRED", "FAILURES"
        ));
        for g in &fp.groups {
            let c = &g.stats;
            s.push_str(&format!(
                "  {:<16} {:>12} {:>14} {:>12} {:>10} {:>9}\n",
                g.name,
                c.steered_packets,
                c.steered_bytes,
                c.passed_packets,
                c.deferred_packets,
                c.redirect_failures
            ));
        }
    }
    for d in &fp.drivers {
        let state = match d.driver {
            DriverReport::Idle => "idle".to_string(),
            DriverReport::Up => "up".to_string(),
            DriverReport::Running { pid } => format!("running (pid {pid})"),
            DriverReport::Stopping => "stopping".to_string(),
        };
        s.push_str(&format!("  driver {}: {state}\n", d.link));
    }
    if !fp.kernel_routes.is_empty() {
        s.push_str(&format!(
            "  kernel routes installed: {}\n",
            fp.kernel_routes.join(", ")
        ));
    }
    for f in &fp.tc_fallbacks {
        s.push_str(&format!(
            "  link {}: steered through TC: {}\n",
            f.link, f.reason
        ));
    }
    if !fp.prearmed.is_empty() {
        s.push_str(&format!("  pre-armed: {}\n", fp.prearmed.join(", ")));
    }
}

/// The config part of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The file the agent was started with (and reloads).
    pub path: String,
    /// When the running config was loaded (start or last successful
    /// reload), RFC 3339 UTC.
    pub loaded: String,
    /// Whether the last reload was refused (the agent runs the config
    /// loaded at `loaded`).
    pub last_reload_failed: bool,
    /// When that failed reload was asked for, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_failed_at: Option<String>,
    /// Its errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_reload_errors: Vec<String>,
}

/// The config line(s) of `routebackup status`.
fn render_config(s: &mut String, c: &ConfigReport) {
    s.push_str(&format!("config {}, loaded {}\n", c.path, c.loaded));
    if c.last_reload_failed {
        s.push_str(&format!(
            "last reload ({}) FAILED; still running the config loaded {}:\n",
            c.last_reload_failed_at.as_deref().unwrap_or("?"),
            c.loaded
        ));
        for e in &c.last_reload_errors {
            s.push_str(&format!("  {e}\n"));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
