//! The record of an attachment made over netlink, under `netlink/`: what
//! the next agent needs to find it again. The device holds such an
//! attachment whatever happens to the agent (there is no bpf link to pin);
//! the record names the interface, its index, the program's kernel id and
//! where on the hook it sits, so that the next agent can check that the
//! device still carries that very program before it replaces it.
//!
//! bpffs holds no regular files, only bpf objects, directories and
//! symlinks: a record is a symlink whose target is its JSON, named like a
//! bpf link's pin (`<kind>_<ifname>`). It is written as a temporary symlink
//! renamed over the old one, so a crash leaves the old record or the new,
//! never none or half of one.

use std::path::{Path, PathBuf};

use super::XdpAttach;
use crate::fastpath::{FastpathError, Result};

/// Names of records being written start with this (bpffs refuses dots).
pub(super) const TEMP_PREFIX: &str = "new~";

/// What one record says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    pub(super) interface: String,
    pub(super) ifindex: u32,
    /// The kernel id of the program attached.
    pub(super) prog_id: u32,
    /// While an adoption replaces this program by `prog_id`, the record
    /// names both: a crash between the record and the kernel's change
    /// leaves either on the device, and both are ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) replacing: Option<u32>,
    #[serde(flatten)]
    pub(super) on: On,
}

/// Where on the device the program sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mechanism", rename_all = "kebab-case")]
pub(super) enum On {
    /// IFLA_XDP, in the driver mode `mode`.
    XdpNetlink { mode: XdpAttach },
    /// A cls_bpf filter on the clsact qdisc, at `priority` and `handle`.
    TcNetlink {
        direction: Direction,
        priority: u16,
        handle: u32,
    },
}

impl On {
    /// Where the program sits, in words.
    pub(super) fn place(self) -> String {
        match self {
            On::XdpNetlink { mode } => format!("{} XDP", mode.name()),
            On::TcNetlink {
                priority, handle, ..
            } => format!("the TC filter at pref {priority} handle {handle:#x}"),
        }
    }
}

/// The clsact side of a TC filter (the agent uses ingress only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Direction {
    Ingress,
}

impl Record {
    /// The program `found` on the hook is one this record names.
    pub(super) fn ours(&self, found: u32) -> bool {
        found == self.prog_id || self.replacing == Some(found)
    }

    /// Why the record no longer describes the device, or None when it does:
    /// `ifindex_now` is the index the recorded interface name has now (None:
    /// no such interface), `found` the program on the recorded place of the
    /// hook now.
    pub(super) fn stale(&self, ifindex_now: Option<u32>, found: Option<u32>) -> Option<String> {
        let place = self.on.place();
        match (ifindex_now, found) {
            (None, _) => Some(format!("{} is gone", self.interface)),
            (Some(now), _) if now != self.ifindex => Some(format!(
                "{} is another device now (index {now}, was {})",
                self.interface, self.ifindex
            )),
            (Some(_), None) => Some(format!("{place} holds no program any more")),
            (Some(_), Some(f)) if !self.ours(f) => Some(format!(
                "{place} holds program {f}, not ours ({}): it is left alone",
                self.prog_id
            )),
            (Some(_), Some(_)) => None,
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{TEMP_PREFIX}{name}"))
}

/// Writes `record` at `path`, replacing the record there in one step.
pub(super) fn write(path: &Path, record: &Record) -> Result<()> {
    let failed = |source| FastpathError::RecordWrite {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string(record).map_err(|e| failed(std::io::Error::other(e)))?;
    let temp = temp_path(path);
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(&text, &temp)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&temp);
            failed(source)
        })
}

/// The record at `path`.
pub(super) fn read(path: &Path) -> Result<Record> {
    let bad = |why: String| FastpathError::RecordRead {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_link(path).map_err(|e| bad(e.to_string()))?;
    let text = text.to_str().ok_or_else(|| bad("not UTF-8".to_string()))?;
    serde_json::from_str(text).map_err(|e| bad(e.to_string()))
}

/// Removes the record at `path` (the attachment is gone, or no longer ours).
pub(super) fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(
                "cannot remove the record {} of a netlink attachment (remove it by hand): {}",
                path.display(),
                crate::error::Report(&e)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xdp() -> Record {
        Record {
            interface: "lan0".into(),
            ifindex: 4,
            prog_id: 30,
            replacing: None,
            on: On::XdpNetlink {
                mode: XdpAttach::Native,
            },
        }
    }

    #[test]
    fn the_json_names_every_field() {
        let tc = Record {
            replacing: Some(12),
            on: On::TcNetlink {
                direction: Direction::Ingress,
                priority: 49152,
                handle: 1,
            },
            ..xdp()
        };
        let text = serde_json::to_string(&tc).unwrap();
        assert_eq!(
            text,
            r#"{"interface":"lan0","ifindex":4,"prog_id":30,"replacing":12,"mechanism":"tc-netlink","direction":"ingress","priority":49152,"handle":1}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), tc);
        let text = serde_json::to_string(&xdp()).unwrap();
        assert_eq!(
            text,
            r#"{"interface":"lan0","ifindex":4,"prog_id":30,"mechanism":"xdp-netlink","mode":"native"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), xdp());
    }

    /// Only the recorded program on the recorded device is adopted.
    #[test]
    fn stale_records() {
        let r = xdp();
        assert_eq!(r.stale(Some(4), Some(30)), None);
        assert_eq!(r.stale(None, None).unwrap(), "lan0 is gone");
        assert_eq!(
            r.stale(Some(7), Some(30)).unwrap(),
            "lan0 is another device now (index 7, was 4)"
        );
        assert_eq!(
            r.stale(Some(4), None).unwrap(),
            "native XDP holds no program any more"
        );
        assert_eq!(
            r.stale(Some(4), Some(31)).unwrap(),
            "native XDP holds program 31, not ours (30): it is left alone"
        );
        // Mid-adoption, the old program and the new are both ours.
        let mid = Record {
            replacing: Some(31),
            ..xdp()
        };
        assert_eq!(mid.stale(Some(4), Some(31)), None);
        assert_eq!(mid.stale(Some(4), Some(30)), None);
        assert!(mid.stale(Some(4), Some(32)).is_some());
    }

    #[test]
    fn temporary_names_stay_beside_the_record() {
        assert_eq!(
            temp_path(Path::new("/p/v1/netlink/tc_lan0")),
            Path::new("/p/v1/netlink/new~tc_lan0")
        );
    }
}
