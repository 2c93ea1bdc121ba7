//! The pinned maps as the agent reads and writes them. Their shapes are
//! checked before the load reuses a pin: aya would reuse a pin of another
//! shape silently, and the programs would misread it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData, MapError, MapInfo, MapType, PerCpuArray};
use aya::{Ebpf, Pod};
use ipnet::{IpNet, Ipv4Net, Ipv6Net, PrefixLenError};
use routebackup_common::{
    GroupStats, SegmentValue, ACTION_PASS, ACTION_STEER, MAP_SEGMENTS_V4, MAP_SEGMENTS_V6,
    MAP_STATS, MAP_TC_IDLE, MAX_GROUPS, MAX_SEGMENTS,
};

use super::{FastpathError, MapShape, Result};

/// Expected layout of a pinned map (checked before reuse).
pub(super) struct MapLayout {
    pub(super) name: &'static str,
    shape: MapShape,
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "map values are a few dozen bytes (asserted in common)"
)]
pub(super) const MAP_LAYOUTS: [MapLayout; 4] = [
    MapLayout {
        name: MAP_SEGMENTS_V4,
        shape: MapShape {
            map_type: Some(MapType::LpmTrie),
            key_size: 8,
            value_size: size_of::<SegmentValue>() as u32,
            max_entries: MAX_SEGMENTS,
        },
    },
    MapLayout {
        name: MAP_SEGMENTS_V6,
        shape: MapShape {
            map_type: Some(MapType::LpmTrie),
            key_size: 20,
            value_size: size_of::<SegmentValue>() as u32,
            max_entries: MAX_SEGMENTS,
        },
    },
    MapLayout {
        name: MAP_STATS,
        shape: MapShape {
            map_type: Some(MapType::PerCpuArray),
            key_size: 4,
            value_size: size_of::<GroupStats>() as u32,
            max_entries: MAX_GROUPS,
        },
    },
    MapLayout {
        name: MAP_TC_IDLE,
        shape: MapShape {
            map_type: Some(MapType::Array),
            key_size: 4,
            value_size: 4,
            max_entries: 1,
        },
    },
];

/// Why a pinned map at `path` cannot be reused (aya would reuse it silently
/// and the programs would misread it); None when it is absent or fits.
pub(super) fn stale_map(path: &Path, want: &MapLayout) -> Option<String> {
    if !path.exists() {
        return None;
    }
    let info = match MapInfo::from_pin(path) {
        Ok(i) => i,
        Err(e) => {
            return Some(format!(
                "it is not a usable BPF map ({})",
                crate::error::Report(&e)
            ))
        }
    };
    let found = MapShape {
        map_type: info.map_type().ok(),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    };
    (found != want.shape).then(|| {
        format!(
            "its layout ({found}) is not the one this agent needs ({})",
            want.shape
        )
    })
}

/// The maps, taken out of the loaded object with their types.
pub(super) struct Maps {
    segments_v4: LpmTrie<MapData, [u8; 4], SegmentValue>,
    segments_v6: LpmTrie<MapData, [u8; 16], SegmentValue>,
    stats: PerCpuArray<MapData, GroupStats>,
    /// `MAP_TC_IDLE`: the switch for `rb_tc`.
    tc_idle: Array<MapData, u32>,
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            segments_v4: typed_map(ebpf, MAP_SEGMENTS_V4, LpmTrie::try_from)?,
            segments_v6: typed_map(ebpf, MAP_SEGMENTS_V6, LpmTrie::try_from)?,
            stats: typed_map(ebpf, MAP_STATS, PerCpuArray::try_from)?,
            tc_idle: typed_map(ebpf, MAP_TC_IDLE, Array::try_from)?,
        })
    }

    /// Writes the entry of `net` (host bits already cleared).
    pub(super) fn insert(&mut self, prefix: &IpNet, net: IpNet, value: SegmentValue) -> Result<()> {
        match net {
            IpNet::V4(n) => self.segments_v4.insert(
                &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                value,
                0,
            ),
            IpNet::V6(n) => self.segments_v6.insert(
                &Key::new(u32::from(n.prefix_len()), n.network().octets()),
                value,
                0,
            ),
        }
        .map_err(|e| map_write_error(prefix, e))
    }

    /// Removes the entry of exactly `prefix`; Ok(false) if there was none.
    pub(super) fn remove(&mut self, prefix: IpNet) -> Result<bool> {
        let r = match prefix.trunc() {
            IpNet::V4(n) => self
                .segments_v4
                .remove(&Key::new(u32::from(n.prefix_len()), n.network().octets())),
            IpNet::V6(n) => self
                .segments_v6
                .remove(&Key::new(u32::from(n.prefix_len()), n.network().octets())),
        };
        match r {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(source) => Err(FastpathError::SegmentRemove { prefix, source }),
        }
    }

    /// Every entry of both tries.
    pub(super) fn segments(&self) -> Result<Vec<(IpNet, SegmentValue)>> {
        let mut out = Vec::new();
        entries(&self.segments_v4, MAP_SEGMENTS_V4, &mut out, |a, len| {
            Ipv4Net::new(Ipv4Addr::from(a), len).map(IpNet::V4)
        })?;
        entries(&self.segments_v6, MAP_SEGMENTS_V6, &mut out, |a, len| {
            Ipv6Net::new(Ipv6Addr::from(a), len).map(IpNet::V6)
        })?;
        Ok(out)
    }

    /// Counters of a group summed over CPUs.
    pub(super) fn group_stats(&self, group_id: u32) -> Result<GroupStats> {
        if group_id >= MAX_GROUPS {
            return Err(FastpathError::GroupOutOfRange { group_id });
        }
        let per_cpu = self
            .stats
            .get(&group_id, 0)
            .map_err(|source| FastpathError::StatsRead { group_id, source })?;
        let mut sum = GroupStats::default();
        for s in per_cpu.iter() {
            sum.accumulate(s);
        }
        Ok(sum)
    }

    /// Zeroes a group slot's counters.
    pub(super) fn reset_group_stats(&mut self, group_id: u32) -> Result<()> {
        if group_id >= MAX_GROUPS {
            return Err(FastpathError::GroupOutOfRange { group_id });
        }
        let cpus =
            aya::util::nr_cpus().map_err(|(what, source)| FastpathError::Cpus { what, source })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![GroupStats::default(); cpus]).map_err(
            |source| FastpathError::Cpus {
                what: "per-CPU values",
                source,
            },
        )?;
        self.stats
            .set(group_id, zeros, 0)
            .map_err(|source| FastpathError::StatsReset { group_id, source })
    }

    /// Sets the switch that tells `rb_tc` it has nothing to do.
    pub(super) fn set_tc_idle(&mut self, idle: bool) -> Result<()> {
        self.tc_idle
            .set(0, u32::from(idle), 0)
            .map_err(|source| FastpathError::TcSwitch {
                state: if idle { "off" } else { "on" },
                source,
            })
    }
}

/// Appends the entries of one family's trie, made prefixes by `net`.
fn entries<K: Pod>(
    trie: &LpmTrie<MapData, K, SegmentValue>,
    map: &'static str,
    out: &mut Vec<(IpNet, SegmentValue)>,
    net: impl Fn(K, u8) -> Result<IpNet, PrefixLenError>,
) -> Result<()> {
    for item in trie {
        let (k, v) = item.map_err(|source| FastpathError::MapRead { map, source })?;
        let len = u8::try_from(k.prefix_len()).unwrap_or(u8::MAX);
        let prefix =
            net(k.data(), len).map_err(|source| FastpathError::BadPrefixLen { map, source })?;
        out.push((prefix, v));
    }
    Ok(())
}

/// Checks an entry before it is written: the programs trust what they read.
pub(super) fn validate_value(prefix: &IpNet, v: &SegmentValue) -> Result<()> {
    let prefix = *prefix;
    if v.group_id >= MAX_GROUPS {
        return Err(FastpathError::SegmentGroup {
            prefix,
            group_id: v.group_id,
        });
    }
    match v.action {
        ACTION_STEER if v.backup_ifindex == 0 => Err(FastpathError::SteerWithoutBackup { prefix }),
        ACTION_PASS | ACTION_STEER => Ok(()),
        action => Err(FastpathError::UnknownAction { prefix, action }),
    }
}

fn map_write_error(prefix: &IpNet, source: MapError) -> FastpathError {
    let prefix = *prefix;
    let full = matches!(&source, MapError::SyscallError(s)
        if s.io_error.raw_os_error() == Some(libc::ENOSPC));
    if full {
        FastpathError::TrieFull { prefix, source }
    } else {
        FastpathError::SegmentWrite { prefix, source }
    }
}

/// Takes map `name` out of the object as the type `convert` makes of it.
fn typed_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, MapError>,
) -> Result<M> {
    let map = ebpf
        .take_map(name)
        .ok_or(FastpathError::MissingMap { map: name })?;
    convert(map).map_err(|source| FastpathError::MapType { map: name, source })
}
