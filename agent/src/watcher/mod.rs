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
pub mod parse;
pub mod view;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use filter::SegmentFilter;
use parse::{RawMsg, RouteVerdict};
pub use view::KernelView;

use crate::config::Config;
use crate::model::Event;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_NEXTHOP: u32 = 32;

/// Receive buffer asked for on the event socket (SO_RCVBUFFORCE as root).
const EVENT_RCVBUF: usize = 32 << 20;
/// One datagram: the kernel sends at most 32 KiB per dump chunk.
const RECV_BUF: usize = 64 << 10;

/// What the watcher watches.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    pub filter: SegmentFilter,
    /// Re-dump and reconcile this often (zero: only after overruns).
    pub resync_interval: Duration,
}

impl WatcherConfig {
    pub fn from_config(config: &Config) -> WatcherConfig {
        WatcherConfig {
            filter: SegmentFilter::from_config(config),
            resync_interval: config.agent.resync_interval,
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
}

/// A running watcher thread.
pub struct Watcher {
    pub stats: Arc<WatcherStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Subscribes (so errors such as a missing CAP_NET_ADMIN surface here)
    /// and starts the watcher thread, which dumps, sends the events, then
    /// `Event::Synced`, and follows the kernel until `tx` is closed.
    pub fn spawn(config: WatcherConfig, tx: mpsc::Sender<Event>) -> io::Result<Watcher> {
        let events = subscribe()?;
        let stats = Arc::new(WatcherStats::default());
        let st = stats.clone();
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
                };
                w.run();
            })?;
        Ok(Watcher {
            stats,
            thread: Some(thread),
        })
    }

    /// Waits for the thread (it ends once the receiver is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens the event socket subscribed to every group the watcher needs.
fn subscribe() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    set_rcvbuf(&s, EVENT_RCVBUF);
    for g in [
        RTNLGRP_LINK,
        RTNLGRP_IPV4_IFADDR,
        RTNLGRP_IPV6_IFADDR,
        RTNLGRP_IPV4_ROUTE,
        RTNLGRP_IPV6_ROUTE,
    ] {
        s.add_membership(g)?;
    }
    if let Err(e) = s.add_membership(RTNLGRP_NEXTHOP) {
        warn!("cannot subscribe to nexthop object events ({e}); routes using nexthop objects (FRR 8+) are seen only at resync");
    }
    s.set_non_blocking(true)?;
    Ok(s)
}

fn set_rcvbuf(s: &Socket, size: usize) {
    let v = size as libc::c_int;
    let set = |opt| unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        warn!(
            "cannot enlarge the netlink receive buffer: {}",
            io::Error::last_os_error()
        );
    }
}

fn recv(s: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n > buf.len() {
        // A truncated datagram lost messages: treat like an overrun.
        return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
    }
    Ok(n)
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
        parse::RTM_NEWROUTE | parse::RTM_DELROUTE => {
            stats.routes_seen.fetch_add(1, Ordering::Relaxed);
            match parse::route(msg, filter) {
                RouteVerdict::Filtered => {}
                RouteVerdict::Relevant(change) => {
                    stats.routes_relevant.fetch_add(1, Ordering::Relaxed);
                    view.apply_route(change, out);
                }
                RouteVerdict::Malformed(e) => warn!("ignoring a malformed route message: {e}"),
            }
        }
        parse::RTM_NEWNEXTHOP | parse::RTM_DELNEXTHOP => match parse::nexthop(msg) {
            Ok(nh) if msg.kind == parse::RTM_NEWNEXTHOP => view.nexthop_upsert(nh, out),
            Ok(nh) => view.nexthop_delete(nh.id, out),
            Err(e) => warn!("ignoring a malformed nexthop message: {e}"),
        },
        parse::RTM_NEWLINK | parse::RTM_DELLINK => match parse::link(msg) {
            Ok(l) if msg.kind == parse::RTM_NEWLINK => view.link_upsert(l, out),
            Ok(l) => view.link_delete(l.ifindex, out),
            Err(e) => warn!("ignoring a malformed link message: {e}"),
        },
        parse::RTM_NEWADDR | parse::RTM_DELADDR => match parse::address(msg) {
            Ok(Some(a)) if msg.kind == parse::RTM_NEWADDR => view.address_add(a, out),
            Ok(Some(a)) => view.address_delete(a, out),
            Ok(None) => {}
            Err(e) => warn!("ignoring a malformed address message: {e}"),
        },
        parse::NLMSG_OVERRUN => return false,
        _ => {}
    }
    true
}

#[derive(Debug)]
enum DumpError {
    Io(io::Error),
    /// NLM_F_DUMP_INTR: the tables changed during the dump.
    Interrupted,
}

impl From<io::Error> for DumpError {
    fn from(e: io::Error) -> Self {
        DumpError::Io(e)
    }
}

/// Dumps links, addresses, nexthops and routes into a fresh view.
pub fn dump_all(filter: &SegmentFilter, stats: &WatcherStats) -> io::Result<KernelView> {
    let mut last = None;
    for attempt in 0..5 {
        match dump_once(filter, stats) {
            Ok(v) => return Ok(v),
            Err(DumpError::Interrupted) => {
                debug!(
                    "netlink dump interrupted by a concurrent change (attempt {}), retrying",
                    attempt + 1
                );
                last = None;
            }
            Err(DumpError::Io(e)) => {
                warn!("netlink dump failed: {e}; retrying");
                last = Some(e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("netlink dump kept being interrupted by changes")))
}

fn dump_once(filter: &SegmentFilter, stats: &WatcherStats) -> Result<KernelView, DumpError> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    let mut view = KernelView::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    let ifinfomsg = [0u8; 16];
    let ifaddrmsg = [0u8; 8];
    let nhmsg = [0u8; 8];
    let mut rtmsg4 = [0u8; 12];
    rtmsg4[0] = parse::AF_INET;
    let mut rtmsg6 = [0u8; 12];
    rtmsg6[0] = parse::AF_INET6;
    let requests: [(u16, &[u8], &str); 5] = [
        (parse::RTM_GETLINK, &ifinfomsg, "links"),
        (parse::RTM_GETADDR, &ifaddrmsg, "addresses"),
        (parse::RTM_GETNEXTHOP, &nhmsg, "nexthop objects"),
        (parse::RTM_GETROUTE, &rtmsg4, "IPv4 routes"),
        (parse::RTM_GETROUTE, &rtmsg6, "IPv6 routes"),
    ];
    for (seq, (kind, body, what)) in requests.iter().enumerate() {
        let seq = seq as u32 + 1;
        let req = parse::dump_request(*kind, seq, body);
        s.send(&req, 0)?;
        let mut interrupted = false;
        'recv: loop {
            let n = recv(&s, &mut buf, 0)?;
            for msg in parse::messages(&buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                if msg.flags & parse::NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match msg.kind {
                    parse::NLMSG_DONE => break 'recv,
                    parse::NLMSG_ERROR => {
                        let code = parse::error_code(msg.payload);
                        if code == 0 {
                            break 'recv;
                        }
                        let e = io::Error::from_raw_os_error(code);
                        if *kind == parse::RTM_GETNEXTHOP {
                            debug!("no nexthop object dump ({e}): kernel without nexthop objects");
                            break 'recv;
                        }
                        return Err(io::Error::other(format!("dumping {what}: {e}")).into());
                    }
                    _ => {
                        apply_message(&mut view, filter, stats, &msg, &mut out);
                        out.clear();
                    }
                }
            }
        }
        if interrupted {
            return Err(DumpError::Interrupted);
        }
    }
    Ok(view)
}

/// Pause after handling a wakeup, so bursts are read in batches.
const COALESCE: Duration = Duration::from_millis(5);
/// Datagrams read per recvmmsg(2) call.
const BATCH: usize = 64;
/// Bytes per datagram slot (event messages are single routes/links).
const SLOT: usize = 16 << 10;

/// Buffers for reading up to `BATCH` event datagrams in one system call.
struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
}

impl RecvBatch {
    fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
        }
    }

    /// Reads queued datagrams without blocking; the count read.
    fn recv(&mut self, s: &Socket) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iov[i] = libc::iovec {
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: SLOT,
            };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let n = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, h) in self.lens.iter_mut().zip(hdrs.iter()).take(n) {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                // A datagram larger than a slot lost messages: resync.
                return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
            }
            *len = h.msg_len as usize;
        }
        Ok(n)
    }

    fn datagram(&self, i: usize) -> &[u8] {
        let start = i * SLOT;
        self.buf
            .get(start..start + self.lens[i].min(SLOT))
            .unwrap_or(&[])
    }
}

struct Worker {
    batch: RecvBatch,
    config: WatcherConfig,
    tx: mpsc::Sender<Event>,
    stats: Arc<WatcherStats>,
    events: Socket,
    view: KernelView,
    out: Vec<Event>,
}

impl Worker {
    fn run(&mut self) {
        let start = Instant::now();
        if !self.resync() {
            return;
        }
        let initial = self.stats.routes_seen.load(Ordering::Relaxed);
        // Events queued on the subscribed socket during the dump.
        if !self.drain() {
            return;
        }
        let ms = start.elapsed().as_millis() as u64;
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
            let mut pfd = libc::pollfd {
                fd: self.events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
            if self.tx.is_closed() {
                return;
            }
            if r > 0 {
                if !self.drain() {
                    return;
                }
                // Under churn, let events accumulate for a moment so one
                // recvmmsg takes many: a full table changing thousands of
                // times a second then costs ~200 wakeups/s, for at most
                // COALESCE of extra latency.
                std::thread::sleep(COALESCE);
            }
            if next_resync.is_some_and(|t| Instant::now() >= t) {
                debug!("periodic resync");
                if !self.resync() {
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
    /// False when the daemon is gone.
    fn resync(&mut self) -> bool {
        loop {
            match dump_all(&self.config.filter, &self.stats) {
                Ok(fresh) => {
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
                    warn!("cannot dump the kernel's routing state: {e}; retrying in 1 s");
                    if self.tx.is_closed() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn update_watched(&self) {
        self.stats
            .routes_watched
            .store(self.view.routes.len() as u64, Ordering::Relaxed);
    }

    /// Reads every queued event. False when the daemon is gone.
    fn drain(&mut self) -> bool {
        loop {
            match self.batch.recv(&self.events) {
                Ok(0) => {}
                Ok(n) => {
                    let mut overrun = false;
                    for i in 0..n {
                        for msg in parse::messages(self.batch.datagram(i)) {
                            if !apply_message(
                                &mut self.view,
                                &self.config.filter,
                                &self.stats,
                                &msg,
                                &mut self.out,
                            ) {
                                overrun = true;
                            }
                        }
                    }
                    for e in self.out.drain(..) {
                        if self.tx.blocking_send(e).is_err() {
                            return false;
                        }
                    }
                    if overrun && !self.overrun() {
                        return false;
                    }
                    if n < BATCH {
                        // The queue is (almost surely) empty: skip the
                        // EAGAIN round trip.
                        self.update_watched();
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.update_watched();
                    return true;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    if !self.overrun() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("netlink event socket: {e}; resynchronising");
                    if !self.overrun() {
                        return false;
                    }
                }
            }
        }
    }

    fn overrun(&mut self) -> bool {
        self.stats.overruns.fetch_add(1, Ordering::Relaxed);
        warn!("netlink event overrun (the kernel dropped route/link events): re-dumping to resynchronise");
        self.resync()
    }
}

#[cfg(test)]
mod tests;
