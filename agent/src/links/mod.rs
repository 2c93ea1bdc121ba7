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
//! The drivers themselves (`always-up`, `interface`, `command`, `pppd`) are
//! plug-ins, one module each under [`driver`], which owns a driver's config
//! keys, checks, normalised form and `up`/`down`; this module only runs them
//! on each link's task. It does not depend on `config`, which depends on
//! [`driver`] for the drivers' keys and settings: a link's settings come
//! through [`LinkSpec`].

pub mod driver;
mod error;
pub mod process;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::ids::Slots;
use crate::model::LinkId;
use driver::DriverConfig;
pub use error::LinkError;
use process::{Role, Spawned};

/// What the drivers need of a link's configuration (`config::LinkConfig`
/// implements it).
pub trait LinkSpec {
    fn name(&self) -> &str;
    fn interface(&self) -> &str;
    fn driver(&self) -> &DriverConfig;
}

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
        links: &Slots<LinkId, impl LinkSpec>,
        reports: mpsc::UnboundedSender<DriverEvent>,
    ) -> LinkDrivers {
        Self::with_options(
            links,
            reports,
            Timeouts::default(),
            PathBuf::from(driver::pppd::DEFAULT_PID_DIR),
        )
    }

    /// Like `new` with explicit time bounds and pppd pid-file directory.
    pub fn with_options(
        links: &Slots<LinkId, impl LinkSpec>,
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
    pub fn add(&mut self, link: LinkId, cfg: &impl LinkSpec) {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(DriverState::Idle));
        let task = Task {
            id: link,
            name: cfg.name().to_string(),
            interface: cfg.interface().to_string(),
            driver: cfg.driver().clone(),
            timeouts: self.timeouts,
            pppd_pid_dir: self.pppd_pid_dir.clone(),
            state: state.clone(),
            reports: self.reports.clone(),
            child: None,
            group: String::new(),
            attempt: 0,
            netlink: None,
        };
        tokio::spawn(task.run(rx));
        self.slots.set(
            link,
            Some(Slot {
                name: cfg.name().to_string(),
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

/// What runs under supervision: a long-running `up` command, pppd.
struct Supervised {
    spawned: Spawned,
    role: &'static Role,
    program: String,
    /// The attempt that started it (its exit is reported with this id).
    attempt: u64,
}

/// One link's task: carries out its requests in order with the link's
/// driver, which reads its fields and calls its methods (`set_state`,
/// `fail`, `spawn`, `stop_child`, `netlink`, `env`).
struct Task {
    id: LinkId,
    name: String,
    interface: String,
    driver: DriverConfig,
    timeouts: Timeouts,
    /// Where pppd writes its pid files (the pppd driver's; tests move it).
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

impl Task {
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
        tracing::warn!(link = %self.name, attempt, "{error}");
        let _ = self.reports.send(DriverEvent::Failed {
            link: self.id,
            attempt,
            error,
        });
    }

    fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("ROUTEBACKUP_LINK", self.name.as_str()),
            ("ROUTEBACKUP_GROUP", self.group.as_str()),
            ("ROUTEBACKUP_INTERFACE", self.interface.as_str()),
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
            tracing::info!(link = %self.name, pid = c.spawned.pid, "up requested while its {} runs; nothing to do", c.role);
            // Its exit now ends the new attempt.
            c.attempt = attempt;
            return;
        }
        self.group = group;
        self.attempt = attempt;
        let driver = self.driver.clone();
        driver.up(self).await;
    }

    /// Starts `argv` as the supervised process of the current attempt.
    fn spawn(&mut self, argv: &[String], role: &'static Role) {
        let env = self.env();
        // pppd and a long-running up command survive the agent (a crash, or a
        // stop with kept links); see Spawned::start.
        match Spawned::start(argv, &env, &self.name, role, true) {
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
        if c.role.may_finish && status.success() {
            tracing::info!(link = %self.name, "{} `{}` finished; the link is judged by its interface", c.role, c.program);
            self.set_state(DriverState::Up);
            return;
        }
        let stderr_tail = c.spawned.stderr_tail().await;
        let meaning = status.code().and_then(c.role.exit_meaning);
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
        let driver = self.driver.clone();
        driver.down(self).await;
        self.set_state(if driver.profile().always_up {
            DriverState::Up
        } else {
            DriverState::Idle
        });
    }

    /// Stops the supervised process, if any; true if there was one.
    async fn stop_child(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        tracing::info!(link = %self.name, pid = c.spawned.pid, "stopping {}", c.role);
        match c.spawned.terminate(self.timeouts.term_grace).await {
            Some(status) => {
                tracing::info!(link = %self.name, "{} stopped ({status})", c.role);
            }
            None => {
                tracing::warn!(link = %self.name, pid = c.spawned.pid, "{} could not be reaped after SIGKILL", c.role);
            }
        }
        true
    }

    /// Agent exit keeping the link: let a supervised process run on unsupervised.
    fn keep(&mut self) {
        if let Some(c) = self.child.take() {
            tracing::info!(link = %self.name, pid = c.spawned.pid, "leaving {} running (links kept)", c.role);
        }
    }
}
