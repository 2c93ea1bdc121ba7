//! Why a link driver could not do what the engine asked.
//!
//! The messages name the link's interface or program and, where there is
//! one, the fix; what the OS said is the error's source, so a message reads
//! whole only with its causes: [`LinkError::text`] joins them, and that text
//! is what `status` shows as the link's `last_error`.

use std::io;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::process::Role;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No rtnetlink socket; `NetlinkError` says what the OS answered.
    #[error(transparent)]
    NetlinkSocket(#[from] crate::netlink::NetlinkError),

    #[error("interface {interface} does not exist")]
    NoSuchInterface { interface: String },

    #[error("netlink did not answer within {limit:?} looking up {interface}")]
    LookupTimeout { interface: String, limit: Duration },

    #[error("cannot look up interface {interface}")]
    Lookup {
        interface: String,
        source: rtnetlink::Error,
    },

    #[error("netlink did not answer within {limit:?} setting {interface} {}", up_down(*.up))]
    SetStateTimeout {
        interface: String,
        up: bool,
        limit: Duration,
    },

    #[error("cannot set interface {interface} {}{}", up_down(*.up), netadmin_fix(.source))]
    SetState {
        interface: String,
        up: bool,
        source: io::Error,
    },

    #[error("{role} has an empty argv (give the program and its arguments in {})", role.config_key)]
    EmptyArgv { role: &'static Role },

    #[error("cannot run {role} `{program}`{}", spawn_fix(.role, .program, .source))]
    Spawn {
        role: &'static Role,
        program: String,
        source: io::Error,
    },

    #[error("{role} `{program}` exited before it could be supervised")]
    ExitedAtStart {
        role: &'static Role,
        program: String,
    },

    #[error("{role} `{program}`: cannot wait for the process")]
    Wait {
        role: &'static Role,
        program: String,
        source: io::Error,
    },

    /// A non-zero exit or death by a signal; `meaning` explains the exit
    /// code where the program's role knows it (pppd's), `stderr_tail`
    /// quotes the program's last stderr lines.
    #[error("{role} `{program}` {}", ended(*.status, *.meaning, .stderr_tail))]
    Exited {
        role: &'static Role,
        program: String,
        status: ExitStatus,
        meaning: Option<&'static str>,
        stderr_tail: String,
    },

    #[error("{role} `{program}` did not finish within {}; killed it", humantime::format_duration(*.limit))]
    Timeout {
        role: &'static Role,
        program: String,
        limit: Duration,
    },
}

impl LinkError {
    /// The message followed by its causes ("...: No such file or directory
    /// (os error 2)"), as logs and `status` show it.
    pub fn text(&self) -> String {
        crate::error::chain(self)
    }
}

fn up_down(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

fn netadmin_fix(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => " (the agent needs CAP_NET_ADMIN)",
        _ => "",
    }
}

fn spawn_fix(role: &Role, program: &str, e: &io::Error) -> String {
    let key = role.config_key;
    match e.kind() {
        io::ErrorKind::NotFound if Path::new(program).is_absolute() => {
            format!(" (check the path in {key})")
        }
        io::ErrorKind::NotFound => {
            format!(" (give an absolute path in {key} or make sure it is in the agent's PATH)")
        }
        io::ErrorKind::PermissionDenied => " (is it executable?)".to_string(),
        _ => String::new(),
    }
}

/// "exited with status 3 (meaning): tail" or "was killed by signal 9 (SIGKILL)".
fn ended(status: ExitStatus, meaning: Option<&str>, stderr_tail: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mut msg = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        (None, None) => format!("ended: {status}"),
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::links::driver::{command, pppd};

    #[test]
    fn missing_program_names_it_the_os_error_and_the_config_key() {
        let e = LinkError::Spawn {
            role: &command::UP,
            program: "/nonexistent/dialer".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.text(),
            "cannot run up command `/nonexistent/dialer` (check the path in `up = [...]`): \
             No such file or directory (os error 2)"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn exits_quote_meaning_and_stderr() {
        let e = LinkError::Exited {
            role: &pppd::PPPD,
            program: "/usr/sbin/pppd".into(),
            status: ExitStatus::from_raw(16 << 8),
            meaning: pppd::exit_meaning(16),
            stderr_tail: "Modem hangup".into(),
        };
        assert_eq!(
            e.text(),
            "pppd `/usr/sbin/pppd` exited with status 16 (the link was terminated by the modem \
             hanging up): Modem hangup"
        );
        let e = LinkError::Exited {
            role: &command::UP,
            program: "sh".into(),
            status: ExitStatus::from_raw(libc::SIGKILL),
            meaning: None,
            stderr_tail: String::new(),
        };
        assert_eq!(e.text(), "up command `sh` was killed by signal 9 (SIGKILL)");
    }
}
