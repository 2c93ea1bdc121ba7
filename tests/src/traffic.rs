//! A paced UDP stream between two namespaces, with per-packet sequence numbers
//! and the ingress interface of every received packet (IP_PKTINFO), so a test
//! can tell which path each packet took and exactly which ones were lost.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Moves the calling thread into the network namespace at `path` (/run/netns/NAME).
pub fn enter_netns(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns on a valid fd; affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One received packet.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub seq: u64,
    /// Interface index it arrived on in the receiver's namespace.
    pub ifindex: u32,
    pub at: Instant,
}

/// The receiving end, running on its own thread inside a namespace.
pub struct Receiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Binds `bind` (e.g. 0.0.0.0:9000) inside the namespace at `netns_path`.
    pub fn start(netns_path: &str, bind: SocketAddr) -> Result<Receiver> {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let path = netns_path.to_string();
        let (a, s) = (arrivals.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let sock = match enter_netns(&path).and_then(|()| Ok(UdpSocket::bind(bind)?)) {
                Ok(sock) => sock,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
            if let Err(e) = grow_receive_buffer(&sock) {
                let _ = ready_tx.send(Err(e));
                return;
            }
            let one: libc::c_int = 1;
            #[expect(clippy::cast_possible_truncation, reason = "the size of a c_int, 4")]
            let one_len = size_of::<libc::c_int>() as u32;
            // SAFETY: valid socket fd and option pointer/length.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    (&raw const one).cast::<libc::c_void>(),
                    one_len,
                );
            }
            let _ = ready_tx.send(Ok(()));
            while !s.load(Ordering::Relaxed) {
                if let Some((seq, ifindex)) = recv_with_ifindex(&sock) {
                    let arrival = Arrival {
                        seq,
                        ifindex,
                        at: Instant::now(),
                    };
                    if let Ok(mut v) = a.lock() {
                        v.push(arrival);
                    }
                }
            }
        });
        ready_rx.recv().context("receiver thread died")??;
        Ok(Receiver {
            arrivals,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything received so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn stop(mut self) -> Vec<Arrival> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.arrivals()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the receiving socket may queue: about 0.3 s of a 100,000 packets/s
/// stream of small datagrams (the kernel counts each at its truesize, about
/// 1 KiB on veth). With the default (net.core.rmem_default, 208 KiB: about
/// 2 ms of such a stream) every time the receiving thread waits for a CPU a
/// little longer, the socket overflows (`Udp: RcvbufErrors` in the
/// receiver's namespace) and the loss shows up as the path's.
const RECEIVE_BUFFER: libc::c_int = 32 << 20;

/// Sets `RECEIVE_BUFFER` on `sock`: with SO_RCVBUFFORCE (root, above
/// net.core.rmem_max, which is not per namespace), else as far as
/// SO_RCVBUF goes.
fn grow_receive_buffer(sock: &UdpSocket) -> Result<()> {
    #[expect(clippy::cast_possible_truncation, reason = "the size of a c_int, 4")]
    let len = size_of::<libc::c_int>() as u32;
    let size = RECEIVE_BUFFER;
    let set = |option| {
        // SAFETY: valid socket fd and option pointer/length.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast::<libc::c_void>(),
                len,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
        return Ok(());
    }
    bail!(
        "setsockopt(SO_RCVBUF, {RECEIVE_BUFFER}): {}",
        std::io::Error::last_os_error()
    )
}

fn recv_with_ifindex(sock: &UdpSocket) -> Option<(u64, u32)> {
    let mut buf = [0u8; 64];
    let mut cmsg = [0u8; 128];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid initial state.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast::<libc::c_void>();
    msg.msg_controllen = cmsg.len();
    // SAFETY: msg points to live buffers of the given sizes.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    if n < 8 {
        return None;
    }
    let seq = u64::from_be_bytes(buf[..8].try_into().ok()?);
    let mut ifindex = 0;
    // SAFETY: walking the control buffer the kernel filled, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                #[expect(clippy::cast_ptr_alignment, reason = "read with read_unaligned")]
                let info = libc::CMSG_DATA(c) as *const libc::in_pktinfo;
                ifindex = std::ptr::read_unaligned(info).ipi_ifindex.cast_unsigned();
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Some((seq, ifindex))
}

/// The sending end: `rate` packets per second to `dst`, from inside a namespace.
pub struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    pub fn start(netns_path: &str, dst: SocketAddr, rate: u32) -> Result<Sender> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let path = netns_path.to_string();
        let (s, log) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let sock = match enter_netns(&path).and_then(|()| Ok(UdpSocket::bind("0.0.0.0:0")?)) {
                Ok(sock) => sock,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let interval = Duration::from_nanos(1_000_000_000 / u64::from(rate.max(1)));
            let start = Instant::now();
            let mut seq: u64 = 0;
            let mut times = Vec::new();
            while !s.load(Ordering::Relaxed) {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "a stream sends far fewer than 2^32 packets"
                )]
                let due = start + interval * (seq as u32);
                let now = Instant::now();
                if due > now {
                    let left = due - now;
                    if left > Duration::from_micros(200) {
                        std::thread::sleep(left.saturating_sub(Duration::from_micros(100)));
                    }
                    continue;
                }
                let mut payload = [0u8; 32];
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                // Errors (e.g. no route while the primary is withdrawn) count as sent-and-lost.
                let _ = sock.send_to(&payload, dst);
                times.push(Instant::now());
                seq += 1;
                if times.len() >= 1024 {
                    if let Ok(mut v) = log.lock() {
                        v.append(&mut times);
                    }
                }
            }
            if let Ok(mut v) = log.lock() {
                v.append(&mut times);
            }
        });
        ready_rx.recv().context("sender thread died")??;
        Ok(Sender {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// Stops sending and returns the send time of every packet (index = seq).
    pub fn stop(mut self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Summary of a stream: how many were sent, received, lost, and by which interface.
#[derive(Debug, Default)]
pub struct StreamReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// (ifindex, packets) in order of first appearance.
    pub by_ifindex: Vec<(u32, u64)>,
}

pub fn report(sent: &[Instant], arrivals: &[Arrival]) -> StreamReport {
    let mut seen = vec![false; sent.len()];
    let mut by_ifindex: Vec<(u32, u64)> = Vec::new();
    for a in arrivals {
        if let Some(slot) = usize::try_from(a.seq).ok().and_then(|i| seen.get_mut(i)) {
            *slot = true;
        }
        match by_ifindex.iter_mut().find(|(i, _)| *i == a.ifindex) {
            Some((_, n)) => *n += 1,
            None => by_ifindex.push((a.ifindex, 1)),
        }
    }
    let received = seen.iter().filter(|s| **s).count() as u64;
    StreamReport {
        sent: sent.len() as u64,
        received,
        lost: sent.len() as u64 - received,
        by_ifindex,
    }
}

/// The sequence numbers from `from_seq` on (of `sent` packets) that never arrived.
pub fn lost_from(sent: usize, arrivals: &[Arrival], from_seq: u64) -> Vec<u64> {
    let mut got = vec![false; sent];
    for a in arrivals {
        if let Some(g) = usize::try_from(a.seq).ok().and_then(|i| got.get_mut(i)) {
            *g = true;
        }
    }
    (from_seq..sent as u64)
        .filter(|&s| {
            !usize::try_from(s)
                .ok()
                .and_then(|i| got.get(i))
                .copied()
                .unwrap_or(false)
        })
        .collect()
}
