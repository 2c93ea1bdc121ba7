//! XDP over netlink (IFLA_XDP), for kernels without XDP links. The
//! attachment belongs to the program: it cannot be pinned, a restart of the
//! agent attaches it again, and it leaves when the program is unloaded.
//!
//! aya 0.14 keeps its netlink request private and sends it only when the
//! kernel refuses an XDP link, so this is reached through `xdp_link` on such
//! kernels; on a kernel with XDP links the attach here would make a link.

use aya::programs::Xdp;
use aya::Ebpf;
use routebackup_common::PROG_XDP;

use super::{xdp_link, AttachError, Detach, Held, Hook, Mechanism, Target, Via};
use crate::fastpath::program_mut;

pub(super) struct Netlink;

/// An XDP attachment the program holds: nothing to keep, nothing to take
/// off before the program goes.
struct ProgramOwned;

impl Held for ProgramOwned {
    fn via(&self) -> Via {
        Via::Netlink
    }

    fn detach(self: Box<Self>, _how: &Detach<'_>) {
        // There is no link to close: the attachment goes with the program.
    }
}

impl Mechanism for Netlink {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        let xdp: &mut Xdp = program_mut(ebpf, PROG_XDP)?;
        xdp.attach_to_if_index(at.ifindex, xdp_link::flags(at.xdp_mode))
            .map_err(AttachError::Refused)?;
        Ok(Box::new(ProgramOwned))
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Xdp, Via::Netlink)
    }
}
