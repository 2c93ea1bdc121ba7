//! Which routes can matter to a monitored segment.
//!
//! The watcher sees every route of every table (a full BGP table is about a
//! million of them, changing thousands of times a second). Only routes in a
//! watched table whose prefix equals a segment (exact mode) or contains one
//! (covering mode) reach the engine. The check is two binary searches over
//! sorted arrays and allocates nothing.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Config, MatchMode};

/// A prefix as (family, address bits left-aligned in a u128, length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    addr: u128,
    len: u8,
}

/// Address bits left-aligned in a u128 (IPv4 in the top 32 bits).
pub fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a))) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else if len >= 128 {
        u128::MAX
    } else {
        !(u128::MAX >> len)
    }
}

#[derive(Clone, Debug, Default)]
struct FamilyIndex {
    /// Segments of exact-mode groups, sorted.
    exact: Vec<Key>,
    /// Segments of covering-mode groups, sorted by (addr asc, len desc).
    covering: Vec<Key>,
    /// Some covering group of this family accepts a default route.
    allow_default: bool,
}

impl FamilyIndex {
    fn finish(&mut self) {
        self.exact.sort();
        self.exact.dedup();
        self.covering
            .sort_by(|a, b| a.addr.cmp(&b.addr).then(b.len.cmp(&a.len)));
        self.covering.dedup();
    }

    /// `addr` must already be masked to `len` (left-aligned: IPv4 in the top
    /// 32 bits, so prefix lengths need no scaling).
    fn matches(&self, addr: u128, len: u8) -> bool {
        let key = Key { addr, len };
        if self.exact.binary_search(&key).is_ok() {
            return true;
        }
        if self.covering.is_empty() {
            return false;
        }
        if len == 0 && !self.allow_default {
            return false;
        }
        // The route covers a segment S when S.len >= len and S.addr lies in
        // [addr, end]. Any segment in that range with S.len < len must start
        // exactly at `addr` (a coarser-aligned prefix inside the route's range
        // can only begin at the range's start), and those sort first among
        // equal addresses by descending length.
        let end = addr | !mask(len);
        let first = self.covering.partition_point(|s| s.addr < addr);
        match self.covering.get(first) {
            Some(s) if s.addr > end => return false,
            Some(s) if s.len >= len => return true,
            Some(_) => {}
            None => return false,
        }
        let next = self.covering.partition_point(|s| s.addr <= addr);
        matches!(self.covering.get(next), Some(s) if s.addr <= end)
    }
}

/// The set of watched tables and monitored segments.
#[derive(Clone, Debug, Default)]
pub struct SegmentFilter {
    tables: Vec<u32>,
    v4: FamilyIndex,
    v6: FamilyIndex,
}

impl SegmentFilter {
    pub fn from_config(config: &Config) -> SegmentFilter {
        let mut f = SegmentFilter {
            tables: config.agent.tables.clone(),
            ..Default::default()
        };
        for group in &config.groups {
            for seg in &group.segments {
                f.add_segment(*seg, group.match_mode, group.allow_default);
            }
        }
        f.finish();
        f
    }

    /// Builds a filter by hand (tests, benchmarks).
    pub fn new(tables: &[u32], segments: &[(IpNet, MatchMode, bool)]) -> SegmentFilter {
        let mut f = SegmentFilter {
            tables: tables.to_vec(),
            ..Default::default()
        };
        for (seg, mode, allow_default) in segments {
            f.add_segment(*seg, *mode, *allow_default);
        }
        f.finish();
        f
    }

    fn add_segment(&mut self, seg: IpNet, mode: MatchMode, allow_default: bool) {
        let seg = seg.trunc();
        let (idx, len) = match seg {
            IpNet::V4(n) => (&mut self.v4, n.prefix_len()),
            IpNet::V6(n) => (&mut self.v6, n.prefix_len()),
        };
        let key = Key {
            addr: addr_bits(seg.addr()),
            len,
        };
        match mode {
            MatchMode::Exact => idx.exact.push(key),
            MatchMode::Covering => {
                idx.covering.push(key);
                idx.allow_default |= allow_default;
            }
        }
    }

    fn finish(&mut self) {
        self.tables.sort_unstable();
        self.tables.dedup();
        self.v4.finish();
        self.v6.finish();
    }

    pub fn watches_table(&self, table: u32) -> bool {
        self.tables.binary_search(&table).is_ok()
    }

    /// Whether an IPv4 route `addr/len` (addr as u32) can match a segment.
    pub fn matches_v4(&self, addr: u32, len: u8) -> bool {
        if len > 32 {
            return false;
        }
        self.v4.matches((u128::from(addr) << 96) & mask(len), len)
    }

    /// Whether an IPv6 route `addr/len` can match a segment.
    pub fn matches_v6(&self, addr: u128, len: u8) -> bool {
        if len > 128 {
            return false;
        }
        self.v6.matches(addr & mask(len), len)
    }

    /// Whether a route to `prefix` can match a segment (table not checked).
    pub fn matches(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(n) => self.matches_v4(u32::from(n.network()), n.prefix_len()),
            IpNet::V6(n) => self.matches_v6(u128::from(n.network()), n.prefix_len()),
        }
    }

    /// Number of monitored segments (after deduplication).
    pub fn len(&self) -> usize {
        self.v4.exact.len() + self.v4.covering.len() + self.v6.exact.len() + self.v6.covering.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn filter(segs: &[(&str, MatchMode, bool)]) -> SegmentFilter {
        let v: Vec<_> = segs.iter().map(|(s, m, d)| (net(s), *m, *d)).collect();
        SegmentFilter::new(&[254], &v)
    }

    #[test]
    fn exact_mode_matches_only_the_prefix() {
        let f = filter(&[
            ("10.1.0.0/16", MatchMode::Exact, false),
            ("2001:db8::/32", MatchMode::Exact, false),
        ]);
        assert!(f.matches(&net("10.1.0.0/16")));
        assert!(!f.matches(&net("10.0.0.0/8")));
        assert!(!f.matches(&net("10.1.0.0/24")));
        assert!(!f.matches(&net("0.0.0.0/0")));
        assert!(f.matches(&net("2001:db8::/32")));
        assert!(!f.matches(&net("2001:db8::/48")));
        assert!(!f.matches(&net("2001::/16")));
    }

    #[test]
    fn covering_mode_matches_containing_prefixes() {
        let f = filter(&[
            ("10.0.0.0/8", MatchMode::Covering, false),
            ("10.0.5.0/24", MatchMode::Covering, false),
            ("192.168.7.128/25", MatchMode::Covering, false),
        ]);
        // Contains 10.0.5.0/24 but not 10.0.0.0/8.
        assert!(f.matches(&net("10.0.0.0/16")));
        assert!(f.matches(&net("10.0.5.0/24")));
        assert!(f.matches(&net("10.0.4.0/23")));
        assert!(f.matches(&net("8.0.0.0/5")));
        assert!(!f.matches(&net("10.0.6.0/24")));
        assert!(!f.matches(&net("10.0.5.0/25")));
        assert!(f.matches(&net("192.168.0.0/16")));
        assert!(f.matches(&net("192.168.7.128/25")));
        assert!(!f.matches(&net("192.168.7.0/25")));
        assert!(!f.matches(&net("11.0.0.0/8")));
        // The default route only with allow_default.
        assert!(!f.matches(&net("0.0.0.0/0")));
        let g = filter(&[("10.0.0.0/8", MatchMode::Covering, true)]);
        assert!(g.matches(&net("0.0.0.0/0")));
        assert!(!g.matches(&net("::/0")));
    }

    #[test]
    fn covering_v6() {
        let f = filter(&[("2001:db8:1::/48", MatchMode::Covering, true)]);
        assert!(f.matches(&net("2001:db8::/32")));
        assert!(f.matches(&net("2001:db8:1::/48")));
        assert!(!f.matches(&net("2001:db8:2::/48")));
        assert!(f.matches(&net("::/0")));
        assert!(!f.matches(&net("0.0.0.0/0")));
    }

    #[test]
    fn exact_default_route_segment() {
        let f = filter(&[("0.0.0.0/0", MatchMode::Exact, false)]);
        assert!(f.matches(&net("0.0.0.0/0")));
        assert!(!f.matches(&net("10.0.0.0/8")));
    }

    #[test]
    fn agrees_with_brute_force() {
        // Deterministic pseudo-random segments and routes in 10.0.0.0/8.
        let mut x: u32 = 12345;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut segs = Vec::new();
        for _ in 0..300 {
            let len = (rnd() % 17 + 8) as u8;
            let addr = 0x0a00_0000 | (rnd() & 0x00ff_ffff);
            let n = IpNet::new(std::net::Ipv4Addr::from(addr).into(), len)
                .unwrap()
                .trunc();
            segs.push((n, MatchMode::Covering, false));
        }
        let f = SegmentFilter::new(&[254], &segs);
        for _ in 0..20000 {
            let len = (rnd() % 25) as u8 + 1;
            let addr = 0x0a00_0000 | (rnd() & 0x00ff_ffff);
            let r = IpNet::new(std::net::Ipv4Addr::from(addr).into(), len)
                .unwrap()
                .trunc();
            let brute = segs.iter().any(|(s, _, _)| r.contains(s));
            assert_eq!(f.matches(&r), brute, "route {r}");
        }
    }
}
