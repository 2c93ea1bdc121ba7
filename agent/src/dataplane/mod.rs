//! The production `ActionSink`: carries the engine's actions out on the fast
//! path (segment map entries), the link drivers and the kernel routes.
//!
//! - Start-up: loads and attaches the programs (reusing pinned maps and kept
//!   attachments), writes a `pass` entry for every configured segment that is
//!   not already steered, removes entries no group owns any more, and offers
//!   the steered ones to the engine for adoption (`Event::AdoptSteering`).
//! - `Steer`/`Unsteer`: rewrite the group's entries (one map update each, so
//!   steering starts and stops at once); `kernel_routes` links also get a
//!   route per segment, in order, on a background task.
//! - Next-hop MACs: while a group is steered to an Ethernet backup with a
//!   gateway, the entries also carry the gateway's MAC, the backup's MAC and
//!   MTU (`FLAG_MACS_VALID`), so XDP needs no `bpf_fib_lookup` per packet.
//!   `neighbours` follows the kernel's neighbour entry and reports changes;
//!   they are applied here, on the daemon's task, only to groups steered to
//!   that (ifindex, gateway) at that moment, which orders them with
//!   `Steer`/`Unsteer` without locks. A neighbour that is deleted or fails
//!   clears the flag: XDP falls back to the fib lookup and TC to
//!   `bpf_redirect_neigh`, which resolves it again, and the new entry is
//!   cached once the kernel reports it.
//! - `LinkUp`/`LinkDown`: queued to the link drivers (never blocks); their
//!   failures come back as `Event::LinkFailed`.
//! - Stop: by default detach the programs, remove the pins, the kernel routes
//!   and take the links down; with `--keep-fastpath` leave all of it in place
//!   for the next agent to adopt.

pub mod kernel_routes;
pub mod neighbours;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use ipnet::IpNet;
use routebackup_common::{
    GroupStats, SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_GATEWAY_V6,
    FLAG_L3_DEVICE, FLAG_MACS_VALID,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::{Config, LinkConfig};
use crate::daemon::{ActionSink, EventSender};
use crate::fastpath::{gateway_bytes, Attachment, Fastpath, FastpathOptions};
use crate::links::{DriverEvent, DriverState, LinkDrivers};
use crate::model::{Action, Event, GroupId, SteerTarget};
use kernel_routes::KernelRoutes;
use neighbours::{NextHopKey, NextHopL2, NextHopState, NextHopWatch};

/// Kernel route work, done in order on one task.
enum RouteJob {
    Install {
        prefix: IpNet,
        ifindex: u32,
        gateway: Option<IpAddr>,
        metric: u32,
        table: u32,
    },
    Remove {
        prefix: IpNet,
        metric: u32,
        table: u32,
    },
    /// Removes every route the agent installed (any table) that is not in `keep`.
    Sweep { keep: Vec<(IpNet, u32, u32)> },
    /// Answers once everything queued before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub struct Dataplane {
    fastpath: Option<Fastpath>,
    drivers: Option<LinkDrivers>,
    links: Vec<LinkConfig>,
    group_names: Vec<String>,
    /// The first watched table: where `kernel_routes` go.
    route_table: u32,
    /// Kernel routes installed per segment: (metric, table).
    kernel_routes: HashMap<IpNet, (u32, u32)>,
    route_jobs: mpsc::UnboundedSender<RouteJob>,
    /// Steered entries found at start-up: (group, ifindex).
    adoptable: Vec<(GroupId, u32)>,
    keep: bool,
    /// What each steered group is steered to, and its segments.
    steering: HashMap<GroupId, (SteerTarget, Vec<IpNet>)>,
    /// Last usable L2 state of each watched next hop.
    next_hops: HashMap<NextHopKey, NextHopL2>,
    next_hop_watch: Option<NextHopWatch>,
    next_hop_reports: Option<mpsc::UnboundedReceiver<NextHopState>>,
}

/// What `routebackup status` shows of the data plane.
#[derive(Serialize)]
struct DataplaneReport<'a> {
    pin_path: String,
    attachments: Vec<Attachment>,
    groups: Vec<GroupCounters<'a>>,
    drivers: Vec<DriverReport<'a>>,
    kernel_routes: Vec<String>,
}

#[derive(Serialize)]
struct GroupCounters<'a> {
    name: &'a str,
    #[serde(flatten)]
    stats: GroupStatsJson,
}

#[derive(Serialize)]
struct GroupStatsJson {
    steered_packets: u64,
    steered_bytes: u64,
    passed_packets: u64,
    passed_bytes: u64,
    redirect_failures: u64,
    deferred_packets: u64,
}

impl From<GroupStats> for GroupStatsJson {
    fn from(s: GroupStats) -> Self {
        GroupStatsJson {
            steered_packets: s.steered_packets,
            steered_bytes: s.steered_bytes,
            passed_packets: s.passed_packets,
            passed_bytes: s.passed_bytes,
            redirect_failures: s.redirect_failures,
            deferred_packets: s.deferred_packets,
        }
    }
}

#[derive(Serialize)]
struct DriverReport<'a> {
    link: &'a str,
    driver: DriverState,
}

fn pass_value(group: GroupId) -> SegmentValue {
    SegmentValue {
        group_id: group as u32,
        action: ACTION_PASS,
        ..SegmentValue::default()
    }
}

impl Dataplane {
    /// Opens the fast path and starts the drivers. Must run inside the tokio runtime.
    pub fn open(config: &Config, events: EventSender, keep: bool) -> Result<Dataplane> {
        let mut fastpath = Fastpath::open(&FastpathOptions {
            pin_path: config.agent.pin_path.clone(),
            interfaces: config.fastpath.interfaces.clone(),
            mode: config.fastpath.mode,
        })
        .context("starting the fast path")?;
        for a in fastpath.attachments() {
            info!(
                "fast path on {} (ifindex {}): xdp {:?}, tc {}{}",
                a.interface,
                a.ifindex,
                a.xdp,
                if a.tc { "attached" } else { "not attached" },
                if a.adopted {
                    ", adopted from the previous agent"
                } else {
                    ""
                }
            );
        }

        // Reconcile the (possibly pinned) segment maps with the config.
        let mut owner: HashMap<IpNet, GroupId> = HashMap::new();
        for (g, group) in config.groups.iter().enumerate() {
            for s in &group.segments {
                owner.insert(*s, g);
            }
        }
        let mut adoptable = Vec::new();
        let existing = fastpath
            .segments()
            .context("reading the pinned segment maps")?;
        let mut present: HashMap<IpNet, SegmentValue> = HashMap::new();
        for (prefix, value) in existing {
            match owner.get(&prefix) {
                Some(&g) if value.group_id as usize == g => {
                    if value.action == ACTION_STEER
                        && !adoptable.contains(&(g, value.backup_ifindex))
                    {
                        adoptable.push((g, value.backup_ifindex));
                    }
                    present.insert(prefix, value);
                }
                _ => {
                    info!("removing fast-path entry {prefix}: no group monitors it any more");
                    fastpath.remove_segment(prefix)?;
                }
            }
        }
        for (prefix, &g) in &owner {
            if !present.contains_key(prefix) {
                fastpath.set_segment(*prefix, pass_value(g))?;
            }
        }
        if !adoptable.is_empty() {
            info!(
                "pinned maps still steer {} group(s); offering them for adoption",
                adoptable.len()
            );
        }

        let (report_tx, mut report_rx) = mpsc::unbounded_channel::<DriverEvent>();
        let drivers = LinkDrivers::new(&config.links, report_tx);
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(DriverEvent::Failed { link, error }) = report_rx.recv().await {
                if ev.send(Event::LinkFailed { link, error }).await.is_err() {
                    break;
                }
            }
        });

        let (route_jobs, jobs_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_route_jobs(jobs_rx));

        let (nh_tx, nh_rx) = mpsc::unbounded_channel();
        let next_hop_watch = match NextHopWatch::spawn(nh_tx) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("cannot follow neighbour entries ({e}); XDP resolves every steered packet with bpf_fib_lookup");
                None
            }
        };

        Ok(Dataplane {
            fastpath: Some(fastpath),
            drivers: Some(drivers),
            links: config.links.clone(),
            group_names: config.groups.iter().map(|g| g.name.clone()).collect(),
            route_table: config
                .agent
                .tables
                .first()
                .copied()
                .unwrap_or(crate::config::RT_TABLE_MAIN),
            kernel_routes: HashMap::new(),
            route_jobs,
            adoptable,
            keep,
            steering: HashMap::new(),
            next_hops: HashMap::new(),
            next_hop_watch,
            next_hop_reports: Some(nh_rx),
        })
    }

    /// The steer entry of one segment, with the cached next-hop MACs when
    /// known; also the next hop it depends on (Ethernet backup with a gateway).
    fn steer_value(
        &self,
        group: GroupId,
        to: &SteerTarget,
        prefix: &IpNet,
    ) -> (SegmentValue, Option<IpAddr>, Option<NextHopKey>) {
        let mut value = SegmentValue {
            group_id: group as u32,
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
        if to.l3 {
            return (value, gateway, None);
        }
        let Some(gw) = gateway else {
            return (value, gateway, None);
        };
        value.flags |= if gw.is_ipv4() {
            FLAG_GATEWAY_V4
        } else {
            FLAG_GATEWAY_V6
        };
        value.gateway = gateway_bytes(gw);
        let key = (to.ifindex, gw);
        if let Some(l2) = self.next_hops.get(&key) {
            value.flags |= FLAG_MACS_VALID;
            value.dmac = l2.dmac;
            value.smac = l2.smac;
            value.mtu = l2.mtu;
        }
        (value, gateway, Some(key))
    }

    /// Tells the neighbour task which next hops the steered groups use now
    /// and forgets cached state of the others.
    fn update_next_hop_watch(&mut self) {
        let mut keys = HashSet::new();
        for (g, (to, segments)) in &self.steering {
            for prefix in segments {
                if let (_, _, Some(key)) = self.steer_value(*g, to, prefix) {
                    keys.insert(key);
                }
            }
        }
        self.next_hops.retain(|k, _| keys.contains(k));
        if let Some(w) = self.next_hop_watch.as_ref() {
            w.set(keys);
        }
    }

    fn write(&mut self, prefix: IpNet, value: SegmentValue) {
        if let Some(fp) = self.fastpath.as_mut() {
            if let Err(e) = fp.set_segment(prefix, value) {
                error!("cannot write the fast-path entry for {prefix}: {e:#}");
            }
        }
    }

    fn steer(&mut self, group: GroupId, to: &SteerTarget, segments: &[IpNet]) {
        let SteerTarget {
            link, ifindex, l3, ..
        } = *to;
        for prefix in segments {
            let (value, gateway, _) = self.steer_value(group, to, prefix);
            self.write(*prefix, value);
            if let Some(cfg) = self.links.get(link) {
                if cfg.kernel_routes {
                    let route_gw = if l3 {
                        None
                    } else {
                        gateway.filter(|g| g.is_ipv4() == matches!(prefix, IpNet::V4(_)))
                    };
                    let (metric, table) = (cfg.route_metric, self.route_table);
                    if let Some((old_metric, old_table)) =
                        self.kernel_routes.insert(*prefix, (metric, table))
                    {
                        if (old_metric, old_table) != (metric, table) {
                            let _ = self.route_jobs.send(RouteJob::Remove {
                                prefix: *prefix,
                                metric: old_metric,
                                table: old_table,
                            });
                        }
                    }
                    let _ = self.route_jobs.send(RouteJob::Install {
                        prefix: *prefix,
                        ifindex,
                        gateway: route_gw,
                        metric,
                        table,
                    });
                }
            }
        }
        self.steering.insert(group, (*to, segments.to_vec()));
        self.update_next_hop_watch();
    }

    /// Applies a neighbour task report: rewrites the entries of every group
    /// steered to exactly that (ifindex, gateway) now, with or without the
    /// cached MACs. Reports about next hops nobody steers to any more (late
    /// ones, after an `Unsteer` or a switch of link) change nothing.
    fn apply_next_hop(&mut self, state: NextHopState) {
        let key = state.key;
        let in_use = self.steering.iter().any(|(g, (to, segments))| {
            segments
                .iter()
                .any(|p| self.steer_value(*g, to, p).2 == Some(key))
        });
        if !in_use {
            debug!(
                "next hop {} on ifindex {}: not steered to now, report ignored",
                key.1, key.0
            );
            return;
        }
        let old = self.next_hops.get(&key).copied();
        if old == state.l2 {
            return;
        }
        match state.l2 {
            Some(l2) => {
                info!(
                    "next hop {} on ifindex {}: MAC {}, from {} (MTU {}); XDP forwards with these, without a fib lookup",
                    key.1,
                    key.0,
                    fmt_mac(&l2.dmac),
                    fmt_mac(&l2.smac),
                    l2.mtu
                );
                self.next_hops.insert(key, l2);
            }
            None => {
                info!(
                    "next hop {} on ifindex {}: no usable neighbour entry; XDP falls back to bpf_fib_lookup and TC resolves it",
                    key.1, key.0
                );
                self.next_hops.remove(&key);
            }
        }
        let mut writes = Vec::new();
        for (g, (to, segments)) in &self.steering {
            for prefix in segments {
                let (value, _, k) = self.steer_value(*g, to, prefix);
                if k == Some(key) {
                    writes.push((*prefix, value));
                }
            }
        }
        for (prefix, value) in writes {
            self.write(prefix, value);
        }
    }

    fn unsteer(&mut self, group: GroupId, segments: &[IpNet]) {
        if self.steering.remove(&group).is_some() {
            self.update_next_hop_watch();
        }
        for prefix in segments {
            self.write(*prefix, pass_value(group));
            if let Some((metric, table)) = self.kernel_routes.remove(prefix) {
                let _ = self.route_jobs.send(RouteJob::Remove {
                    prefix: *prefix,
                    metric,
                    table,
                });
            }
        }
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

async fn run_route_jobs(mut jobs: mpsc::UnboundedReceiver<RouteJob>) {
    let routes = match KernelRoutes::new() {
        Ok(r) => Some(r),
        Err(e) => {
            error!("kernel routes unavailable (kernel_routes links will not get routes): {e}");
            None
        }
    };
    while let Some(job) = jobs.recv().await {
        let Some(routes) = routes.as_ref() else {
            if let RouteJob::Flush(done) = job {
                let _ = done.send(());
            }
            continue;
        };
        match job {
            RouteJob::Install {
                prefix,
                ifindex,
                gateway,
                metric,
                table,
            } => {
                match routes.install(prefix, ifindex, gateway, metric, table).await {
                    Ok(()) => info!("kernel route {prefix} via ifindex {ifindex} metric {metric} table {table} installed"),
                    Err(e) => error!("cannot install the kernel route for {prefix}: {e}"),
                }
            }
            RouteJob::Remove {
                prefix,
                metric,
                table,
            } => match routes.remove(prefix, metric, table).await {
                Ok(()) => info!("kernel route {prefix} metric {metric} table {table} removed"),
                Err(e) => error!("cannot remove the kernel route for {prefix}: {e}"),
            },
            RouteJob::Sweep { keep } => match routes.list_ours(None).await {
                Ok(ours) => {
                    for r in ours {
                        if !keep.contains(&(r.prefix, r.metric, r.table)) {
                            match routes.remove(r.prefix, r.metric, r.table).await {
                                Ok(()) => info!(
                                    "removed leftover kernel route {} (table {})",
                                    r.prefix, r.table
                                ),
                                Err(e) => {
                                    warn!("cannot remove leftover kernel route {}: {e}", r.prefix)
                                }
                            }
                        }
                    }
                }
                Err(e) => warn!("cannot list the agent's kernel routes: {e}"),
            },
            RouteJob::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl ActionSink for Dataplane {
    fn execute(&mut self, action: &Action, requested_by: Option<&str>) {
        match action {
            Action::Steer {
                group,
                target,
                segments,
            } => self.steer(*group, target, segments),
            Action::Unsteer { group, segments } => self.unsteer(*group, segments),
            Action::LinkUp { link } => {
                if let Some(d) = self.drivers.as_ref() {
                    d.up(*link, requested_by.unwrap_or(""));
                }
            }
            Action::LinkDown { link } => {
                if let Some(d) = self.drivers.as_ref() {
                    d.down(*link);
                }
            }
            other => debug!("dataplane ignores {other:?}"),
        }
    }

    fn adoptable(&self) -> Vec<(GroupId, u32)> {
        self.adoptable.clone()
    }

    fn take_next_hop_reports(&mut self) -> Option<mpsc::UnboundedReceiver<NextHopState>> {
        self.next_hop_reports.take()
    }

    fn next_hop_changed(&mut self, state: NextHopState) {
        self.apply_next_hop(state);
    }

    fn after_sync(&mut self) {
        // Kernel routes a previous agent left that nothing steers now. Only
        // where a link installs them: the sweep dumps the routing table.
        if !self.links.iter().any(|l| l.kernel_routes) {
            return;
        }
        let keep = self
            .kernel_routes
            .iter()
            .map(|(p, (m, t))| (*p, *m, *t))
            .collect();
        let _ = self.route_jobs.send(RouteJob::Sweep { keep });
    }

    fn status(&self) -> Option<serde_json::Value> {
        let fp = self.fastpath.as_ref()?;
        let groups = self
            .group_names
            .iter()
            .enumerate()
            .map(|(g, name)| GroupCounters {
                name,
                stats: fp.group_stats(g as u32).unwrap_or_default().into(),
            })
            .collect();
        let drivers = match self.drivers.as_ref() {
            Some(d) => self
                .links
                .iter()
                .enumerate()
                .map(|(i, l)| DriverReport {
                    link: &l.name,
                    driver: d.state(i),
                })
                .collect(),
            None => Vec::new(),
        };
        let mut kernel_routes: Vec<String> =
            self.kernel_routes.keys().map(|p| p.to_string()).collect();
        kernel_routes.sort();
        let report = DataplaneReport {
            pin_path: fp.pin_path().display().to_string(),
            attachments: fp.attachments(),
            groups,
            drivers,
            kernel_routes,
        };
        serde_json::to_value(report).ok()
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let keep = self.keep;
            if !keep {
                let installed: Vec<(IpNet, (u32, u32))> = self.kernel_routes.drain().collect();
                for (prefix, (metric, table)) in installed {
                    let _ = self.route_jobs.send(RouteJob::Remove {
                        prefix,
                        metric,
                        table,
                    });
                }
            }
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let _ = self.route_jobs.send(RouteJob::Flush(done_tx));
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx).await;
            if let Some(drivers) = self.drivers.take() {
                drivers.shutdown(keep).await;
            }
            if let Some(fp) = self.fastpath.take() {
                match fp.close(keep) {
                    Ok(()) if keep => {
                        info!("fast path left attached with its maps pinned (--keep-fastpath)")
                    }
                    Ok(()) => info!("fast path detached, pins removed"),
                    Err(e) => error!("stopping the fast path: {e:#}"),
                }
            }
        })
    }
}
