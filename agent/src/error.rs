//! How errors reach people.
//!
//! Each module has its own error type (thiserror). Its message says what
//! failed and, where there is one, the fix; what the layer below said (the
//! kernel's errno, aya's error, the OS) is its `source`, never repeated in
//! the message. Whoever shows an error to a person (a log line, `status`'s
//! `last_error`, the CLI) prints the whole chain with [`Report`], so the
//! cause is always there exactly once.

use std::error::Error;
use std::fmt;

/// Displays an error and its causes on one line: "a: b: c".
pub struct Report<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// The chain as a string (for `last_error` and other stored text).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Report(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the thing (run as root)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn report_lists_every_cause_once() {
        let e = Outer(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            chain(&e),
            "cannot open the thing (run as root): Operation not permitted (os error 1)"
        );
    }
}
