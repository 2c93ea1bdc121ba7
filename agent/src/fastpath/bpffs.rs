//! The pin directory: must live on a bpffs; `/sys/fs/bpf` is mounted if it is
//! not one yet (as systemd would), anything else is the operator's job.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
use crate::paths::SYS_FS_BPF;

/// True if `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{}: path contains a NUL byte", path.display()))?;
    // SAFETY: statfs writes into a zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
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
pub fn prepare_pin_dir(pin_path: &Path) -> Result<()> {
    if !pin_path.is_absolute() {
        bail!(
            "pin path {} is not absolute: use a directory on a bpffs such as /sys/fs/bpf/routebackup",
            pin_path.display()
        );
    }
    let anc = existing_ancestor(pin_path);
    if !is_bpffs(&anc)? {
        let sys = Path::new(SYS_FS_BPF);
        if pin_path.starts_with(sys) && sys.is_dir() && !is_bpffs(sys)? {
            mount_bpffs(sys)?;
            tracing::info!("mounted a bpffs on {SYS_FS_BPF} for the pin directory");
        } else {
            bail!(
                "pin path {} is not on a bpffs ({} is not a bpf filesystem): mount one with \
                 `mount -t bpf bpf {}` or set [agent] pin_path to a directory under /sys/fs/bpf",
                pin_path.display(),
                anc.display(),
                anc.display()
            );
        }
    }
    std::fs::create_dir_all(pin_path)
        .with_context(|| format!("cannot create the pin directory {}", pin_path.display()))?;
    if !is_bpffs(pin_path)? {
        bail!(
            "pin directory {} is not on a bpffs: mount one with `mount -t bpf bpf {}`",
            pin_path.display(),
            pin_path.display()
        );
    }
    Ok(())
}

fn mount_bpffs(dir: &Path) -> Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())?;
    let src = CString::new("bpf")?;
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
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "cannot mount a bpffs on {} (run `mount -t bpf bpf {}` as root)",
                dir.display(),
                dir.display()
            )
        });
    }
    Ok(())
}
