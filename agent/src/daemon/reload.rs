//! Reload (SIGHUP, `routebackup reload`): re-read the config file the agent
//! was started with and apply it as a diff.
//!
//! - A config that fails `check` is refused: every problem is logged and
//!   returned to `routebackup reload`, the agent keeps running the old one,
//!   and `status` shows the failure until a reload succeeds.
//! - Changing `[agent] pin_path`, `[agent] control_socket` or `[fastpath]
//!   mode` requires a restart: such a reload is refused as a whole (saying
//!   which setting, and that a restart applies it), so what runs is always
//!   exactly one config file's content.
//! - Otherwise the new config is laid out on the running ids
//!   (`engine::slotted`), and applied in three steps: the sink prepares
//!   (new drivers, new attach points), the engine's actions for the diff are
//!   carried out (`Engine::reconfigure`), the sink finishes (entries of
//!   removed/added segments, removed drivers, detached interfaces). When the
//!   segments or tables changed, the watcher re-dumps with its new filter and
//!   sends `Synced`, after which the new groups are evaluated.
//! - An unchanged file changes nothing at all.
//! - Before the initial sync is complete a reload is refused (try again):
//!   the watcher's re-dump for new segments ends with a `Synced` that could
//!   not be told apart from the initial one.

use std::path::PathBuf;
use std::time::SystemTime;

use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::{ConfigReport, ReloadReport};
use crate::engine;
use crate::error::Report;
use crate::model::{Action, Notice};
use crate::watcher::WatcherConfig;

use super::Daemon;

/// The running config and where it came from.
pub(super) struct ConfigState {
    pub path: PathBuf,
    /// Laid out on the running ids (vacant slots included).
    pub running: Config,
    pub loaded: SystemTime,
    /// The last reload's errors, while it is the last one.
    pub failed: Option<(SystemTime, Vec<String>)>,
}

impl ConfigState {
    pub fn new(path: PathBuf, config: Config) -> ConfigState {
        ConfigState {
            path,
            running: config,
            loaded: SystemTime::now(),
            failed: None,
        }
    }

    pub fn report(&self) -> ConfigReport {
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        ConfigReport {
            path: self.path.display().to_string(),
            loaded: time(self.loaded),
            last_reload_failed: self.failed.is_some(),
            last_reload_failed_at: self.failed.as_ref().map(|(t, _)| time(*t)),
            last_reload_errors: self
                .failed
                .as_ref()
                .map(|(_, e)| e.clone())
                .unwrap_or_default(),
        }
    }
}

/// Settings a running agent cannot change: the reload is refused.
fn needs_restart(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, old: String, new: String| {
        if old != new {
            out.push(format!(
                "{what} changed ({old} -> {new}): this requires a restart \
                 (`systemctl restart routebackup`); the running config is kept"
            ));
        }
    };
    check(
        "[agent] pin_path",
        running.agent.pin_path.display().to_string(),
        new.agent.pin_path.display().to_string(),
    );
    check(
        "[agent] control_socket",
        running.agent.control_socket.display().to_string(),
        new.agent.control_socket.display().to_string(),
    );
    check(
        "[metrics] listen",
        format!("{:?}", running.metrics.as_ref().map(|m| m.listen)),
        format!("{:?}", new.metrics.as_ref().map(|m| m.listen)),
    );
    check(
        "[fastpath] mode",
        format!("{:?}", running.fastpath.mode),
        format!("{:?}", new.fastpath.mode),
    );
    out
}

/// What the watcher's filter depends on.
fn watched(c: &Config) -> impl PartialEq {
    let mut segments: Vec<_> = c
        .groups
        .values()
        .flat_map(|g| {
            g.segments
                .iter()
                .map(move |s| (*s, g.match_mode, g.allow_default))
        })
        .collect();
    segments.sort_by_key(|(s, _, _)| *s);
    let mut tables = c.agent.tables.clone();
    tables.sort_unstable();
    (tables, c.agent.resync_interval, segments)
}

/// "2 groups (1 added, 1 removed), 3 links": what a reload changed.
fn summary(old: &Config, new: &Config) -> String {
    let og: Vec<&String> = old.groups.values().map(|g| &g.name).collect();
    let ng: Vec<&String> = new.groups.values().map(|g| &g.name).collect();
    let ol: Vec<&String> = old.links.values().map(|l| &l.name).collect();
    let nl: Vec<&String> = new.links.values().map(|l| &l.name).collect();
    let diff = |a: &[&String], b: &[&String]| b.iter().filter(|n| !a.contains(n)).count();
    let changed_groups = new
        .groups
        .values()
        .filter(|g| {
            old.groups
                .values()
                .find(|o| o.name == g.name)
                .is_some_and(|o| o != *g)
        })
        .count();
    format!(
        "{} groups ({} added, {} removed, {changed_groups} changed), {} links ({} added, {} removed)",
        ng.len(),
        diff(&og, &ng),
        diff(&ng, &og),
        nl.len(),
        diff(&ol, &nl),
        diff(&nl, &ol),
    )
}

impl Daemon {
    /// Re-reads the config file and applies it (see the module doc).
    pub(super) fn reload(&mut self, why: &str) -> ReloadReport {
        let path = self.config.path.clone();
        info!("reload ({why}): reading {}", path.display());
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                let errors: Vec<String> =
                    Report(&e).to_string().lines().map(String::from).collect();
                return self.refuse("the config is invalid", errors);
            }
        };
        let restart = needs_restart(&self.config.running, &new);
        if !restart.is_empty() {
            return self.refuse("a setting changed that only a restart applies", restart);
        }
        if !self.engine.synced() {
            // New segments are judged after the watcher's re-dump ends with
            // `Synced`; before the first one that cannot be told apart.
            return self.refuse(
                "the agent is still taking in the kernel's routes",
                vec!["the initial sync is not complete yet; reload again in a moment".into()],
            );
        }
        let slotted = engine::slotted(&self.config.running, &new);
        self.config.loaded = SystemTime::now();
        self.config.failed = None;
        if slotted == self.config.running {
            info!("reload: the config is unchanged; nothing to do");
            self.observer.metrics().config_reload(true);
            return ReloadReport {
                ok: true,
                summary: "unchanged".into(),
                errors: Vec::new(),
            };
        }
        let summary = summary(&self.config.running, &slotted);
        info!("reload: applying {summary}");
        self.sink.prepare_reload(&slotted);
        self.event_at = std::time::Instant::now();
        let now = self.now();
        let before = self.observer.before(&self.engine, None);
        let (notices, actions): (Vec<Action>, Vec<Action>) = self
            .engine
            .reconfigure(now, &slotted)
            .into_iter()
            .partition(|a| matches!(a, Action::Notice(_)));
        let notices_about: Vec<Notice> = notices
            .iter()
            .filter_map(|n| match n {
                Action::Notice(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        for action in actions.into_iter().chain(notices) {
            self.execute(action);
        }
        self.sink.finish_reload(&slotted);
        // Metrics and hooks by the new slots, then the reload's transitions.
        self.observer.reconfigure(&slotted);
        self.observer.after(&self.engine, &before, &notices_about);
        self.observer.publish(&self.engine);
        // A slot now held by another group (or vacant) starts afresh.
        let running = &self.config.running.groups;
        self.steer_latency_us.retain(|g, _| {
            running.get(*g).map(|c| &c.name) == slotted.groups.get(*g).map(|c| &c.name)
        });
        if self.engine.awaiting_routes() || watched(&self.config.running) != watched(&slotted) {
            match &self.watcher {
                Some(w) => w.reconfigure(WatcherConfig::from_config(&slotted, &self.kernel)),
                None => warn!("reload: no watcher to give the new segments to"),
            }
        }
        self.config.running = slotted;
        self.observer.metrics().config_reload(true);
        info!("reload: done");
        ReloadReport {
            ok: true,
            summary,
            errors: Vec::new(),
        }
    }

    fn refuse(&mut self, what: &str, errors: Vec<String>) -> ReloadReport {
        error!("reload refused ({what}); still running the config loaded before:");
        for e in &errors {
            error!("  {e}");
        }
        self.config.failed = Some((SystemTime::now(), errors.clone()));
        self.observer.metrics().config_reload(false);
        ReloadReport {
            ok: false,
            summary: format!("refused: {what}; the agent keeps running the previous config"),
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableNames;
    use crate::ids::GroupId;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}\n[fastpath]\ninterfaces = [\"lan0\"]\n\n[[link]]\nname = \"hot\"\ninterface = \"eth3\"\ndriver = \"always-up\"\n\n[[group]]\nname = \"hq\"\nsegments = [\"10.20.0.0/16\"]\nlinks = [\"hot\"]\n"
        );
        Config::parse_with_tables(&text, "t.toml", &TableNames::builtin()).unwrap()
    }

    #[test]
    fn restart_only_settings_are_named() {
        let a = config("");
        assert!(needs_restart(&a, &a).is_empty());
        let b =
            config("[agent]\npin_path = \"/sys/fs/bpf/other\"\ncontrol_socket = \"/run/x.sock\"\n");
        let e = needs_restart(&a, &b);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("[agent] pin_path") && e[0].contains("requires a restart"));
        assert!(e[1].contains("[agent] control_socket"));
    }

    #[test]
    fn summary_counts_changes() {
        let a = config("");
        let mut b = a.clone();
        b.groups[GroupId(0)]
            .segments
            .push("10.21.0.0/16".parse().unwrap());
        assert_eq!(
            summary(&a, &b),
            "1 groups (0 added, 0 removed, 1 changed), 1 links (0 added, 0 removed)"
        );
    }
}
