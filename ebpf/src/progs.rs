//! The maps and the two programs. See main.rs for the overall behaviour.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        __sk_buff, bpf_fib_lookup as FibParams, bpf_redir_neigh, xdp_action,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT, TC_ACT_OK,
        TC_ACT_REDIRECT,
    },
    btf_maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray},
    helpers::generated::{
        bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_skb_pull_data, bpf_skb_vlan_pop,
        bpf_xdp_adjust_head, bpf_xdp_adjust_meta,
    },
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use routebackup_common::{
    GroupStats, SegmentValue, ACTION_PASS, ACTION_STEER, FLAG_GATEWAY_V4, FLAG_GATEWAY_V6,
    FLAG_L3_DEVICE, FLAG_MACS_VALID, FLAG_TC_ONLY, MAP_SEGMENTS_V4, MAP_SEGMENTS_V6, MAP_STATS,
    MAP_TC_IDLE, MAX_GROUPS, MAX_SEGMENTS, META_COUNTED,
};

use crate::packet::{self, ptr_at, Family, Parsed, ETH_HLEN, VLAN_HLEN};

/// A BTF map named `$name`. `btf_map` takes only a string literal, while the
/// agent finds each map by its `routebackup_common` constant: the name is
/// written once here and checked against that constant at compile time.
macro_rules! named_map {
    ($name:literal == $common:ident, static $ident:ident: $ty:ty = $init:expr;) => {
        const _: () = assert!(
            str_eq($name, $common),
            concat!(
                "map name \"",
                $name,
                "\" differs from routebackup_common::",
                stringify!($common)
            )
        );
        #[btf_map(name = $name)]
        static $ident: $ty = $init;
    };
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

named_map! {
    "segments_v4" == MAP_SEGMENTS_V4,
    static SEGMENTS_V4: LpmTrie<[u8; 4], SegmentValue, { MAX_SEGMENTS as usize }> = LpmTrie::new();
}

named_map! {
    "segments_v6" == MAP_SEGMENTS_V6,
    static SEGMENTS_V6: LpmTrie<[u8; 16], SegmentValue, { MAX_SEGMENTS as usize }> = LpmTrie::new();
}

named_map! {
    "stats" == MAP_STATS,
    static STATS: PerCpuArray<GroupStats, { MAX_GROUPS as usize }> = PerCpuArray::new();
}

named_map! {
    "tc_idle" == MAP_TC_IDLE,
    static TC_IDLE: Array<u32, 1> = Array::new();
}

/// Load-time constants (`EbpfLoader::override_global`, from the agent's kernel
/// probe). They live in `.rodata`, which aya freezes, so the verifier reads
/// their value as a known scalar and never walks the branch they close: a
/// helper the kernel refuses (6.18 hardened builds refuse
/// `bpf_xdp_adjust_meta` in XDP) then costs nothing and fails nothing. One
/// object with switches rather than program variants: every combination
/// loads from the same code, and the tests force each switch on any kernel.
///
/// `RB_XDP_META`: XDP may leave the `META_COUNTED` mark for TC.
#[unsafe(no_mangle)]
static RB_XDP_META: u32 = 1;
/// `RB_XDP_FIB`: XDP may call `bpf_fib_lookup`; without it, a steered packet
/// whose next hop's MACs are not cached is left to TC (`bpf_redirect_neigh`).
#[unsafe(no_mangle)]
static RB_XDP_FIB: u32 = 1;

#[inline(always)]
fn xdp_meta() -> bool {
    // SAFETY: reading a static; volatile so the compiler keeps the load the
    // loader's value reaches, instead of folding the default in.
    unsafe { core::ptr::read_volatile(&raw const RB_XDP_META) != 0 }
}

#[inline(always)]
fn xdp_fib() -> bool {
    // SAFETY: as in `xdp_meta`.
    unsafe { core::ptr::read_volatile(&raw const RB_XDP_FIB) != 0 }
}

/// The agent's switch: true while no entry steers and XDP runs on every
/// interface, so `rb_tc` has nothing to do (see `MAP_TC_IDLE`). An array
/// lookup, which the verifier inlines.
#[inline(always)]
fn tc_idle() -> bool {
    TC_IDLE.get(0).is_some_and(|v| *v != 0)
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

// Struct sizes as the helpers take them (an int); both are a few dozen bytes.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "64 bytes"
)]
const FIB_PARAMS_LEN: i32 = size_of::<FibParams>() as i32;
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "20 bytes"
)]
const REDIR_NEIGH_LEN: i32 = size_of::<bpf_redir_neigh>() as i32;
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "4"
)]
const VLAN_HLEN_I32: i32 = VLAN_HLEN as i32;

/// Bytes of headers TC needs in the linear area (Ethernet + tag + IPv6, which
/// is also more than an IPv4 header with full options: 14 + 4 + 60 = 78).
const TC_PULL_LEN: u32 = 78;

#[derive(Clone, Copy)]
enum Counter {
    Steered,
    Passed,
    Failure,
    Deferred,
}

#[inline(always)]
fn count(group: u32, which: Counter, bytes: u64) {
    let Some(s) = STATS.get_ptr_mut(group) else {
        return;
    };
    // SAFETY: per-CPU slot of this CPU; no other writer runs concurrently on it
    // (programs are not preempted on the same CPU mid-run).
    let s = unsafe { &mut *s };
    match which {
        Counter::Steered => {
            s.steered_packets += 1;
            s.steered_bytes += bytes;
        }
        Counter::Passed => {
            s.passed_packets += 1;
            s.passed_bytes += bytes;
        }
        Counter::Failure => s.redirect_failures += 1,
        Counter::Deferred => s.deferred_packets += 1,
    }
}

/// Longest-prefix lookup of the packet's destination.
#[inline(always)]
fn lookup(start: usize, end: usize, p: &Parsed) -> Option<SegmentValue> {
    match p.family {
        Family::V4 => {
            let dst = packet::v4_addr(start, end, p.l3, 16)?;
            let key = Key::new(32, dst);
            SEGMENTS_V4.get(&key).copied()
        }
        Family::V6 => {
            let dst = packet::v6_addr(start, end, p.l3, 24)?;
            let key = Key::new(128, dst);
            SEGMENTS_V6.get(&key).copied()
        }
    }
}

// ---------------------------------------------------------------- XDP ----

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[xdp] generates the caller, which passes the context by value"
)]
pub fn rb_xdp(ctx: XdpContext) -> u32 {
    match try_xdp(&ctx) {
        Some(v) => v,
        // Not IP, truncated, or to no monitored segment: TC would only parse
        // it and look the trie up again to find the same.
        None => {
            done(&ctx);
            xdp_action::XDP_PASS
        }
    }
}

/// The floor of the per-packet figures: an XDP program that does nothing.
#[xdp]
pub fn rb_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Result of a fib lookup on the backup device.
struct Fib {
    rc: i64,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// The one place that knows the bindgen names of `struct bpf_fib_lookup`.
#[inline(always)]
fn fib_lookup_output(
    ctx: *mut core::ffi::c_void,
    ifindex: u32,
    tot_len: u16,
    family: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
) -> Fib {
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is a valid value.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = family;
    params.ifindex = ifindex;
    params.__bindgen_anon_1.tot_len = tot_len;
    if family == AF_INET {
        let mut s = [0u8; 4];
        s.copy_from_slice(&src[..4]);
        let mut d = [0u8; 4];
        d.copy_from_slice(&dst[..4]);
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(s);
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(d);
    } else {
        // SAFETY: [u8; 16] and [u32; 4] have the same size; copy bytes.
        params.__bindgen_anon_3.ipv6_src =
            unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*src) };
        params.__bindgen_anon_4.ipv6_dst =
            unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*dst) };
    }
    // SAFETY: params is a valid, initialised struct of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx, &raw mut params, FIB_PARAMS_LEN, BPF_FIB_LOOKUP_OUTPUT) };
    Fib {
        rc,
        ifindex: params.ifindex,
        smac: params.smac,
        dmac: params.dmac,
    }
}

#[inline(always)]
fn try_xdp(ctx: &XdpContext) -> Option<u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    let p = packet::parse(start, end)?;
    let seg = lookup(start, end, &p)?;
    let bytes = (end - start) as u64;
    let group = seg.group_id;

    if seg.action != ACTION_STEER || p.hop <= 1 {
        // Without the mark, TC cannot tell this packet was counted: while
        // TC runs, it counts the packet instead (`rb_tc` examines it again).
        // One switch lookup for both questions (counted here? marked?).
        let idle = tc_idle();
        if xdp_meta() || idle {
            count(group, Counter::Passed, bytes);
            if xdp_meta() && !idle {
                mark_counted(ctx);
            }
        }
        return Some(xdp_action::XDP_PASS);
    }
    if seg.flags & (FLAG_L3_DEVICE | FLAG_TC_ONLY) != 0 || p.fragment {
        count(group, Counter::Deferred, bytes);
        return Some(xdp_action::XDP_PASS);
    }

    if seg.flags & FLAG_MACS_VALID != 0 {
        // Cached next hop (the agent follows the neighbour table): no fib
        // lookup. Packets longer than the backup's MTU go to the kernel, which
        // fragments them or answers "fragmentation needed".
        if p.ip_len > seg.mtu {
            count(group, Counter::Deferred, bytes);
            return Some(xdp_action::XDP_PASS);
        }
        return rewrite_and_redirect(ctx, &p, &seg, &seg.dmac, &seg.smac, bytes);
    }

    if !xdp_fib() {
        count(group, Counter::Deferred, bytes);
        return Some(xdp_action::XDP_PASS);
    }

    // Lookup target: the gateway (its family decides) or the destination.
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let family;
    let pkt_family = match p.family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    };
    match p.family {
        Family::V4 => {
            src[..4].copy_from_slice(&packet::v4_addr(start, end, p.l3, 12)?);
            dst[..4].copy_from_slice(&packet::v4_addr(start, end, p.l3, 16)?);
        }
        Family::V6 => {
            src = packet::v6_addr(start, end, p.l3, 8)?;
            dst = packet::v6_addr(start, end, p.l3, 24)?;
        }
    }
    if seg.flags & FLAG_GATEWAY_V4 != 0 {
        family = AF_INET;
        dst = [0u8; 16];
        dst[..4].copy_from_slice(&seg.gateway[..4]);
    } else if seg.flags & FLAG_GATEWAY_V6 != 0 {
        family = AF_INET6;
        dst = seg.gateway;
    } else {
        family = pkt_family;
    }
    if family != pkt_family {
        src = [0u8; 16];
    }
    // The MTU check of the lookup needs the IP length in the gateway's family
    // sense only loosely: the kernel compares it with the route's MTU.
    let fib = fib_lookup_output(
        ctx.as_ptr(),
        seg.backup_ifindex,
        p.ip_len,
        family,
        &src,
        &dst,
    );
    if fib.rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        count(group, Counter::Deferred, bytes);
        return Some(xdp_action::XDP_PASS);
    }
    if fib.rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) || fib.ifindex != seg.backup_ifindex {
        count(group, Counter::Failure, bytes);
        return Some(xdp_action::XDP_PASS);
    }

    rewrite_and_redirect(ctx, &p, &seg, &fib.dmac, &fib.smac, bytes)
}

/// Decrements TTL / hop limit, removes the VLAN tag, writes the MACs and
/// redirects to the backup.
#[inline(always)]
fn rewrite_and_redirect(
    ctx: &XdpContext,
    p: &Parsed,
    seg: &SegmentValue,
    dmac: &[u8; 6],
    smac: &[u8; 6],
    bytes: u64,
) -> Option<u32> {
    let group = seg.group_id;
    if !packet::decrement_hop(ctx.data(), ctx.data_end(), p.l3, p.family) {
        return Some(xdp_action::XDP_PASS);
    }
    if p.tagged {
        // SAFETY: ctx is the program's context; shrinking by the tag length
        // keeps at least the Ethernet header (checked below).
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, VLAN_HLEN_I32) } != 0 {
            count(group, Counter::Failure, bytes);
            return Some(xdp_action::XDP_PASS);
        }
    }
    let start = ctx.data();
    let end = ctx.data_end();
    let eth = ptr_at::<[u8; ETH_HLEN]>(start, end, 0)?;
    // SAFETY: checked by ptr_at.
    let eth = unsafe { &mut *eth };
    eth[..6].copy_from_slice(dmac);
    eth[6..12].copy_from_slice(smac);
    let proto = p.proto.to_be_bytes();
    eth[12] = proto[0];
    eth[13] = proto[1];

    // SAFETY: plain helper call.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "bpf_redirect returns an XDP action, a small non-negative number"
    )]
    let rc = unsafe { bpf_redirect(seg.backup_ifindex, 0) } as u32;
    if rc == xdp_action::XDP_REDIRECT {
        count(group, Counter::Steered, bytes);
    } else {
        count(group, Counter::Failure, bytes);
    }
    Some(rc)
}

/// XDP is done with a packet it passes: tells `rb_tc` so, unless TC is idle
/// anyway (then the mark would cost about 9 ns per packet for nothing) or
/// the kernel has no XDP metadata (then TC examines the packet again).
#[inline(always)]
fn done(ctx: &XdpContext) {
    if xdp_meta() && !tc_idle() {
        mark_counted(ctx);
    }
}

/// Leaves `META_COUNTED` in the metadata area (best effort: drivers without
/// metadata support make TC examine, and count, the packet again).
#[inline(always)]
fn mark_counted(ctx: &XdpContext) {
    // SAFETY: growing the metadata area by 4 bytes; checked below.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -4) } != 0 {
        return;
    }
    let meta = ctx.metadata();
    let data = ctx.data();
    if meta + 4 > data {
        return;
    }
    // SAFETY: [meta, meta + 4) lies inside the metadata area.
    unsafe { *(meta as *mut u32) = META_COUNTED };
}

// ----------------------------------------------------------------- TC ----

#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "#[classifier] generates the caller, which passes the context by value"
)]
pub fn rb_tc(ctx: TcContext) -> i32 {
    match try_tc(&ctx) {
        Some(v) => v,
        None => TC_ACT_OK,
    }
}

#[inline(always)]
fn skb(ctx: &TcContext) -> *mut __sk_buff {
    ctx.skb.skb
}

#[inline(always)]
fn try_tc(ctx: &TcContext) -> Option<i32> {
    // Nothing steered, XDP on every interface: XDP counted what there was
    // to count.
    if tc_idle() {
        return Some(TC_ACT_OK);
    }
    let skb = skb(ctx);
    // A packet XDP already counted as passed: nothing to do. Without XDP
    // metadata there is no mark to read, and XDP left the counting to us.
    if xdp_meta() {
        // SAFETY: reading context fields the verifier rewrites to skb accesses.
        let (meta, data0) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
        if meta + 4 <= data0 {
            // SAFETY: [meta, meta + 4) is inside the metadata area.
            if unsafe { *(meta as *const u32) } == META_COUNTED {
                return Some(TC_ACT_OK);
            }
        }
    }

    let mut start = ctx.data();
    let mut end = ctx.data_end();
    let len = ctx.len();
    if end - start < TC_PULL_LEN as usize && len as usize > end - start {
        let want = if len < TC_PULL_LEN { len } else { TC_PULL_LEN };
        // SAFETY: plain helper call on our skb.
        unsafe { bpf_skb_pull_data(skb, want) };
        start = ctx.data();
        end = ctx.data_end();
    }
    let p = packet::parse(start, end)?;
    let seg = lookup(start, end, &p)?;
    let group = seg.group_id;
    let bytes = u64::from(len);

    if seg.action == ACTION_PASS || seg.action != ACTION_STEER || p.hop <= 1 {
        count(group, Counter::Passed, bytes);
        return Some(TC_ACT_OK);
    }
    if seg.backup_ifindex == 0 {
        count(group, Counter::Failure, bytes);
        return Some(TC_ACT_OK);
    }

    // SAFETY: context field read.
    let hw_tag = unsafe { (*skb).vlan_present } != 0;
    let mut l3 = p.l3;
    if p.tagged || hw_tag {
        // SAFETY: helper call on our skb; pops the accelerated or in-data tag.
        if unsafe { bpf_skb_vlan_pop(skb) } != 0 {
            count(group, Counter::Failure, bytes);
            return Some(TC_ACT_OK);
        }
        if p.tagged {
            l3 -= VLAN_HLEN;
        }
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if !packet::decrement_hop(start, end, l3, p.family) {
        count(group, Counter::Failure, bytes);
        return Some(TC_ACT_OK);
    }

    let rc = if seg.flags & FLAG_L3_DEVICE != 0 {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(seg.backup_ifindex, 0) }
    } else if seg.flags & (FLAG_GATEWAY_V4 | FLAG_GATEWAY_V6) != 0 {
        // SAFETY: bpf_redir_neigh is plain old data; zero is valid.
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        if seg.flags & FLAG_GATEWAY_V4 != 0 {
            nh.nh_family = u32::from(AF_INET);
            let mut g = [0u8; 4];
            g.copy_from_slice(&seg.gateway[..4]);
            nh.__bindgen_anon_1.ipv4_nh = u32::from_ne_bytes(g);
        } else {
            nh.nh_family = u32::from(AF_INET6);
            // SAFETY: same size, byte copy.
            nh.__bindgen_anon_1.ipv6_nh =
                unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(seg.gateway) };
        }
        // SAFETY: nh is valid for the size passed.
        unsafe { bpf_redirect_neigh(seg.backup_ifindex, &raw mut nh, REDIR_NEIGH_LEN, 0) }
    } else {
        // SAFETY: NULL params with length 0 is the documented form.
        unsafe { bpf_redirect_neigh(seg.backup_ifindex, core::ptr::null_mut(), 0, 0) }
    };
    if rc == i64::from(TC_ACT_REDIRECT) {
        count(group, Counter::Steered, bytes);
        Some(TC_ACT_REDIRECT)
    } else {
        count(group, Counter::Failure, bytes);
        Some(TC_ACT_OK)
    }
}
