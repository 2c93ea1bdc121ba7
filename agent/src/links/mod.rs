//! Backup link drivers: bring a link up and take it down when the engine asks
//! (`Action::LinkUp` / `Action::LinkDown`), supervise long-running processes,
//! and report failures (`DriverEvent::Failed`, which the daemon turns into
//! `Event::LinkFailed`; the error is [`LinkError`] as text) with the id of
//! the attempt (`up`) they end, and every finished `down`
//! (`DriverEvent::Released`, turned into `Event::LinkReleased`).
//!
//! The drivers do not judge whether a link is usable: the engine learns that
//! from netlink (interface up, address present). They only run what the
//! config says and tell when it failed.
//!
//! Each link has its own task that executes that link's requests in order;
//! [`LinkDrivers::up`] and [`LinkDrivers::down`] only queue a request and
//! return at once, so a slow dialer or a hanging `down` command never blocks
//! the daemon. A `down` queued while an `up` process runs kills that process
//! promptly (SIGTERM to its process group, SIGKILL after
//! [`Timeouts::term_grace`]).
//!
//! Drivers (`config::DriverConfig`):
//! - `always-up`: nothing to do; `down` never takes it down.
//! - `interface`: set the interface administratively up / down.
//! - `command`: run `up` without a shell, with `ROUTEBACKUP_LINK`,
//!   `ROUTEBACKUP_GROUP` and `ROUTEBACKUP_INTERFACE` in its environment. It may
//!   exit 0 (the link is then judged by its interface) or keep running (it is
//!   supervised: a non-zero exit or death by a signal is reported as a
//!   failure; exit 0 never is). `down` stops a still-running `up`, then runs
//!   the `down` argv (bounded by [`Timeouts::down_command`]).
//! - `pppd`: `pppd call <peer> nodetach ifname <if> linkname <link>`,
//!   supervised: any exit not caused by us is a failure, explained with
//!   pppd's exit code meaning.

mod error;
pub mod interface;
pub mod pppd;
pub mod process;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::{DriverConfig, LinkConfig};
use crate::ids::Slots;
use crate::model::LinkId;
pub use error::LinkError;
use process::{Role, Spawned};

/// What a driver tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverEvent {
    /// The attempt or session started by the `up` with id `attempt` is over
    /// (maps to `Event::LinkFailed`, whose text status shows as the link's
    /// `last_error`).
    Failed {
        link: LinkId,
        attempt: u64,
        error: String,
    },
    /// One `down` request finished (maps to `Event::LinkReleased`).
    Released { link: LinkId },
}

/// A driver's own state, for `status` (the link's real state comes from the engine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum DriverState {
    /// Nothing running; not brought up (or taken down, or failed).
    Idle,
    /// `up` done: interface set up, `up` command exited 0, or always-up.
    Up,
    /// A supervised process runs (`up` command or pppd).
    Running { pid: u32 },
    /// Taking the link down.
    Stopping,
}

/// Time bounds of the drivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Between SIGTERM and SIGKILL when stopping a supervised process.
    pub term_grace: Duration,
    /// How long a `down` command may run before it is killed.
    pub down_command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            term_grace: Duration::from_secs(3),
            down_command: Duration::from_secs(15),
        }
    }
}

enum Request {
    Up {
        group: String,
        attempt: u64,
    },
    Down,
    /// Answered once every earlier request of this link was executed.
    Settle(oneshot::Sender<()>),
    Shutdown {
        keep: bool,
        done: oneshot::Sender<()>,
    },
}

struct Slot {
    name: String,
    tx: mpsc::UnboundedSender<Request>,
    state: Arc<Mutex<DriverState>>,
}

/// The drivers of every configured link (one per daemon); a link slot left
/// vacant by a reload has none.
pub struct LinkDrivers {
    slots: Slots<LinkId, Slot>,
    reports: mpsc::UnboundedSender<DriverEvent>,
    timeouts: Timeouts,
    pppd_pid_dir: PathBuf,
}

impl LinkDrivers {
    /// Starts one task per link on the current tokio runtime (processes and
    /// netlink sockets are created in the calling thread's network namespace
    /// when the runtime is a current-thread one).
    pub fn new(
        links: &Slots<LinkId, LinkConfig>,
        reports: mpsc::UnboundedSender<DriverEvent>,
    ) -> LinkDrivers {
        Self::with_options(
            links,
            reports,
            Timeouts::default(),
            PathBuf::from(pppd::DEFAULT_PID_DIR),
        )
    }

    /// Like `new` with explicit time bounds and pppd pid-file directory.
    pub fn with_options(
        links: &Slots<LinkId, LinkConfig>,
        reports: mpsc::UnboundedSender<DriverEvent>,
        timeouts: Timeouts,
        pppd_pid_dir: PathBuf,
    ) -> LinkDrivers {
        let mut drivers = LinkDrivers {
            slots: Slots::default(),
            reports,
            timeouts,
            pppd_pid_dir,
        };
        for (id, cfg) in links.iter() {
            drivers.add(id, cfg);
        }
        drivers
    }

    /// Starts the driver of `link` (a reload added it), replacing whatever
    /// the slot held (slots in between stay without a driver).
    pub fn add(&mut self, link: LinkId, cfg: &LinkConfig) {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(DriverState::Idle));
        let driver = Driver {
            id: link,
            cfg: cfg.clone(),
            timeouts: self.timeouts,
            pppd_pid_dir: self.pppd_pid_dir.clone(),
            state: state.clone(),
            reports: self.reports.clone(),
            child: None,
            group: String::new(),
            attempt: 0,
            netlink: None,
        };
        tokio::spawn(driver.run(rx));
        self.slots.set(
            link,
            Some(Slot {
                name: cfg.name.clone(),
                tx,
                state,
            }),
        );
    }

    /// Ends the driver of `link` (a reload removed it) once the requests
    /// queued for it (its `down`) were carried out.
    pub fn retire(&mut self, link: LinkId) {
        // Dropping the sender ends the task after its queue.
        self.slots.set(link, None);
    }

    /// Queues bringing `link` up for `group` (named in the command's
    /// environment); failures of this attempt are reported with `attempt`.
    pub fn up(&self, link: LinkId, attempt: u64, group: &str) {
        self.send(
            link,
            Request::Up {
                group: group.to_string(),
                attempt,
            },
        );
    }

    /// Queues taking `link` down; `DriverEvent::Released` says when it is done.
    pub fn down(&self, link: LinkId) {
        self.send(link, Request::Down);
    }

    /// Waits until every request queued so far for `link` was executed.
    pub async fn settle(&self, link: LinkId) {
        let (tx, rx) = oneshot::channel();
        self.send(link, Request::Settle(tx));
        let _ = rx.await;
    }

    /// Agent exit. `keep = true` leaves every link as it is: supervised
    /// processes keep running (a restarted agent finds the interfaces up and
    /// adopts them; a pppd left behind is stopped through its pid file when
    /// the link is later taken down). `keep = false` takes every link down
    /// (except always-up ones). Returns when all links are done.
    pub async fn shutdown(self, keep: bool) {
        let mut waits = Vec::new();
        for slot in self.slots.values() {
            let (done, rx) = oneshot::channel();
            if slot.tx.send(Request::Shutdown { keep, done }).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// The driver state of `link` (Idle for an unknown id).
    pub fn state(&self, link: LinkId) -> DriverState {
        self.slots
            .get(link)
            .and_then(|s| s.state.lock().ok().map(|g| *g))
            .unwrap_or(DriverState::Idle)
    }

    fn send(&self, link: LinkId, req: Request) {
        match self.slots.get(link) {
            Some(slot) => {
                if slot.tx.send(req).is_err() {
                    tracing::warn!(link = %slot.name, "link driver task is gone; request dropped");
                }
            }
            None => tracing::warn!("request for unknown link id {link} ignored"),
        }
    }
}

/// What runs under supervision: the `up` command or pppd.
struct Supervised {
    spawned: Spawned,
    role: Role,
    program: String,
    /// The attempt that started it (its exit is reported with this id).
    attempt: u64,
}

/// One link's driver task.
struct Driver {
    id: LinkId,
    cfg: LinkConfig,
    timeouts: Timeouts,
    pppd_pid_dir: PathBuf,
    state: Arc<Mutex<DriverState>>,
    reports: mpsc::UnboundedSender<DriverEvent>,
    child: Option<Supervised>,
    /// The group of the last `up` (for the `down` command's environment).
    group: String,
    /// The id of the last `up`.
    attempt: u64,
    netlink: Option<rtnetlink::Handle>,
}

async fn wait_child(child: &mut Option<Supervised>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(s) => s.spawned.child.wait().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        loop {
            tokio::select! {
                req = rx.recv() => match req {
                    Some(Request::Up { group, attempt }) => self.up(group, attempt).await,
                    Some(Request::Down) => {
                        self.down().await;
                        let _ = self.reports.send(DriverEvent::Released { link: self.id });
                    }
                    Some(Request::Settle(tx)) => { let _ = tx.send(()); }
                    Some(Request::Shutdown { keep, done }) => {
                        if keep {
                            self.keep();
                        } else {
                            self.down().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    // LinkDrivers dropped without shutdown: leave things as they are.
                    None => { self.keep(); return; }
                },
                status = wait_child(&mut self.child) => self.child_exited(status).await,
            }
        }
    }

    fn set_state(&self, s: DriverState) {
        if let Ok(mut g) = self.state.lock() {
            *g = s;
        }
    }

    /// Reports that attempt `attempt` failed.
    fn fail(&self, attempt: u64, error: &LinkError) {
        let error = error.text();
        tracing::warn!(link = %self.cfg.name, attempt, "{error}");
        let _ = self.reports.send(DriverEvent::Failed {
            link: self.id,
            attempt,
            error,
        });
    }

    fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("ROUTEBACKUP_LINK", self.cfg.name.as_str()),
            ("ROUTEBACKUP_GROUP", self.group.as_str()),
            ("ROUTEBACKUP_INTERFACE", self.cfg.interface.as_str()),
        ]
    }

    fn netlink(&mut self) -> Result<rtnetlink::Handle, LinkError> {
        if let Some(h) = &self.netlink {
            return Ok(h.clone());
        }
        let h = crate::netlink::connect()?;
        self.netlink = Some(h.clone());
        Ok(h)
    }

    async fn up(&mut self, group: String, attempt: u64) {
        if let Some(c) = &mut self.child {
            tracing::info!(link = %self.cfg.name, pid = c.spawned.pid, "up requested while its {} runs; nothing to do", c.role);
            // Its exit now ends the new attempt.
            c.attempt = attempt;
            return;
        }
        self.group = group;
        self.attempt = attempt;
        match self.cfg.driver.clone() {
            DriverConfig::AlwaysUp => self.set_state(DriverState::Up),
            DriverConfig::Interface => {
                let name = self.cfg.interface.clone();
                let res = match self.netlink() {
                    Ok(h) => interface::set_admin_state(&h, &name, true).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(()) => {
                        tracing::info!(link = %self.cfg.name, "set interface {name} up");
                        self.set_state(DriverState::Up);
                    }
                    Err(e) => {
                        self.set_state(DriverState::Idle);
                        self.fail(attempt, &e);
                    }
                }
            }
            DriverConfig::Command { up, .. } => {
                if up.is_empty() {
                    self.set_state(DriverState::Up);
                    return;
                }
                if let Some(pid) = process::find_kept(&self.cfg.name, &self.cfg.interface) {
                    tracing::info!(link = %self.cfg.name, pid, "an up command for this link already runs (left by an earlier agent); not starting another");
                    self.set_state(DriverState::Running { pid });
                    return;
                }
                self.spawn(&up, Role::UpCommand);
            }
            DriverConfig::Pppd { peer, pppd_path } => {
                if let Some(pid) = pppd::running_pid(&self.pppd_pid_dir, &self.cfg.name) {
                    tracing::info!(link = %self.cfg.name, pid, "a pppd for this link already runs (left by an earlier agent); not starting another");
                    self.set_state(DriverState::Up);
                    return;
                }
                let argv = pppd::argv(&pppd_path, &peer, &self.cfg.interface, &self.cfg.name);
                self.spawn(&argv, Role::Pppd);
            }
        }
    }

    fn spawn(&mut self, argv: &[String], role: Role) {
        let env = self.env();
        // pppd and a long-running up command survive the agent (a crash, or a
        // stop with kept links); see Spawned::start.
        match Spawned::start(argv, &env, &self.cfg.name, role, true) {
            Ok(spawned) => {
                self.set_state(DriverState::Running { pid: spawned.pid });
                let program = argv.first().cloned().unwrap_or_default();
                self.child = Some(Supervised {
                    spawned,
                    role,
                    program,
                    attempt: self.attempt,
                });
            }
            Err(e) => {
                self.set_state(DriverState::Idle);
                self.fail(self.attempt, &e);
            }
        }
    }

    /// The supervised process exited on its own (not through `down`).
    async fn child_exited(&mut self, status: std::io::Result<std::process::ExitStatus>) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let status = match status {
            Ok(s) => s,
            Err(source) => {
                self.set_state(DriverState::Idle);
                self.fail(
                    c.attempt,
                    &LinkError::Wait {
                        role: c.role,
                        program: c.program,
                        source,
                    },
                );
                return;
            }
        };
        if c.role == Role::UpCommand && status.success() {
            tracing::info!(link = %self.cfg.name, "up command `{}` finished; the link is judged by its interface", c.program);
            self.set_state(DriverState::Up);
            return;
        }
        let stderr_tail = c.spawned.stderr_tail().await;
        let meaning = match c.role {
            Role::Pppd => status.code().and_then(pppd::exit_meaning),
            Role::UpCommand | Role::DownCommand => None,
        };
        self.set_state(DriverState::Idle);
        self.fail(
            c.attempt,
            &LinkError::Exited {
                role: c.role,
                program: c.program,
                status,
                meaning,
                stderr_tail,
            },
        );
    }

    async fn down(&mut self) {
        self.set_state(DriverState::Stopping);
        match self.cfg.driver.clone() {
            DriverConfig::AlwaysUp => {
                tracing::debug!(link = %self.cfg.name, "always-up link: down is a no-op");
            }
            DriverConfig::Interface => {
                let name = self.cfg.interface.clone();
                let res = match self.netlink() {
                    Ok(h) => interface::set_admin_state(&h, &name, false).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(()) => tracing::info!(link = %self.cfg.name, "set interface {name} down"),
                    Err(e) => {
                        tracing::warn!(link = %self.cfg.name, "taking the link down: {}", e.text());
                    }
                }
            }
            DriverConfig::Command { down, .. } => {
                if !self.stop_child().await {
                    if let Some(pid) = process::find_kept(&self.cfg.name, &self.cfg.interface) {
                        process::stop_kept(&self.cfg.name, pid, self.timeouts.term_grace).await;
                    }
                }
                if !down.is_empty() {
                    let env = self.env();
                    if let Err(e) = process::run_bounded(
                        &down,
                        &env,
                        &self.cfg.name,
                        Role::DownCommand,
                        self.timeouts.down_command,
                    )
                    .await
                    {
                        tracing::warn!(link = %self.cfg.name, "{}", e.text());
                    }
                }
            }
            DriverConfig::Pppd { .. } => {
                if !self.stop_child().await {
                    self.stop_orphan_pppd().await;
                }
            }
        }
        self.set_state(match self.cfg.driver {
            DriverConfig::AlwaysUp => DriverState::Up,
            _ => DriverState::Idle,
        });
    }

    /// Stops the supervised process, if any; true if there was one.
    async fn stop_child(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        tracing::info!(link = %self.cfg.name, pid = c.spawned.pid, "stopping {}", c.role);
        match c.spawned.terminate(self.timeouts.term_grace).await {
            Some(status) => {
                tracing::info!(link = %self.cfg.name, "{} stopped ({status})", c.role);
            }
            None => {
                tracing::warn!(link = %self.cfg.name, pid = c.spawned.pid, "{} could not be reaped after SIGKILL", c.role);
            }
        }
        true
    }

    /// A pppd for this link started by an earlier agent (kept across a restart).
    async fn stop_orphan_pppd(&mut self) {
        let Some(pid) = pppd::running_pid(&self.pppd_pid_dir, &self.cfg.name) else {
            return;
        };
        tracing::info!(link = %self.cfg.name, pid, "stopping the pppd left by an earlier agent");
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return;
        };
        // SAFETY: kill(2) on a pid verified to be our link's pppd.
        unsafe { libc::kill(p, libc::SIGTERM) };
        let deadline = tokio::time::Instant::now() + self.timeouts.term_grace;
        while tokio::time::Instant::now() < deadline {
            if !process::is_running(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pppd::running_pid(&self.pppd_pid_dir, &self.cfg.name) == Some(pid) {
            // SAFETY: as above, re-verified.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }

    /// Agent exit keeping the link: let a supervised process run on unsupervised.
    fn keep(&mut self) {
        if let Some(c) = self.child.take() {
            tracing::info!(link = %self.cfg.name, pid = c.spawned.pid, "leaving {} running (links kept)", c.role);
        }
    }
}
