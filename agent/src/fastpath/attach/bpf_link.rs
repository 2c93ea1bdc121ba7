//! What the bpf-link mechanisms (XDP link, TCX) share: a bpf link pinned under
//! `links/`, which keeps the program attached without the agent, and the
//! adoption of such a pin by the next agent.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::ProgramError;

use super::{Detach, Held, Via};
use crate::fastpath::{sys, FastpathError, Result};

/// A bpf link pinned at `path`: the pin keeps it attached whatever happens
/// to the agent; `detach` removes the pin, then closes the fd.
pub(super) struct KeptBpfLink {
    bpf_link: FdLink,
    path: PathBuf,
    via: Via,
}

impl Held for KeptBpfLink {
    fn via(&self) -> Via {
        self.via
    }

    fn detach(self: Box<Self>, how: &Detach<'_>) {
        // Closing alone leaves the program on while anyone else still holds
        // the link (see sys.rs); then the close is what is left.
        if !how.bpf_link_detach {
            // The kernel has no BPF_LINK_DETACH: closing is all there is.
        } else if let Err(e) = sys::detach_bpf_link(&self.bpf_link) {
            tracing::warn!(
                "cannot detach the program from {} at once (it leaves when the last \
                 holder of its link closes it): {}",
                how.interface,
                crate::error::Report(&e)
            );
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(
                    "cannot unpin {} (it stays attached until removed): {}",
                    self.path.display(),
                    crate::error::Report(&e)
                );
            }
        }
        drop(self.bpf_link);
    }
}

/// Pins a fresh link at `path`, replacing a pin left there.
pub(super) fn keep(fd: FdLink, path: &Path, via: Via) -> Result<Box<dyn Held>> {
    let _ = std::fs::remove_file(path);
    let bpf_link = fd
        .pin(path)
        .map(FdLink::from)
        .map_err(|source| FastpathError::PinBpfLink {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Box::new(KeptBpfLink {
        bpf_link,
        path: path.to_path_buf(),
        via,
    }))
}

/// Takes over the link a previous agent pinned at `path`: `into` makes it
/// the program's link type, `take_over` replaces the program through it in
/// one step (no window without steering) and hands it back. The pin stays,
/// so the link outlives this agent too.
pub(super) fn adopt<L>(
    path: &Path,
    program: &'static str,
    via: Via,
    into: impl FnOnce(FdLink) -> Result<L, LinkError>,
    take_over: impl FnOnce(L) -> Result<Result<FdLink, LinkError>, ProgramError>,
) -> Result<Box<dyn Held>> {
    let kind = |source| FastpathError::KeptBpfLinkKind {
        path: path.to_path_buf(),
        program,
        source,
    };
    let fd = PinnedLink::from_pin(path)
        .map(FdLink::from)
        .map_err(|source| FastpathError::KeptBpfLinkOpen {
            path: path.to_path_buf(),
            source,
        })?;
    let bpf_link = take_over(into(fd).map_err(kind)?)
        .map_err(|source| FastpathError::KeptBpfLinkAdopt {
            path: path.to_path_buf(),
            program,
            source: Box::new(source),
        })?
        .map_err(kind)?;
    Ok(Box::new(KeptBpfLink {
        bpf_link,
        path: path.to_path_buf(),
        via,
    }))
}

/// Lets go of the bpf link pinned at `path`: unpinning detaches it (once no
/// one else holds it).
pub(super) fn release(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The error of a program that no longer holds the attachment it just made.
pub(super) fn take_attachment<'a>(
    interface: &'a str,
    program: &'static str,
) -> impl FnOnce(ProgramError) -> FastpathError + 'a {
    move |source| FastpathError::TakeAttachment {
        interface: interface.to_string(),
        program,
        source: Box::new(source),
    }
}
