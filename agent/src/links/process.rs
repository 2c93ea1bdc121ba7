//! Child processes of the link drivers: the programs a driver runs (`up`
//! and `down` commands, pppd), each named by the driver's [`Role`] for it.
//!
//! Every child runs in its own process group (so a shell script and the
//! programs it started are signalled together), without a shell, with its
//! stdout and stderr logged line by line. The last lines of stderr are kept
//! for the error report when the process fails.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::LinkError;

/// How many stderr lines an error report quotes.
const STDERR_TAIL_LINES: usize = 5;
/// Longest stderr line kept (characters).
const STDERR_LINE_MAX: usize = 300;
/// How long to wait for the output readers after the process exited (a
/// background grandchild may keep the pipe open forever).
const OUTPUT_DRAIN: Duration = Duration::from_millis(300);

/// Which configured program a child is: names it in logs and errors, says
/// where the operator configures it, and how to read its exit. Each driver
/// defines the roles of the programs it runs.
#[derive(Clone, Copy, Debug)]
pub struct Role {
    /// How logs and errors name it ("up command").
    pub what: &'static str,
    /// The link setting that holds the program's path ("`up = [...]`").
    pub config_key: &'static str,
    /// `ROUTEBACKUP_ROLE` in the process's environment.
    pub env_name: &'static str,
    /// Exiting 0 while supervised finishes its work (the link is then
    /// judged by its interface) instead of ending the link.
    pub may_finish: bool,
    /// What an exit status means, quoted in the error (pppd's exit codes).
    pub exit_meaning: fn(i32) -> Option<&'static str>,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

/// A spawned child with its output readers.
pub struct Spawned {
    pub child: Child,
    /// Process id, also the process group id.
    pub pid: u32,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Spawned {
    /// Starts `argv` in a new process group with `env` added to the agent's
    /// environment. `role` and `link` name the process in log lines.
    /// `ignore_sigpipe` starts it with SIGPIPE ignored, so that a process kept
    /// running after the agent exits (and with it the read end of its output
    /// pipes) gets EPIPE on its next log line instead of being killed.
    pub fn start(
        argv: &[String],
        env: &[(&str, &str)],
        link: &str,
        role: &'static Role,
        ignore_sigpipe: bool,
    ) -> Result<Spawned, LinkError> {
        let what = role.what;
        let Some((program, args)) = argv.split_first() else {
            return Err(LinkError::EmptyArgv { role });
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))))
            // Lets the next agent find a kept `up` command (`command::find_kept`).
            .env("ROUTEBACKUP_ROLE", role.env_name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // A kept link (agent restart) must survive the agent: never kill on drop.
            .kill_on_drop(false);
        if ignore_sigpipe {
            // SAFETY: signal(2) is async-signal-safe; the closure allocates nothing.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|source| LinkError::Spawn {
            role,
            program: program.clone(),
            source,
        })?;
        let Some(pid) = child.id() else {
            return Err(LinkError::ExitedAtStart {
                role,
                program: program.clone(),
            });
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(log_lines(
                out,
                link.to_string(),
                what,
                "stdout",
                None,
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(log_lines(
                err,
                link.to_string(),
                what,
                "stderr",
                Some(stderr_tail.clone()),
            )));
        }
        tracing::info!(link, pid, "started {what}: {}", argv.join(" "));
        Ok(Spawned {
            child,
            pid,
            stderr_tail,
            readers,
        })
    }

    /// The last stderr lines, joined with " | " (empty when there were none).
    /// Waits briefly for the readers to reach the end of the output.
    pub async fn stderr_tail(&mut self) -> String {
        for r in &mut self.readers {
            let _ = tokio::time::timeout(OUTPUT_DRAIN, r).await;
        }
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        tail.join(" | ")
    }

    /// Sends `signal` to the child's whole process group.
    pub fn signal_group(&self, signal: libc::c_int) {
        signal_group(self.pid, signal);
    }

    /// Stops the child: SIGTERM to its process group, SIGKILL after `grace`,
    /// and reaps it. Stragglers left in the group get SIGKILL too. Returns
    /// the exit status when the child could be reaped in time.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            signal_group(self.pid, libc::SIGKILL);
            return Some(status);
        }
        self.signal_group(libc::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(r) => r.ok(),
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    "process did not exit within {grace:?} of SIGTERM; sending SIGKILL"
                );
                self.signal_group(libc::SIGKILL);
                // SIGKILL cannot be ignored; the bound only guards against a
                // process stuck in the kernel (tokio reaps it later then).
                tokio::time::timeout(Duration::from_secs(2), self.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        // Programs the child started in its group and left behind.
        signal_group(self.pid, libc::SIGKILL);
        for r in self.readers.drain(..) {
            r.abort();
        }
        status
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for r in self.readers.drain(..) {
            r.abort();
        }
    }
}

/// Sends `signal` to the process group `pgid` (ESRCH, "no such group", is fine).
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Field `n` (1-based, n >= 3) of /proc/<pid>/stat.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_string)
}

/// True if `pid` leads its process group (field 5 of /proc/<pid>/stat).
pub fn is_group_leader(pid: u32) -> bool {
    stat_field(pid, 5).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
}

/// True while `pid` runs: it exists and is not a zombie waiting for a
/// parent (not us: it was an earlier agent's child) to reap it.
pub fn is_running(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state != "Z" && state != "X")
}

/// Runs `argv` to completion with `env`, bounded by `timeout` (the process
/// group is killed when it runs over).
pub async fn run_bounded(
    argv: &[String],
    env: &[(&str, &str)],
    link: &str,
    role: &'static Role,
    timeout: Duration,
) -> Result<(), LinkError> {
    let mut spawned = Spawned::start(argv, env, link, role, false)?;
    let program = argv.first().cloned().unwrap_or_default();
    match tokio::time::timeout(timeout, spawned.child.wait()).await {
        Ok(Ok(status)) => {
            signal_group(spawned.pid, libc::SIGKILL);
            if status.success() {
                tracing::info!(link, "{role} `{program}` finished");
                Ok(())
            } else {
                Err(LinkError::Exited {
                    role,
                    program,
                    status,
                    meaning: status.code().and_then(role.exit_meaning),
                    stderr_tail: spawned.stderr_tail().await,
                })
            }
        }
        Ok(Err(source)) => Err(LinkError::Wait {
            role,
            program,
            source,
        }),
        Err(_) => {
            spawned.terminate(Duration::from_millis(500)).await;
            Err(LinkError::Timeout {
                role,
                program,
                limit: timeout,
            })
        }
    }
}

async fn log_lines(
    stream: impl AsyncRead + Unpin,
    link: String,
    what: &'static str,
    name: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let line: String = line.chars().take(STDERR_LINE_MAX).collect();
        tracing::info!(link = %link, "{what} {name}: {line}");
        if let Some(tail) = &tail {
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_of_this_process() {
        assert!(is_running(std::process::id()));
        assert_eq!(
            stat_field(std::process::id(), 4),
            Some(std::os::unix::process::parent_id().to_string())
        );
        assert!(!is_running(u32::MAX));
    }
}
