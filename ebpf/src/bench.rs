//! Programs of the live-traffic bench (`tests/src/bin/bench-live.rs`) and
//! its test; the agent never loads them (aya loads programs by name).
//!
//! - `rb_bench_gen`: the traffic generator, run by `BPF_PROG_TEST_RUN` with
//!   live frames (`XDP_TX` out of the generator's veth). The kernel recycles
//!   its page-pool pages without restoring their contents, so a frame that
//!   was forwarded comes back with the next hop's MACs and TTL - 1: the
//!   program writes the Ethernet, IPv4 and UDP headers from `bench_gen_hdr`
//!   on every repetition.
//! - `rb_bench_sink`: at the sinks; counts each IPv4 UDP frame per CPU
//!   under its ingress ifindex and drops every frame (an XDP program also makes a veth a native
//!   XDP redirect target).
//! - `rb_bench_redirect`: the floor of the setup; writes the cached MACs and
//!   redirects to the backup, with nothing else (no parsing, no lookup).

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, PerCpuArray, PerCpuHashMap},
    helpers::generated::bpf_redirect,
    macros::{btf_map, xdp},
    programs::XdpContext,
};

use crate::packet::ptr_at;

/// Bytes of headers the generator writes: Ethernet (14), IPv4 (20), UDP (8).
pub const GEN_HDR_LEN: usize = 42;

/// Header template of the generator's frame (first `GEN_HDR_LEN` bytes used).
#[btf_map(name = "bench_gen_hdr")]
static GEN_HDR: Array<[u8; 48], 1> = Array::new();

/// Frames the generator offered, per CPU (slot 0).
#[btf_map(name = "bench_gen_sent")]
static GEN_SENT: PerCpuArray<u64, 1> = PerCpuArray::new();

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
