//! Where `run` logs: to journald (priorities per level, the tracing fields
//! as journal fields GROUP, LINK, STATE) when systemd connected stderr to
//! the journal, else to stderr in the usual text format.

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
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
