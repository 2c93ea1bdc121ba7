//! Types shared by the kernel programs (`ebpf/`) and the agent (`agent/`).
//!
//! Every type here is `#[repr(C)]` with explicit padding so that the kernel,
//! the agent and `bpftool` agree on the layout byte for byte.
#![no_std]

/// Map names; the agent pins each map under its pin directory with this name.
pub const MAP_SEGMENTS_V4: &str = "segments_v4";
pub const MAP_SEGMENTS_V6: &str = "segments_v6";
pub const MAP_STATS: &str = "stats";
/// A one-entry array (`u32` at index 0), the agent's switch for `rb_tc`:
/// nonzero while no segment entry steers and XDP is attached to every
/// interface. Then `rb_tc` has nothing to do (XDP counts every packet to a
/// `pass` entry) and returns after this one lookup, and `rb_xdp` leaves no
/// `META_COUNTED` mark. 0, the value of a new map, is the behaviour without
/// the switch. The agent clears it before it writes the first steer entry
/// (so a packet XDP defers always finds TC working) and sets it after the
/// last one is gone.
pub const MAP_TC_IDLE: &str = "tc_idle";

/// Program names (the function names in `ebpf/src/main.rs`).
pub const PROG_XDP: &str = "rb_xdp";
pub const PROG_TC: &str = "rb_tc";
/// A trivial XDP program (`XDP_PASS`, nothing else): the floor that the
/// benchmarks measure `rb_xdp` against in the same run. Never attached.
pub const PROG_FLOOR: &str = "rb_floor";

/// Marker `rb_xdp` leaves (native byte order) in the XDP metadata area of a
/// packet it is done with: counted as passed, or to no monitored segment
/// (and not IP at all), so `rb_tc` neither counts nor parses it again. Only
/// packets XDP defers to TC (or could not redirect) come without it, and
/// every packet while `MAP_TC_IDLE` says TC is idle. The agent strips it from
/// BPF_PROG_TEST_RUN output. "RBP1".
pub const META_COUNTED: u32 = 0x5242_5031;

/// Capacity of each segment trie.
pub const MAX_SEGMENTS: u32 = 65_536;
/// Number of groups the stats array can count (group ids are `0..MAX_GROUPS`).
pub const MAX_GROUPS: u32 = 4_096;

/// `SegmentValue::action`: traffic to the segment follows the kernel's route.
pub const ACTION_PASS: u32 = 0;
/// `SegmentValue::action`: traffic to the segment is redirected to `backup_ifindex`.
pub const ACTION_STEER: u32 = 1;

/// `SegmentValue::flags`: the backup is an L3 device without a MAC header
/// (ppp, tun, wireguard...). XDP cannot redirect to it; the TC program does.
pub const FLAG_L3_DEVICE: u32 = 1 << 0;
/// `SegmentValue::flags`: `gateway` holds an IPv4 next hop (first 4 bytes, network order).
pub const FLAG_GATEWAY_V4: u32 = 1 << 1;
/// `SegmentValue::flags`: `gateway` holds an IPv6 next hop.
pub const FLAG_GATEWAY_V6: u32 = 1 << 2;
/// `SegmentValue::flags`: `dmac`, `smac` and `mtu` hold the next hop's MAC,
/// the backup interface's MAC and its MTU, learned by the agent from the
/// kernel's neighbour table. XDP then rewrites the frame from them without a
/// per-packet `bpf_fib_lookup`. Cleared when the neighbour goes away (XDP falls
/// back to the fib lookup, TC to `bpf_redirect_neigh`, which re-resolves it).
pub const FLAG_MACS_VALID: u32 = 1 << 3;
/// `SegmentValue::flags`: the backup is an Ethernet device that cannot take
/// XDP redirects (its xdp-features lack NDO_XMIT, as on a veth whose peer has
/// neither XDP nor GRO, or the agent saw redirected packets not transmitted):
/// XDP passes the packets on and the TC program steers them.
pub const FLAG_TC_ONLY: u32 = 1 << 4;

/// Value of `segments_v4` / `segments_v6` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentValue {
    /// Index into `stats` (the group's position in the config).
    pub group_id: u32,
    /// `ACTION_PASS` or `ACTION_STEER`.
    pub action: u32,
    /// Interface index of the backup link's device (0 while not steering).
    pub backup_ifindex: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Next hop on an Ethernet backup (see `FLAG_GATEWAY_V4` / `FLAG_GATEWAY_V6`),
    /// network byte order; all zero when there is none.
    pub gateway: [u8; 16],
    /// Next hop's MAC (destination of redirected frames); valid with `FLAG_MACS_VALID`.
    pub dmac: [u8; 6],
    /// The backup interface's own MAC (source); valid with `FLAG_MACS_VALID`.
    pub smac: [u8; 6],
    /// The backup interface's MTU; with `FLAG_MACS_VALID`, XDP leaves IP packets
    /// longer than this to the kernel (fragmentation / ICMP "frag needed").
    pub mtu: u16,
    #[expect(
        clippy::pub_underscore_fields,
        reason = "explicit padding; public so the struct can be built with a literal"
    )]
    pub _pad: u16,
}
// 48 bytes, alignment 4 (the BTF LPM trie needs the key data size, 4 or 16,
// to be a multiple of the value's alignment): no implicit padding.
const _: () = assert!(size_of::<SegmentValue>() == 48);
const _: () = assert!(align_of::<SegmentValue>() == 4);

/// Per-CPU counters of one group, the value of the `stats` per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupStats {
    /// Packets handed to the backup device by a redirect (XDP or TC). The
    /// kernel does not tell a program whether the device then transmitted
    /// them: a full transmit ring or a neighbour that never resolves
    /// (`bpf_redirect_neigh` queues on it) drops them after they were counted
    /// here; the backup interface's own counters show those drops.
    pub steered_packets: u64,
    pub steered_bytes: u64,
    /// Packets to a monitored segment left to the kernel's route (action pass,
    /// TTL/hop limit about to expire, redirect not possible).
    pub passed_packets: u64,
    pub passed_bytes: u64,
    /// Steer entries whose redirect failed (fib lookup error, redirect helper error).
    pub redirect_failures: u64,
    /// Packets XDP handed to the TC program (L3 or TC-only backup, unresolved
    /// neighbour, fragment).
    pub deferred_packets: u64,
}
const _: () = assert!(size_of::<GroupStats>() == 48);

impl GroupStats {
    /// Adds another CPU's counters to these.
    pub fn accumulate(&mut self, other: &GroupStats) {
        self.steered_packets += other.steered_packets;
        self.steered_bytes += other.steered_bytes;
        self.passed_packets += other.passed_packets;
        self.passed_bytes += other.passed_bytes;
        self.redirect_failures += other.redirect_failures;
        self.deferred_packets += other.deferred_packets;
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), contain only integers and have no padding
    // (checked by the size assertions above).
    unsafe impl aya::Pod for super::SegmentValue {}
    unsafe impl aya::Pod for super::GroupStats {}
}
