//! The pin directory: must live on a bpffs; `/sys/fs/bpf` is mounted if it is
//! not one yet (as systemd would), anything else is the operator's job.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::FastpathError;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;
use crate::paths::SYS_FS_BPF;

/// True if `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool, FastpathError> {
    let c = c_path(path)?;
    // SAFETY: statfs writes into a zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    if rc != 0 {
        return Err(FastpathError::Statfs {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_type == BPF_FS_MAGIC)
}

/// The deepest existing ancestor of `path` (or `path` itself).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// Makes sure `pin_path` exists on a bpffs, mounting one at /sys/fs/bpf when
/// the pin path is below it and nothing is mounted there.
pub fn prepare_pin_dir(pin_path: &Path) -> Result<(), FastpathError> {
    if !pin_path.is_absolute() {
        return Err(FastpathError::PinPathNotAbsolute {
            path: pin_path.to_path_buf(),
        });
    }
    let anc = existing_ancestor(pin_path);
    if !is_bpffs(&anc)? {
        let sys = Path::new(SYS_FS_BPF);
        if pin_path.starts_with(sys) && sys.is_dir() && !is_bpffs(sys)? {
            mount_bpffs(sys)?;
            tracing::info!("mounted a bpffs on {SYS_FS_BPF} for the pin directory");
        } else {
            return Err(FastpathError::NotOnBpffs {
                pin_path: pin_path.to_path_buf(),
                checked: anc,
            });
        }
    }
    std::fs::create_dir_all(pin_path).map_err(|source| FastpathError::CreateDir {
        path: pin_path.to_path_buf(),
        source,
    })?;
    if !is_bpffs(pin_path)? {
        return Err(FastpathError::PinDirNotOnBpffs {
            path: pin_path.to_path_buf(),
        });
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, FastpathError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| FastpathError::PathWithNul {
        path: path.to_path_buf(),
    })
}

fn mount_bpffs(dir: &Path) -> Result<(), FastpathError> {
    let target = c_path(dir)?;
    let src = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings; data is NULL.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(FastpathError::Mount {
            dir: dir.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
