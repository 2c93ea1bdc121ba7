//! `on_change` hooks: an operator's program run on every group state change
//! (argv, no shell), with the transition in `ROUTEBACKUP_*` variables.
//!
//! The daemon only queues a transition ([`Hooks::changed`] never waits). Each
//! group with a hook has one worker task that runs the queued transitions in
//! order, one at a time, each bounded by `hook_timeout` (then its process
//! group is killed). More than [`MAX_QUEUED`] waiting: the oldest is dropped
//! with a log line. Runs that fail, time out or are dropped are counted in
//! the metrics.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::Report;
use crate::ids::Slots;
use crate::links::process::signal_group;
use crate::metrics::{HookResult, Metrics};
use crate::model::{GroupId, GroupState};

/// Transitions a group may have waiting for its hook; beyond this the
/// oldest is dropped.
pub const MAX_QUEUED: usize = 16;

/// One group state change, as the hook sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub group: String,
    pub previous: GroupState,
    pub state: GroupState,
    /// The group's active link and its interface (empty when none).
    pub link: String,
    pub interface: String,
    /// The engine's words for it: the group's log lines of that event.
    pub reason: String,
    /// The group's segments, space-separated.
    pub segments: String,
}

impl Transition {
    /// The hook's environment.
    pub fn env(&self) -> [(&'static str, &str); 7] {
        [
            ("ROUTEBACKUP_GROUP", &self.group),
            ("ROUTEBACKUP_STATE", self.state.name()),
            ("ROUTEBACKUP_PREVIOUS_STATE", self.previous.name()),
            ("ROUTEBACKUP_LINK", &self.link),
            ("ROUTEBACKUP_INTERFACE", &self.interface),
            ("ROUTEBACKUP_REASON", &self.reason),
            ("ROUTEBACKUP_SEGMENTS", &self.segments),
        ]
    }
}

/// A group's queue, shared by the daemon (pushes) and its worker (pops).
#[derive(Default)]
struct Queue {
    waiting: Mutex<VecDeque<Transition>>,
    wake: Notify,
}

struct GroupHook {
    name: String,
    argv: Arc<[String]>,
    timeout: Duration,
    queue: Arc<Queue>,
    worker: JoinHandle<()>,
}

impl GroupHook {
    fn start(name: &str, argv: &[String], timeout: Duration, metrics: &Arc<Metrics>) -> GroupHook {
        let argv: Arc<[String]> = argv.into();
        let queue = Arc::new(Queue::default());
        let worker = tokio::spawn(work(
            name.to_owned(),
            argv.clone(),
            timeout,
            queue.clone(),
            metrics.clone(),
        ));
        GroupHook {
            name: name.to_owned(),
            argv,
            timeout,
            queue,
            worker,
        }
    }
}

impl Drop for GroupHook {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

/// The hooks of every group (vacant for groups without one).
pub struct Hooks {
    groups: Slots<GroupId, GroupHook>,
    metrics: Arc<Metrics>,
}

impl Hooks {
    /// Starts one worker per group with a hook (needs a tokio runtime).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Hooks {
        let mut hooks = Hooks {
            groups: Slots::default(),
            metrics,
        };
        hooks.reconfigure(config);
        hooks
    }

    /// Follows a new config (a reload; groups by slot, as the engine has
    /// them; vacant slots have none). A group whose name, argv and timeout
    /// are unchanged keeps its worker and queue; other workers are stopped.
    pub fn reconfigure(&mut self, config: &Config) {
        let timeout = config.agent.hook_timeout;
        let mut old: Vec<GroupHook> = std::mem::take(&mut self.groups).into_values().collect();
        self.groups = config
            .groups
            .all_ids()
            .map(|g| {
                let name = &config.groups.get(g)?.name;
                let argv = config.hook_for(g)?;
                let kept = old
                    .iter()
                    .position(|h| h.name == *name && *h.argv == *argv && h.timeout == timeout);
                Some(match kept {
                    Some(i) => old.swap_remove(i),
                    None => GroupHook::start(name, argv, timeout, &self.metrics),
                })
            })
            .collect();
    }

    /// Whether group `g` has a hook (so the daemon can skip building a
    /// `Transition` for groups without one).
    pub fn wants(&self, g: GroupId) -> bool {
        self.groups.get(g).is_some()
    }

    /// Queues a transition for group `g`'s hook; never waits.
    pub fn changed(&self, g: GroupId, transition: Transition) {
        let Some(hook) = self.groups.get(g) else {
            return;
        };
        let dropped = {
            let mut waiting = hook
                .queue
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let dropped = if waiting.len() >= MAX_QUEUED {
                waiting.pop_front()
            } else {
                None
            };
            waiting.push_back(transition);
            dropped
        };
        hook.queue.wake.notify_one();
        if let Some(old) = dropped {
            warn!(
                group = %hook.name,
                "group {}: on_change hook is behind ({MAX_QUEUED} transitions waiting); dropped the oldest ({} → {})",
                hook.name, old.previous, old.state
            );
            self.metrics.hook_dropped(&hook.name);
        }
    }
}

/// A group's worker: runs its queued transitions in order, one at a time.
async fn work(
    group: String,
    argv: Arc<[String]>,
    timeout: Duration,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
) {
    loop {
        let next = queue
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match next {
            Some(t) => {
                let result = run(&argv, &t, timeout).await;
                metrics.hook_run(&group, result);
            }
            None => queue.wake.notified().await,
        }
    }
}

/// Runs the hook once for `t`; says how it ended (and logs it).
async fn run(argv: &[String], t: &Transition, timeout: Duration) -> HookResult {
    let Some((program, args)) = argv.split_first() else {
        return HookResult::SpawnError;
    };
    let group = t.group.as_str();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(t.env())
        .stdin(Stdio::null())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(
                group,
                "group {group}: cannot run on_change hook `{program}`: {}",
                Report(&e)
            );
            return HookResult::SpawnError;
        }
    };
    let pid = child.id().unwrap_or(0);
    debug!(
        group,
        "group {group}: on_change hook `{program}` started (pid {pid}) for {} → {}",
        t.previous,
        t.state
    );
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            // Whatever it left running in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            info!(
                group,
                "group {group}: on_change hook `{program}` done ({} → {})", t.previous, t.state
            );
            HookResult::Ok
        }
        Ok(Ok(status)) => {
            signal_group(pid, libc::SIGKILL);
            warn!(
                group,
                "group {group}: on_change hook `{program}` failed ({status}) for {} → {}",
                t.previous,
                t.state
            );
            HookResult::Failed
        }
        Ok(Err(e)) => {
            warn!(
                group,
                "group {group}: on_change hook `{program}`: cannot wait for it: {}",
                Report(&e)
            );
            HookResult::Failed
        }
        Err(_) => {
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            warn!(
                group,
                "group {group}: on_change hook `{program}` still running after {}; killed it ({} → {})",
                humantime::format_duration(timeout),
                t.previous,
                t.state
            );
            HookResult::Timeout
        }
    }
}

#[cfg(test)]
mod tests;
