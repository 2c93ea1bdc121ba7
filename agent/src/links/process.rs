//! Child processes of the link drivers: the `up`/`down` commands and pppd.
//!
//! Every child runs in its own process group (so a shell script and the
//! programs it started are signalled together), without a shell, with its
//! stdout and stderr logged line by line. The last lines of stderr are kept
//! for the error report when the process fails.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How many stderr lines an error report quotes.
const STDERR_TAIL_LINES: usize = 5;
/// Longest stderr line kept (characters).
const STDERR_LINE_MAX: usize = 300;
/// How long to wait for the output readers after the process exited (a
/// background grandchild may keep the pipe open forever).
const OUTPUT_DRAIN: Duration = Duration::from_millis(300);

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
    /// environment. `what` and `link` name the process in log lines.
    /// `ignore_sigpipe` starts it with SIGPIPE ignored, so that a process kept
    /// running after the agent exits (and with it the read end of its output
    /// pipes) gets EPIPE on its next log line instead of being killed.
    pub fn start(
        argv: &[String],
        env: &[(&str, &str)],
        link: &str,
        what: &'static str,
        ignore_sigpipe: bool,
    ) -> Result<Spawned, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err(format!("{what} has an empty argv"));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))))
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
        let mut child = cmd.spawn().map_err(|e| spawn_error(what, program, &e))?;
        let Some(pid) = child.id() else {
            return Err(format!(
                "{what} `{program}` exited before it could be supervised"
            ));
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
        for r in self.readers.iter_mut() {
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
                    .and_then(|r| r.ok())
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

/// Runs `argv` to completion with `env`, bounded by `timeout` (the process
/// group is killed when it runs over). Returns a description of the failure.
pub async fn run_bounded(
    argv: &[String],
    env: &[(&str, &str)],
    link: &str,
    what: &'static str,
    timeout: Duration,
) -> Result<(), String> {
    let mut spawned = Spawned::start(argv, env, link, what, false)?;
    let program = argv.first().map(String::as_str).unwrap_or_default();
    match tokio::time::timeout(timeout, spawned.child.wait()).await {
        Ok(Ok(status)) => {
            signal_group(spawned.pid, libc::SIGKILL);
            if status.success() {
                tracing::info!(link, "{what} `{program}` finished");
                Ok(())
            } else {
                let tail = spawned.stderr_tail().await;
                Err(exit_message(what, program, status, &tail, None))
            }
        }
        Ok(Err(e)) => Err(format!(
            "{what} `{program}`: cannot wait for the process: {e}"
        )),
        Err(_) => {
            spawned.terminate(Duration::from_millis(500)).await;
            Err(format!(
                "{what} `{program}` did not finish within {}; killed it",
                humantime::format_duration(timeout)
            ))
        }
    }
}

/// "up command `/x` exited with status 3 (meaning): tail" or "... was killed by signal 9 (SIGKILL)".
pub fn exit_message(
    what: &str,
    program: &str,
    status: ExitStatus,
    stderr_tail: &str,
    meaning: Option<&str>,
) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mut msg = match (status.code(), status.signal()) {
        (Some(code), _) => format!("{what} `{program}` exited with status {code}"),
        (None, Some(sig)) => format!(
            "{what} `{program}` was killed by signal {sig} ({})",
            signal_name(sig)
        ),
        (None, None) => format!("{what} `{program}` ended: {status}"),
    };
    if let Some(m) = meaning {
        msg.push_str(&format!(" ({m})"));
    }
    if !stderr_tail.is_empty() {
        msg.push_str(": ");
        msg.push_str(stderr_tail);
    }
    msg
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

fn spawn_error(what: &str, program: &str, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound if Path::new(program).is_absolute() => {
            "; check the path in the link's config".to_string()
        }
        std::io::ErrorKind::NotFound => {
            "; give an absolute path or make sure it is in the agent's PATH".to_string()
        }
        std::io::ErrorKind::PermissionDenied => "; is it executable?".to_string(),
        _ => String::new(),
    };
    format!("cannot run {what} `{program}`: {e}{hint}")
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
