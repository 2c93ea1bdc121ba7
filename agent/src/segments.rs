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
mod tests;
