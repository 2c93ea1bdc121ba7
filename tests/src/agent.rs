//! The real agent binary alone in a namespace, for tests that need its
//! route view but not the traffic lab (`lab.rs` starts its own, with links
//! and a fast path on real veths).

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use routebackup::control::{request_status, StatusReport};

use crate::{agent_bin, wait_until, BpfFs, Netns};

/// A config body with one group (`hq`, 10.20.0.0/16) backed up by the
/// always-up link `backup` on bk0, the fast path on lan0 in `mode`.
pub fn one_group_config(mode: &str) -> String {
    format!(
        "[fastpath]\ninterfaces = [\"lan0\"]\nmode = \"{mode}\"\n\n\
         [[link]]\nname = \"backup\"\ninterface = \"bk0\"\ndriver = \"always-up\"\n\n\
         [[group]]\nname = \"hq\"\nsegments = [\"10.20.0.0/16\"]\nlinks = [\"backup\"]\n"
    )
}

/// A running agent; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _bpffs: BpfFs,
}

impl Agent {
    /// Starts the agent in `ns` and waits until its first route dump is
    /// done. `agent_keys` are more `[agent]` lines (control socket and pin
    /// path are filled in); `body` is the rest of the config.
    pub fn start(ns: &Netns, agent_keys: &str, body: &str) -> Result<Agent> {
        Agent::start_with(ns, "", agent_keys, body)
    }

    /// The same with `env` (shell assignments, e.g.
    /// `ROUTEBACKUP_KERNEL_WITHOUT=tcx`) in the agent's environment.
    pub fn start_with(ns: &Netns, env: &str, agent_keys: &str, body: &str) -> Result<Agent> {
        let dir = tempfile::Builder::new().prefix("rbt-agent").tempdir()?;
        let socket = dir.path().join("rb.sock");
        let log = dir.path().join("agent.log");
        let cfg = dir.path().join("routebackup.toml");
        let bpffs = BpfFs::new()?;
        std::fs::write(
            &cfg,
            format!(
                "[agent]\ncontrol_socket = \"{}\"\npin_path = \"{}\"\n{agent_keys}\n\n{body}",
                socket.display(),
                bpffs.path().join("routebackup").display()
            ),
        )?;
        let bin = agent_bin();
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo build -p routebackup` first",
                bin.display()
            );
        }
        let child = ns.spawn(&format!(
            "{env} exec {} run --config {} --log-level routebackup=debug,info 2>{}",
            bin.display(),
            cfg.display(),
            log.display()
        ))?;
        let agent = Agent {
            child,
            socket,
            log,
            _dir: dir,
            _bpffs: bpffs,
        };
        wait_until(Duration::from_secs(10), || {
            Ok(request_status(&agent.socket).is_ok_and(|s| s.synced))
        })
        .with_context(|| format!("agent did not come up; its log:\n{}", agent.log_tail(60)))?;
        Ok(agent)
    }

    /// Its whole log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its status through the control socket.
    pub fn status(&self) -> Result<StatusReport> {
        Ok(request_status(&self.socket)?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
