//! `driver = "command"`: `up` and `down` argv run without a shell, with
//! `ROUTEBACKUP_LINK`, `ROUTEBACKUP_GROUP` and `ROUTEBACKUP_INTERFACE` (and
//! `ROUTEBACKUP_ROLE`) in their environment.
//!
//! `up` may exit 0 (the link is then judged by its interface) or keep
//! running: it is then supervised, and a non-zero exit or death by a signal
//! is reported as a failure (exit 0 never is). `down` stops a still-running
//! `up` (one left by an earlier agent too, found by its environment), then
//! runs the `down` argv, bounded by `Timeouts::down_command`.

use std::time::Duration;

use super::{Driver, KeyType, Keys, Problems, Profile, Task};
use crate::links::process::{self, signal_group, Role};
use crate::links::DriverState;

/// The `up` program: its exit 0 finishes its work, not the link.
pub static UP: Role = Role {
    what: "up command",
    config_key: "`up = [...]`",
    env_name: "up",
    may_finish: true,
    exit_meaning: |_| None,
};

/// The `down` program.
pub static DOWN: Role = Role {
    what: "down command",
    config_key: "`down = [...]`",
    env_name: "down",
    may_finish: true,
    exit_meaning: |_| None,
};

/// A command link's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Program and arguments run by `up`.
    pub up: Vec<String>,
    /// Program and arguments run by `down` (empty: none).
    pub down: Vec<String>,
}

impl Driver for Command {
    const NAME: &'static str = "command";
    const KEYS: &'static [(&'static str, KeyType)] =
        &[("up", KeyType::Argv), ("down", KeyType::Argv)];
    const PROFILE: Profile = Profile {
        always_up: false,
        needs_address: false,
    };

    fn check(keys: &Keys<'_>, problems: &mut dyn Problems) -> Option<Command> {
        let Some(up) = keys.argv("up") else {
            let hint = "add up = [\"/path/to/program\", \"arg\", ...] (run without a shell)";
            keys.missing("up", hint, problems);
            return None;
        };
        let mut ok = true;
        if up.get_ref().first().is_none_or(String::is_empty) {
            problems.hinted(
                up.span(),
                "`up` needs at least a program",
                "e.g. up = [\"/usr/local/sbin/lte-up\"]",
            );
            ok = false;
        }
        let down = keys.argv("down");
        if let Some(d) = down {
            if d.get_ref().first().is_some_and(String::is_empty) {
                problems.hinted(
                    d.span(),
                    "`down` starts with an empty program name",
                    "e.g. down = [\"/usr/local/sbin/lte-down\"]",
                );
                ok = false;
            }
        }
        ok.then(|| Command {
            up: up.get_ref().clone(),
            down: down.map(|d| d.get_ref().clone()).unwrap_or_default(),
        })
    }

    fn normalised(&self) -> Vec<(&'static str, toml::Value)> {
        let list = |argv: &[String]| argv.iter().cloned().map(toml::Value::String).collect();
        vec![
            ("up", toml::Value::Array(list(&self.up))),
            ("down", toml::Value::Array(list(&self.down))),
        ]
    }

    async fn up(&self, task: &mut Task) {
        if self.up.is_empty() {
            task.set_state(DriverState::Up);
            return;
        }
        if let Some(pid) = find_kept(&task.name, &task.interface) {
            tracing::info!(link = %task.name, pid, "an up command for this link already runs (left by an earlier agent); not starting another");
            task.set_state(DriverState::Running { pid });
            return;
        }
        task.spawn(&self.up, &UP);
    }

    async fn down(&self, task: &mut Task) {
        if !task.stop_child().await {
            if let Some(pid) = find_kept(&task.name, &task.interface) {
                stop_kept(&task.name, pid, task.timeouts.term_grace).await;
            }
        }
        if !self.down.is_empty() {
            let env = task.env();
            if let Err(e) = process::run_bounded(
                &self.down,
                &env,
                &task.name,
                &DOWN,
                task.timeouts.down_command,
            )
            .await
            {
                tracing::warn!(link = %task.name, "{}", e.text());
            }
        }
    }
}

/// A long-running `up` command of `link` left by an earlier agent (killed or
/// stopped with `--keep-fastpath`): a process-group leader in this network
/// namespace whose environment names the link and its interface, as
/// `Spawned::start` set it. A pid reused by a stranger lacks that
/// environment, so it is never mistaken for one.
fn find_kept(link: &str, interface: &str) -> Option<u32> {
    let want_link = format!("ROUTEBACKUP_LINK={link}");
    let want_if = format!("ROUTEBACKUP_INTERFACE={interface}");
    let want_role = format!("ROUTEBACKUP_ROLE={}", UP.env_name);
    let our_netns = std::fs::metadata("/proc/self/ns/net").ok()?;
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !process::is_group_leader(pid) || !process::is_running(pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let has = |v: &str| vars.contains(&v.as_bytes());
        if !(has(&want_link) && has(&want_if) && has(&want_role)) {
            continue;
        }
        let same_netns = std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.ino() == our_netns.ino() && m.dev() == our_netns.dev()
        });
        if same_netns {
            return Some(pid);
        }
    }
    None
}

/// Stops a kept `up` command found by [`find_kept`]: SIGTERM to its group,
/// SIGKILL after `grace` if the leader still runs.
async fn stop_kept(link: &str, pid: u32, grace: Duration) {
    tracing::info!(
        link,
        pid,
        "stopping the up command left by an earlier agent"
    );
    signal_group(pid, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !process::is_running(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pid, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_kept_up_command_for_an_unknown_link() {
        assert_eq!(find_kept("no-such-link-here", "nope0"), None);
    }
}
