//! The versioned pin directory: `<pin_path>/<LAYOUT_VERSION>/` holds the maps,
//! `links/` and `netlink/`, so an agent never reuses maps whose layout it
//! does not know.
//!
//! At start, what other layouts left under `<pin_path>` is settled before the
//! maps are loaded, each with a log line:
//! - the unversioned layout (maps and `links/` directly under `<pin_path>`,
//!   as releases before the versioned directory wrote them, with the same
//!   map shapes as `v1`) is moved into the versioned directory. A rename on
//!   bpffs keeps the objects, so the steering they hold goes on and is
//!   adopted like a kept one.
//! - another version's directory (`v2/`, ...) has maps this agent cannot
//!   read: it is removed, which detaches the programs its bpf links keep; the
//!   agent attaches its own and decides the steering anew from the kernel's
//!   routes. (Netlink attachments it recorded stay on their devices: the
//!   kernel, not the pin, holds them.)
//! - a map in the versioned directory whose shape differs from this agent's
//!   (made by hand, or a layout change without a version bump) is replaced.

use std::path::{Path, PathBuf};

use routebackup_common::{
    GroupStats, SegmentValue, MAP_SEGMENTS_V4, MAP_SEGMENTS_V6, MAP_STATS, MAP_TC_IDLE, MAX_GROUPS,
    MAX_SEGMENTS,
};

use super::FastpathError;

/// The directory of the kept bpf links inside the layout's directory.
const BPF_LINKS_DIR: &str = "links";
/// The directory of the records of netlink attachments.
const NETLINK_DIR: &str = "netlink";

/// The layout version of the pinned maps: the name of the directory under
/// `pin_path` that holds them. Bump it whenever a map's key, value or size
/// changes (the assertions below fail until it is).
pub const LAYOUT_VERSION: &str = "v1";

// The v1 layout. A change here is a new layout: bump LAYOUT_VERSION (and
// teach `settle` to migrate the old one if its entries can be carried over).
const _: () = assert!(size_of::<SegmentValue>() == 48);
const _: () = assert!(size_of::<GroupStats>() == 48);
const _: () = assert!(MAX_SEGMENTS == 65_536 && MAX_GROUPS == 4_096);
// `tc_idle` (one u32) joined v1 without a version bump: no existing map
// changed. A v1 directory from before it lacks the map and the load creates
// it, holding 0: "TC on", the behaviour of the programs that came before the
// switch; the agent then sets it from the entries it adopts. Older agents
// neither read nor remove it.

/// The maps pinned by every layout (a pin of another name is not ours).
const MAP_NAMES: [&str; 4] = [MAP_SEGMENTS_V4, MAP_SEGMENTS_V6, MAP_STATS, MAP_TC_IDLE];

/// The directory of this layout's pins under `pin_path`.
pub fn layout_dir(pin_path: &Path) -> PathBuf {
    pin_path.join(LAYOUT_VERSION)
}

/// Where the fast path pins things, named once: operators configure `root`
/// (`[agent] pin_path`), everything lives in `dir`, the attachments in
/// `bpf_links` (`links/` on disk) and `netlink`. The old directories an
/// earlier release left are `root`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    /// `[agent] pin_path`, on a bpffs.
    pub root: PathBuf,
    /// `<root>/<LAYOUT_VERSION>`: the maps, `links/` and `netlink/`.
    pub dir: PathBuf,
    /// `<dir>/links`: one pin per attachment a bpf link keeps.
    pub bpf_links: PathBuf,
    /// `<dir>/netlink`: one record per attachment made over netlink (which
    /// the device holds, not a pin), so that the next agent finds it.
    pub netlink: PathBuf,
}

impl PinLayout {
    pub fn new(root: &Path) -> PinLayout {
        let dir = layout_dir(root);
        PinLayout {
            root: root.to_path_buf(),
            bpf_links: dir.join(BPF_LINKS_DIR),
            netlink: dir.join(NETLINK_DIR),
            dir,
        }
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// True for a version directory name (`v` and digits).
fn is_version_dir(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn rename(from: &Path, to: &Path) -> Result<(), FastpathError> {
    std::fs::rename(from, to).map_err(|source| FastpathError::MigratePin {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

fn remove(path: &Path) -> Result<(), FastpathError> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FastpathError::RemovePin {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Moves the unversioned layout into `layout.dir` and removes other
/// versions' directories (see the module doc). `root` exists.
pub(super) fn settle(layout: &PinLayout) -> Result<(), FastpathError> {
    let pin_path = layout.root.as_path();
    let dir = &layout.dir;
    let old_maps: Vec<&str> = MAP_NAMES
        .into_iter()
        .filter(|m| pin_path.join(m).exists())
        .collect();
    let old_bpf_links = pin_path.join(BPF_LINKS_DIR);
    if !old_maps.is_empty() || old_bpf_links.is_dir() {
        tracing::info!(
            "moving the fast path pinned by an earlier release directly under {} into the \
             versioned directory {} (steering goes on; this agent adopts it)",
            pin_path.display(),
            dir.display()
        );
        let new_bpf_links = &layout.bpf_links;
        std::fs::create_dir_all(new_bpf_links).map_err(|source| FastpathError::CreateDir {
            path: new_bpf_links.clone(),
            source,
        })?;
        for m in old_maps {
            rename(&pin_path.join(m), &layout.map(m))?;
        }
        if let Ok(rd) = std::fs::read_dir(&old_bpf_links) {
            for e in rd.flatten() {
                rename(&e.path(), &new_bpf_links.join(e.file_name()))?;
            }
        }
        let _ = std::fs::remove_dir(&old_bpf_links);
    }
    let Ok(rd) = std::fs::read_dir(pin_path) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_version_dir(&name) && name != LAYOUT_VERSION && e.path().is_dir() {
            tracing::warn!(
                "removing the fast path of map layout {name} at {} (this agent uses layout \
                 {LAYOUT_VERSION}; its entries cannot be carried over): its programs are \
                 detached, and steering is decided anew from the kernel's routes",
                e.path().display()
            );
            remove(&e.path())?;
        }
    }
    Ok(())
}

/// Removes a pinned map this agent cannot use (another shape, or not a map),
/// so the load pins a fresh one.
pub(super) fn replace_stale_map(path: &Path, why: &str) -> Result<(), FastpathError> {
    tracing::warn!(
        "replacing the pinned map {}: {why}; its entries are rewritten from the configuration",
        path.display()
    );
    remove(path)
}

/// After a clean stop without keep: removes the (now empty) directories.
pub(super) fn remove_empty_dirs(layout: &PinLayout) {
    let _ = std::fs::remove_dir(&layout.bpf_links);
    let _ = std::fs::remove_dir(&layout.netlink);
    let _ = std::fs::remove_dir(&layout.dir);
    let _ = std::fs::remove_dir(&layout.root);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_dir_names() {
        assert!(is_version_dir("v1") && is_version_dir("v12"));
        assert!(!is_version_dir("v") && !is_version_dir("links") && !is_version_dir("v1a"));
        assert!(is_version_dir(LAYOUT_VERSION));
    }
}
