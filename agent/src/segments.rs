//! Which route prefixes match which monitored segments: the one rule, indexed.
//!
//! A route matches a segment of an `exact` group when its prefix is the
//! segment, and a segment of a `covering` group when its prefix contains the
//! segment (a default route only with `allow_default`). Two callers ask:
//!
//! - the watcher, for every route message (a full BGP table is about a million
//!   routes, changing thousands of times a second): "can this route match any
//!   segment?" — `matches_v4`/`matches_v6` allocate nothing and do at most
//!   three binary searches;
//! - the engine: "which segments can a route for this prefix change?"
//!   (`matching`) and "which route prefixes can make this segment
//!   primary-up?" (`MatchRule::route_prefixes`).
//!
//! Pure: no I/O.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::MatchMode;

/// How a group's segments match routes (`match` and `allow_default`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchRule {
    pub mode: MatchMode,
    /// Covering only: the default route counts too. Exact groups ask for a
    /// default route by listing 0.0.0.0/0 or ::/0 as a segment.
    pub allow_default: bool,
}

impl MatchRule {
    pub fn new(mode: MatchMode, allow_default: bool) -> MatchRule {
        MatchRule {
            mode,
            allow_default,
        }
    }

    /// The route prefixes that match `segment` under this rule, most specific
    /// first (a primary route is looked for in this order).
    pub fn route_prefixes(self, segment: IpNet) -> impl Iterator<Item = IpNet> {
        let segment = segment.trunc();
        let longest = segment.prefix_len();
        let shortest = match self.mode {
            MatchMode::Exact => longest,
            MatchMode::Covering if self.allow_default => 0,
            MatchMode::Covering => 1,
        };
        (shortest..=longest)
            .rev()
            .filter_map(move |len| IpNet::new(segment.addr(), len).ok().map(|n| n.trunc()))
    }
}

/// A prefix with its address bits left-aligned in a u128 (IPv4 in the top 32
/// bits, so prefix lengths need no scaling between families).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    addr: u128,
    len: u8,
}

impl Key {
    fn of(net: &IpNet) -> Key {
        let net = net.trunc();
        Key {
            addr: addr_bits(net.addr()),
            len: net.prefix_len(),
        }
    }

    /// The last address inside the prefix.
    fn end(self) -> u128 {
        self.addr | !mask(self.len)
    }
}

fn addr_bits(addr: IpAddr) -> u128 {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry<T> {
    key: Key,
    /// Covering entries only.
    allow_default: bool,
    value: T,
}

#[derive(Clone, Debug)]
struct FamilyIndex<T> {
    /// Segments of exact-mode groups, sorted by (key, value).
    exact: Vec<Entry<T>>,
    /// Segments of covering-mode groups, sorted by (addr asc, len desc, value).
    covering: Vec<Entry<T>>,
    /// Some covering segment of this family accepts a default route.
    allow_default: bool,
}

impl<T> Default for FamilyIndex<T> {
    fn default() -> Self {
        FamilyIndex {
            exact: Vec::new(),
            covering: Vec::new(),
            allow_default: false,
        }
    }
}

impl<T: Copy + Ord> FamilyIndex<T> {
    fn finish(&mut self) {
        self.exact
            .sort_by(|a, b| a.key.cmp(&b.key).then(a.value.cmp(&b.value)));
        self.exact
            .dedup_by(|a, b| a.key == b.key && a.value == b.value);
        self.covering.sort_by(|a, b| {
            (a.key.addr.cmp(&b.key.addr))
                .then(b.key.len.cmp(&a.key.len))
                .then(a.value.cmp(&b.value))
        });
        // One segment listed twice keeps a single entry that accepts the
        // default route if either listing does.
        self.covering.dedup_by(|later, kept| {
            let same = later.key == kept.key && later.value == kept.value;
            if same {
                kept.allow_default |= later.allow_default;
            }
            same
        });
        self.allow_default = self.covering.iter().any(|e| e.allow_default);
    }

    /// Whether a route `key` (address already masked) matches any segment.
    fn can_match(&self, key: Key) -> bool {
        if self.exact.binary_search_by(|e| e.key.cmp(&key)).is_ok() {
            return true;
        }
        if self.covering.is_empty() {
            return false;
        }
        if key.len == 0 && !self.allow_default {
            return false;
        }
        // The route covers a segment S when S.len >= len and S.addr lies in
        // [addr, end]. Any segment in that range with S.len < len must start
        // exactly at `addr` (a coarser-aligned prefix inside the route's range
        // can only begin at the range's start), and those sort first among
        // equal addresses by descending length.
        let end = key.end();
        let first = self.covering.partition_point(|s| s.key.addr < key.addr);
        match self.covering.get(first) {
            Some(s) if s.key.addr > end => return false,
            Some(s) if s.key.len >= key.len => return true,
            Some(_) => {}
            None => return false,
        }
        let next = self.covering.partition_point(|s| s.key.addr <= key.addr);
        matches!(self.covering.get(next), Some(s) if s.key.addr <= end)
    }

    /// The values of every segment a route `key` matches.
    fn matching(&self, key: Key) -> impl Iterator<Item = T> + '_ {
        let lo = self.exact.partition_point(|e| e.key < key);
        let hi = self.exact.partition_point(|e| e.key <= key);
        let exact = self.exact.get(lo..hi).unwrap_or_default();
        let end = key.end();
        let lo = self.covering.partition_point(|e| e.key.addr < key.addr);
        let hi = self.covering.partition_point(|e| e.key.addr <= end);
        let covering = self.covering.get(lo..hi).unwrap_or_default();
        exact.iter().map(|e| e.value).chain(
            covering
                .iter()
                .filter(move |e| e.key.len >= key.len && (key.len > 0 || e.allow_default))
                .map(|e| e.value),
        )
    }
}

/// Monitored segments of both families, each carrying a `T` (the engine's
/// segment reference; `()` when only "any match?" is asked).
#[derive(Clone, Debug)]
pub struct SegmentIndex<T = ()> {
    v4: FamilyIndex<T>,
    v6: FamilyIndex<T>,
}

impl<T> Default for SegmentIndex<T> {
    fn default() -> Self {
        SegmentIndex {
            v4: FamilyIndex::default(),
            v6: FamilyIndex::default(),
        }
    }
}

impl<T: Copy + Ord> SegmentIndex<T> {
    /// Indexes `(segment, rule, value)` triples; a segment listed twice with
    /// the same value is kept once.
    pub fn new(segments: impl IntoIterator<Item = (IpNet, MatchRule, T)>) -> SegmentIndex<T> {
        let mut index = SegmentIndex::default();
        for (segment, rule, value) in segments {
            let family = match segment {
                IpNet::V4(_) => &mut index.v4,
                IpNet::V6(_) => &mut index.v6,
            };
            let entry = Entry {
                key: Key::of(&segment),
                allow_default: rule.mode == MatchMode::Covering && rule.allow_default,
                value,
            };
            match rule.mode {
                MatchMode::Exact => family.exact.push(entry),
                MatchMode::Covering => family.covering.push(entry),
            }
        }
        index.v4.finish();
        index.v6.finish();
        index
    }

    /// Whether an IPv4 route `addr/len` (addr as u32, host bits ignored) can
    /// match a segment.
    pub fn matches_v4(&self, addr: u32, len: u8) -> bool {
        if len > 32 {
            return false;
        }
        let addr = (u128::from(addr) << 96) & mask(len);
        self.v4.can_match(Key { addr, len })
    }

    /// Whether an IPv6 route `addr/len` (host bits ignored) can match a segment.
    pub fn matches_v6(&self, addr: u128, len: u8) -> bool {
        if len > 128 {
            return false;
        }
        self.v6.can_match(Key {
            addr: addr & mask(len),
            len,
        })
    }

    /// Whether a route to `prefix` can match a segment.
    pub fn matches(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(n) => self.matches_v4(u32::from(n.network()), n.prefix_len()),
            IpNet::V6(n) => self.matches_v6(u128::from(n.network()), n.prefix_len()),
        }
    }

    /// The values of the segments a route to `prefix` matches (exact ones
    /// first; a value appears once per listing of its segment).
    pub fn matching(&self, prefix: &IpNet) -> impl Iterator<Item = T> + '_ {
        let family = match prefix {
            IpNet::V4(_) => &self.v4,
            IpNet::V6(_) => &self.v6,
        };
        family.matching(Key::of(prefix))
    }

    /// Number of indexed segments (after deduplication).
    pub fn len(&self) -> usize {
        self.v4.exact.len() + self.v4.covering.len() + self.v6.exact.len() + self.v6.covering.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "random test values are reduced to their range before the cast"
)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn filter(segs: &[(&str, MatchMode, bool)]) -> SegmentIndex {
        SegmentIndex::new(
            segs.iter()
                .map(|(s, m, d)| (net(s), MatchRule::new(*m, *d), ())),
        )
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
    fn route_prefixes_most_specific_first() {
        let seg = net("10.20.0.0/16");
        let exact: Vec<_> = MatchRule::new(MatchMode::Exact, true)
            .route_prefixes(seg)
            .collect();
        assert_eq!(exact, vec![seg]);
        let covering: Vec<_> = MatchRule::new(MatchMode::Covering, false)
            .route_prefixes(seg)
            .collect();
        assert_eq!(covering.len(), 16);
        assert_eq!(covering.first(), Some(&seg));
        assert_eq!(covering.last(), Some(&net("0.0.0.0/1")));
        let with_default: Vec<_> = MatchRule::new(MatchMode::Covering, true)
            .route_prefixes(seg)
            .collect();
        assert_eq!(with_default.last(), Some(&net("0.0.0.0/0")));
    }

    /// The rule itself, written the obvious way.
    fn brute_match(rule: MatchRule, route: &IpNet, segment: &IpNet) -> bool {
        match rule.mode {
            MatchMode::Exact => route == segment,
            MatchMode::Covering => {
                route.contains(segment) && (route.prefix_len() > 0 || rule.allow_default)
            }
        }
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
        let v: Vec<_> = segs
            .iter()
            .map(|(s, m, d)| (*s, MatchRule::new(*m, *d), ()))
            .collect();
        let f = SegmentIndex::new(v);
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

    #[test]
    fn engine_queries_agree_with_brute_force() {
        // Mixed modes, both families, duplicates and default routes: which
        // segments each route matches, and which routes each segment accepts.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut random_net = |v6: bool, max_len: u64| {
            let len = (rnd() % (max_len + 1)) as u8;
            if v6 {
                let addr = (0x2001_0db8u128 << 96) | u128::from(rnd() & 0xffff_ffff) << 64;
                let len = len.saturating_add(24).min(128);
                IpNet::new(std::net::Ipv6Addr::from(addr).into(), len)
            } else {
                let addr = 0x0a00_0000 | (rnd() as u32 & 0x00ff_ffff);
                IpNet::new(std::net::Ipv4Addr::from(addr).into(), len)
            }
            .unwrap()
            .trunc()
        };
        let mut segs: Vec<(IpNet, MatchRule, usize)> = Vec::new();
        for i in 0..400 {
            let seg = if i % 37 == 0 {
                net("0.0.0.0/0")
            } else {
                random_net(i % 3 == 0, 24)
            };
            let mode = if i % 2 == 0 {
                MatchMode::Exact
            } else {
                MatchMode::Covering
            };
            let rule = MatchRule::new(mode, i % 5 == 0);
            segs.push((seg, rule, i));
            if i % 11 == 0 {
                // The same segment in another group.
                segs.push((
                    seg,
                    MatchRule::new(MatchMode::Covering, i % 4 == 0),
                    i + 1000,
                ));
            }
        }
        let index = SegmentIndex::new(segs.iter().copied());
        let mut routes: Vec<IpNet> = segs.iter().map(|(s, _, _)| *s).collect();
        routes.extend([net("0.0.0.0/0"), net("::/0"), net("2001:db8::/32")]);
        for i in 0..2000 {
            routes.push(random_net(i % 3 == 0, 24));
        }
        for r in &routes {
            let mut got: Vec<usize> = index.matching(r).collect();
            got.sort_unstable();
            let mut want: Vec<usize> = segs
                .iter()
                .filter(|(s, rule, _)| brute_match(*rule, r, s))
                .map(|(_, _, v)| *v)
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "route {r}");
            assert_eq!(index.matches(r), !want.is_empty(), "route {r}");
        }
        for (s, rule, _) in &segs {
            let accepted: Vec<IpNet> = rule.route_prefixes(*s).collect();
            for r in &routes {
                assert_eq!(
                    accepted.contains(r),
                    brute_match(*rule, r, s),
                    "segment {s} {rule:?} route {r}"
                );
            }
        }
    }
}
