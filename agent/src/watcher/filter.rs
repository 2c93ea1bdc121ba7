//! Which routes can matter to a monitored segment.
//!
//! The watcher sees every route of every table (a full BGP table is about a
//! million of them, changing thousands of times a second). Only routes in a
//! watched table that can match a segment (see `crate::segments`) reach the
//! engine. The check is binary searches over sorted arrays and allocates
//! nothing.

use ipnet::IpNet;

use crate::config::{Config, MatchMode};
use crate::segments::{MatchRule, SegmentIndex};

/// The set of watched tables and monitored segments.
#[derive(Clone, Debug, Default)]
pub struct SegmentFilter {
    /// Sorted, deduplicated.
    tables: Vec<u32>,
    segments: SegmentIndex,
}

impl SegmentFilter {
    pub fn from_config(config: &Config) -> SegmentFilter {
        let segments = config.groups.values().flat_map(|group| {
            let rule = MatchRule::new(group.match_mode, group.allow_default);
            group.segments.iter().map(move |seg| (*seg, rule, ()))
        });
        SegmentFilter::build(&config.agent.tables, segments)
    }

    /// Builds a filter by hand (tests, benchmarks).
    pub fn new(tables: &[u32], segments: &[(IpNet, MatchMode, bool)]) -> SegmentFilter {
        let segments = segments
            .iter()
            .map(|(seg, mode, allow_default)| (*seg, MatchRule::new(*mode, *allow_default), ()));
        SegmentFilter::build(tables, segments)
    }

    fn build(
        tables: &[u32],
        segments: impl IntoIterator<Item = (IpNet, MatchRule, ())>,
    ) -> SegmentFilter {
        let mut tables = tables.to_vec();
        tables.sort_unstable();
        tables.dedup();
        SegmentFilter {
            tables,
            segments: SegmentIndex::new(segments),
        }
    }

    pub fn watches_table(&self, table: u32) -> bool {
        self.tables.binary_search(&table).is_ok()
    }

    /// Whether an IPv4 route `addr/len` (addr as u32) can match a segment.
    pub fn matches_v4(&self, addr: u32, len: u8) -> bool {
        self.segments.matches_v4(addr, len)
    }

    /// Whether an IPv6 route `addr/len` can match a segment.
    pub fn matches_v6(&self, addr: u128, len: u8) -> bool {
        self.segments.matches_v6(addr, len)
    }

    /// Whether a route to `prefix` can match a segment (table not checked).
    pub fn matches(&self, prefix: &IpNet) -> bool {
        self.segments.matches(prefix)
    }

    /// Number of monitored segments (after deduplication).
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}
