//! Programs of the live-traffic bench (`tests/src/bin/bench-live.rs`) and
//! its test; the agent never loads them (aya loads programs by name).
//!
//! - `rb_bench_gen`: the traffic generator, run by `BPF_PROG_TEST_RUN` with
//!   live frames (`XDP_TX` out of the generator's veth). The kernel recycles
//!   its page-pool pages without restoring their contents, so a frame that
//!   was forwarded comes back with the next hop's MACs and TTL - 1: the
//!   program writes the Ethernet, IPv4 and UDP headers from `bench_gen_hdr`
//!   on every repetition.
//! - `rb_bench_amp`: the generator where live frames are refused (TC
//!   egress of the generator's veth): each frame a user thread sends
//!   leaves as `bench_amp` copies (`bpf_clone_redirect` to the same
//!   device's egress), so one system call becomes many frames. The copies
//!   pass this hook again; `AMP_MARK` in `skb->mark` lets them leave instead
//!   of multiplying without end (the mark does not cross into the edge's
//!   namespace: the veth scrubs it). The copies share the sender's data, and
//!   whoever changes a shared frame (the edge's forwarding, XDP on an skb)
//!   copies it first, so the headers stay as the user thread wrote them.
//! - `rb_bench_sink`: at the sinks; counts each IPv4 UDP frame per CPU
//!   under its ingress ifindex and drops every frame (an XDP program also makes a veth a native
//!   XDP redirect target).
//! - `rb_bench_redirect`: the floor of the setup; writes the cached MACs and
//!   redirects to the backup, with nothing else (no parsing, no lookup).

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    btf_maps::{Array, PerCpuArray, PerCpuHashMap},
    helpers::generated::{bpf_clone_redirect, bpf_redirect},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::packet::ptr_at;

/// Bytes of headers the generator writes: Ethernet (14), IPv4 (20), UDP (8).
pub const GEN_HDR_LEN: usize = 42;

/// Header template of the generator's frame (first `GEN_HDR_LEN` bytes used).
#[btf_map(name = "bench_gen_hdr")]
static GEN_HDR: Array<[u8; 48], 1> = Array::new();

/// Frames the generator offered, per CPU (slot 0); slot 1: those of them
/// the veth refused at once (`rb_bench_amp` only: its receive ring was
/// full).
#[btf_map(name = "bench_gen_sent")]
static GEN_SENT: PerCpuArray<u64, 2> = PerCpuArray::new();

/// Copies `rb_bench_amp` makes of each frame (slot 0).
#[btf_map(name = "bench_amp")]
static AMP: Array<u32, 1> = Array::new();

/// Most copies per frame: bounds the loop for the verifier.
const AMP_MAX: u32 = 1024;

/// `skb->mark` of the amplifier's copies (any value the generator's own
/// namespace does not use).
const AMP_MARK: u32 = 0x7262_6170;

/// Frames that reached a sink, per CPU, by the ifindex of the interface
/// they arrived on; the bench inserts a zero for each sink interface
/// (interfaces keep their host ifindex when moved into a namespace, so
/// they are no small array index). Frames on others are not counted.
#[btf_map(name = "bench_sink")]
static SINK: PerCpuHashMap<u32, u64, 16> = PerCpuHashMap::new();

/// Where `rb_bench_redirect` sends frames, 16 bytes: ifindex (u32, native
/// order), destination MAC, source MAC.
#[btf_map(name = "bench_redirect")]
static REDIRECT: Array<[u8; 16], 1> = Array::new();

#[inline(always)]
fn bump(slot: Option<*mut u64>) {
    if let Some(c) = slot {
        // SAFETY: this CPU's slot; programs are not preempted on one CPU mid-run.
        unsafe { *c += 1 };
    }
}

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] generates the caller, which passes the context by value"
)]
pub fn rb_bench_gen(ctx: XdpContext) -> u32 {
    let Some(hdr) = GEN_HDR.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(out) = ptr_at::<[u8; GEN_HDR_LEN]>(ctx.data(), ctx.data_end(), 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: GEN_HDR_LEN bytes at `out` lie inside the frame (checked above).
    let out = unsafe { &mut *out };
    let mut i = 0;
    while i < GEN_HDR_LEN {
        out[i] = hdr[i];
        i += 1;
    }
    bump(GEN_SENT.get_ptr_mut(0));
    xdp_action::XDP_TX
}

#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[classifier] generates the caller, which passes the context by value"
)]
pub fn rb_bench_amp(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: context field reads, rewritten by the verifier to skb accesses.
    let (mark, ifindex) = unsafe { ((*skb).mark, (*skb).ifindex) };
    if mark == AMP_MARK {
        return TC_ACT_OK;
    }
    let copies = match AMP.get(0) {
        Some(&n) if n < AMP_MAX => n,
        Some(_) => AMP_MAX,
        None => 0,
    };
    // SAFETY: context field write; the clones inherit it.
    unsafe { (*skb).mark = AMP_MARK };
    let mut sent = 0u64;
    let mut refused = 0u64;
    let mut i = 0;
    while i < copies {
        // SAFETY: plain helper call on our skb; flags 0: the device's egress.
        let rc = unsafe { bpf_clone_redirect(skb, ifindex, 0) };
        sent += 1;
        if rc != 0 {
            refused += 1;
        }
        i += 1;
    }
    add(GEN_SENT.get_ptr_mut(0), sent);
    add(GEN_SENT.get_ptr_mut(1), refused);
    // The copies carry the frame; the original would be one more, uncounted.
    // SHOT, not STOLEN: TCX reads any code it does not know (STOLEN among
    // them) as "next", which passes the frame. The sender sees ENOBUFS.
    TC_ACT_SHOT
}

#[inline(always)]
fn add(slot: Option<*mut u64>, n: u64) {
    if let Some(c) = slot {
        // SAFETY: this CPU's slot; programs are not preempted on one CPU mid-run.
        unsafe { *c += n };
    }
}

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] generates the caller, which passes the context by value"
)]
pub fn rb_bench_sink(ctx: XdpContext) -> u32 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "ifindexes are u32 in struct xdp_md"
    )]
    let ifindex = ctx.ingress_ifindex() as u32;
    // Only the generator's frames (IPv4, UDP): the edge's own packets
    // (IPv6 neighbour discovery, ...) must not count as forwarded.
    if let Some(h) = ptr_at::<[u8; 24]>(ctx.data(), ctx.data_end(), 0) {
        // SAFETY: 24 bytes at `h` lie inside the frame (checked by ptr_at).
        let h = unsafe { &*h };
        if h[12] == 0x08 && h[13] == 0x00 && h[23] == 17 {
            bump(SINK.get_ptr_mut(ifindex));
        }
    }
    xdp_action::XDP_DROP
}

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] generates the caller, which passes the context by value"
)]
pub fn rb_bench_redirect(ctx: XdpContext) -> u32 {
    let Some(conf) = REDIRECT.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(eth) = ptr_at::<[u8; 12]>(ctx.data(), ctx.data_end(), 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: 12 bytes at `eth` lie inside the frame (checked above).
    let eth = unsafe { &mut *eth };
    eth.copy_from_slice(&conf[4..16]);
    let ifindex = u32::from_ne_bytes([conf[0], conf[1], conf[2], conf[3]]);
    // SAFETY: plain helper call.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "bpf_redirect returns an XDP action, a small non-negative number"
    )]
    let rc = unsafe { bpf_redirect(ifindex, 0) } as u32;
    rc
}
