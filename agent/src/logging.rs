//! Where `run` logs: to journald (priorities per level, the tracing fields
//! as journal fields GROUP, LINK, STATE) when systemd connected stderr to
//! the journal, else to stderr in the usual text format (the journal's
//! GROUP and STATE fields left out: the text names the group).

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
            Err(e) => eprintln!(
                "routebackup: cannot reach journald ({e}); logging to stderr without priorities"
            ),
        }
    }
    tracing_subscriber::fmt()
        .fmt_fields(stderr_fields())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
