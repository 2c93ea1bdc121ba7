//! The fast path's executor: the segment map entries.
//!
//! - `Steer`/`Unsteer`: rewrite the group's entries (one map update each, so
//!   steering starts and stops at once). A write that would change nothing
//!   is skipped (a reload, a re-sent `Steer`).
//! - Next-hop MACs: while a group is steered to an Ethernet backup with a
//!   gateway, the entries also carry the gateway's MAC, the backup's MAC and
//!   MTU (`FLAG_MACS_VALID`), so XDP needs no `bpf_fib_lookup` per packet
//!   (`next_hops`, fed with the neighbour executor's reports by the
//!   composite, on the engine's task). A neighbour that is deleted or fails
//!   clears the flag: XDP falls back to the fib lookup and TC to
//!   `bpf_redirect_neigh`, which resolves it again, and the new entry is
//!   cached once the kernel reports it.
//! - Ethernet backups that cannot take native XDP redirects (xdp-features,
//!   transmit counters: `xdp_check`) get `FLAG_TC_ONLY` in their entries:
//!   XDP passes those packets on and TC steers them. The check runs every
//!   second while anything is steered, on this executor's own stream, which
//!   reports nothing to the engine.

use std::collections::HashMap;

use ipnet::IpNet;
use routebackup_common::{SegmentValue, ACTION_STEER, FLAG_TC_ONLY};
use tracing::{error, info};

mod reload;

use super::neighbours::NextHopState;
use super::next_hops::NextHops;
use super::segments::{self, pass_value};
use super::steering::{self, FollowsSteering, Steering};
use super::xdp_check::XdpCheck;
use super::{DataplaneError, Executor};
use crate::config::{Config, LinkConfig};
use crate::error::Report;
use crate::fastpath::{Attachment, Fastpath, FastpathOptions, Via, XdpAttach};
use crate::ids::Slots;
use crate::kernel::{Feature, Kernel};
use crate::model::{Action, GroupId, LinkId, SteerTarget};
use crate::status::{
    AttachmentReport, DataplaneStatus, GroupCounters, Via as ViaReport, XdpReport,
};

pub(super) struct Entries {
    fastpath: Fastpath,
    /// The `[[link]]`s, for the names in the TC-only verdicts' lines.
    links: Slots<LinkId, LinkConfig>,
    group_names: Slots<GroupId, String>,
    /// Steered entries found at start-up: (group, ifindex).
    adoptable: Vec<(GroupId, u32)>,
    steering: Steering,
    next_hops: NextHops,
    /// What each segment's entry holds, as last written or read: a write
    /// that would change nothing is skipped (a reload, a re-sent `Steer`).
    written: HashMap<IpNet, SegmentValue>,
    /// Set by `prepare_reload`, carried out by `finish_reload`.
    reload: reload::Pending,
    /// Which Ethernet backups XDP must leave to TC.
    xdp: XdpCheck,
    /// What the kernel can do (for `status`).
    kernel: Kernel,
}

impl Entries {
    /// Loads and attaches the programs (reusing pinned maps and kept
    /// attachments) and reconciles the segment maps with the config. Must
    /// run inside the tokio runtime.
    pub fn open(config: &Config, kernel: &Kernel) -> Result<Entries, DataplaneError> {
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
        let native = fastpath
            .attachments()
            .iter()
            .any(|a| a.xdp == XdpAttach::Native);
        Ok(Entries {
            fastpath,
            links: config.links.clone(),
            group_names: config.groups.map(|g| g.name.clone()),
            adoptable,
            steering: Steering::new(),
            next_hops: NextHops::default(),
            written,
            reload: reload::Pending::default(),
            xdp: XdpCheck::new(native, kernel.has(Feature::XdpFeatures)),
            kernel: kernel.clone(),
        })
    }

    /// At start-up: the (group, backup ifindex) pairs the pinned maps still
    /// steer (kept by a previous agent).
    pub fn adoptable(&self) -> Vec<(GroupId, u32)> {
        self.adoptable.clone()
    }

    fn write(&mut self, prefix: IpNet, mut value: SegmentValue) {
        if value.action == ACTION_STEER && self.xdp.tc_only(value.backup_ifindex) {
            value.flags |= FLAG_TC_ONLY;
        }
        if self.written.get(&prefix) == Some(&value) {
            return;
        }
        match self.fastpath.set_segment(prefix, value) {
            Ok(()) => {
                self.written.insert(prefix, value);
            }
            Err(e) => error!(
                "cannot write the fast-path entry for {prefix}: {}",
                Report(&e)
            ),
        }
    }

    /// The `[[link]]`'s name and interface.
    fn link_names(&self, link: LinkId) -> (String, String) {
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
        let fastpath = &self.fastpath;
        let links = &self.links;
        let changed = self.xdp.check(
            &self.steering,
            |g| {
                fastpath
                    .group_stats(segments::map_group_id(g))
                    .ok()
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

    /// Takes in a report of the neighbour executor: rewrites the entries of
    /// the groups steered to that next hop now.
    pub fn next_hop(&mut self, state: NextHopState) {
        for (prefix, value) in self.next_hops.apply(state, &self.steering) {
            self.write(prefix, value);
        }
    }

    /// The fast path's part of `status` (the drivers and kernel routes are
    /// the other executors').
    pub fn status(&self) -> DataplaneStatus {
        let fp = &self.fastpath;
        let groups = self
            .group_names
            .iter()
            .map(|(g, name)| GroupCounters {
                name: name.clone(),
                stats: fp
                    .group_stats(segments::map_group_id(g))
                    .unwrap_or_default(),
            })
            .collect();
        let (tc_fallbacks, tc_fallbacks_total) = self.xdp.status();
        DataplaneStatus {
            tc_fallbacks,
            tc_fallbacks_total,
            pin_path: fp.pin_path().to_path_buf(),
            attachments: fp.attachments().iter().map(attachment_report).collect(),
            groups,
            drivers: Vec::new(),
            kernel_routes: Vec::new(),
            prearmed: Vec::new(),
            kernel: Some(self.kernel.clone()),
        }
    }

    /// At stop: detaches the programs and removes the pins, unless `keep`
    /// (`--keep-fastpath`).
    pub fn close(self, keep: bool) {
        match self.fastpath.close(keep) {
            Ok(()) if keep => {
                info!("fast path left attached with its maps pinned (--keep-fastpath)");
            }
            Ok(()) => info!("fast path detached, pins removed"),
            Err(e) => error!("stopping the fast path: {}", Report(&e)),
        }
    }
}

impl FollowsSteering for Entries {
    fn steer(&mut self, group: GroupId, to: &SteerTarget, segments: &[IpNet]) {
        let (link, ifname) = self.link_names(to.link);
        let verdict_changed = self.xdp.admit(to.ifindex, to.l3, &link, &ifname);
        for prefix in segments {
            let entry = self.next_hops.entry(group, to, prefix);
            self.write(*prefix, entry.value);
        }
        steering::steer(&mut self.steering, group, to, segments);
        self.next_hops.forget_unused(&self.steering);
        if verdict_changed {
            self.rewrite_backup(to.ifindex);
        }
    }

    fn unsteer(&mut self, group: GroupId, segments: &[IpNet]) {
        if steering::unsteer(&mut self.steering, group, segments) {
            self.next_hops.forget_unused(&self.steering);
        }
        for prefix in segments {
            self.write(*prefix, pass_value(group));
        }
    }
}

impl Executor for Entries {
    /// The periodic check of the steered backups ran (nothing for the engine).
    type Event = ();

    fn execute(&mut self, action: &Action, _requested_by: Option<&str>) {
        steering::dispatch(self, action);
    }

    async fn next_event(&mut self) {
        if self.steering.is_empty() {
            std::future::pending::<()>().await;
        }
        self.xdp.tick().await;
        self.check_backups();
    }

    fn prepare_reload(&mut self, config: &Config) {
        Entries::prepare_reload(self, config);
    }

    fn finish_reload(&mut self, config: &Config) {
        Entries::finish_reload(self, config);
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
