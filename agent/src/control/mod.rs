//! The control socket: a Unix stream socket (mode 0600) where a client sends
//! one line (`status\n`) and the agent answers with one JSON document and
//! closes. `routebackup status` is the client.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::model::{EngineStatus, Millis};

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
    pub links: Vec<LinkReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher: Option<WatcherReport>,
    /// Filled by the fast path (maps, attach points, counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fastpath: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub name: String,
    /// primary, activating, backup, holding, failed.
    pub state: String,
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    pub name: String,
    pub interface: String,
    /// down, connecting, up, failed.
    pub state: String,
    pub ifindex: Option<u32>,
    pub attempts: u32,
    pub last_error: Option<String>,
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
}

fn lowercase_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}

impl StatusReport {
    /// `now` is the engine clock (ms since `started`, the agent's wall-clock start).
    pub fn from_engine(status: &EngineStatus, now: Millis, started: SystemTime) -> StatusReport {
        let groups = status
            .groups
            .iter()
            .map(|g| GroupReport {
                name: g.name.clone(),
                state: lowercase_name(&g.state),
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
                    })
                    .collect(),
                last_steer_latency_us: None,
            })
            .collect();
        let links = status
            .links
            .iter()
            .map(|l| LinkReport {
                name: l.name.clone(),
                interface: l.interface.clone(),
                state: lowercase_name(&l.state),
                ifindex: l.ifindex,
                attempts: l.attempts,
                last_error: l.last_error.clone(),
            })
            .collect();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            synced: status.synced,
            uptime_s: now / 1000,
            groups,
            links,
            watcher: None,
            fastpath: None,
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
        if let Some(w) = &self.watcher {
            s.push_str(&format!(
                "routes: {} relevant of {} seen; initial sync {} ms; {} overruns, {} resyncs\n",
                w.routes_watched, w.routes_seen, w.initial_sync_ms, w.overruns, w.resyncs
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
                "  {:<w$}  {:<7}  {}\n",
                "SEGMENT", "PRIMARY", "STEERED"
            ));
            for seg in &g.segments {
                s.push_str(&format!(
                    "  {:<w$}  {:<7}  {}\n",
                    seg.prefix,
                    if seg.primary_up { "up" } else { "down" },
                    if seg.steered { "yes" } else { "no" }
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

    /// The status as Prometheus text exposition (for a node_exporter textfile
    /// collector or any scraper that runs `routebackup metrics`).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
            out.push_str(&format!(
                "# HELP routebackup_{name} {help}\n# TYPE routebackup_{name} {kind}\n"
            ));
            for (labels, v) in samples {
                out.push_str(&format!("routebackup_{name}{labels} {v}\n"));
            }
        };
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        const STATES: [&str; 5] = ["primary", "activating", "backup", "holding", "failed"];
        let mut states = Vec::new();
        for g in &self.groups {
            for st in STATES {
                states.push((
                    format!("{{group=\"{}\",state=\"{st}\"}}", esc(&g.name)),
                    f64::from(u8::from(g.state == st)),
                ));
            }
        }
        metric(
            "group_state",
            "1 for the group's current state",
            "gauge",
            states,
        );
        let per_segment = |flag: fn(&SegmentReport) -> bool| -> Vec<(String, f64)> {
            self.groups
                .iter()
                .flat_map(|g| {
                    g.segments.iter().map(move |s| {
                        (
                            format!("{{group=\"{}\",segment=\"{}\"}}", esc(&g.name), s.prefix),
                            f64::from(u8::from(flag(s))),
                        )
                    })
                })
                .collect()
        };
        metric(
            "segment_primary_up",
            "1 when the segment has a route over a non-backup interface",
            "gauge",
            per_segment(|s| s.primary_up),
        );
        metric(
            "segment_steered",
            "1 when the segment's traffic is steered to a backup link",
            "gauge",
            per_segment(|s| s.steered),
        );
        metric(
            "link_up",
            "1 when the backup link is up",
            "gauge",
            self.links
                .iter()
                .map(|l| {
                    (
                        format!("{{link=\"{}\"}}", esc(&l.name)),
                        f64::from(u8::from(l.state == "up")),
                    )
                })
                .collect(),
        );
        metric(
            "link_failed_attempts",
            "failed attempts to bring the link up",
            "counter",
            self.links
                .iter()
                .map(|l| {
                    (
                        format!("{{link=\"{}\"}}", esc(&l.name)),
                        f64::from(l.attempts),
                    )
                })
                .collect(),
        );
        if let Some(groups) = self.fastpath.as_ref().and_then(|f| f["groups"].as_array()) {
            for (field, help) in [
                ("steered_packets", "packets redirected to the backup"),
                ("steered_bytes", "bytes redirected to the backup"),
                (
                    "passed_packets",
                    "packets to monitored segments left to the kernel's route",
                ),
                (
                    "passed_bytes",
                    "bytes to monitored segments left to the kernel's route",
                ),
                ("deferred_packets", "packets XDP handed to the TC program"),
                ("redirect_failures", "steer matches whose redirect failed"),
            ] {
                metric(
                    &format!("fastpath_{field}_total"),
                    help,
                    "counter",
                    groups
                        .iter()
                        .map(|g| {
                            (
                                format!("{{group=\"{}\"}}", esc(g["name"].as_str().unwrap_or("?"))),
                                g[field].as_u64().unwrap_or(0) as f64,
                            )
                        })
                        .collect(),
                );
            }
        }
        if let Some(w) = &self.watcher {
            metric(
                "routes_watched",
                "routes relevant to a monitored segment",
                "gauge",
                vec![(String::new(), w.routes_watched as f64)],
            );
            metric(
                "netlink_overruns_total",
                "netlink overruns (each followed by a re-dump)",
                "counter",
                vec![(String::new(), w.overruns as f64)],
            );
            metric(
                "resyncs_total",
                "full re-dumps",
                "counter",
                vec![(String::new(), w.resyncs as f64)],
            );
        }
        out
    }
}

/// The fast path's part of the human status: attach points, link drivers,
/// counters per group, kernel routes.
fn render_fastpath(s: &mut String, fp: &serde_json::Value) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(x) => x.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    s.push_str(&format!("\nfast path ({})\n", text(&fp["pin_path"])));
    for a in fp["attachments"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  {} (ifindex {}): xdp {}, tc {}{}\n",
            text(&a["interface"]),
            text(&a["ifindex"]),
            text(&a["xdp"]),
            if a["tc"] == true {
                "attached"
            } else {
                "not attached"
            },
            if a["adopted"] == true {
                ", adopted"
            } else {
                ""
            }
        ));
    }
    let groups = fp["groups"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !groups.is_empty() {
        s.push_str(&format!(
            "  {:<16} {:>12} {:>14} {:>12} {:>10} {:>9}\n",
            "GROUP", "STEERED PKTS", "STEERED BYTES", "PASSED PKTS", "DEFERRED", "FAILURES"
        ));
        for g in groups {
            s.push_str(&format!(
                "  {:<16} {:>12} {:>14} {:>12} {:>10} {:>9}\n",
                text(&g["name"]),
                text(&g["steered_packets"]),
                text(&g["steered_bytes"]),
                text(&g["passed_packets"]),
                text(&g["deferred_packets"]),
                text(&g["redirect_failures"])
            ));
        }
    }
    for d in fp["drivers"].as_array().into_iter().flatten() {
        let state = &d["driver"];
        let pid = state
            .get("pid")
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  driver {}: {}{pid}\n",
            text(&d["link"]),
            text(&state["state"])
        ));
    }
    let routes: Vec<String> = fp["kernel_routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !routes.is_empty() {
        s.push_str(&format!(
            "  kernel routes installed: {}\n",
            routes.join(", ")
        ));
    }
}

/// A status request from a control client; the daemon answers on `reply`.
pub type StatusRequest = oneshot::Sender<StatusReport>;

/// Binds the control socket: refuses if another agent answers on it, removes
/// a stale socket file, and restricts the socket to its owner (0600).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another routebackup agent is already listening on {}; stop it first or set [agent] control_socket",
                        path.display()
                    ),
                ))
            }
            Err(_) => {
                debug!("removing stale control socket {}", path.display());
                std::fs::remove_file(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot remove stale control socket {}: {e}", path.display()))
                })?;
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create control socket {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves clients until the daemon drops its end of `requests`.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<StatusRequest>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        if requests.is_closed() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = answer(stream, requests).await {
                debug!("control client: {e}");
            }
        });
    }
}

async fn answer(
    stream: tokio::net::UnixStream,
    requests: mpsc::Sender<StatusRequest>,
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
            requests.send(tx).await.map_err(|_| io::Error::other("agent shutting down"))?;
            let report = rx.await.map_err(|_| io::Error::other("agent shutting down"))?;
            serde_json::to_string_pretty(&report).map_err(io::Error::other)?
        }
        other => serde_json::json!({ "error": format!("unknown command {other:?}; the only command is \"status\"") })
            .to_string(),
    };
    wr.write_all(reply.as_bytes()).await?;
    wr.write_all(b"\n").await?;
    wr.shutdown().await
}

/// Why `routebackup status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no agent is listening on {0}: is `routebackup run` running?")]
    NotRunning(PathBuf),
    #[error("permission denied on {0}: the control socket is root-only (mode 0600); run as root")]
    PermissionDenied(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: the agent's answer is not a status document: {1}")]
    BadReply(PathBuf, String),
}

/// Asks the agent at `path` for its status (blocking, 5 s timeout).
pub fn request_status(path: &Path) -> Result<StatusReport, ClientError> {
    let p = || path.to_path_buf();
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning(p()),
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(p()),
        _ => ClientError::Io(p(), e),
    })?;
    let t = Some(Duration::from_secs(5));
    s.set_read_timeout(t)
        .and_then(|_| s.set_write_timeout(t))
        .map_err(|e| ClientError::Io(p(), e))?;
    s.write_all(b"status\n")
        .map_err(|e| ClientError::Io(p(), e))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| ClientError::Io(p(), e))?;
    serde_json::from_str(&text).map_err(|e| {
        let hint = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from));
        ClientError::BadReply(p(), hint.unwrap_or_else(|| e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupState, GroupStatus, LinkState, LinkStatus, SegmentStatus};

    fn status() -> EngineStatus {
        EngineStatus {
            synced: true,
            groups: vec![GroupStatus {
                name: "hq".into(),
                state: GroupState::Backup,
                active_link: Some("lte".into()),
                since_ms: 5_000,
                segments: vec![SegmentStatus {
                    prefix: "10.1.0.0/16".parse().unwrap(),
                    primary_up: false,
                    steered: true,
                }],
            }],
            links: vec![LinkStatus {
                name: "lte".into(),
                interface: "ppp0".into(),
                state: LinkState::Up,
                ifindex: Some(7),
                attempts: 1,
                last_error: None,
            }],
        }
    }

    #[test]
    fn report_from_engine_status() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = StatusReport::from_engine(&status(), 65_000, started);
        assert_eq!(r.groups[0].state, "backup");
        assert_eq!(r.groups[0].since, "2023-11-14T22:13:25Z");
        assert_eq!(r.groups[0].since_s_ago, 60);
        assert_eq!(r.links[0].state, "up");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["groups"][0]["segments"][0]["prefix"], "10.1.0.0/16");
        assert_eq!(json["groups"][0]["segments"][0]["steered"], true);
        assert!(json.get("fastpath").is_none());
        let back: StatusReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let text = r.render();
        assert!(text.contains("group hq: backup via lte"), "{text}");
        assert!(text.contains("10.1.0.0/16"), "{text}");
        assert!(text.contains("ppp0"), "{text}");
    }

    #[tokio::test]
    async fn socket_round_trip_stale_socket_and_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rb.sock");
        // A stale socket file (nobody listening) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second agent on the same path is refused.
        let err = bind(&path).unwrap_err();
        assert!(err.to_string().contains("already listening"), "{err}");
        let (tx, mut rx) = mpsc::channel::<StatusRequest>(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(StatusReport::from_engine(
                    &status(),
                    1000,
                    SystemTime::now(),
                ));
            }
        });
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || request_status(&p))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.groups[0].name, "hq");
        let missing = dir.path().join("none.sock");
        let e = tokio::task::spawn_blocking(move || request_status(&missing))
            .await
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("no agent is listening"), "{e}");
    }
}
