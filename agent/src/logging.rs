//! Where `run` logs: to journald (priorities per level, the tracing fields
//! as journal fields GROUP, LINK, STATE) when systemd connected stderr to
//! the journal, else to stderr in the usual text format (the journal's
//! GROUP and STATE fields left out: the text names the group).

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Whether stderr is the journal stream systemd announced in
/// `JOURNAL_STREAM` ("DEVICE:INODE"): what sd_journal's docs say to check,
/// so a child that merely inherited the variable still logs to stderr.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// The fields of a stderr line: the message, then `name=value` pairs as
/// tracing's default prints them, without `group` and `state`: decision
/// lines name their group in the text already; those two fields are for the
/// journal.
fn stderr_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "group" | "state" => Ok(()),
        "message" => write!(w, "{value:?}"),
        name => write!(w, " {name}={value:?}"),
    })
}

/// The level names `--log-level` and `RUST_LOG` take: tracing's, and the
/// syslog names operators know from journald and rsyslog (`warning`, `err`,
/// `notice`, ...), which tracing alone would read as a module name and so
/// silence every line, fatal errors included.
fn level(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "emerg" | "alert" | "crit" | "err" | "error" => "error",
        "warning" | "warn" => "warn",
        "notice" | "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        "off" => "off",
        _ => return None,
    })
}

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{spec:?}: {what:?} is no log level (use error, warn, info, debug or trace, or syslog's \
     emerg, alert, crit, err, warning, notice; per module: routebackup=debug,info)"
)]
pub struct FilterError {
    spec: String,
    what: String,
}

/// The filter for a `--log-level` or `RUST_LOG` value: comma-separated
/// directives, each a level or `target=level`, levels by any name `level`
/// knows. A bare word that is no level is refused, never taken as a target.
pub fn filter(spec: &str) -> Result<EnvFilter, FilterError> {
    let refuse = |what: &str| FilterError {
        spec: spec.to_string(),
        what: what.to_string(),
    };
    let mut directives = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.rsplit_once('=') {
            Some((target, lvl)) => {
                let l = level(lvl).ok_or_else(|| refuse(lvl))?;
                directives.push(format!("{target}={l}"));
            }
            None => directives.push(level(d).ok_or_else(|| refuse(d))?.to_string()),
        }
    }
    EnvFilter::try_new(directives.join(",")).map_err(|_| refuse(spec))
}

/// stderr for log lines, whatever became of it: a log line that cannot be
/// written (a closed pipe, `| tee` restarted, a full disk behind a redirect)
/// is dropped, never an error and never a panic, so logging cannot end the
/// agent or leave its programs attached.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the global subscriber (once, at the start of `run`).
pub fn init(filter: EnvFilter) {
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(
                        journald
                            .with_field_prefix(None)
                            .with_syslog_identifier("routebackup".into()),
                    )
                    .init();
                return;
            }
            Err(e) => {
                let _ = writeln!(
                    Stderr,
                    "routebackup: cannot reach journald ({e}); logging to stderr without priorities"
                );
            }
        }
    }
    tracing_subscriber::fmt()
        .fmt_fields(stderr_fields())
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_names_are_levels_and_other_words_are_refused() {
        for (spec, want) in [
            ("warning", "warn"),
            ("err", "error"),
            ("notice", "info"),
            ("crit", "error"),
            ("DEBUG", "debug"),
            ("routebackup=warning,info", "routebackup=warn,info"),
        ] {
            assert_eq!(filter(spec).unwrap().to_string(), want, "{spec}");
        }
        let e = filter("warnings").unwrap_err().to_string();
        assert!(
            e.contains("\"warnings\" is no log level") && e.contains("warning"),
            "{e}"
        );
        assert!(filter("routebackup=loud").is_err());
    }
}
