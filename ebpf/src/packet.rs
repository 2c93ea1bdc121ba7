//! Header parsing shared by `rb_xdp` and `rb_tc`: Ethernet, one optional
//! 802.1Q / 802.1ad tag, IPv4 (options allowed) or IPv6. Every access is
//! bounds-checked against `end`; anything short or unknown is `None`, which
//! both programs turn into "pass untouched".

use core::mem::size_of;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPV6_HLEN: usize = 40;
#[expect(clippy::cast_possible_truncation, reason = "40")]
const IPV6_HLEN_U16: u16 = IPV6_HLEN as u16;

/// Returns a pointer to a `T` at `start + off` when it lies fully before `end`.
#[inline(always)]
pub fn ptr_at<T>(start: usize, end: usize, off: usize) -> Option<*mut T> {
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
fn read_be16(start: usize, end: usize, off: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(start, end, off)?;
    // SAFETY: bounds checked by ptr_at; [u8; 2] has alignment 1.
    Some(u16::from_be_bytes(unsafe { *p }))
}

#[derive(Clone, Copy)]
pub enum Family {
    V4,
    V6,
}

/// What the programs need to know about a parsed frame.
#[derive(Clone, Copy)]
pub struct Parsed {
    /// Offset of the IP header from the start of the frame.
    pub l3: usize,
    /// The frame carries a VLAN tag in its data (between MACs and l3).
    pub tagged: bool,
    pub family: Family,
    /// IPv4 fragment (MF set or non-zero offset); always false for IPv6.
    pub fragment: bool,
    /// TTL / hop limit as received.
    pub hop: u8,
    /// Length of the IP packet (IPv4 total length, IPv6 payload length + 40).
    pub ip_len: u16,
    /// Inner EtherType (after the tag, if any), host order.
    pub proto: u16,
}

/// Parses the headers of the frame at `[start, end)`.
#[inline(always)]
pub fn parse(start: usize, end: usize) -> Option<Parsed> {
    let mut proto = read_be16(start, end, 12)?;
    let mut l3 = ETH_HLEN;
    let mut tagged = false;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = read_be16(start, end, ETH_HLEN + 2)?;
        l3 = ETH_HLEN + VLAN_HLEN;
        tagged = true;
    }
    match proto {
        ETH_P_IP => {
            let vihl = ptr_at::<u8>(start, end, l3)?;
            // Needs the fixed 20-byte header first.
            ptr_at::<[u8; 20]>(start, end, l3)?;
            // SAFETY: checked above.
            let vihl = unsafe { *vihl };
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 || start + l3 + ihl > end {
                return None;
            }
            let ip_len = read_be16(start, end, l3 + 2)?;
            let frag = read_be16(start, end, l3 + 6)?;
            let ttl = ptr_at::<u8>(start, end, l3 + 8)?;
            Some(Parsed {
                l3,
                tagged,
                family: Family::V4,
                fragment: frag & 0x3fff != 0,
                // SAFETY: checked by ptr_at.
                hop: unsafe { *ttl },
                ip_len,
                proto,
            })
        }
        ETH_P_IPV6 => {
            ptr_at::<[u8; IPV6_HLEN]>(start, end, l3)?;
            let v = ptr_at::<u8>(start, end, l3)?;
            // SAFETY: checked by ptr_at.
            if unsafe { *v } >> 4 != 6 {
                return None;
            }
            let payload = read_be16(start, end, l3 + 4)?;
            let hop = ptr_at::<u8>(start, end, l3 + 7)?;
            Some(Parsed {
                l3,
                tagged,
                family: Family::V6,
                fragment: false,
                // SAFETY: checked by ptr_at.
                hop: unsafe { *hop },
                ip_len: payload.saturating_add(IPV6_HLEN_U16),
                proto,
            })
        }
        _ => None,
    }
}

/// IPv4 destination address at `l3 + 16`.
#[inline(always)]
pub fn v4_addr(start: usize, end: usize, l3: usize, off: usize) -> Option<[u8; 4]> {
    let p = ptr_at::<[u8; 4]>(start, end, l3 + off)?;
    // SAFETY: checked by ptr_at.
    Some(unsafe { *p })
}

/// IPv6 address (16 bytes) at `l3 + off`.
#[inline(always)]
pub fn v6_addr(start: usize, end: usize, l3: usize, off: usize) -> Option<[u8; 16]> {
    let p = ptr_at::<[u8; 16]>(start, end, l3 + off)?;
    // SAFETY: checked by ptr_at.
    Some(unsafe { *p })
}

/// Decrements the TTL / hop limit of the packet whose IP header starts at
/// `start + l3`, fixing the IPv4 header checksum incrementally (RFC 1624: the
/// 16-bit word holding TTL and protocol drops by 0x0100). Returns false if the
/// header is not within bounds (nothing is written then).
#[inline(always)]
pub fn decrement_hop(start: usize, end: usize, l3: usize, family: Family) -> bool {
    match family {
        Family::V4 => {
            let Some(hdr) = ptr_at::<[u8; 20]>(start, end, l3) else {
                return false;
            };
            // SAFETY: 20 bytes at hdr are within the packet.
            let hdr = unsafe { &mut *hdr };
            if hdr[8] == 0 {
                return false;
            }
            hdr[8] -= 1;
            // Ones' complement arithmetic is byte-order independent: add
            // htons(0x0100) to the checksum as stored, with end-around carry.
            let mut sum = u32::from(u16::from_ne_bytes([hdr[10], hdr[11]]));
            sum += u32::from(u16::from_ne_bytes([0x01, 0x00]));
            sum = (sum & 0xffff) + (sum >> 16);
            #[expect(
                clippy::cast_possible_truncation,
                reason = "one fold of the sum of two 16-bit values fits 16 bits"
            )]
            let folded = sum as u16;
            let b = folded.to_ne_bytes();
            hdr[10] = b[0];
            hdr[11] = b[1];
            true
        }
        Family::V6 => {
            let Some(hop) = ptr_at::<u8>(start, end, l3 + 7) else {
                return false;
            };
            // SAFETY: checked by ptr_at.
            unsafe {
                if *hop == 0 {
                    return false;
                }
                *hop -= 1;
            }
            true
        }
    }
}
