//! Why a configuration cannot be used.
//!
//! The rendered text is what `routebackup check` and the daemon print: one
//! `FILE:LINE:COLUMN: message` per problem, each followed by its hint, every
//! problem found listed (not only the first). README "Configuration" shows it.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (the OS error is the source).
    #[error("{}: cannot read the config file", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The text is not valid TOML, or values in it fail validation.
    #[error("{}", Rendered { origin, problems })]
    Invalid {
        /// Names the file in the messages.
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong in the config text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value starts; `None` when the TOML parser gave no
    /// position.
    pub at: Option<Position>,
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// 1-based line and column (counted in characters) in the config text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to its end).
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Position { line, column }
    }
}

struct Rendered<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.at {
                Some(Position { line, column }) => {
                    write!(f, "{}:{line}:{column}: {}", self.origin, p.message)?;
                }
                None => write!(f, "{}: {}", self.origin, p.message)?,
            }
            if let Some(hint) = &p.hint {
                write!(f, "\n  hint: {hint}")?;
            }
        }
        Ok(())
    }
}
