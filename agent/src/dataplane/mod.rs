//! The production `ActionSink`: carries the engine's actions out on the fast
//! path (segment map entries), the link drivers and the kernel routes.
//!
//! - Start-up: loads and attaches the programs (reusing pinned maps and kept
//!   attachments), reconciles the segment maps with the config (`segments`)
//!   and offers the still-steered groups to the engine for adoption
//!   (`Event::AdoptSteering`).
//! - `Steer`/`Unsteer`: rewrite the group's entries (one map update each, so
//!   steering starts and stops at once); `kernel_routes` links also get a
//!   route per segment, in order, on a background task (`route_jobs`).
//! - Next-hop MACs: while a group is steered to an Ethernet backup with a
//!   gateway, the entries also carry the gateway's MAC, the backup's MAC and
//!   MTU (`FLAG_MACS_VALID`), so XDP needs no `bpf_fib_lookup` per packet
//!   (`next_hops`, fed by `neighbours`). A neighbour that is deleted or fails
//!   clears the flag: XDP falls back to the fib lookup and TC to
//!   `bpf_redirect_neigh`, which resolves it again, and the new entry is
//!   cached once the kernel reports it.
//! - Ethernet backups that cannot take native XDP redirects (xdp-features,
//!   transmit counters: `xdp_check`) get `FLAG_TC_ONLY` in their entries:
//!   XDP passes those packets on and TC steers them.
//! - `LinkUp`/`LinkDown`: queued to the link drivers (never blocks); their
//!   failures come back to the engine as `Event::LinkFailed` (with the
//!   attempt id of the `LinkUp`), each finished `down` as `Event::LinkReleased`.
//! - Both background reports (neighbours, drivers) arrive through
//!   `ActionSink::next_event`, which the daemon awaits on the engine's task:
//!   next-hop changes are applied there, ordered with `Steer`/`Unsteer`
//!   without locks, and only driver reports reach the engine.
//! - Stop: by default detach the programs, remove the pins, the kernel routes
//!   and take the links down; with `--keep-fastpath` leave all of it in place
//!   for the next agent to adopt.

pub mod kernel_routes;
pub mod neighbours;
mod next_hops;
mod reload;
mod route_jobs;
mod segments;
pub mod xdp_check;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use futures::future::BoxFuture;
use ipnet::IpNet;
use routebackup_common::{SegmentValue, ACTION_STEER, FLAG_TC_ONLY};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::config::{Config, LinkConfig};
use crate::error::Report;
use crate::fastpath::{Attachment, Fastpath, FastpathError, FastpathOptions, Via, XdpAttach};
use crate::kernel::{Feature, Kernel};
use crate::links::{DriverEvent, DriverState, LinkDrivers};
use crate::model::{Action, Event, GroupId, SteerTarget};
use crate::probe::Prober;
use crate::sink::{ActionSink, SinkError};
use crate::status::{
    AttachmentReport, DataplaneStatus, DriverReport, DriverStatus, GroupCounters, Via as ViaReport,
    XdpReport,
};
use next_hops::{NextHops, Steering};
use route_jobs::RouteQueue;
use segments::pass_value;
use xdp_check::XdpCheck;

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot start the fast path")]
    Fastpath(#[source] Box<FastpathError>),
    #[error(
        "cannot read the pinned segment maps under {} (a previous agent's; remove that directory to start with fresh maps)",
        pin_path.display()
    )]
    ReadSegments {
        pin_path: PathBuf,
        #[source]
        source: Box<FastpathError>,
    },
    #[error("cannot update the fast-path entry for {prefix}")]
    WriteSegment {
        prefix: IpNet,
        #[source]
        source: Box<FastpathError>,
    },
}

impl From<DataplaneError> for SinkError {
    fn from(e: DataplaneError) -> SinkError {
        SinkError(Box::new(e))
    }
}

pub struct Dataplane {
    fastpath: Option<Fastpath>,
    drivers: Option<LinkDrivers>,
    driver_reports: mpsc::UnboundedReceiver<DriverEvent>,
    links: Vec<LinkConfig>,
    group_names: Vec<String>,
    /// The first watched table: where `kernel_routes` go.
    route_table: u32,
    routes: RouteQueue,
    /// Steered entries found at start-up: (group, ifindex).
    adoptable: Vec<(GroupId, u32)>,
    keep: bool,
    steering: Steering,
    next_hops: NextHops,
    /// What each segment's entry holds, as last written or read: a write
    /// that would change nothing is skipped (a reload, a re-sent `Steer`).
    written: HashMap<IpNet, SegmentValue>,
    /// Set by `prepare_reload`, carried out by `finish_reload`.
    reload: reload::Pending,
    /// Which Ethernet backups XDP must leave to TC.
    xdp: XdpCheck,
    /// Echo probes of the primary paths (`Action::Probe`).
    prober: Prober,
    /// What the kernel can do (for `status`).
    kernel: Kernel,
}

impl Dataplane {
    /// Opens the fast path and starts the drivers. Must run inside the tokio
    /// runtime. `keep`: leave everything in place at stop (`--keep-fastpath`).
    pub fn open(config: &Config, keep: bool, kernel: &Kernel) -> Result<Dataplane, DataplaneError> {
        let mut fastpath = Fastpath::open(&FastpathOptions {
            pin_path: config.agent.pin_path.clone(),
            interfaces: config.fastpath.interfaces.clone(),
            mode: config.fastpath.mode,
            kernel: kernel.clone(),
        })
        .map_err(|e| DataplaneError::Fastpath(Box::new(e)))?;
        for a in fastpath.attachments() {
            info!(
                "fast path on {} (ifindex {}): xdp {:?}{}, tc {}{}{}",
                a.interface,
                a.ifindex,
                a.xdp,
                a.xdp_mechanism
                    .map(|m| format!(" ({})", m.name()))
                    .unwrap_or_default(),
                if a.tc { "attached" } else { "not attached" },
                a.tc_mechanism
                    .map(|m| format!(" ({})", m.name()))
                    .unwrap_or_default(),
                if a.adopted {
                    ", adopted from the previous agent"
                } else {
                    ""
                }
            );
        }
        let adoptable = segments::reconcile(&mut fastpath, config)?;
        if !adoptable.is_empty() {
            info!(
                "pinned maps still steer {} group(s); offering them for adoption",
                adoptable.len()
            );
        }
        let written = fastpath
            .segments()
            .map_err(|e| DataplaneError::ReadSegments {
                pin_path: config.agent.pin_path.clone(),
                source: Box::new(e),
            })?
            .into_iter()
            .collect();
        let (report_tx, driver_reports) = mpsc::unbounded_channel();
        let native = fastpath
            .attachments()
            .iter()
            .any(|a| a.xdp == XdpAttach::Native);
        Ok(Dataplane {
            fastpath: Some(fastpath),
            drivers: Some(LinkDrivers::new(&config.links, report_tx)),
            driver_reports,
            links: config.links.clone(),
            group_names: config.groups.iter().map(|g| g.name.clone()).collect(),
            route_table: config
                .agent
                .tables
                .first()
                .copied()
                .unwrap_or(crate::config::RT_TABLE_MAIN),
            routes: RouteQueue::start(),
            adoptable,
            keep,
            steering: Steering::new(),
            next_hops: NextHops::start(),
            written,
            reload: reload::Pending::default(),
            xdp: XdpCheck::new(native, kernel.has(Feature::XdpFeatures)),
            kernel: kernel.clone(),
            prober: Prober::new(),
        })
    }

    fn write(&mut self, prefix: IpNet, mut value: SegmentValue) {
        if value.action == ACTION_STEER && self.xdp.tc_only(value.backup_ifindex) {
            value.flags |= FLAG_TC_ONLY;
        }
        if self.written.get(&prefix) == Some(&value) {
            return;
        }
        if let Some(fp) = self.fastpath.as_mut() {
            match fp.set_segment(prefix, value) {
                Ok(()) => {
                    self.written.insert(prefix, value);
                }
                Err(e) => error!(
                    "cannot write the fast-path entry for {prefix}: {}",
                    Report(&e)
                ),
            }
        }
    }

    fn steer(&mut self, group: GroupId, to: &SteerTarget, segments: &[IpNet]) {
        let (link, ifname) = self.link_names(to.link);
        let verdict_changed = self.xdp.admit(to.ifindex, to.l3, &link, &ifname);
        for prefix in segments {
            let entry = self.next_hops.entry(group, to, prefix);
            self.write(*prefix, entry.value);
            let Some(cfg) = self.links.get(to.link).filter(|l| l.kernel_routes) else {
                continue;
            };
            // A kernel route needs a gateway of the segment's own family.
            let gateway = if to.l3 {
                None
            } else {
                entry
                    .gateway
                    .filter(|g| g.is_ipv4() == matches!(prefix, IpNet::V4(_)))
            };
            self.routes.install(
                *prefix,
                to.ifindex,
                gateway,
                cfg.route_metric,
                self.route_table,
            );
        }
        // Segments steered to the same target are added to the group's
        // (a reload steers a segment added to a steered group alone).
        match self.steering.get_mut(&group) {
            Some((t, segs)) if t == to => {
                segs.extend(
                    segments
                        .iter()
                        .filter(|p| !segs.contains(p))
                        .collect::<Vec<_>>(),
                );
            }
            _ => {
                self.steering.insert(group, (*to, segments.to_vec()));
            }
        }
        self.next_hops.follow(&self.steering);
        if verdict_changed {
            self.rewrite_backup(to.ifindex);
        }
    }

    /// The `[[link]]`'s name and interface.
    fn link_names(&self, link: usize) -> (String, String) {
        self.links
            .get(link)
            .map(|l| (l.name.clone(), l.interface.clone()))
            .unwrap_or_default()
    }

    /// Rewrites the entries of every group steered to `ifindex` (its
    /// TC-only verdict changed).
    fn rewrite_backup(&mut self, ifindex: u32) {
        let entries: Vec<(IpNet, SegmentValue)> = self
            .steering
            .iter()
            .filter(|(_, (to, _))| to.ifindex == ifindex)
            .flat_map(|(g, (to, segs))| {
                segs.iter()
                    .map(|p| (*p, self.next_hops.entry(*g, to, p).value))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (prefix, value) in entries {
            self.write(prefix, value);
        }
    }

    /// The periodic check of the steered backups (`xdp_check`).
    fn check_backups(&mut self) {
        let fastpath = self.fastpath.as_ref();
        let links = &self.links;
        let changed = self.xdp.check(
            &self.steering,
            |g| {
                fastpath
                    .and_then(|fp| fp.group_stats(segments::map_group_id(g)).ok())
                    .map(|s| s.steered_packets)
            },
            |l| {
                links
                    .get(l)
                    .map(|l| (l.name.clone(), l.interface.clone()))
                    .unwrap_or_default()
            },
        );
        for ifindex in changed {
            self.rewrite_backup(ifindex);
        }
    }

    fn unsteer(&mut self, group: GroupId, segments: &[IpNet]) {
        if let Some((_, segs)) = self.steering.get_mut(&group) {
            segs.retain(|p| !segments.contains(p));
            if segs.is_empty() {
                self.steering.remove(&group);
            }
            self.next_hops.follow(&self.steering);
        }
        for prefix in segments {
            self.write(*prefix, pass_value(group));
            self.routes.remove(*prefix);
        }
    }
}

impl Dataplane {
    /// Pre-arms segments (`Action::Prearm`): a kernel route each via the
    /// target, through its gateway of the segment's family on Ethernet (the
    /// engine pre-arms no segment without one).
    fn prearm(&mut self, to: &SteerTarget, routes: &[(IpNet, u32)]) {
        for (prefix, metric) in routes {
            let gateway = match prefix {
                _ if to.l3 => None,
                IpNet::V4(_) => to.gateway_v4.map(IpAddr::V4),
                IpNet::V6(_) => to.gateway_v6.map(IpAddr::V6),
            };
            self.routes
                .arm(*prefix, to.ifindex, gateway, *metric, self.route_table);
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
            Action::Prearm { target, routes, .. } => self.prearm(target, routes),
            Action::Disarm { segments, .. } => {
                for prefix in segments {
                    self.routes.disarm(*prefix);
                }
            }
            Action::LinkUp { link, attempt } => {
                if let Some(d) = self.drivers.as_ref() {
                    d.up(*link, *attempt, requested_by.unwrap_or(""));
                }
            }
            Action::LinkDown { link } => {
                if let Some(d) = self.drivers.as_ref() {
                    d.down(*link);
                }
            }
            Action::Probe {
                group,
                target,
                ifindex,
                seq,
                timeout,
                ..
            } => self.prober.send(*group, *target, *ifindex, *seq, *timeout),
            other => debug!("dataplane ignores {other:?}"),
        }
    }

    fn next_event(&mut self) -> BoxFuture<'_, Event> {
        Box::pin(async move {
            loop {
                tokio::select! {
                    state = self.next_hops.next_report() => {
                        for (prefix, value) in self.next_hops.apply(state, &self.steering) {
                            self.write(prefix, value);
                        }
                    }
                    () = self.xdp.tick(), if !self.steering.is_empty() => self.check_backups(),
                    ev = self.prober.next_result() => return ev,
                    // Closed only once the drivers are shut down.
                    Some(report) = self.driver_reports.recv() => match report {
                        DriverEvent::Failed { link, attempt, error } => {
                            return Event::LinkFailed { link, attempt, error }
                        }
                        DriverEvent::Released { link } => return Event::LinkReleased { link },
                    },
                }
            }
        })
    }

    fn adoptable(&self) -> Vec<(GroupId, u32)> {
        self.adoptable.clone()
    }

    fn prepare_reload(&mut self, config: &Config) {
        Dataplane::prepare_reload(self, config);
    }

    fn finish_reload(&mut self, config: &Config) {
        Dataplane::finish_reload(self, config);
    }

    fn after_sync(&mut self) {
        // Kernel routes a previous agent left that nothing steers or
        // pre-arms now. Only where a link installs them: the sweep dumps the
        // routing table.
        if self.links.iter().any(|l| l.kernel_routes || l.prearm) {
            self.routes.sweep_others();
        }
    }

    fn status(&self) -> Option<DataplaneStatus> {
        let fp = self.fastpath.as_ref()?;
        let groups = self
            .group_names
            .iter()
            .enumerate()
            .filter(|(_, name)| !name.is_empty())
            .map(|(g, name)| GroupCounters {
                name: name.clone(),
                stats: fp
                    .group_stats(segments::map_group_id(g))
                    .unwrap_or_default(),
            })
            .collect();
        let drivers = match self.drivers.as_ref() {
            Some(d) => self
                .links
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.name.is_empty())
                .map(|(i, l)| DriverStatus {
                    link: l.name.clone(),
                    driver: driver_report(d.state(i)),
                })
                .collect(),
            None => Vec::new(),
        };
        let (tc_fallbacks, tc_fallbacks_total) = self.xdp.status();
        Some(DataplaneStatus {
            tc_fallbacks,
            tc_fallbacks_total,
            pin_path: fp.pin_path().to_path_buf(),
            attachments: fp.attachments().iter().map(attachment_report).collect(),
            groups,
            drivers,
            kernel_routes: self.routes.installed(),
            prearmed: self.routes.armed(),
            kernel: Some(self.kernel.clone()),
        })
    }

    fn shutdown(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let keep = self.keep;
            self.routes.finish(keep).await;
            if let Some(drivers) = self.drivers.take() {
                drivers.shutdown(keep).await;
            }
            if let Some(fp) = self.fastpath.take() {
                match fp.close(keep) {
                    Ok(()) if keep => {
                        info!("fast path left attached with its maps pinned (--keep-fastpath)");
                    }
                    Ok(()) => info!("fast path detached, pins removed"),
                    Err(e) => error!("stopping the fast path: {}", Report(&e)),
                }
            }
        })
    }
}

fn driver_report(s: DriverState) -> DriverReport {
    match s {
        DriverState::Idle => DriverReport::Idle,
        DriverState::Up => DriverReport::Up,
        DriverState::Running { pid } => DriverReport::Running { pid },
        DriverState::Stopping => DriverReport::Stopping,
    }
}

fn attachment_report(a: &Attachment) -> AttachmentReport {
    AttachmentReport {
        interface: a.interface.clone(),
        ifindex: a.ifindex,
        xdp: match a.xdp {
            XdpAttach::Native => XdpReport::Native,
            XdpAttach::Generic => XdpReport::Generic,
            XdpAttach::None => XdpReport::None,
        },
        tc: a.tc,
        adopted: a.adopted,
        xdp_mechanism: a.xdp_mechanism.map(via_report),
        tc_mechanism: a.tc_mechanism.map(via_report),
    }
}

fn via_report(v: Via) -> ViaReport {
    match v {
        Via::BpfLink => ViaReport::BpfLink,
        Via::Tcx => ViaReport::Tcx,
        Via::Netlink => ViaReport::Netlink,
    }
}
