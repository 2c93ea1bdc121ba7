//! The rtnetlink watcher: the kernel's routes, nexthop objects, links and
//! addresses as `model::Event`s.
//!
//! Start-up: subscribe to the multicast groups first (links, IPv4/IPv6
//! addresses and routes, nexthops), then dump links, addresses, nexthops and
//! IPv4/IPv6 routes of every table on a second socket, then apply the events
//! that queued on the first socket meanwhile, then send `Event::Synced`. A
//! change between dump and subscription therefore cannot be lost.
//!
//! Routes are filtered before they are decoded (see `filter`): only routes in
//! watched tables whose prefix can match a monitored segment cost more than a
//! header scan. A netlink overrun (ENOBUFS) or the periodic `resync_interval`
//! triggers a re-dump that is diffed against the current view (see
//! `view::KernelView::reconcile`), so a lost event delays but never corrupts
//! the engine's picture.
//!
//! The watcher runs on its own OS thread with blocking sockets (a 1M-route
//! dump is CPU work that should not stall the daemon's runtime) and hands
//! events to the daemon over a bounded tokio channel.

pub mod filter;
pub mod routes;
pub mod view;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_sys::Socket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use filter::SegmentFilter;
use routes::RouteVerdict;
pub use view::KernelView;

use crate::config::Config;
use crate::error::Report;
use crate::kernel::{Feature, Kernel};
use crate::model::Event;
use crate::netlink::codec::{
    self as nl, RawMsg, AF_INET, AF_INET6, IFADDRMSG_LEN, IFINFOMSG_LEN, NHMSG_LEN, RTMSG_LEN,
};
use crate::netlink::socket::{self, Received, RecvBatch, BATCH, DUMP_BUF};
use crate::netlink::{decode, NetlinkError};

/// Receive buffer asked for on the event socket (SO_RCVBUFFORCE as root).
const EVENT_RCVBUF: usize = 32 << 20;

/// Why the watcher could not start or dump the kernel's state.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("cannot start the watcher thread")]
    Thread(#[source] io::Error),
    #[error("the kernel's routing state kept changing during {attempts} dumps in a row; the next resync tries again")]
    KeptChanging { attempts: u32 },
}

/// What the watcher watches.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    pub filter: SegmentFilter,
    /// Re-dump and reconcile this often (zero: only after overruns).
    pub resync_interval: Duration,
    /// The kernel has nexthop objects (the probe's answer): only then are
    /// they subscribed to and dumped.
    pub nexthops: bool,
}

impl WatcherConfig {
    pub fn from_config(config: &Config, kernel: &Kernel) -> WatcherConfig {
        WatcherConfig {
            filter: SegmentFilter::from_config(config),
            resync_interval: config.agent.resync_interval,
            nexthops: kernel.has(Feature::NexthopObjects),
        }
    }
}

/// Counters the daemon reports (status, the initial-sync log line).
#[derive(Debug, Default)]
pub struct WatcherStats {
    /// Route messages looked at (dumps and events).
    pub routes_seen: AtomicU64,
    /// Route messages that passed the filter.
    pub routes_relevant: AtomicU64,
    /// Routes in the current view.
    pub routes_watched: AtomicU64,
    /// Route messages in the initial dump.
    pub initial_routes: AtomicU64,
    /// Milliseconds the initial dump took (subscribe to Synced).
    pub initial_sync_ms: AtomicU64,
    pub synced: AtomicBool,
    pub overruns: AtomicU64,
    pub resyncs: AtomicU64,
    /// Differences a periodic re-dump found between the incremental view and
    /// the kernel (each logged at WARN, then corrected). Should stay 0.
    pub view_divergences: AtomicU64,
}

/// A running watcher thread.
pub struct Watcher {
    pub stats: Arc<WatcherStats>,
    thread: Option<std::thread::JoinHandle<()>>,
    reconfigure: std::sync::mpsc::Sender<WatcherConfig>,
}

impl Watcher {
    /// Subscribes (so socket errors surface to the caller, not on the thread)
    /// and starts the watcher thread, which dumps, sends the events, then
    /// `Event::Synced`, and follows the kernel until `tx` is closed.
    pub fn spawn(config: WatcherConfig, tx: mpsc::Sender<Event>) -> Result<Watcher, WatcherError> {
        let events = subscribe(config.nexthops)?;
        let stats = Arc::new(WatcherStats::default());
        let st = stats.clone();
        let (reconfigure, reconfigured) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rb-watcher".into())
            .spawn(move || {
                let mut w = Worker {
                    batch: RecvBatch::new(),
                    config,
                    tx,
                    stats: st,
                    events,
                    view: KernelView::default(),
                    out: Vec::new(),
                    reconfigured,
                };
                w.run();
            })
            .map_err(WatcherError::Thread)?;
        Ok(Watcher {
            stats,
            thread: Some(thread),
            reconfigure,
        })
    }

    /// A reload changed what is watched: the thread switches to `config`
    /// within a second, re-dumps (sending what the new filter shows and
    /// what it no longer shows) and then sends `Event::Synced` again.
    pub fn reconfigure(&self, config: WatcherConfig) {
        // Fails only once the thread ended, which the daemon notices anyway.
        let _ = self.reconfigure.send(config);
    }

    /// Waits for the thread (it ends once the receiver is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens the event socket subscribed to every group the watcher needs.
fn subscribe(nexthops: bool) -> Result<Socket, NetlinkError> {
    let mut s = socket::open("the watcher's events")?;
    if let Err(e) = socket::set_rcvbuf(&s, EVENT_RCVBUF) {
        warn!("cannot enlarge the netlink receive buffer: {}", Report(&e));
    }
    for (group, name) in [
        (nl::RTNLGRP_LINK, "RTNLGRP_LINK"),
        (nl::RTNLGRP_IPV4_IFADDR, "RTNLGRP_IPV4_IFADDR"),
        (nl::RTNLGRP_IPV6_IFADDR, "RTNLGRP_IPV6_IFADDR"),
        (nl::RTNLGRP_IPV4_ROUTE, "RTNLGRP_IPV4_ROUTE"),
        (nl::RTNLGRP_IPV6_ROUTE, "RTNLGRP_IPV6_ROUTE"),
    ] {
        socket::join(&mut s, group, name)?;
    }
    if !nexthops {
        // Nothing to follow: such kernels put next hops in the routes.
    } else if let Err(e) = socket::join(&mut s, nl::RTNLGRP_NEXTHOP, "RTNLGRP_NEXTHOP") {
        warn!(
            "{}; routes using nexthop objects (FRR 8+) are seen only at resync",
            Report(&e)
        );
    }
    socket::set_non_blocking(&mut s)?;
    Ok(s)
}

/// Applies one netlink message to `view`, appending the resulting events.
/// Returns false for NLMSG_OVERRUN.
pub fn apply_message(
    view: &mut KernelView,
    filter: &SegmentFilter,
    stats: &WatcherStats,
    msg: &RawMsg<'_>,
    out: &mut Vec<Event>,
) -> bool {
    match msg.kind {
        nl::RTM_NEWROUTE | nl::RTM_DELROUTE => {
            stats.routes_seen.fetch_add(1, Ordering::Relaxed);
            match routes::route(msg, filter) {
                RouteVerdict::Filtered => {}
                RouteVerdict::Relevant(change) => {
                    stats.routes_relevant.fetch_add(1, Ordering::Relaxed);
                    view.apply_route(change, out);
                }
                RouteVerdict::Malformed(e) => warn!("ignoring a {}", Report(&e)),
            }
        }
        nl::RTM_NEWNEXTHOP | nl::RTM_DELNEXTHOP => match decode::nexthop(msg) {
            Ok(nh) if msg.kind == nl::RTM_NEWNEXTHOP => view.nexthop_upsert(nh, out),
            Ok(nh) => view.nexthop_delete(nh.id, out),
            Err(e) => warn!("ignoring a {}", Report(&e)),
        },
        nl::RTM_NEWLINK | nl::RTM_DELLINK => match decode::link(msg) {
            Ok(Some(l)) if msg.kind == nl::RTM_NEWLINK => view.link_upsert(l, out),
            Ok(Some(l)) => view.link_delete(l.ifindex, out),
            Ok(None) => {}
            Err(e) => warn!("ignoring a {}", Report(&e)),
        },
        nl::RTM_NEWADDR | nl::RTM_DELADDR => match decode::address(msg) {
            Ok(Some(a)) if msg.kind == nl::RTM_NEWADDR => view.address_add(a, out),
            Ok(Some(a)) => view.address_delete(a, out),
            Ok(None) => {}
            Err(e) => warn!("ignoring a {}", Report(&e)),
        },
        nl::NLMSG_OVERRUN => return false,
        _ => {}
    }
    true
}

#[derive(Debug)]
enum DumpError {
    Netlink(NetlinkError),
    /// NLM_F_DUMP_INTR: the tables changed during the dump.
    Interrupted,
}

impl From<NetlinkError> for DumpError {
    fn from(e: NetlinkError) -> Self {
        DumpError::Netlink(e)
    }
}

/// Dump attempts before giving up until the next resync.
const DUMP_ATTEMPTS: u32 = 5;

/// Dumps links, addresses, nexthops and routes into a fresh view.
pub fn dump_all(
    filter: &SegmentFilter,
    stats: &WatcherStats,
    nexthops: bool,
) -> Result<KernelView, WatcherError> {
    let mut last = None;
    for attempt in 0..DUMP_ATTEMPTS {
        match dump_once(filter, stats, nexthops) {
            Ok(v) => return Ok(v),
            Err(DumpError::Interrupted) => {
                debug!(
                    "netlink dump interrupted by a concurrent change (attempt {}), retrying",
                    attempt + 1
                );
                last = None;
            }
            Err(DumpError::Netlink(e)) => {
                warn!("netlink dump failed: {}; retrying", Report(&e));
                last = Some(e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Err(match last {
        Some(e) => WatcherError::Netlink(e),
        None => WatcherError::KeptChanging {
            attempts: DUMP_ATTEMPTS,
        },
    })
}

fn dump_once(
    filter: &SegmentFilter,
    stats: &WatcherStats,
    nexthops: bool,
) -> Result<KernelView, DumpError> {
    let s = socket::open("the watcher's dumps")?;
    let mut view = KernelView::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; DUMP_BUF];
    let ifinfomsg = [0u8; IFINFOMSG_LEN];
    let ifaddrmsg = [0u8; IFADDRMSG_LEN];
    let nhmsg = [0u8; NHMSG_LEN];
    let mut rtmsg4 = [0u8; RTMSG_LEN];
    rtmsg4[0] = AF_INET;
    let mut rtmsg6 = [0u8; RTMSG_LEN];
    rtmsg6[0] = AF_INET6;
    let requests: [(u16, &[u8], &str); 5] = [
        (nl::RTM_GETLINK, &ifinfomsg, "the link dump"),
        (nl::RTM_GETADDR, &ifaddrmsg, "the address dump"),
        (nl::RTM_GETNEXTHOP, &nhmsg, "the nexthop object dump"),
        (nl::RTM_GETROUTE, &rtmsg4, "the IPv4 route dump"),
        (nl::RTM_GETROUTE, &rtmsg6, "the IPv6 route dump"),
    ];
    for ((kind, body, what), seq) in requests.into_iter().zip(1u32..) {
        if kind == nl::RTM_GETNEXTHOP && !nexthops {
            continue;
        }
        let dumped = socket::dump(&s, &mut buf, what, kind, seq, body, |msg| {
            apply_message(&mut view, filter, stats, msg, &mut out);
            out.clear();
        });
        let interrupted = match dumped {
            Ok(interrupted) => interrupted,
            Err(e @ NetlinkError::Refused { .. }) if kind == nl::RTM_GETNEXTHOP => {
                debug!(
                    "no nexthop object dump ({}): kernel without nexthop objects",
                    Report(&e)
                );
                false
            }
            Err(e) => return Err(e.into()),
        };
        if interrupted {
            return Err(DumpError::Interrupted);
        }
    }
    Ok(view)
}

/// Pause after handling a wakeup, so bursts are read in batches.
const COALESCE: Duration = Duration::from_millis(5);
struct Worker {
    batch: RecvBatch,
    config: WatcherConfig,
    tx: mpsc::Sender<Event>,
    stats: Arc<WatcherStats>,
    events: Socket,
    view: KernelView,
    out: Vec<Event>,
    reconfigured: std::sync::mpsc::Receiver<WatcherConfig>,
}

/// How a drain of the event socket ended.
enum Drained {
    /// The queue is empty (or nearly: the last read was not a full batch).
    Empty,
    /// The kernel dropped messages: the view cannot be trusted until a re-dump.
    Overrun,
    /// The daemon is gone.
    Gone,
}

/// Periodic re-dumps tried before one that raced with events is taken
/// unchecked, or one that differs from the view is counted as diverging.
const CHECK_ATTEMPTS: u32 = 3;

/// Pause before re-dumping when a re-dump differed from the view.
const CONFIRM_DELAY: Duration = Duration::from_millis(100);

/// Longest a flush of a stale queue may take before the re-dump goes ahead.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

impl Worker {
    fn run(&mut self) {
        let start = Instant::now();
        if !self.resync(false) {
            return;
        }
        let initial = self.stats.routes_seen.load(Ordering::Relaxed);
        // Events queued on the subscribed socket during the dump.
        if !self.follow() {
            return;
        }
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.stats.initial_routes.store(initial, Ordering::Relaxed);
        self.stats.initial_sync_ms.store(ms, Ordering::Relaxed);
        self.stats.synced.store(true, Ordering::Relaxed);
        if self.tx.blocking_send(Event::Synced).is_err() {
            return;
        }
        let mut next_resync = self.next_resync();
        loop {
            let timeout = match next_resync {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
                None => Duration::from_secs(1),
            };
            let readable = socket::poll_readable(self.events.as_raw_fd(), timeout);
            if self.tx.is_closed() {
                return;
            }
            if readable {
                if !self.follow() {
                    return;
                }
                // Under churn, let events accumulate for a moment so one
                // recvmmsg takes many: a full table changing thousands of
                // times a second then costs ~200 wakeups/s, for at most
                // COALESCE of extra latency.
                std::thread::sleep(COALESCE);
            }
            if let Ok(config) = self.reconfigured.try_recv() {
                info!("reload: re-dumping the kernel's routes with the new segments and tables");
                // Apply what is queued under the old filter first; the re-dump
                // under the new one is no self-check (the watched set changed).
                if !self.follow() {
                    return;
                }
                self.config = config;
                if !self.resync(false) || self.tx.blocking_send(Event::Synced).is_err() {
                    return;
                }
                next_resync = self.next_resync();
            }
            if next_resync.is_some_and(|t| Instant::now() >= t) {
                debug!("periodic resync");
                // Bring the view up to now first, so the comparison with the
                // dump only shows what the event stream got wrong.
                if !self.follow() || !self.resync(true) {
                    return;
                }
                next_resync = self.next_resync();
            }
        }
    }

    fn next_resync(&self) -> Option<Instant> {
        (!self.config.resync_interval.is_zero())
            .then(|| Instant::now() + self.config.resync_interval)
    }

    /// Re-dumps everything and sends the difference to the current view.
    /// With `check` (a periodic re-dump of a view believed correct): when no
    /// event queued up during the dump, the view and the dump describe the
    /// same moment, and what still differs after a second look is a
    /// divergence: logged, counted in `view_divergences`, then corrected like
    /// everything else. A dump that raced with events is retried a few times,
    /// then the queued events are applied to both and the dump taken without
    /// judging.
    /// False when the daemon is gone.
    fn resync(&mut self, check: bool) -> bool {
        let mut attempts = 0;
        loop {
            match dump_all(&self.config.filter, &self.stats, self.config.nexthops) {
                Ok(mut fresh) => {
                    if check {
                        attempts += 1;
                        let quiet = !socket::poll_readable(self.events.as_raw_fd(), Duration::ZERO);
                        if quiet {
                            let found = self.view.divergences(&fresh);
                            if !found.is_empty() && attempts < CHECK_ATTEMPTS {
                                // The kernel can show a change in a dump before
                                // it announces it (an IPv6 address is announced
                                // by the DAD work, even with `nodad`): look
                                // again once such notifications had time to come.
                                debug!(
                                    "the re-dump differs from the view in {} places; looking again",
                                    found.len()
                                );
                                std::thread::sleep(CONFIRM_DELAY);
                                match self.drain(None) {
                                    Drained::Gone => return false,
                                    Drained::Overrun => return self.overrun(),
                                    Drained::Empty => continue,
                                }
                            }
                            self.report_divergences(&found);
                        } else {
                            let also = (attempts >= CHECK_ATTEMPTS).then_some(&mut fresh);
                            match self.drain(also) {
                                Drained::Gone => return false,
                                Drained::Overrun => return self.overrun(),
                                Drained::Empty if attempts < CHECK_ATTEMPTS => continue,
                                Drained::Empty => {
                                    debug!("the periodic re-dump kept racing with changes; taken without a check");
                                }
                            }
                        }
                    }
                    let events = self.view.reconcile(fresh);
                    if self.stats.synced.load(Ordering::Relaxed) {
                        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        if !events.is_empty() {
                            info!(
                                "resync: {} changes the event stream had missed",
                                events.len()
                            );
                        }
                    }
                    self.update_watched();
                    return events.into_iter().all(|e| self.tx.blocking_send(e).is_ok());
                }
                Err(e) => {
                    warn!(
                        "cannot dump the kernel's routing state: {}; retrying in 1 s",
                        Report(&e)
                    );
                    if self.tx.is_closed() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn report_divergences(&self, found: &[String]) {
        if found.is_empty() {
            return;
        }
        self.stats
            .view_divergences
            .fetch_add(found.len() as u64, Ordering::Relaxed);
        warn!(
            "the route view had drifted from the kernel in {} places (corrected now; please report this):\n  {}",
            found.len(),
            found.join("\n  ")
        );
    }

    fn update_watched(&self) {
        self.stats
            .routes_watched
            .store(self.view.routes.len() as u64, Ordering::Relaxed);
    }

    /// Applies every queued event, re-dumping after an overrun. False when
    /// the daemon is gone.
    fn follow(&mut self) -> bool {
        match self.drain(None) {
            Drained::Empty => true,
            Drained::Gone => false,
            Drained::Overrun => self.overrun(),
        }
    }

    /// Reads every queued event into the view (and into `also`, a fresh dump
    /// being brought up to date, without events), sending the view's events.
    /// Stops at the first sign of an overrun, leaving the rest queued.
    fn drain(&mut self, mut also: Option<&mut KernelView>) -> Drained {
        let quiet = WatcherStats::default();
        let mut scratch = Vec::new();
        loop {
            match self.batch.recv(&self.events) {
                Ok(Received::Datagrams(0) | Received::Interrupted) => {}
                Ok(Received::Datagrams(n)) => {
                    for i in 0..n {
                        for msg in nl::messages(self.batch.datagram(i)) {
                            if !apply_message(
                                &mut self.view,
                                &self.config.filter,
                                &self.stats,
                                &msg,
                                &mut self.out,
                            ) {
                                // Whatever follows was queued before the loss.
                                return Drained::Overrun;
                            }
                            if let Some(v) = also.as_deref_mut() {
                                apply_message(v, &self.config.filter, &quiet, &msg, &mut scratch);
                                scratch.clear();
                            }
                        }
                    }
                    for e in self.out.drain(..) {
                        if self.tx.blocking_send(e).is_err() {
                            return Drained::Gone;
                        }
                    }
                    if n < BATCH {
                        // The queue is (almost surely) empty: skip the
                        // EAGAIN round trip.
                        self.update_watched();
                        return Drained::Empty;
                    }
                }
                Ok(Received::Empty) => {
                    self.update_watched();
                    return Drained::Empty;
                }
                Ok(Received::Overrun) => return Drained::Overrun,
                Err(e) => {
                    warn!("{}; resynchronising", Report(&e));
                    return Drained::Overrun;
                }
            }
        }
    }

    /// After an overrun: the messages still queued were sent before some
    /// that were lost, so applying them after the re-dump could bring back a
    /// route the lost ones had removed. They are read and dropped first; the
    /// re-dump then starts from a queue that holds only what follows it.
    fn overrun(&mut self) -> bool {
        self.stats.overruns.fetch_add(1, Ordering::Relaxed);
        warn!("netlink event overrun (the kernel dropped route/link events): re-dumping to resynchronise");
        // What the view already applied goes to the engine: the re-dump is
        // reconciled against the view, so the engine must have seen it.
        let applied: Vec<Event> = self.out.drain(..).collect();
        if !applied
            .into_iter()
            .all(|e| self.tx.blocking_send(e).is_ok())
        {
            return false;
        }
        let dropped = self.flush_queue();
        debug!("dropped {dropped} queued datagrams before the re-dump");
        self.resync(false)
    }

    /// Reads and discards everything queued on the event socket (bounded by
    /// FLUSH_LIMIT under a flood that never lets the queue empty). Returns the
    /// number of datagrams dropped.
    fn flush_queue(&mut self) -> usize {
        let start = Instant::now();
        let mut dropped = 0;
        while start.elapsed() < FLUSH_LIMIT {
            match self.batch.recv(&self.events) {
                Ok(Received::Datagrams(n)) => dropped += n,
                Ok(Received::Overrun | Received::Interrupted) => {}
                Ok(Received::Empty) => return dropped,
                Err(e) => {
                    warn!("{} while dropping the stale event queue", Report(&e));
                    return dropped;
                }
            }
        }
        warn!(
            "the event queue did not empty within {FLUSH_LIMIT:?} ({dropped} datagrams dropped); re-dumping anyway"
        );
        dropped
    }
}

#[cfg(test)]
mod tests;
