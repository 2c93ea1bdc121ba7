//! TC ingress through netlink: a filter on the interface's clsact qdisc,
//! for kernels without TCX (or with it forced off, or a device that refused
//! it). There is no bpf link to pin: a restart of the agent attaches it
//! again, and dropping it takes the filter off.

use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType, TcHandle};
use aya::programs::SchedClassifier;
use aya::Ebpf;
use routebackup_common::PROG_TC;

use super::bpf_link::take_attachment;
use super::{AttachError, Detach, Held, Hook, Mechanism, Target, Via};
use crate::fastpath::program_mut;

/// The filter's priority and handle (0 and auto: the kernel picks them, as
/// `tc filter add` without them does).
pub(super) struct Netlink {
    priority: u16,
    handle: TcHandle,
}

pub(super) const NETLINK: Netlink = Netlink {
    priority: 0,
    handle: TcHandle::AUTO_ASSIGN,
};

/// The filter, held for its Drop, which removes it.
struct Filter(
    #[expect(dead_code, reason = "held for its Drop, which detaches")] SchedClassifierLink,
);

impl Held for Filter {
    fn via(&self) -> Via {
        Via::Netlink
    }

    fn detach(self: Box<Self>, _how: &Detach<'_>) {
        drop(self);
    }
}

impl Mechanism for Netlink {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        // Netlink filters hang off a clsact qdisc; adding one that is there
        // already fails harmlessly.
        let _ = aya::programs::tc::qdisc_add_clsact(at.ifname);
        let prog: &mut SchedClassifier = program_mut(ebpf, PROG_TC)?;
        let id = prog
            .attach_with_options(
                at.ifname,
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions {
                    priority: self.priority,
                    handle: self.handle,
                    ..NlOptions::default()
                }),
            )
            .map_err(AttachError::Refused)?;
        let filter = prog
            .take_link(id)
            .map_err(take_attachment(at.ifname, PROG_TC))?;
        Ok(Box::new(Filter(filter)))
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Tc, Via::Netlink)
    }
}
