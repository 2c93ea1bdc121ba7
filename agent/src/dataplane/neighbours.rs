//! Follows the kernel's neighbour entries of the gateways the fast path
//! steers to, so `rb_xdp` can rewrite MACs from the segment entry instead of
//! calling `bpf_fib_lookup` per packet.
//!
//! The dataplane tells this task which (backup ifindex, gateway) pairs it
//! needs (`NextHopWatch::set`, the whole set each time). The task answers
//! every pair newly in the set with a lookup (RTM_GETNEIGH for the gateway,
//! RTM_GETLINK for the backup's MAC and MTU) and then follows RTNLGRP_NEIGH
//! and RTNLGRP_LINK, reporting a `NextHopState` whenever a watched pair's
//! state may have changed. Reports are complete states, not deltas, in the
//! order the kernel sent them, so the last one received is the current one.
//!
//! The task never writes a map: it only reports. The dataplane applies a
//! report on the daemon's task, and only to groups that are steered to that
//! very pair at that moment (see `Dataplane::next_hop_changed`), so a late
//! report can never turn an unsteered entry back into a steer entry.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::watcher::parse::{self, LinkL2, NeighbourInfo};

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;

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

/// The dataplane's handle on the task.
pub struct NextHopWatch {
    set_tx: mpsc::UnboundedSender<HashSet<NextHopKey>>,
}

impl NextHopWatch {
    /// Subscribes to neighbour and link events and spawns the task (inside the
    /// tokio runtime). Reports go to `reports`.
    pub fn spawn(reports: mpsc::UnboundedSender<NextHopState>) -> io::Result<NextHopWatch> {
        let mut events = Socket::new(NETLINK_ROUTE)?;
        events.bind_auto()?;
        events.add_membership(RTNLGRP_NEIGH)?;
        events.add_membership(RTNLGRP_LINK)?;
        events.set_non_blocking(true)?;
        // SAFETY: the socket owns its descriptor, which stays open and is not
        // replaced while the AsyncFd owns the socket.
        let events = unsafe { AsyncFd::register(events) }.map_err(|e| e.into_parts().1)?;
        let (set_tx, set_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(events, set_rx, reports));
        Ok(NextHopWatch { set_tx })
    }

    /// The pairs to follow from now on (replaces the previous set).
    pub fn set(&self, keys: HashSet<NextHopKey>) {
        let _ = self.set_tx.send(keys);
    }
}

/// The task's view of the watched pairs.
#[derive(Default)]
struct State {
    watched: HashSet<NextHopKey>,
    /// Usable gateway MAC per watched pair.
    neigh: HashMap<NextHopKey, Option<[u8; 6]>>,
    /// MAC and MTU per backup ifindex with a watched pair.
    links: HashMap<u32, Option<([u8; 6], u16)>>,
}

impl State {
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
            warn!("cannot open a netlink socket for neighbour lookups ({e}); XDP keeps using bpf_fib_lookup for every packet");
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
                for key in &st.watched {
                    if let Err(e) = query.touch(*key) {
                        debug!("revalidating neighbour {} on ifindex {}: {e}", key.1, key.0);
                    }
                }
            }
            set = set_rx.recv() => {
                let Some(set) = set else { return };
                let added: Vec<NextHopKey> = set.difference(&st.watched).copied().collect();
                st.watched = set;
                st.neigh.retain(|k, _| st.watched.contains(k));
                let ifindexes: HashSet<u32> = st.watched.iter().map(|k| k.0).collect();
                st.links.retain(|i, _| ifindexes.contains(i));
                for key in added {
                    st.links.entry(key.0).or_insert_with(|| {
                        let link = query.link(key.0).unwrap_or_else(|e| {
                            debug!("link lookup of ifindex {}: {e}", key.0);
                            None
                        });
                        link.and_then(link_l2)
                    });
                    let n = query.neighbour(key).unwrap_or_else(|e| {
                        debug!("neighbour lookup of {} on ifindex {}: {e}", key.1, key.0);
                        None
                    });
                    st.neigh.insert(key, n.and_then(|n| n.usable_lladdr()));
                    if reports.send(st.state_of(key)).is_err() {
                        return;
                    }
                }
            }
            ready = events.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        warn!("neighbour event socket failed ({e}); cached next-hop MACs are no longer refreshed");
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
                        warn!("reading neighbour events: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Err(_would_block) => continue,
                };
                let mut changed: Vec<NextHopKey> = Vec::new();
                for msg in parse::messages(buf.get(..n).unwrap_or(&[])) {
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
    for key in &set {
        st.links
            .entry(key.0)
            .or_insert_with(|| query.link(key.0).ok().flatten().and_then(link_l2));
        let n = query.neighbour(*key).ok().flatten();
        st.neigh.insert(*key, n.and_then(|n| n.usable_lladdr()));
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
fn apply(st: &mut State, msg: &parse::RawMsg<'_>, changed: &mut Vec<NextHopKey>) {
    match msg.kind {
        parse::RTM_NEWNEIGH | parse::RTM_DELNEIGH => {
            let n = match parse::neighbour(msg) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    debug!("ignoring a malformed neighbour message: {e}");
                    return;
                }
            };
            let key = (n.ifindex, n.address);
            if !st.watched.contains(&key) {
                return;
            }
            let mac = if msg.kind == parse::RTM_NEWNEIGH {
                n.usable_lladdr()
            } else {
                None
            };
            if st.neigh.insert(key, mac) != Some(mac) {
                changed.push(key);
            }
        }
        parse::RTM_NEWLINK | parse::RTM_DELLINK => {
            let l = match parse::link_l2(msg) {
                Ok(l) => l,
                Err(e) => {
                    debug!("ignoring a malformed link message: {e}");
                    return;
                }
            };
            let Some(old) = st.links.get(&l.ifindex).copied() else {
                return;
            };
            let new = if msg.kind == parse::RTM_NEWLINK {
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

/// A blocking netlink socket for single lookups (answers come at once).
struct Query {
    socket: Socket,
}

impl Query {
    fn new() -> io::Result<Query> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // Bound every answer: a kernel that never replies must not hang the task.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval of the size passed.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Query { socket })
    }

    /// Sends one get request and returns the first answer of `want` kind;
    /// Ok(None) when the kernel answers ENOENT/ENODEV.
    fn get<T>(
        &self,
        req: &[u8],
        seq: u32,
        want: u16,
        parse_one: impl Fn(&parse::RawMsg<'_>) -> Option<T>,
    ) -> io::Result<Option<T>> {
        self.socket.send(req, 0)?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            for msg in parse::messages(buf.get(..n).unwrap_or(&[])) {
                if msg.seq != seq {
                    continue;
                }
                if msg.kind == parse::NLMSG_ERROR {
                    let code = parse::error_code(msg.payload);
                    if code == libc::ENOENT || code == libc::ENODEV || code == 0 {
                        return Ok(None);
                    }
                    return Err(io::Error::from_raw_os_error(code));
                }
                if msg.kind == want {
                    return Ok(parse_one(&msg));
                }
            }
        }
    }

    fn link(&self, ifindex: u32) -> io::Result<Option<LinkL2>> {
        let mut body = [0u8; 16];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let seq = next_seq();
        let req = parse::get_request(parse::RTM_GETLINK, seq, &body);
        self.get(&req, seq, parse::RTM_NEWLINK, |m| parse::link_l2(m).ok())
    }

    fn neighbour(&self, key: NextHopKey) -> io::Result<Option<NeighbourInfo>> {
        let body = neigh_body(key, 0, 0);
        let seq = next_seq();
        let req = parse::get_request(parse::RTM_GETNEIGH, seq, &body);
        self.get(&req, seq, parse::RTM_NEWNEIGH, |m| {
            parse::neighbour(m).ok().flatten()
        })
    }
}

impl Query {
    /// Marks the gateway's neighbour entry as used (NTF_USE), as forwarded
    /// traffic through the kernel would: a STALE entry is then revalidated
    /// (DELAY, unicast probes), so a gateway whose MAC changed without a
    /// gratuitous ARP/unsolicited NA ends FAILED, which clears the cached MAC,
    /// and is resolved again. A missing entry is left alone (Ok).
    fn touch(&self, key: NextHopKey) -> io::Result<()> {
        const NTF_USE: u8 = 0x01;
        const NUD_PERMANENT: u16 = 0x80; // ignored with NTF_USE (what iproute2 sends)
        let body = neigh_body(key, NTF_USE, NUD_PERMANENT);
        let seq = next_seq();
        let req = parse::change_request(parse::RTM_NEWNEIGH, seq, &body);
        self.get(&req, seq, u16::MAX, |_| Some(())).map(|_| ())
    }
}

/// ndmsg for `key` with `flags`/`state`, followed by NDA_DST.
fn neigh_body((ifindex, gw): NextHopKey, flags: u8, state: u16) -> Vec<u8> {
    const NDA_DST: u16 = 1;
    let mut body = vec![0u8; 12];
    body[0] = match gw {
        IpAddr::V4(_) => parse::AF_INET,
        IpAddr::V6(_) => parse::AF_INET6,
    };
    body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    body[8..10].copy_from_slice(&state.to_ne_bytes());
    body[10] = flags;
    match gw {
        IpAddr::V4(a) => parse::push_attr(&mut body, NDA_DST, &a.octets()),
        IpAddr::V6(a) => parse::push_attr(&mut body, NDA_DST, &a.octets()),
    }
    body
}

fn next_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(1);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message: header + ndmsg + NDA_DST (+ NDA_LLADDR).
    fn neigh_msg(
        kind: u16,
        ifindex: u32,
        dst: [u8; 4],
        state: u16,
        mac: Option<[u8; 6]>,
    ) -> Vec<u8> {
        let mut body = vec![0u8; 12];
        body[0] = parse::AF_INET;
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..10].copy_from_slice(&state.to_ne_bytes());
        parse::push_attr(&mut body, 1, &dst);
        if let Some(m) = mac {
            parse::push_attr(&mut body, 2, &m);
        }
        parse::get_request(kind, 0, &body)
    }

    fn feed(st: &mut State, bytes: &[u8]) -> Vec<NextHopKey> {
        let mut changed = Vec::new();
        for m in parse::messages(bytes) {
            apply(st, &m, &mut changed);
        }
        changed
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
            &neigh_msg(parse::RTM_NEWNEIGH, 8, [10, 0, 2, 2], 0x02, Some(mac))
        )
        .is_empty());
        assert!(feed(
            &mut st,
            &neigh_msg(parse::RTM_NEWNEIGH, 7, [10, 0, 2, 3], 0x02, Some(mac))
        )
        .is_empty());

        // REACHABLE: usable.
        assert_eq!(
            feed(
                &mut st,
                &neigh_msg(parse::RTM_NEWNEIGH, 7, [10, 0, 2, 2], 0x02, Some(mac))
            ),
            vec![key]
        );
        let l2 = st.state_of(key).l2.unwrap();
        assert_eq!((l2.dmac, l2.smac, l2.mtu), (mac, [2, 0, 0, 0, 0, 1], 1500));
        // STALE with the same MAC: no change to report.
        assert!(feed(
            &mut st,
            &neigh_msg(parse::RTM_NEWNEIGH, 7, [10, 0, 2, 2], 0x04, Some(mac))
        )
        .is_empty());
        // FAILED / INCOMPLETE / deleted: not usable.
        for (kind, state) in [
            (parse::RTM_NEWNEIGH, 0x20),
            (parse::RTM_NEWNEIGH, 0x01),
            (parse::RTM_DELNEIGH, 0x02),
        ] {
            feed(
                &mut st,
                &neigh_msg(parse::RTM_NEWNEIGH, 7, [10, 0, 2, 2], 0x80, Some(mac)),
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
