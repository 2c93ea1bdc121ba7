//! TC ingress through netlink: a cls_bpf filter on the interface's clsact
//! qdisc, for kernels without TCX (or with it forced off, or a device that
//! refused it). The device holds the filter whatever happens to the agent;
//! the agent records where it put it (the priority and handle the kernel
//! picked) under `netlink/` (netlink_record.rs). The next agent that finds
//! the recorded program still in that filter adopts it: RTM_NEWTFILTER on
//! the same priority and handle without NLM_F_CREATE changes the existing
//! filter, and cls_bpf swaps its program in one step, so TC never leaves
//! the device. Detach deletes the filter while it still holds our program.

use std::path::{Path, PathBuf};

use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType, TcHandle};
use aya::programs::{ProgramError, SchedClassifier};
use aya::Ebpf;
use routebackup_common::PROG_TC;

use super::bpf_link::take_attachment;
use super::netlink_record::{self, Direction, On, Record};
use super::{AttachError, Detach, Held, Hook, Mechanism, Target, Via};
use crate::fastpath::{program_id, program_mut, FastpathError, Result};
use crate::netlink::codec::{attr_u32, attrs};
use crate::netlink::socket::Requests;
use crate::netlink::NetlinkError;

// uapi/linux/rtnetlink.h, pkt_sched.h, pkt_cls.h, if_ether.h.
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_ID: u16 = 11;
/// TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS).
const CLSACT_INGRESS: u32 = 0xffff_fff2;
const ETH_P_ALL: u16 = 0x0003;
/// sizeof(struct tcmsg).
const TCMSG_LEN: usize = 20;

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

/// struct tcmsg naming the ingress filter of `ifindex` at `priority` and
/// `handle` (protocol all, as aya attaches).
fn tcmsg(ifindex: u32, priority: u16, handle: u32) -> Vec<u8> {
    let mut body = vec![0u8; 4]; // family AF_UNSPEC, padding
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&handle.to_ne_bytes());
    body.extend_from_slice(&CLSACT_INGRESS.to_ne_bytes());
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
    body.extend_from_slice(&info.to_ne_bytes());
    body
}

/// The kernel id of the program in the ingress filter of `ifindex` at
/// `priority` and `handle` (None: no such filter, or not a bpf one).
fn filter_program(ifindex: u32, priority: u16, handle: u32) -> Result<Option<u32>, NetlinkError> {
    let answer = Requests::open("TC over netlink")?.get(
        "a TC filter",
        RTM_GETTFILTER,
        &tcmsg(ifindex, priority, handle),
        RTM_NEWTFILTER,
        |msg| {
            let mut kind = None;
            let mut options = None;
            for (k, v) in attrs(msg.payload.get(TCMSG_LEN..)?) {
                match k {
                    TCA_KIND => kind = Some(v),
                    TCA_OPTIONS => options = Some(v),
                    _ => {}
                }
            }
            if kind? != b"bpf\0" {
                return None;
            }
            attrs(options?)
                .find(|(k, _)| *k == TCA_BPF_ID)
                .and_then(|(_, v)| attr_u32(v))
        },
    );
    match answer {
        // No clsact qdisc, or no filter chain on it any more.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        other => other,
    }
}

/// Deletes the ingress filter of `ifindex` at `priority` and `handle` if it
/// still holds a program `ours` accepts.
fn take_off(ifname: &str, ifindex: u32, priority: u16, handle: u32, ours: impl Fn(u32) -> bool) {
    let deleted = match filter_program(ifindex, priority, handle) {
        Ok(Some(found)) if ours(found) => Requests::open("TC over netlink").and_then(|r| {
            r.change(
                "a TC filter",
                RTM_DELTFILTER,
                &tcmsg(ifindex, priority, handle),
            )
        }),
        // Gone, or someone else's now.
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        tracing::warn!(
            "cannot take the TC filter off {ifname} (`tc filter del dev {ifname} ingress pref \
             {priority} handle {handle:#x} bpf` does): {}",
            crate::error::chain(&e)
        );
    }
}

/// aya's handle of a netlink filter deletes the filter when dropped; ours
/// must outlive the agent, so the handle is forgotten once its priority and
/// handle are read (it owns no memory and no descriptor).
fn let_go(filter: SchedClassifierLink) -> Result<(u16, u32), ProgramError> {
    let placed = (filter.priority()?, u32::from(filter.handle()?));
    std::mem::forget(filter);
    Ok(placed)
}

/// Our filter, recorded at `record`. Dropping it leaves both in place (as a
/// crash does), for the next agent to adopt.
struct Filter {
    ifname: String,
    ifindex: u32,
    priority: u16,
    handle: u32,
    prog_id: u32,
    record: PathBuf,
}

impl Held for Filter {
    fn via(&self) -> Via {
        Via::Netlink
    }

    fn detach(self: Box<Self>, _how: &Detach<'_>) {
        take_off(
            &self.ifname,
            self.ifindex,
            self.priority,
            self.handle,
            |found| found == self.prog_id,
        );
        netlink_record::remove(&self.record);
    }
}

impl Filter {
    /// Our program `prog_id` in the filter at `priority` and `handle` on
    /// `at`, recorded at `record`.
    fn new(at: &Target<'_>, priority: u16, handle: u32, prog_id: u32, record: &Path) -> Filter {
        Filter {
            ifname: at.ifname.to_string(),
            ifindex: at.ifindex,
            priority,
            handle,
            prog_id,
            record: record.to_path_buf(),
        }
    }

    /// Writes its record (naming `replacing` too while an adoption is under way).
    fn write_record(&self, replacing: Option<u32>) -> Result<()> {
        netlink_record::write(
            &self.record,
            &Record {
                interface: self.ifname.clone(),
                ifindex: self.ifindex,
                prog_id: self.prog_id,
                replacing,
                on: On::TcNetlink {
                    direction: Direction::Ingress,
                    priority: self.priority,
                    handle: self.handle,
                },
            },
        )
    }
}

fn our_program(ebpf: &mut Ebpf) -> Result<(&mut SchedClassifier, u32)> {
    let prog: &mut SchedClassifier = program_mut(ebpf, PROG_TC)?;
    let id = program_id(PROG_TC, prog.info())?;
    Ok((prog, id))
}

impl Mechanism for Netlink {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError> {
        // Netlink filters hang off a clsact qdisc; adding one that is there
        // already fails harmlessly.
        let _ = aya::programs::tc::qdisc_add_clsact(at.ifname);
        let (prog, prog_id) = our_program(ebpf)?;
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
        let (priority, handle) = prog
            .take_link(id)
            .and_then(let_go)
            .map_err(take_attachment(at.ifname, PROG_TC))?;
        let filter = Filter::new(at, priority, handle, prog_id, &at.record);
        // The kernel picks where the filter goes, so the record can only
        // follow the attach: a crash in between leaves a filter nobody
        // recorded, which the next agent does not know to replace.
        if let Err(e) = filter.write_record(None) {
            take_off(at.ifname, at.ifindex, priority, handle, |found| {
                found == prog_id
            });
            return Err(e.into());
        }
        Ok(Box::new(filter))
    }

    fn adopt(&self, ebpf: &mut Ebpf, kept: &Path, at: &Target<'_>) -> Result<Box<dyn Held>> {
        let rec = netlink_record::read(kept)?;
        let On::TcNetlink {
            priority, handle, ..
        } = rec.on
        else {
            return Err(FastpathError::RecordStale {
                path: kept.to_path_buf(),
                why: format!("it records {}, its name says TC", rec.on.place()),
            });
        };
        let found = filter_program(at.ifindex, priority, handle).map_err(|source| {
            FastpathError::NetlinkQuery {
                interface: at.ifname.to_string(),
                what: "the TC filter",
                source,
            }
        })?;
        if let Some(why) = rec.stale(Some(at.ifindex), found) {
            return Err(FastpathError::RecordStale {
                path: kept.to_path_buf(),
                why,
            });
        }
        let old = found.unwrap_or_default();
        let adopt_error = |source| FastpathError::RecordAdopt {
            path: kept.to_path_buf(),
            program: PROG_TC,
            source: Box::new(source),
        };
        let (prog, prog_id) = our_program(ebpf)?;
        let filter = Filter::new(at, priority, handle, prog_id, kept);
        filter.write_record(Some(old))?;
        let existing = SchedClassifierLink::attached(
            at.ifname,
            TcAttachType::Ingress,
            priority,
            TcHandle::from(handle),
            None,
        )
        .map_err(|e| adopt_error(ProgramError::IOError(e)))?;
        // aya changes the filter named by a link it is handed, without
        // NLM_F_CREATE: the same filter, our program.
        let id = prog.attach_to_link(existing).map_err(adopt_error)?;
        prog.take_link(id)
            .and_then(let_go)
            .map_err(take_attachment(at.ifname, PROG_TC))?;
        filter.write_record(None)?;
        Ok(Box::new(filter))
    }

    fn release(&self, kept: &Path) {
        if let Ok(rec) = netlink_record::read(kept) {
            if let On::TcNetlink {
                priority, handle, ..
            } = rec.on
            {
                take_off(&rec.interface, rec.ifindex, priority, handle, |found| {
                    rec.ours(found)
                });
            }
        }
        netlink_record::remove(kept);
    }

    fn describe(&self) -> (Hook, Via) {
        (Hook::Tc, Via::Netlink)
    }
}
