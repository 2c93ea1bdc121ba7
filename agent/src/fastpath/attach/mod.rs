//! How the programs get onto an interface. Each way the kernel offers is a
//! [`Mechanism`] in its own module, which attaches, adopts what a previous
//! agent kept, and hands back a [`Held`] attachment that detaches and
//! describes itself; [`Plan::for_kernel`] is the one place the kernel's
//! capabilities pick among them. A new way is one more module: implement
//! `Mechanism` (and `Held`), list it in [`ALL`] (which adoption reads) and
//! in `Plan::for_kernel` where the kernel should use it.
//!
//! Every attachment outlives the agent and is adopted by the next one, which
//! puts its program in place of the old in one step: no packet goes by
//! without it. A bpf link is pinned under `links/`, which keeps its program
//! on whatever happens to the agent; the next agent replaces the program
//! through the bpf link. A netlink attachment (IFLA_XDP, a clsact filter) is
//! held by the device itself; the agent records it under `netlink/`, and the
//! next agent, having checked that the device still carries the recorded
//! program, replaces it through netlink. Dropping an attachment leaves it in
//! place (what a crash or `close(true)` does); only `detach` takes it off.

mod bpf_link;
mod netlink_record;
mod tc_netlink;
mod tcx;
mod xdp_bpf_link;
mod xdp_netlink;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use aya::programs::ProgramError;
use aya::Ebpf;

use super::{FastpathError, PinLayout, Result};
use crate::config::AttachMode;
use crate::kernel::{Feature, Kernel, Support};

/// How XDP ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttach {
    Native,
    Generic,
    None,
}

impl XdpAttach {
    fn name(self) -> &'static str {
        match self {
            XdpAttach::Native => "native",
            XdpAttach::Generic => "generic",
            XdpAttach::None => "no",
        }
    }

    fn pin_suffix(self) -> &'static str {
        match self {
            XdpAttach::Native => "xdp-native",
            XdpAttach::Generic => "xdp-generic",
            XdpAttach::None => "",
        }
    }
}

/// The mechanism an attachment went through, as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// An XDP bpf link (pinned). `link` in status, as before.
    #[serde(rename = "link")]
    BpfLink,
    /// A TCX bpf link (pinned).
    Tcx,
    /// Netlink: IFLA_XDP for XDP, a clsact filter for TC (the device holds
    /// it; recorded under `netlink/`).
    Netlink,
}

impl Via {
    /// Its attachments are bpf links, pinned under `links/` (netlink ones
    /// are recorded under `netlink/`).
    pub fn pinned(self) -> bool {
        match self {
            Via::BpfLink | Via::Tcx => true,
            Via::Netlink => false,
        }
    }

    /// How status and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Via::BpfLink => "link",
            Via::Tcx => "tcx",
            Via::Netlink => "netlink",
        }
    }
}

/// One interface the programs are attached to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub interface: String,
    pub ifindex: u32,
    pub xdp: XdpAttach,
    pub tc: bool,
    /// The attachment was kept by a previous agent (`close(true)`) and adopted.
    pub adopted: bool,
    /// How XDP is attached (`link` or `netlink`); None without XDP, and in
    /// the status of agents from before it was shown.
    #[serde(default)]
    pub xdp_mechanism: Option<Via>,
    /// How TC is attached (`tcx` or `netlink`); None in the status of agents
    /// from before it was shown.
    #[serde(default)]
    pub tc_mechanism: Option<Via>,
}

/// The hook a program is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "XDP",
            Hook::Tc => "TC",
        }
    }
}

/// Where an attachment goes.
pub(super) struct Target<'a> {
    pub(super) ifname: &'a str,
    pub(super) ifindex: u32,
    /// XDP only: the driver mode asked for.
    pub(super) xdp_mode: XdpAttach,
    /// Where a bpf-link mechanism pins the attachment.
    pub(super) pin: PathBuf,
    /// Where a netlink mechanism records it.
    pub(super) record: PathBuf,
}

/// Why an attach did not happen.
pub(super) enum AttachError {
    /// The kernel said no to this mechanism or mode: the next may do.
    Refused(ProgramError),
    /// Anything else: the attach fails.
    Failed(FastpathError),
}

impl From<FastpathError> for AttachError {
    fn from(e: FastpathError) -> Self {
        AttachError::Failed(e)
    }
}

/// One way of putting a program on an interface's hook.
pub(super) trait Mechanism: Sync {
    /// Attaches the hook's program (loaded in `ebpf`) to `at`, and pins or
    /// records the attachment before it returns.
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Box<dyn Held>, AttachError>;
    /// Takes over the attachment a previous agent kept at `kept` (the pin
    /// of a bpf link, or the record of a netlink attachment) on `at`,
    /// putting our program in place of its in one step.
    fn adopt(&self, ebpf: &mut Ebpf, kept: &Path, at: &Target<'_>) -> Result<Box<dyn Held>>;
    /// Lets go of what a previous agent kept at `kept` and removes it:
    /// unpinning a bpf link detaches its program; a recorded netlink
    /// attachment is taken off if the device still carries the recorded
    /// program (else it is someone else's now, and stays).
    fn release(&self, kept: &Path);
    /// The hook it serves, and what status calls its attachments.
    fn describe(&self) -> (Hook, Via);
}

/// What detaching needs to know.
pub(super) struct Detach<'a> {
    /// The kernel has `BPF_LINK_DETACH`.
    pub(super) bpf_link_detach: bool,
    pub(super) interface: &'a str,
}

/// An attachment as the agent holds it. Dropping it leaves it attached, with
/// its pin or record (that is what survives a crash); `detach` takes it off.
pub(super) trait Held: Send {
    fn via(&self) -> Via;
    /// Takes the program off the interface (and removes its pin or record).
    fn detach(self: Box<Self>, how: &Detach<'_>);
}

/// Every mechanism. What a previous agent kept for a hook goes to that
/// hook's mechanism of its kind: a pinned bpf link to the one that pins, a
/// netlink record to the netlink one.
const ALL: [&dyn Mechanism; 4] = [
    &xdp_bpf_link::BpfLink,
    &xdp_netlink::Netlink,
    &tcx::Tcx,
    &tc_netlink::NETLINK,
];

/// The mechanisms the kernel's capabilities chose for each hook.
pub(super) struct Plan {
    xdp: Chain,
    tc: Chain,
    /// Why TC may end up on netlink, for the log line that says so.
    tc_netlink_why: &'static str,
}

impl Plan {
    pub(super) fn for_kernel(kernel: &Kernel) -> Plan {
        Plan {
            // A kernel whose probe refused XDP links (or with them forced
            // off) gets XDP over netlink from the start.
            xdp: Chain {
                first: if kernel.has(Feature::XdpLink) {
                    &xdp_bpf_link::BpfLink
                } else {
                    &xdp_netlink::Netlink
                },
                then: &[],
            },
            // TCX said yes to the probe; a failure on a device still gets
            // the netlink attachment rather than no TC at all.
            tc: if kernel.has(Feature::Tcx) {
                Chain {
                    first: &tcx::Tcx,
                    then: &[&tc_netlink::NETLINK],
                }
            } else {
                Chain {
                    first: &tc_netlink::NETLINK,
                    then: &[],
                }
            },
            tc_netlink_why: match kernel.support(Feature::Tcx) {
                Support::Forced => "TCX forced off",
                Support::Yes | Support::Unknown { .. } => "TCX refused on this device",
                Support::No { .. } => "kernel without TCX",
            },
        }
    }
}

/// One interface's attachments (bpf links or netlink ones).
pub(super) struct IfAttachments {
    pub(super) attachment: Attachment,
    held: Vec<Box<dyn Held>>,
}

impl IfAttachments {
    /// Detaches every attachment and removes its pin or record: the programs
    /// leave the interface before this returns.
    pub(super) fn detach(self, bpf_link_detach: bool) {
        let how = Detach {
            bpf_link_detach,
            interface: &self.attachment.interface,
        };
        for h in self.held {
            h.detach(&how);
        }
    }
}

/// What a previous agent kept: a pin under `links/` or a record under
/// `netlink/`, both named `<kind>_<ifname>`.
pub(super) struct KeptPin {
    pub(super) interface: String,
    pub(super) kind: String,
    pub(super) path: PathBuf,
    /// A bpf link's pin (else a netlink attachment's record).
    bpf_link: bool,
}

impl KeptPin {
    /// The mechanism that takes it over or lets go of it.
    fn mechanism(&self) -> Option<&'static dyn Mechanism> {
        let hook = self.hook()?;
        ALL.iter()
            .copied()
            .find(|m| m.describe().0 == hook && m.describe().1.pinned() == self.bpf_link)
    }

    /// Lets go of it (see [`Mechanism::release`]): its program leaves the
    /// interface if it is still the one kept.
    pub(super) fn discard(&self) {
        match self.mechanism() {
            Some(m) => m.release(&self.path),
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    fn hook(&self) -> Option<Hook> {
        if self.kind.starts_with("xdp") {
            Some(Hook::Xdp)
        } else if self.kind == "tc" {
            Some(Hook::Tc)
        } else {
            None
        }
    }

    fn xdp_mode(&self) -> XdpAttach {
        if self.kind == XdpAttach::Native.pin_suffix() {
            XdpAttach::Native
        } else {
            XdpAttach::Generic
        }
    }
}

/// What `layout` keeps: the pins under `links/`, then the records under
/// `netlink/`. A record a crash left half-written (its temporary name) is
/// removed: the record it was to replace is still there.
pub(super) fn kept(layout: &PinLayout) -> Vec<KeptPin> {
    let mut out = Vec::new();
    for (dir, bpf_link) in [(&layout.bpf_links, true), (&layout.netlink, false)] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !bpf_link && name.starts_with(netlink_record::TEMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some((kind, ifname)) = name.split_once('_') {
                out.push(KeptPin {
                    interface: ifname.replace(':', "."),
                    kind: kind.to_string(),
                    path: entry.path(),
                    bpf_link,
                });
            }
        }
    }
    out
}

/// File name of a kept bpf link or netlink record: `<kind>_<ifname>`.
/// bpffs refuses names with a dot (EPERM), so dots of VLAN interface names
/// ("eth0.100") become colons, which interface names cannot contain.
fn pin_name(kind: &str, ifname: &str) -> String {
    format!("{kind}_{}", ifname.replace('.', ":"))
}

pub(super) fn xdp_mode_wanted(mode: AttachMode) -> &'static [XdpAttach] {
    match mode {
        AttachMode::Auto => &[XdpAttach::Native, XdpAttach::Generic],
        AttachMode::Xdp => &[XdpAttach::Native],
        AttachMode::XdpGeneric => &[XdpAttach::Generic],
        AttachMode::Tc => &[],
    }
}

fn ifindex_of(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| FastpathError::InterfaceName {
        interface: name.to_string(),
    })?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(FastpathError::NoSuchInterface {
            interface: name.to_string(),
        });
    }
    Ok(idx)
}

/// Adopts the first of `ifname`'s kept pins and records of `hook` that
/// `accept` takes and its mechanism can take over (on the target `at` gives
/// for its XDP mode); lets go of the others (see [`KeptPin::discard`]).
fn adopt_kept<'a>(
    ebpf: &mut Ebpf,
    hook: Hook,
    ifname: &str,
    kept: &[KeptPin],
    accept: impl Fn(&KeptPin) -> bool,
    at: impl Fn(XdpAttach) -> Target<'a>,
) -> Option<(Box<dyn Held>, XdpAttach)> {
    let mut adopted = None;
    for pin in kept
        .iter()
        .filter(|p| p.interface == ifname && p.hook() == Some(hook))
    {
        if adopted.is_none() && accept(pin) {
            if let Some(m) = pin.mechanism() {
                match m.adopt(ebpf, &pin.path, &at(pin.xdp_mode())) {
                    Ok(h) => {
                        adopted = Some((h, pin.xdp_mode()));
                        continue;
                    }
                    Err(e) => tracing::warn!(
                        "{ifname}: cannot adopt the kept {} attachment: {}; attaching anew",
                        hook.name(),
                        crate::error::chain(&e)
                    ),
                }
            }
        }
        pin.discard();
    }
    adopted
}

/// The mechanisms of a hook in the order they are tried.
pub(super) struct Chain {
    first: &'static dyn Mechanism,
    then: &'static [&'static dyn Mechanism],
}

/// What a chain's attach gives: the attachment, or, when every mechanism
/// was refused, what the first said (when another followed) and the last.
type Attempt = std::result::Result<Box<dyn Held>, (Option<String>, ProgramError)>;

impl Chain {
    fn attach(&self, ebpf: &mut Ebpf, at: &Target<'_>) -> Result<Attempt> {
        let mut refused = match self.first.attach(ebpf, at) {
            Ok(h) => return Ok(Ok(h)),
            Err(AttachError::Failed(e)) => return Err(e),
            Err(AttachError::Refused(e)) => e,
        };
        let mut first_error = None;
        let mut tried = self.first;
        for m in self.then {
            tracing::debug!(
                "{}: {} through {} refused ({}); trying {}",
                at.ifname,
                tried.describe().0.name(),
                tried.describe().1.name(),
                crate::error::chain(&refused),
                m.describe().1.name()
            );
            tried = *m;
            match m.attach(ebpf, at) {
                Ok(h) => return Ok(Ok(h)),
                Err(AttachError::Failed(e)) => return Err(e),
                Err(AttachError::Refused(e)) => {
                    first_error.get_or_insert_with(|| crate::error::chain(&refused));
                    refused = e;
                }
            }
        }
        Ok(Err((first_error, refused)))
    }
}

/// Attaches both programs to `ifname` (adopting what `kept` holds for it);
/// each attachment is pinned or recorded at once, so it outlives the agent.
pub(super) fn attach_interface(
    ebpf: &mut Ebpf,
    plan: &Plan,
    layout: &PinLayout,
    ifname: &str,
    mode: AttachMode,
    kept: &[KeptPin],
) -> Result<IfAttachments> {
    let ifindex = ifindex_of(ifname)?;
    let wanted = xdp_mode_wanted(mode);
    let mut adopted = false;
    let mut held = Vec::new();
    let target = |hook: Hook, xdp_mode: XdpAttach| {
        let name = pin_name(
            match hook {
                Hook::Xdp => xdp_mode.pin_suffix(),
                Hook::Tc => "tc",
            },
            ifname,
        );
        Target {
            ifname,
            ifindex,
            xdp_mode,
            pin: layout.bpf_links.join(&name),
            record: layout.netlink.join(name),
        }
    };

    // XDP: adopt what was kept in an acceptable mode, else attach.
    let mut xdp_mode = XdpAttach::None;
    let mut xdp_mechanism = None;
    if let Some((h, m)) = adopt_kept(
        ebpf,
        Hook::Xdp,
        ifname,
        kept,
        |p| wanted.contains(&p.xdp_mode()),
        |m| target(Hook::Xdp, m),
    ) {
        xdp_mode = m;
        xdp_mechanism = Some(h.via());
        held.push(h);
        adopted = true;
    } else if !wanted.is_empty() {
        // The native attempt's error when the generic one follows (mode auto).
        let mut native_error = None;
        for (i, m) in wanted.iter().enumerate() {
            match plan.xdp.attach(ebpf, &target(Hook::Xdp, *m))? {
                Ok(h) => {
                    xdp_mode = *m;
                    xdp_mechanism = Some(h.via());
                    held.push(h);
                    break;
                }
                Err((_, source)) if i + 1 == wanted.len() => {
                    return Err(FastpathError::XdpAttach {
                        interface: ifname.to_string(),
                        mode,
                        attempt: *m,
                        native_error,
                        source: Box::new(source),
                    });
                }
                Err((_, e)) => native_error = Some(crate::error::chain(&e)),
            }
        }
        if xdp_mode == XdpAttach::Generic && mode == AttachMode::Auto {
            tracing::info!("{ifname}: the driver has no native XDP; using generic XDP");
        }
    }

    // TC ingress: adopt or attach.
    let tc = if let Some((h, _)) = adopt_kept(
        ebpf,
        Hook::Tc,
        ifname,
        kept,
        |_| true,
        |m| target(Hook::Tc, m),
    ) {
        adopted = true;
        h
    } else {
        let h = plan
            .tc
            .attach(ebpf, &target(Hook::Tc, XdpAttach::None))?
            .map_err(|(first_error, source)| FastpathError::TcAttach {
                interface: ifname.to_string(),
                first_error,
                source: Box::new(source),
            })?;
        if !h.via().pinned() {
            tracing::info!(
                "{ifname}: TC attached through netlink ({}): a clsact filter, recorded under \
                 {} for the next agent to adopt",
                plan.tc_netlink_why,
                layout.netlink.display()
            );
        }
        h
    };
    let tc_mechanism = Some(tc.via());
    held.push(tc);

    Ok(IfAttachments {
        attachment: Attachment {
            interface: ifname.to_string(),
            ifindex,
            xdp: xdp_mode,
            tc: true,
            adopted,
            xdp_mechanism,
            tc_mechanism,
        },
        held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names_round_trip() {
        let name = pin_name(XdpAttach::Native.pin_suffix(), "eth0.100");
        assert_eq!(name, "xdp-native_eth0:100");
        let (kind, ifname) = name.split_once('_').unwrap();
        let pin = KeptPin {
            interface: ifname.replace(':', "."),
            kind: kind.to_string(),
            path: PathBuf::new(),
            bpf_link: true,
        };
        assert_eq!(pin.interface, "eth0.100");
        assert_eq!(
            (pin.hook(), pin.xdp_mode()),
            (Some(Hook::Xdp), XdpAttach::Native)
        );
    }

    /// The kernel's answers pick the mechanisms.
    #[test]
    fn plan_follows_the_kernel() {
        let full = Plan::for_kernel(&Kernel::full());
        assert_eq!(full.tc.first.describe().1, Via::Tcx);
        assert_eq!(
            full.tc
                .then
                .iter()
                .map(|m| m.describe().1)
                .collect::<Vec<_>>(),
            [Via::Netlink]
        );
        assert_eq!(full.xdp.first.describe().1, Via::BpfLink);
        let without = Plan::for_kernel(&Kernel::full().without(&[Feature::Tcx, Feature::XdpLink]));
        assert_eq!(without.xdp.first.describe().1, Via::Netlink);
        assert_eq!(without.tc.first.describe().1, Via::Netlink);
        assert!(without.tc.then.is_empty());
        assert_eq!(without.tc_netlink_why, "TCX forced off");
    }
}
