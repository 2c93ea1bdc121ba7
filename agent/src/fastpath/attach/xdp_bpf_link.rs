//! XDP through a bpf link (kernel 5.9+): pinned, so it outlives the agent,
//! and adopted by the next agent.

use std::path::Path;

use aya::programs::links::FdLink;
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;
use routebackup_common::PROG_XDP;

use super::bpf_link::{self, take_attachment};
use super::{xdp_netlink, AttachError, Held, Hook, Mechanism, Target, Via, XdpAttach};
use crate::fastpath::{program_mut, Result};

pub(super) struct BpfLink;

/// The driver mode aya attaches in.
pub(super) fn flags(mode: XdpAttach) -> XdpMode {
    match mode {
        XdpAttach::Native => XdpMode::Driver,
        _ => XdpMode::Skb,
    }
}

impl Mechanism for BpfLink {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        let xdp: &mut Xdp = program_mut(ebpf, PROG_XDP)?;
        let id = xdp
            .attach_to_if_index(at.ifindex, flags(at.xdp_mode))
            .map_err(AttachError::Refused)?;
        let made = xdp
            .take_link(id)
            .map_err(take_attachment(at.ifname, PROG_XDP))?;
        match FdLink::try_from(made) {
            Ok(fd) => Ok(bpf_link::keep(fd, &at.pin, Via::BpfLink)?),
            Err(e) => {
                // aya fell back to netlink itself (the kernel refused the bpf
                // link although the probe did not). The conversion let go of
                // that attachment without taking it off: our program is on
                // the device, held (and recorded) from now on as a netlink one.
                tracing::warn!(
                    "{}: XDP attached through netlink (no bpf link: {}): recorded under \
                     {} for the next agent to adopt",
                    at.ifname,
                    crate::error::Report(&e),
                    at.record.parent().unwrap_or(&at.record).display()
                );
                xdp_netlink::on_device(ebpf, at)
            }
        }
    }

    fn adopt(&self, ebpf: &mut Ebpf, path: &Path, _at: &Target<'_>) -> Result<Box<dyn Held>> {
        let adopt = |prog: &mut Xdp| {
            bpf_link::adopt(path, PROG_XDP, Via::BpfLink, XdpLink::try_from, |kept| {
                let id = prog.attach_to_link(kept)?;
                Ok(FdLink::try_from(prog.take_link(id)?))
            })
        };
        program_mut(ebpf, PROG_XDP).and_then(adopt)
    }

    fn release(&self, kept: &Path) {
        bpf_link::release(kept);
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Xdp, Via::BpfLink)
    }
}
