//! Routing table names (iproute2's `rt_tables` files) and their ids.

use std::collections::BTreeMap;
use std::path::Path;

/// Table names and ids: the built-in ones plus whatever the iproute2 files
/// on this system define.
#[derive(Clone, Debug, Default)]
pub struct TableNames {
    by_name: BTreeMap<String, u32>,
}

use crate::paths::{RT_TABLES_DIRS, RT_TABLES_FILES};

impl TableNames {
    /// Only the tables the kernel defines: main (254), local (255), default (253).
    pub fn builtin() -> TableNames {
        let mut t = TableNames::default();
        t.insert("default", 253);
        t.insert("main", 254);
        t.insert("local", 255);
        t
    }

    /// Built-in names plus `/etc/iproute2/rt_tables`, `/usr/share/iproute2/rt_tables`
    /// (and `/usr/lib/...`) and their `rt_tables.d/*.conf`. Unreadable files are skipped.
    pub fn system() -> TableNames {
        let mut t = TableNames::builtin();
        for file in RT_TABLES_FILES {
            if let Ok(text) = std::fs::read_to_string(file) {
                t.add_text(&text);
            }
        }
        for dir in RT_TABLES_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            files.sort();
            for f in files {
                if let Ok(text) = std::fs::read_to_string(Path::new(&f)) {
                    t.add_text(&text);
                }
            }
        }
        t
    }

    /// Adds the `id name` lines of an rt_tables file (comments with `#`).
    pub fn add_text(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(id), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let id = if let Some(hex) = id.strip_prefix("0x") {
                u32::from_str_radix(hex, 16).ok()
            } else {
                id.parse().ok()
            };
            if let Some(id) = id {
                self.insert(name, id);
            }
        }
    }

    pub fn insert(&mut self, name: &str, id: u32) {
        self.by_name.insert(name.to_string(), id);
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The first name (alphabetically) defined for `id`, if any.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
