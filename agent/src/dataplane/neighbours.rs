//! Follows the kernel's neighbour entries of the gateways the fast path
//! steers to, so `rb_xdp` can rewrite MACs from the segment entry instead of
//! calling `bpf_fib_lookup` per packet.
//!
//! The neighbour executor (`Neighbours`) takes in `Steer`/`Unsteer` and
//! tells this task which (backup ifindex, gateway) pairs the steered groups
//! use (`NextHopWatch::set`, the whole set each time). The task answers
//! every pair newly in the set with a lookup (RTM_GETNEIGH for the gateway,
//! RTM_GETLINK for the backup's MAC and MTU) and then follows RTNLGRP_NEIGH
//! and RTNLGRP_LINK, reporting a `NextHopState` whenever a watched pair's
//! state may have changed. Reports are complete states, not deltas, in the
//! order the kernel sent them, so the last one received is the current one.
//!
//! The task never writes a map: it only reports, on the executor's stream.
//! The dataplane hands a report to the fast path's executor on the daemon's
//! task, which applies it only to groups that are steered to that very pair
//! at that moment (see `next_hops::NextHops::apply`, reached through
//! `Dataplane::next_event`), so a late report can never turn an unsteered
//! entry back into a steer entry.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::Emitable;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::steering::{self, FollowsSteering, Steering};
use super::Executor;
use crate::error::Report;
use crate::model::{Action, GroupId, SteerTarget};
use crate::netlink::codec::{self, RawMsg, NUD_PERMANENT};
use crate::netlink::socket::{self, Requests};
use crate::netlink::{decode, LinkL2, NeighbourInfo, NetlinkError};

/// A next hop on an Ethernet backup: (backup ifindex, gateway).
pub type NextHopKey = (u32, IpAddr);

/// What XDP needs to forward to a next hop without a fib lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHopL2 {
    /// The gateway's MAC (from a usable neighbour entry).
    pub dmac: [u8; 6],
    /// The backup interface's MAC.
    pub smac: [u8; 6],
    /// The backup interface's MTU.
    pub mtu: u16,
}

/// A watched next hop's current state; `l2 = None` when the neighbour entry
/// is missing, incomplete or failed (or the interface has no MAC / is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHopState {
    pub key: NextHopKey,
    pub l2: Option<NextHopL2>,
}

/// The neighbour executor's handle on the task.
pub struct NextHopWatch {
    set_tx: mpsc::UnboundedSender<HashSet<NextHopKey>>,
}

impl NextHopWatch {
    /// Subscribes to neighbour and link events and spawns the task (inside the
    /// tokio runtime). Reports go to `reports`.
    pub fn spawn(
        reports: mpsc::UnboundedSender<NextHopState>,
    ) -> Result<NextHopWatch, NetlinkError> {
        let mut events = socket::open("neighbour and link events")?;
        socket::join(&mut events, codec::RTNLGRP_NEIGH, "RTNLGRP_NEIGH")?;
        socket::join(&mut events, codec::RTNLGRP_LINK, "RTNLGRP_LINK")?;
        socket::set_non_blocking(&mut events)?;
        // SAFETY: the socket owns its descriptor, which stays open and is not
        // replaced while the AsyncFd owns the socket.
        let events = unsafe { AsyncFd::register(events) }.map_err(|e| NetlinkError::Register {
            purpose: "neighbour and link events",
            source: e.into_parts().1,
        })?;
        let (set_tx, set_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(events, set_rx, reports));
        Ok(NextHopWatch { set_tx })
    }

    /// The pairs to follow from now on (replaces the previous set).
    pub fn set(&self, keys: HashSet<NextHopKey>) {
        let _ = self.set_tx.send(keys);
    }
}

/// The neighbour executor: follows the next hops of the steered groups
/// (its own copy of the steering) and reports their states on its stream.
/// Without the task the fast path still works, resolving next hops per
/// packet.
pub(super) struct Neighbours {
    steering: Steering,
    /// None when neighbour entries cannot be followed.
    watch: Option<NextHopWatch>,
    reports: Option<mpsc::UnboundedReceiver<NextHopState>>,
}

impl Neighbours {
    /// Starts following neighbour entries (inside the tokio runtime).
    pub fn start() -> Neighbours {
        let (tx, rx) = mpsc::unbounded_channel();
        let (watch, reports) = match NextHopWatch::spawn(tx) {
            Ok(watch) => (Some(watch), Some(rx)),
            Err(e) => {
                warn!("cannot follow neighbour entries ({}); XDP resolves every steered packet with bpf_fib_lookup", Report(&e));
                (None, None)
            }
        };
        Neighbours {
            steering: Steering::new(),
            watch,
            reports,
        }
    }

    /// Tells the task the next hops the steering uses now.
    fn follow(&self) {
        if let Some(w) = self.watch.as_ref() {
            w.set(steering::next_hops(&self.steering));
        }
    }
}

impl FollowsSteering for Neighbours {
    fn steer(&mut self, group: GroupId, to: &SteerTarget, segments: &[IpNet]) {
        steering::steer(&mut self.steering, group, to, segments);
        self.follow();
    }

    fn unsteer(&mut self, group: GroupId, segments: &[IpNet]) {
        if steering::unsteer(&mut self.steering, group, segments) {
            self.follow();
        }
    }
}

impl Executor for Neighbours {
    type Event = NextHopState;

    fn execute(&mut self, action: &Action, _requested_by: Option<&str>) {
        steering::dispatch(self, action);
    }

    /// The next report of the task; never ready if there is none
    /// (cancel-safe: a report is only taken when this completes).
    async fn next_event(&mut self) -> NextHopState {
        if let Some(rx) = self.reports.as_mut() {
            if let Some(state) = rx.recv().await {
                return state;
            }
            // The task ended (its error is logged there): nothing more comes.
            self.reports = None;
        }
        std::future::pending().await
    }
}

/// The task's view of the watched pairs.
#[derive(Default)]
struct State {
    watched: HashSet<NextHopKey>,
    /// Usable gateway MAC per watched pair.
    neigh: HashMap<NextHopKey, Option<[u8; 6]>>,
    /// Watched pairs whose entry the kernel's neighbour state machine owns
    /// (not PERMANENT or NOARP): the only ones the periodic "mark as used"
    /// may touch.
    dynamic: HashSet<NextHopKey>,
    /// MAC and MTU per backup ifindex with a watched pair.
    links: HashMap<u32, Option<([u8; 6], u16)>>,
}

impl State {
    /// Records what the kernel reported for `key` (None: no entry).
    fn record(&mut self, key: NextHopKey, n: Option<&NeighbourInfo>) -> Option<[u8; 6]> {
        if n.is_some_and(NeighbourInfo::kernel_owned) {
            self.dynamic.insert(key);
        } else {
            self.dynamic.remove(&key);
        }
        n.and_then(NeighbourInfo::usable_lladdr)
    }

    fn state_of(&self, key: NextHopKey) -> NextHopState {
        let dmac = self.neigh.get(&key).copied().flatten();
        let link = self.links.get(&key.0).copied().flatten();
        NextHopState {
            key,
            l2: match (dmac, link) {
                (Some(dmac), Some((smac, mtu))) => Some(NextHopL2 { dmac, smac, mtu }),
                _ => None,
            },
        }
    }
}

/// How often the followed gateways' neighbour entries are marked used, so
/// the kernel keeps revalidating them although XDP bypasses its neighbour code.
const REVALIDATE: Duration = Duration::from_secs(5);

async fn run(
    events: AsyncFd<Socket>,
    mut set_rx: mpsc::UnboundedReceiver<HashSet<NextHopKey>>,
    reports: mpsc::UnboundedSender<NextHopState>,
) {
    let query = match Query::new() {
        Ok(q) => q,
        Err(e) => {
            warn!(
                "{}; XDP keeps using bpf_fib_lookup for every packet",
                Report(&e)
            );
            return;
        }
    };
    let mut st = State::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut revalidate = tokio::time::interval(REVALIDATE);
    revalidate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = revalidate.tick() => {
                // Never an entry the operator owns: NTF_USE on a PERMANENT
                // entry clears that state (__neigh_update with
                // NEIGH_UPDATE_F_USE) and it ends INCOMPLETE, then FAILED.
                for key in st.watched.iter().filter(|k| st.dynamic.contains(k)) {
                    if let Err(e) = query.touch(*key) {
                        debug!("revalidating neighbour {} on ifindex {}: {}", key.1, key.0, Report(&e));
                    }
                }
            }
            set = set_rx.recv() => {
                let Some(set) = set else { return };
                let added: Vec<NextHopKey> = set.difference(&st.watched).copied().collect();
                st.watched = set;
                st.neigh.retain(|k, _| st.watched.contains(k));
                st.dynamic.retain(|k| st.watched.contains(k));
                let ifindexes: HashSet<u32> = st.watched.iter().map(|k| k.0).collect();
                st.links.retain(|i, _| ifindexes.contains(i));
                for key in added {
                    st.links.entry(key.0).or_insert_with(|| {
                        let link = query.link(key.0).unwrap_or_else(|e| {
                            debug!("link lookup of ifindex {}: {}", key.0, Report(&e));
                            None
                        });
                        link.and_then(link_l2)
                    });
                    let n = query.neighbour(key).unwrap_or_else(|e| {
                        debug!("neighbour lookup of {} on ifindex {}: {}", key.1, key.0, Report(&e));
                        None
                    });
                    let mac = st.record(key, n.as_ref());
                    st.neigh.insert(key, mac);
                    if reports.send(st.state_of(key)).is_err() {
                        return;
                    }
                }
            }
            ready = events.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        warn!("neighbour event socket failed ({}); cached next-hop MACs are no longer refreshed", Report(&e));
                        return;
                    }
                };
                let n = match guard.try_io(|s| s.get_ref().recv(&mut &mut buf[..], 0)) {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        // Events were lost: look every watched pair up again.
                        warn!("neighbour events overran; looking the cached next hops up again");
                        let set = st.watched.clone();
                        if reresolve(&query, &mut st, set, &reports).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(Err(e)) => {
                        warn!("reading neighbour events: {}", Report(&e));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(_would_block) => continue,
                };
                let mut changed: Vec<NextHopKey> = Vec::new();
                for msg in codec::messages(buf.get(..n).unwrap_or(&[])) {
                    apply(&mut st, &msg, &mut changed);
                }
                for key in changed {
                    if reports.send(st.state_of(key)).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Looks every pair of `set` up again and reports it (after an overrun).
fn reresolve(
    query: &Query,
    st: &mut State,
    set: HashSet<NextHopKey>,
    reports: &mpsc::UnboundedSender<NextHopState>,
) -> Result<(), ()> {
    st.links.clear();
    st.neigh.clear();
    st.dynamic.clear();
    for key in &set {
        st.links
            .entry(key.0)
            .or_insert_with(|| query.link(key.0).ok().flatten().and_then(link_l2));
        let n = query.neighbour(*key).ok().flatten();
        let mac = st.record(*key, n.as_ref());
        st.neigh.insert(*key, mac);
    }
    st.watched = set;
    for key in &st.watched {
        reports.send(st.state_of(*key)).map_err(|_| ())?;
    }
    Ok(())
}

fn link_l2(l: LinkL2) -> Option<([u8; 6], u16)> {
    let mac = l.mac.filter(|m| *m != [0; 6])?;
    let mtu = u16::try_from(l.mtu?).unwrap_or(u16::MAX);
    Some((mac, mtu))
}

/// Applies one event to the view, noting the watched pairs it may change.
fn apply(st: &mut State, msg: &RawMsg<'_>, changed: &mut Vec<NextHopKey>) {
    match msg.kind {
        codec::RTM_NEWNEIGH | codec::RTM_DELNEIGH => {
            let n = match decode::neighbour(msg) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    debug!("ignoring a {}", Report(&e));
                    return;
                }
            };
            let key = (n.ifindex, n.address);
            if !st.watched.contains(&key) {
                return;
            }
            let mac = if msg.kind == codec::RTM_NEWNEIGH {
                st.record(key, Some(&n))
            } else {
                st.record(key, None)
            };
            if st.neigh.insert(key, mac) != Some(mac) {
                changed.push(key);
            }
        }
        codec::RTM_NEWLINK | codec::RTM_DELLINK => {
            let l = match decode::link_l2(msg) {
                Ok(l) => l,
                Err(e) => {
                    debug!("ignoring a {}", Report(&e));
                    return;
                }
            };
            let Some(old) = st.links.get(&l.ifindex).copied() else {
                return;
            };
            let new = if msg.kind == codec::RTM_NEWLINK {
                link_l2(l)
            } else {
                None
            };
            if old != new {
                st.links.insert(l.ifindex, new);
                changed.extend(st.watched.iter().filter(|k| k.0 == l.ifindex).copied());
            }
        }
        _ => {}
    }
}

/// The task's lookups and revalidations (answers come at once).
struct Query {
    requests: Requests,
}

impl Query {
    fn new() -> Result<Query, NetlinkError> {
        Ok(Query {
            requests: Requests::open("neighbour lookups")?,
        })
    }

    fn link(&self, ifindex: u32) -> Result<Option<LinkL2>, NetlinkError> {
        self.requests.get(
            "the link lookup",
            codec::RTM_GETLINK,
            &link_body(ifindex),
            codec::RTM_NEWLINK,
            |m| decode::link_l2(m).ok(),
        )
    }

    fn neighbour(&self, key: NextHopKey) -> Result<Option<NeighbourInfo>, NetlinkError> {
        self.requests.get(
            "the neighbour lookup",
            codec::RTM_GETNEIGH,
            &neigh_body(key, NeighbourFlags::empty(), NeighbourState::None),
            codec::RTM_NEWNEIGH,
            |m| decode::neighbour(m).ok().flatten(),
        )
    }

    /// Marks the gateway's neighbour entry as used (NTF_USE), as forwarded
    /// traffic through the kernel would: a STALE entry is then revalidated
    /// (DELAY, unicast probes), so a gateway whose MAC changed without a
    /// gratuitous ARP/unsolicited NA ends FAILED, which clears the cached MAC,
    /// and is resolved again. A missing entry is left alone (Ok). Only for
    /// entries the kernel owns (`NeighbourInfo::kernel_owned`).
    fn touch(&self, key: NextHopKey) -> Result<(), NetlinkError> {
        // The state is ignored with NTF_USE; PERMANENT is what iproute2 sends.
        let body = neigh_body(
            key,
            NeighbourFlags::Use,
            NeighbourState::from(NUD_PERMANENT),
        );
        self.requests
            .change("the neighbour revalidation", codec::RTM_NEWNEIGH, &body)
    }
}

/// ifinfomsg asking for interface `ifindex`.
fn link_body(ifindex: u32) -> Vec<u8> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    emit(&m)
}

/// ndmsg for `key` with `flags`/`state`, followed by NDA_DST.
fn neigh_body((ifindex, gw): NextHopKey, flags: NeighbourFlags, state: NeighbourState) -> Vec<u8> {
    let mut m = NeighbourMessage::default();
    m.header.family = match gw {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = ifindex;
    m.header.state = state;
    m.header.flags = flags;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(gw)));
    emit(&m)
}

fn emit(m: &impl Emitable) -> Vec<u8> {
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::codec::{NUD_NOARP, NUD_REACHABLE, NUD_STALE};

    /// One netlink message: header + ndmsg + NDA_DST (+ NDA_LLADDR).
    fn neigh_msg(
        kind: u16,
        ifindex: u32,
        dst: [u8; 4],
        state: u16,
        mac: Option<[u8; 6]>,
    ) -> Vec<u8> {
        let mut body = vec![0u8; 12];
        body[0] = codec::AF_INET;
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..10].copy_from_slice(&state.to_ne_bytes());
        codec::push_attr(&mut body, 1, &dst);
        if let Some(m) = mac {
            codec::push_attr(&mut body, 2, &m);
        }
        codec::get_request(kind, 0, &body)
    }

    fn feed(st: &mut State, bytes: &[u8]) -> Vec<NextHopKey> {
        let mut changed = Vec::new();
        for m in codec::messages(bytes) {
            apply(st, &m, &mut changed);
        }
        changed
    }

    /// The request bodies built with netlink-packet-route are the ndmsg /
    /// ifinfomsg layouts the kernel expects (as the hand-built ones were).
    #[test]
    fn request_bodies_are_the_kernel_layouts() {
        let gw: IpAddr = "10.0.2.2".parse().unwrap();
        let mut want = vec![codec::AF_INET, 0, 0, 0];
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
        want.extend_from_slice(&[0x01, 0]); // NTF_USE, ndm_type
        codec::push_attr(&mut want, 1, &[10, 0, 2, 2]); // NDA_DST
        assert_eq!(
            neigh_body(
                (7, gw),
                NeighbourFlags::Use,
                NeighbourState::from(NUD_PERMANENT)
            ),
            want
        );
        let gw6: IpAddr = "2001:db8::1".parse().unwrap();
        let body = neigh_body((3, gw6), NeighbourFlags::empty(), NeighbourState::None);
        assert_eq!((body[0], &body[8..12]), (codec::AF_INET6, &[0u8; 4][..]));
        assert_eq!(body.len(), 12 + 4 + 16);

        let mut want = vec![0u8; 16];
        want[4..8].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(link_body(9), want);
    }

    #[test]
    fn only_entries_the_kernel_owns_are_refreshed() {
        let key: NextHopKey = (7, "10.0.2.2".parse().unwrap());
        let mut st = State::default();
        st.watched.insert(key);
        let mac = Some([2, 0, 0, 0, 0, 2]);
        let new = codec::RTM_NEWNEIGH;
        // (NUD state, refreshed): STALE and REACHABLE are the kernel's;
        // PERMANENT and NOARP were set on purpose.
        for (state, refreshed) in [
            (NUD_STALE, true),
            (NUD_PERMANENT, false),
            (NUD_REACHABLE, true),
            (NUD_NOARP, false),
        ] {
            feed(&mut st, &neigh_msg(new, 7, [10, 0, 2, 2], state, mac));
            assert_eq!(st.dynamic.contains(&key), refreshed, "state {state:#x}");
        }
        feed(&mut st, &neigh_msg(new, 7, [10, 0, 2, 2], NUD_STALE, mac));
        feed(
            &mut st,
            &neigh_msg(codec::RTM_DELNEIGH, 7, [10, 0, 2, 2], NUD_STALE, mac),
        );
        assert!(!st.dynamic.contains(&key), "a deleted entry is not touched");
    }

    #[test]
    fn neighbour_events_of_watched_next_hops_only() {
        let key: NextHopKey = (7, "10.0.2.2".parse().unwrap());
        let mut st = State::default();
        st.watched.insert(key);
        st.links.insert(7, Some(([2, 0, 0, 0, 0, 1], 1500)));
        let mac = [2, 0, 0, 0, 0, 2];

        // Another interface or address: ignored.
        assert!(feed(
            &mut st,
            &neigh_msg(codec::RTM_NEWNEIGH, 8, [10, 0, 2, 2], 0x02, Some(mac))
        )
        .is_empty());
        assert!(feed(
            &mut st,
            &neigh_msg(codec::RTM_NEWNEIGH, 7, [10, 0, 2, 3], 0x02, Some(mac))
        )
        .is_empty());

        // REACHABLE: usable.
        assert_eq!(
            feed(
                &mut st,
                &neigh_msg(codec::RTM_NEWNEIGH, 7, [10, 0, 2, 2], 0x02, Some(mac))
            ),
            vec![key]
        );
        let l2 = st.state_of(key).l2.unwrap();
        assert_eq!((l2.dmac, l2.smac, l2.mtu), (mac, [2, 0, 0, 0, 0, 1], 1500));
        // STALE with the same MAC: no change to report.
        assert!(feed(
            &mut st,
            &neigh_msg(codec::RTM_NEWNEIGH, 7, [10, 0, 2, 2], 0x04, Some(mac))
        )
        .is_empty());
        // FAILED / INCOMPLETE / deleted: not usable.
        for (kind, state) in [
            (codec::RTM_NEWNEIGH, 0x20),
            (codec::RTM_NEWNEIGH, 0x01),
            (codec::RTM_DELNEIGH, 0x02),
        ] {
            feed(
                &mut st,
                &neigh_msg(codec::RTM_NEWNEIGH, 7, [10, 0, 2, 2], 0x80, Some(mac)),
            );
            assert!(st.state_of(key).l2.is_some());
            assert_eq!(
                feed(
                    &mut st,
                    &neigh_msg(kind, 7, [10, 0, 2, 2], state, Some(mac))
                ),
                vec![key]
            );
            assert_eq!(st.state_of(key).l2, None, "kind {kind} state {state:#x}");
        }
    }
}
