//! The control socket: a Unix stream socket (mode 0600) where a client sends
//! one line and the agent answers and closes: `status\n` and `reload\n`
//! get one JSON document, `metrics\n` the Prometheus text the metrics
//! endpoint serves (the same registry). `routebackup status [--prometheus]`
//! and `routebackup reload` are the clients.

mod reload;

pub use crate::status::ConfigReport;
pub use reload::{request_reload, ReloadReport};

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::Report;
use crate::metrics::Metrics;
pub use crate::status::{GroupReport, SegmentReport, StatusReport, WatcherReport};

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
mod tests {
    use super::*;
    use std::time::SystemTime;

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
        let (tx, mut rx) = mpsc::channel::<ControlRequest>(4);
        let metrics = Arc::new(Metrics::new());
        metrics.link_attempt("lte");
        tokio::spawn(serve(listener, tx, metrics.clone()));
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                match req {
                    ControlRequest::Status(reply) => {
                        let _ = reply.send(StatusReport::from_engine(
                            &crate::status::tests::status(),
                            1000,
                            SystemTime::now(),
                        ));
                    }
                    ControlRequest::Reload(reply) => {
                        let _ = reply.send(ReloadReport {
                            ok: false,
                            summary: "refused".into(),
                            errors: vec!["x.toml:3:1: bad".into()],
                        });
                    }
                }
            }
        });
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || request_status(&p))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.groups[0].name, "hq");
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || request_reload(&p))
            .await
            .unwrap()
            .unwrap();
        assert!(!r.ok);
        assert_eq!(r.errors, vec!["x.toml:3:1: bad"]);
        let p = path.clone();
        let text = tokio::task::spawn_blocking(move || request_metrics(&p))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(text.trim_end(), metrics.render().trim_end());
        assert!(
            text.contains("routebackup_link_attempts_total{link=\"lte\"} 1"),
            "{text}"
        );
        let missing = dir.path().join("none.sock");
        let e = tokio::task::spawn_blocking(move || request_status(&missing))
            .await
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("no agent is listening"), "{e}");
    }
}
