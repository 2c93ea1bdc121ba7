//! Crafted Ethernet frames for BPF_PROG_TEST_RUN tests and benches.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const LAN_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0e, 0x01];
pub const LAN_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];

/// How a frame is built.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    /// Some((tpid, vid)): one VLAN tag (0x8100 or 0x88a8).
    pub vlan: Option<(u16, u16)>,
    pub ttl: u8,
    /// IPv4 options length in bytes (multiple of 4, at most 40).
    pub options: usize,
    /// IPv4 flags+fragment offset field (host order), e.g. 0x2000 for MF.
    pub frag: u16,
    pub payload: usize,
}

impl Default for FrameSpec {
    fn default() -> Self {
        FrameSpec {
            vlan: None,
            ttl: 64,
            options: 0,
            frag: 0,
            payload: 32,
        }
    }
}

fn eth(spec: &FrameSpec, proto: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&LAN_DST_MAC);
    f.extend_from_slice(&LAN_SRC_MAC);
    if let Some((tpid, vid)) = spec.vlan {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&proto.to_be_bytes());
    f
}

/// Internet checksum of `data` (the value to store, host order).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let w = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the carries are folded in: sum fits 16 bits"
    )]
    let folded = sum as u16;
    !folded
}

/// True if the IPv4 header at `l3` has a valid checksum.
pub fn ipv4_checksum_ok(frame: &[u8], l3: usize) -> bool {
    let ihl = ((frame[l3] & 0x0f) as usize) * 4;
    checksum(&frame[l3..l3 + ihl]) == 0
}

/// Ethernet (+tag) + IPv4 (+options) + UDP.
#[expect(
    clippy::cast_possible_truncation,
    reason = "test frames are far below 64 KiB, so every length fits its header field"
)]
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, spec: &FrameSpec) -> Vec<u8> {
    let mut f = eth(spec, 0x0800);
    let ihl = 20 + spec.options;
    let total = ihl + 8 + spec.payload;
    let l3 = f.len();
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&0x1234u16.to_be_bytes());
    f.extend_from_slice(&spec.frag.to_be_bytes());
    f.push(spec.ttl);
    f.push(17);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    // NOP options ending with End of Options.
    for i in 0..spec.options {
        f.push(u8::from(i + 1 != spec.options));
    }
    let c = checksum(&f[l3..l3 + ihl]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    udp(&mut f, spec.payload);
    f
}

/// Ethernet (+tag) + IPv6 + UDP.
#[expect(
    clippy::cast_possible_truncation,
    reason = "test frames are far below 64 KiB, so every length fits its header field"
)]
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, spec: &FrameSpec) -> Vec<u8> {
    let mut f = eth(spec, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + spec.payload) as u16).to_be_bytes());
    f.push(17);
    f.push(spec.ttl);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    udp(&mut f, spec.payload);
    f
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "test frames are far below 64 KiB, so every length fits its header field"
)]
fn udp(f: &mut Vec<u8>, payload: usize) {
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|i| i as u8));
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&LAN_SRC_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&LAN_SRC_MAC);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f
}
