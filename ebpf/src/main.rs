//! routebackup kernel programs.
//!
//! `rb_xdp` (LAN-facing interfaces, XDP) and `rb_tc` (same interfaces, TC
//! ingress) look the destination of every IPv4/IPv6 packet up in the
//! `segments_v4` / `segments_v6` LPM tries. Traffic to a segment whose entry
//! says `ACTION_STEER` is forwarded to the backup device instead of following
//! the kernel's route; everything else is passed untouched.
//!
//! XDP does what it can (Ethernet backup with a resolved neighbour): TTL
//! decrement, MAC rewrite, VLAN removal, redirect. The MACs come from the
//! entry when the agent cached them (`FLAG_MACS_VALID`; IP packets longer than
//! the cached MTU are left to the kernel), else from a fib lookup on the backup.
//! What it cannot do (L3 backup such as ppp/tun, unresolved neighbour, IPv4
//! fragments) it passes on to TC, which pops the VLAN tag, decrements the
//! TTL and uses `bpf_redirect` (L3 device) or `bpf_redirect_neigh`.
//!
//! Counting: XDP counts what it decides (steered, passed, failed, deferred);
//! TC counts steered / failed for what reaches it. A packet XDP counted as
//! passed carries a marker in the XDP metadata area so TC does not count it
//! a second time; where the kernel refuses XDP metadata (`RB_XDP_META` set
//! to 0 at load), XDP leaves the counting of such packets to TC, which
//! examines them again. While no entry steers (and XDP runs on every interface)
//! the agent switches TC off through the `tc_idle` map: `rb_tc` returns at
//! once and XDP leaves no marker.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Helpers are inlined on purpose: the verifier must see each packet access in
// the same function as the bounds check that makes it safe.
#![cfg_attr(
    target_arch = "bpf",
    expect(
        clippy::inline_always,
        reason = "the verifier sees each packet access next to its bounds check"
    )
)]

#[cfg(target_arch = "bpf")]
mod bench;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod progs;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
