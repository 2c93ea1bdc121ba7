//! The control socket: a Unix stream socket (mode 0600) where a client sends
//! one line and the agent answers and closes: `status\n` and `reload\n`
//! get one JSON document, `metrics\n` the Prometheus text the metrics
//! endpoint serves (the same registry). `routebackup status [--prometheus]`
//! and `routebackup reload` are the clients.

mod reload;

pub use reload::{request_reload, ConfigReport, ReloadReport};

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::dataplane::status::DataplaneStatus;
use crate::error::Report;
use crate::fastpath::XdpAttach;
use crate::links::DriverState;
use crate::metrics::Metrics;
use crate::model::{EngineStatus, GroupState, HoldingRoute, LinkStatus, Millis};

/// What `routebackup status --json` prints. Built by the daemon from the
/// engine's `EngineStatus` plus wall-clock times and watcher counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    /// False until the initial netlink dump reached the engine.
    pub synced: bool,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    pub groups: Vec<GroupReport>,
    pub links: Vec<LinkStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher: Option<WatcherReport>,
    /// Filled by the fast path (maps, attach points, counters, drivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fastpath: Option<DataplaneStatus>,
    /// The config file, when it was last loaded, the last reload's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub state: GroupState,
    pub active_link: Option<String>,
    /// When the group entered `state`, RFC 3339 UTC.
    pub since: String,
    /// The same instant in the engine's clock (ms since agent start).
    pub since_ms: Millis,
    /// Seconds the group has been in `state`.
    pub since_s_ago: u64,
    pub segments: Vec<SegmentReport>,
    /// The last switchover's route event → steering entry written, in µs
    /// (the agent's own timestamps).
    #[serde(default)]
    pub last_steer_latency_us: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentReport {
    pub prefix: String,
    pub primary_up: bool,
    pub steered: bool,
    /// The route that holds the segment primary-up.
    #[serde(default)]
    pub held_by: Option<HoldingRoute>,
    /// Why no route does ("no route", "blackhole route P (table T)", ...).
    #[serde(default)]
    pub why_not: Option<String>,
}

impl SegmentReport {
    /// "10.0.0.0/8 via 10.0.1.2 dev wan0 proto bgp table 254 metric 20", or
    /// the reason none holds it.
    pub fn route_text(&self) -> String {
        match (&self.held_by, &self.why_not) {
            (Some(r), _) => {
                let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
                format!(
                    "{}{via} dev {} proto {} table {} metric {}",
                    r.prefix,
                    r.dev,
                    r.proto.trim_start_matches("proto "),
                    r.table,
                    r.metric
                )
            }
            (None, Some(why)) => why.clone(),
            (None, None) => "-".to_string(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatcherReport {
    /// Route messages the initial dump held.
    pub initial_routes: u64,
    /// Agent start to `Synced`, in ms.
    pub initial_sync_ms: u64,
    /// Route messages seen since start (dumps and events).
    pub routes_seen: u64,
    /// Routes currently relevant to a segment.
    pub routes_watched: u64,
    pub overruns: u64,
    pub resyncs: u64,
    /// Differences between the agent's route view and the kernel that a
    /// periodic re-dump found (and corrected); anything but 0 is a bug.
    #[serde(default)]
    pub view_divergences: u64,
}

impl StatusReport {
    /// `now` is the engine clock (ms since `started`, the agent's wall-clock start).
    pub fn from_engine(status: &EngineStatus, now: Millis, started: SystemTime) -> StatusReport {
        let groups = status
            .groups
            .iter()
            .map(|g| GroupReport {
                name: g.name.clone(),
                state: g.state,
                active_link: g.active_link.clone(),
                since: humantime::format_rfc3339_seconds(
                    started + Duration::from_millis(g.since_ms),
                )
                .to_string(),
                since_ms: g.since_ms,
                since_s_ago: now.saturating_sub(g.since_ms) / 1000,
                segments: g
                    .segments
                    .iter()
                    .map(|s| SegmentReport {
                        prefix: s.prefix.to_string(),
                        primary_up: s.primary_up,
                        steered: s.steered,
                        held_by: s.held_by.clone(),
                        why_not: s.why_not.clone(),
                    })
                    .collect(),
                last_steer_latency_us: None,
            })
            .collect();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            synced: status.synced,
            uptime_s: now / 1000,
            groups,
            links: status.links.clone(),
            watcher: None,
            fastpath: None,
            config: None,
        }
    }

    /// The human-readable form of `routebackup status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let sync = if self.synced {
            "synced"
        } else {
            "initial sync in progress"
        };
        s.push_str(&format!(
            "routebackup {}: {sync}, up {}\n",
            self.version,
            humantime::format_duration(Duration::from_secs(self.uptime_s))
        ));
        if let Some(c) = &self.config {
            reload::render(&mut s, c);
        }
        if let Some(w) = &self.watcher {
            s.push_str(&format!(
                "routes: {} relevant of {} seen; initial sync {} ms; {} overruns, {} resyncs, {} view divergences\n",
                w.routes_watched, w.routes_seen, w.initial_sync_ms, w.overruns, w.resyncs, w.view_divergences
            ));
        }
        for g in &self.groups {
            s.push_str(&format!(
                "\ngroup {}: {}{} since {} ({} ago)\n",
                g.name,
                g.state,
                g.active_link
                    .as_deref()
                    .map(|l| format!(" via {l}"))
                    .unwrap_or_default(),
                g.since,
                humantime::format_duration(Duration::from_secs(g.since_s_ago))
            ));
            let w = g
                .segments
                .iter()
                .map(|x| x.prefix.len())
                .max()
                .unwrap_or(7)
                .max(7);
            s.push_str(&format!(
                "  {:<w$}  {:<7}  {:<7}  {}\n",
                "SEGMENT", "PRIMARY", "STEERED", "ROUTE (or why none)"
            ));
            for seg in &g.segments {
                s.push_str(&format!(
                    "  {:<w$}  {:<7}  {:<7}  {}\n",
                    seg.prefix,
                    if seg.primary_up { "up" } else { "down" },
                    if seg.steered { "yes" } else { "no" },
                    seg.route_text()
                ));
            }
        }
        if !self.links.is_empty() {
            let nw = self
                .links
                .iter()
                .map(|l| l.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let iw = self
                .links
                .iter()
                .map(|l| l.interface.len())
                .max()
                .unwrap_or(9)
                .max(9);
            s.push_str(&format!(
                "\n{:<nw$}  {:<iw$}  {:<10}  {:>8}  LAST ERROR\n",
                "LINK", "INTERFACE", "STATE", "ATTEMPTS"
            ));
            for l in &self.links {
                s.push_str(&format!(
                    "{:<nw$}  {:<iw$}  {:<10}  {:>8}  {}\n",
                    l.name,
                    l.interface,
                    l.state,
                    l.attempts,
                    l.last_error.as_deref().unwrap_or("-")
                ));
            }
        }
        if let Some(fp) = &self.fastpath {
            render_fastpath(&mut s, fp);
        }
        s
    }
}

/// The fast path's part of the human status: attach points, link drivers,
/// counters per group, kernel routes.
fn render_fastpath(s: &mut String, fp: &DataplaneStatus) {
    s.push_str(&format!("\nfast path ({})\n", fp.pin_path.display()));
    if let Some(k) = &fp.kernel {
        s.push_str(&format!("  {}\n", k.summary()));
    }
    for a in &fp.attachments {
        let xdp = match a.xdp {
            XdpAttach::Native => "native",
            XdpAttach::Generic => "generic",
            XdpAttach::None => "none",
        };
        s.push_str(&format!(
            "  {} (ifindex {}): xdp {xdp}, tc {}{}\n",
            a.interface,
            a.ifindex,
            if a.tc { "attached" } else { "not attached" },
            if a.adopted { ", adopted" } else { "" }
        ));
    }
    if !fp.groups.is_empty() {
        s.push_str(&format!(
            "  {:<16} {:>12} {:>14} {:>12} {:>10} {:>9}\n",
            "GROUP", "STEERED PKTS", "STEERED BYTES", "PASSED PKTS", "DEFERRED", "FAILURES"
        ));
        for g in &fp.groups {
            let c = &g.stats;
            s.push_str(&format!(
                "  {:<16} {:>12} {:>14} {:>12} {:>10} {:>9}\n",
                g.name,
                c.steered_packets,
                c.steered_bytes,
                c.passed_packets,
                c.deferred_packets,
                c.redirect_failures
            ));
        }
    }
    for d in &fp.drivers {
        let state = match d.driver {
            DriverState::Idle => "idle".to_string(),
            DriverState::Up => "up".to_string(),
            DriverState::Running { pid } => format!("running (pid {pid})"),
            DriverState::Stopping => "stopping".to_string(),
        };
        s.push_str(&format!("  driver {}: {state}\n", d.link));
    }
    if !fp.kernel_routes.is_empty() {
        s.push_str(&format!(
            "  kernel routes installed: {}\n",
            fp.kernel_routes.join(", ")
        ));
    }
    for f in &fp.tc_fallbacks {
        s.push_str(&format!(
            "  link {}: steered through TC: {}\n",
            f.link, f.reason
        ));
    }
    if !fp.prearmed.is_empty() {
        s.push_str(&format!("  pre-armed: {}\n", fp.prearmed.join(", ")));
    }
}

/// A status request from a control client; the daemon answers on `reply`.
pub type StatusRequest = oneshot::Sender<StatusReport>;

/// What a control client asks the daemon for; it answers on the sender.
#[derive(Debug)]
pub enum ControlRequest {
    Status(StatusRequest),
    Reload(oneshot::Sender<ReloadReport>),
}

/// Why the agent cannot serve its control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another routebackup agent is already listening on {}; stop it first or set [agent] control_socket", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("cannot remove the stale control socket {} (remove it by hand)", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the control socket {}{}", path.display(), bind_hint(source))]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot restrict the control socket {} to its owner (mode 0600)", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The likely fix for a failed bind, by what the OS said.
fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            " (another agent running? stop it first or set [agent] control_socket)"
        }
        io::ErrorKind::PermissionDenied => " (run as root, or set [agent] control_socket)",
        io::ErrorKind::NotFound => {
            " (its directory does not exist; create it or set [agent] control_socket)"
        }
        _ => "",
    }
}

/// Binds the control socket: refuses if another agent answers on it, removes
/// a stale socket file, and restricts the socket to its owner (0600).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let path_buf = || path.to_path_buf();
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(path_buf()));
        }
        debug!("removing stale control socket {}", path.display());
        std::fs::remove_file(path).map_err(|source| ControlError::RemoveStale {
            path: path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Permissions {
            path: path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves clients until the daemon drops its end of `requests`.
pub async fn serve(
    listener: UnixListener,
    requests: mpsc::Sender<ControlRequest>,
    metrics: Arc<Metrics>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("control socket accept: {}", Report(&e));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        if requests.is_closed() {
            return;
        }
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, requests, &metrics).await {
                debug!("control client: {}", Report(&e));
            }
        });
    }
}

async fn answer(
    stream: tokio::net::UnixStream,
    requests: mpsc::Sender<ControlRequest>,
    metrics: &Metrics,
) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd).take(512);
    tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client sent no command"))??;
    let reply = match line.trim() {
        "status" => {
            let (tx, rx) = oneshot::channel();
            requests.send(ControlRequest::Status(tx)).await.map_err(|_| io::Error::other("agent shutting down"))?;
            let report = rx.await.map_err(|_| io::Error::other("agent shutting down"))?;
            serde_json::to_string_pretty(&report).map_err(io::Error::other)?
        }
        "reload" => {
            let (tx, rx) = oneshot::channel();
            requests.send(ControlRequest::Reload(tx)).await.map_err(|_| io::Error::other("agent shutting down"))?;
            let report = rx.await.map_err(|_| io::Error::other("agent shutting down"))?;
            serde_json::to_string_pretty(&report).map_err(io::Error::other)?
        }
        "metrics" => metrics.render(),
        other => serde_json::json!({ "error": format!("unknown command {other:?}; the commands are \"status\", \"reload\" and \"metrics\"") })
            .to_string(),
    };
    wr.write_all(reply.as_bytes()).await?;
    wr.write_all(b"\n").await?;
    wr.shutdown().await
}

/// Sends `command` to the agent at `path`; its whole answer (blocking, `timeout`).
fn request_text(path: &Path, command: &str, timeout: Duration) -> Result<String, ClientError> {
    let p = || path.to_path_buf();
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning(p()),
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(p()),
        _ => ClientError::Io(p(), e),
    })?;
    let t = Some(timeout);
    s.set_read_timeout(t)
        .and_then(|()| s.set_write_timeout(t))
        .map_err(|e| ClientError::Io(p(), e))?;
    s.write_all(format!("{command}\n").as_bytes())
        .map_err(|e| ClientError::Io(p(), e))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| ClientError::Io(p(), e))?;
    Ok(text)
}

/// The agent's `{"error": ...}` answer, if that is what `text` is.
fn error_hint(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
}

/// Asks the agent at `path` for its metrics in the Prometheus text format
/// (what its `/metrics` endpoint serves).
pub fn request_metrics(path: &Path) -> Result<String, ClientError> {
    let text = request_text(path, "metrics", Duration::from_secs(5))?;
    if text.starts_with('{') {
        // An agent that does not know the command answers with a JSON error.
        let hint = error_hint(&text);
        return Err(ClientError::BadReply(
            path.to_path_buf(),
            hint.unwrap_or(text),
        ));
    }
    Ok(text)
}

/// Why `routebackup status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no agent is listening on {0}: is `routebackup run` running?")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}: the control socket is root-only (mode 0600); run as root")]
    PermissionDenied(PathBuf),
    #[error("{}", .0.display())]
    Io(PathBuf, #[source] io::Error),
    #[error("{0}: the agent's answer is not the document asked for: {1}")]
    BadReply(PathBuf, String),
}

/// Asks the agent at `path` for its status (blocking, 5 s timeout).
pub fn request_status(path: &Path) -> Result<StatusReport, ClientError> {
    request(path, "status", Duration::from_secs(5))
}

/// Sends `command` and parses the JSON answer (blocking, `timeout`).
fn request<T: serde::de::DeserializeOwned>(
    path: &Path,
    command: &str,
    timeout: Duration,
) -> Result<T, ClientError> {
    let p = || path.to_path_buf();
    let text = request_text(path, command, timeout)?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::BadReply(p(), error_hint(&text).unwrap_or_else(|| e.to_string())))
}

#[cfg(test)]
mod tests;
