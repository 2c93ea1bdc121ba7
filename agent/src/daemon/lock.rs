//! One agent per pin directory and per control socket: each is guarded by a
//! lock file under [`crate::paths::RUN_DIR`] (named by
//! [`crate::paths::lock_file`]), `flock`ed for the agent's lifetime and
//! holding its pid, so a second agent refuses to start with the first one's
//! pid instead of fighting over the maps.
//!
//! The kernel drops an `flock` when its holder dies, however it dies: a lock
//! file left by a SIGKILLed agent is free for the next one. At a clean exit
//! the file is removed while still locked; an agent that locked a file which
//! was removed meanwhile (stat of the path no longer matches its fd) starts
//! over with a new one, so two agents can never both hold "the" lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why the agent may not start.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// `what` says what the other agent does with `guarded`.
    #[error(
        "another routebackup agent{} {what} {} (its lock {} is held): stop it first \
         (`systemctl stop routebackup`{}), or give this agent its own [agent] pin_path and \
         control_socket",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        .guarded.display(),
        .lock.display(),
        .pid.map(|p| format!(" or `kill {p}`")).unwrap_or_default()
    )]
    Held {
        what: &'static str,
        guarded: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot use the lock file {} (the agent needs a writable {})", .lock.display(), crate::paths::RUN_DIR)]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Locks `lock` for the `what` at `guarded` (both named in the error).
    pub fn acquire(what: &'static str, guarded: &Path, lock: &Path) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            lock: lock.to_path_buf(),
            source,
        };
        if let Some(dir) = lock.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(lock)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held {
                        what,
                        guarded: guarded.to_path_buf(),
                        lock: lock.to_path_buf(),
                        pid: text.trim().parse().ok(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            // The holder before us may have removed the file at its exit
            // after we opened it: then ours is a lock on nothing.
            let same = match (std::fs::metadata(lock), file.metadata()) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
            return Ok(Lock {
                file,
                path: lock.to_path_buf(),
            });
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while locked (see the module doc), then released on close.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The locks of a running agent: its control socket, and its pin path unless
/// it runs without the fast path (`--dry-run`).
#[derive(Debug)]
pub struct AgentLocks {
    _locks: Vec<Lock>,
}

impl AgentLocks {
    pub fn acquire(control_socket: &Path, pin_path: Option<&Path>) -> Result<Self, LockError> {
        let mut locks = vec![Lock::acquire(
            "is already listening on the control socket",
            control_socket,
            &crate::paths::lock_file("socket", control_socket),
        )?];
        if let Some(pin) = pin_path {
            locks.push(Lock::acquire(
                "already uses the pin path",
                pin,
                &crate::paths::lock_file("pin", pin),
            )?);
        }
        Ok(AgentLocks { _locks: locks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid_and_the_file_goes_at_release() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("sub/pin-x.lock");
        let guarded = Path::new("/sys/fs/bpf/x");
        let first = Lock::acquire("already uses the pin path", guarded, &lock).unwrap();
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock is per open file: a second open in this process conflicts
        // just as another process would.
        let err = Lock::acquire("already uses the pin path", guarded, &lock).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("/sys/fs/bpf/x")
                && msg.contains("systemctl stop routebackup"),
            "{msg}"
        );
        drop(first);
        assert!(!lock.exists(), "released locks are removed");
        let again = Lock::acquire("already uses the pin path", guarded, &lock).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_file_of_a_dead_agent_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("pin-y.lock");
        std::fs::write(&lock, "999999\n").unwrap();
        let l = Lock::acquire("already uses the pin path", Path::new("/p"), &lock).unwrap();
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(l);
    }
}
