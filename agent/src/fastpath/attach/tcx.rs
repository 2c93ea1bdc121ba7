//! TC ingress through TCX (kernel 6.6+): a bpf link, pinned, so it outlives
//! the agent and the next agent adopts it.

use std::path::Path;

use aya::programs::links::FdLink;
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, SchedClassifier};
use aya::Ebpf;
use routebackup_common::PROG_TC;

use super::bpf_link::{self, take_attachment};
use super::{AttachError, Held, Hook, Mechanism, Target, Via};
use crate::fastpath::{program_mut, FastpathError, Result};

pub(super) struct Tcx;

impl Mechanism for Tcx {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        let prog: &mut SchedClassifier = program_mut(ebpf, PROG_TC)?;
        let id = prog
            .attach_with_options(
                at.ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(AttachError::Refused)?;
        let made = prog
            .take_link(id)
            .map_err(take_attachment(at.ifname, PROG_TC))?;
        let fd = FdLink::try_from(made).map_err(|source| FastpathError::NoBpfLink {
            why: "the TCX attachment",
            source,
        })?;
        Ok(bpf_link::keep(fd, &at.pin, Via::Tcx)?)
    }

    fn adopt(&self, ebpf: &mut Ebpf, path: &Path, _at: &Target<'_>) -> Result<Box<dyn Held>> {
        let adopt = |prog: &mut SchedClassifier| {
            bpf_link::adopt(
                path,
                PROG_TC,
                Via::Tcx,
                SchedClassifierLink::try_from,
                |kept| {
                    let id = prog.attach_to_link(kept)?;
                    Ok(FdLink::try_from(prog.take_link(id)?))
                },
            )
        };
        program_mut(ebpf, PROG_TC).and_then(adopt)
    }

    fn release(&self, kept: &Path) {
        bpf_link::release(kept);
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Tc, Via::Tcx)
    }
}
