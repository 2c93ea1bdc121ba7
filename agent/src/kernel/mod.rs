//! What the running kernel can do for the agent, found out once at start by
//! trying each thing for real (`probe`): a minimal program that calls the
//! helper is loaded, a link is created, a request is sent, and the kernel's
//! answer is kept. Never a version number, never a verifier string: a
//! hardened 6.18 build refuses `bpf_xdp_adjust_meta` although its version
//! (and bpftool's string-matching probe) say it has it.
//!
//! The answer is one [`Kernel`] value that the fast path, the XDP check,
//! `status`, the metrics and `routebackup kernel` read. Any feature can be
//! forced off ([`Kernel::without`], `ROUTEBACKUP_KERNEL_WITHOUT`), so every
//! fallback also runs, and is tested, on a kernel that has the feature.

mod probe;
mod sys;

pub use probe::xdp_test_runs_return_metadata;

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The environment variable that forces features off (comma-separated
/// [`Feature::name`]s), read by `run` and `kernel`.
pub const WITHOUT_ENV: &str = "ROUTEBACKUP_KERNEL_WITHOUT";

/// One thing the agent relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// `bpf_xdp_adjust_meta` in XDP programs: XDP leaves a mark that tells
    /// TC it already counted a packet.
    XdpMetadata,
    /// `bpf_fib_lookup` in XDP programs.
    FibLookupXdp,
    /// `bpf_fib_lookup` in TC programs.
    FibLookupTc,
    /// `bpf_redirect_neigh` in TC programs.
    RedirectNeigh,
    /// XDP attached through a bpf link (pinnable).
    XdpLink,
    /// TC attached through TCX (a pinnable bpf link).
    Tcx,
    /// `BPF_LINK_DETACH`: take a program off at once, whoever holds its link.
    LinkDetach,
    /// The `netdev` generic-netlink family (devices' xdp-features).
    XdpFeatures,
    /// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`.
    LiveFrames,
    /// Nexthop objects (`RTM_GETNEXTHOP`), as FRR 8+ installs routes.
    NexthopObjects,
}

impl Feature {
    pub const ALL: [Feature; 10] = [
        Feature::XdpMetadata,
        Feature::FibLookupXdp,
        Feature::FibLookupTc,
        Feature::RedirectNeigh,
        Feature::XdpLink,
        Feature::Tcx,
        Feature::LinkDetach,
        Feature::XdpFeatures,
        Feature::LiveFrames,
        Feature::NexthopObjects,
    ];

    /// The name operators type (`ROUTEBACKUP_KERNEL_WITHOUT`) and read.
    pub fn name(self) -> &'static str {
        match self {
            Feature::XdpMetadata => "xdp-metadata",
            Feature::FibLookupXdp => "fib-lookup-xdp",
            Feature::FibLookupTc => "fib-lookup-tc",
            Feature::RedirectNeigh => "redirect-neigh",
            Feature::XdpLink => "xdp-link",
            Feature::Tcx => "tcx",
            Feature::LinkDetach => "link-detach",
            Feature::XdpFeatures => "xdp-features",
            Feature::LiveFrames => "live-frames",
            Feature::NexthopObjects => "nexthop-objects",
        }
    }

    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The upstream release that brought it: what an operator upgrades to.
    /// Distribution kernels may lack it later (a hardened build) or have it
    /// earlier (a backport); the probe, not this, decides.
    pub fn since(self) -> &'static str {
        match self {
            Feature::XdpMetadata => "4.15",
            Feature::FibLookupXdp | Feature::FibLookupTc => "4.18",
            Feature::RedirectNeigh => "5.10",
            Feature::XdpLink | Feature::LinkDetach => "5.9",
            Feature::Tcx => "6.6",
            Feature::XdpFeatures => "6.3",
            Feature::LiveFrames => "5.18",
            Feature::NexthopObjects => "5.3",
        }
    }

    /// What the agent does without it, and what that costs.
    pub fn without(self) -> &'static str {
        match self {
            Feature::XdpMetadata => {
                "rb_tc examines again every packet XDP passed while anything steers \
                 (19-23 ns a packet measured on a 2-core VM; no mark to skip it)"
            }
            Feature::FibLookupXdp => {
                "XDP leaves steered packets whose next hop's MACs are not cached to TC \
                 (bpf_redirect_neigh): in live traffic on a 2-core VM TC steering forwarded \
                 0.7x what XDP steering did"
            }
            Feature::FibLookupTc => "nothing today: rb_tc uses bpf_redirect_neigh",
            Feature::RedirectNeigh => {
                "rb_tc cannot forward to an Ethernet backup: the agent cannot run"
            }
            Feature::XdpLink => {
                "XDP is attached over netlink: the device holds it and the agent records it \
                 (not pinned); a restart checks and adopts it, replacing the program in one step"
            }
            Feature::Tcx => {
                "TC is attached over netlink (a clsact filter): recorded, not pinned; a \
                 restart checks and adopts it, replacing the filter's program in one step"
            }
            Feature::LinkDetach => {
                "a stop detaches by closing the link, which leaves the program on while \
                 any other process still holds the link"
            }
            Feature::XdpFeatures => {
                "a backup that drops XDP redirects is found only by its transmit counters \
                 (after about a second of steering), not before steering"
            }
            Feature::LiveFrames => {
                "nothing for the agent; `cargo xtask bench --only live` uses another generator"
            }
            Feature::NexthopObjects => {
                "nothing to follow: routes carry their next hops inline on such kernels"
            }
        }
    }

    /// The agent cannot run without it.
    pub fn essential(self) -> bool {
        matches!(self, Feature::RedirectNeigh)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the probe found for one feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Support {
    Yes,
    /// The kernel refused it; `kernel_said` is its answer (the verifier's
    /// last line, or the errno).
    No {
        kernel_said: String,
    },
    /// Forced off (`ROUTEBACKUP_KERNEL_WITHOUT` or a test).
    Forced,
    /// The probe itself could not run (e.g. no room for a probe namespace);
    /// the agent then tries the feature and falls back on failure.
    Unknown {
        why: String,
    },
}

impl Support {
    /// Whether the agent uses the feature. An unknown answer counts as
    /// present: the places that use it fall back when it fails.
    pub fn usable(&self) -> bool {
        matches!(self, Support::Yes | Support::Unknown { .. })
    }
}

/// One feature's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub feature: Feature,
    #[serde(flatten)]
    pub support: Support,
}

/// The running kernel's answers, one per [`Feature`], in `Feature::ALL` order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// `uname -r`, for people: never used to decide anything.
    pub release: String,
    pub capabilities: Vec<Capability>,
}

/// A kernel the agent cannot run on.
#[derive(Debug, thiserror::Error)]
#[error(
    "the kernel {release} lacks {feature} ({kernel_said}), which the agent cannot do \
     without: {without}; upgrade to Linux {since} or later (or a distribution kernel \
     built with it)"
)]
pub struct KernelError {
    pub release: String,
    pub feature: Feature,
    pub kernel_said: String,
    pub without: &'static str,
    pub since: &'static str,
}

/// A `ROUTEBACKUP_KERNEL_WITHOUT` name that is no feature.
#[derive(Debug, thiserror::Error)]
#[error("{WITHOUT_ENV}: unknown feature {name:?} (known: {known})")]
pub struct UnknownFeature {
    pub name: String,
    pub known: String,
}

impl Kernel {
    /// This kernel, probed once per process (later calls return the same).
    pub fn host() -> &'static Kernel {
        static HOST: OnceLock<Kernel> = OnceLock::new();
        HOST.get_or_init(probe::probe)
    }

    /// Probes again, for `routebackup kernel` (which runs once anyway).
    pub fn probe() -> Kernel {
        probe::probe()
    }

    /// A kernel assumed to have every feature, not probed: unit tests, and
    /// `--dry-run`, which loads nothing.
    pub fn full() -> Kernel {
        Kernel {
            release: "(not probed)".into(),
            capabilities: Feature::ALL
                .into_iter()
                .map(|feature| Capability {
                    feature,
                    support: Support::Yes,
                })
                .collect(),
        }
    }

    /// The same kernel with `off` forced off.
    #[must_use]
    pub fn without(&self, off: &[Feature]) -> Kernel {
        let mut k = self.clone();
        for c in &mut k.capabilities {
            if off.contains(&c.feature) {
                c.support = Support::Forced;
            }
        }
        k
    }

    /// The same kernel with the features named in `ROUTEBACKUP_KERNEL_WITHOUT` off.
    pub fn without_from_env(&self) -> Result<Kernel, UnknownFeature> {
        let names = std::env::var(WITHOUT_ENV).unwrap_or_default();
        Ok(self.without(&parse_features(&names)?))
    }

    pub fn support(&self, f: Feature) -> &Support {
        static UNKNOWN: OnceLock<Support> = OnceLock::new();
        self.capabilities
            .iter()
            .find(|c| c.feature == f)
            .map_or_else(
                || {
                    UNKNOWN.get_or_init(|| Support::Unknown {
                        why: "not probed".into(),
                    })
                },
                |c| &c.support,
            )
    }

    /// Whether the agent uses `f` (see [`Support::usable`]).
    pub fn has(&self, f: Feature) -> bool {
        self.support(f).usable()
    }

    /// The first essential feature the kernel refused.
    pub fn check_essential(&self) -> Result<(), KernelError> {
        for c in &self.capabilities {
            if c.feature.essential() && !c.support.usable() {
                return Err(KernelError {
                    release: self.release.clone(),
                    feature: c.feature,
                    kernel_said: match &c.support {
                        Support::No { kernel_said } => format!("the kernel said: {kernel_said}"),
                        _ => format!("forced off by {WITHOUT_ENV}"),
                    },
                    without: c.feature.without(),
                    since: c.feature.since(),
                });
            }
        }
        Ok(())
    }

    /// One line for the start-up log: what is there and what is not.
    pub fn summary(&self) -> String {
        let mut yes = Vec::new();
        let mut no = Vec::new();
        for c in &self.capabilities {
            match &c.support {
                Support::Yes => yes.push(c.feature.name().to_string()),
                Support::No { .. } => no.push(c.feature.name().to_string()),
                Support::Forced => no.push(format!("{} (forced off)", c.feature.name())),
                Support::Unknown { .. } => yes.push(format!("{} (not probed)", c.feature.name())),
            }
        }
        format!(
            "kernel {}: has {}; lacks {}",
            self.release,
            if yes.is_empty() {
                "none".into()
            } else {
                yes.join(", ")
            },
            if no.is_empty() {
                "nothing".into()
            } else {
                no.join(", ")
            },
        )
    }

    /// What the fast path chose because of the answers, for the same log line.
    pub fn choices(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.has(Feature::XdpMetadata) {
            v.push(
                "XDP leaves no mark: rb_tc examines again what XDP passed while anything steers",
            );
        }
        if !self.has(Feature::FibLookupXdp) {
            v.push("XDP defers steered packets without cached MACs to TC");
        }
        if !self.has(Feature::Tcx) {
            v.push("TC attached over netlink (not pinnable)");
        }
        if !self.has(Feature::XdpFeatures) {
            v.push("backups checked by transmit counters only");
        }
        if !self.has(Feature::LinkDetach) {
            v.push("programs detached by closing their links");
        }
        v
    }

    /// Why nothing could be probed, when every answer is the same unknown
    /// (no right to load programs).
    pub fn not_probed(&self) -> Option<&str> {
        let mut whys = self.capabilities.iter().map(|c| match &c.support {
            Support::Unknown { why } => Some(why.as_str()),
            _ => None,
        });
        let first = whys.next()??;
        whys.all(|w| w == Some(first)).then_some(first)
    }

    /// The start-up line (and `check`'s): the answers and what was chosen
    /// because of them.
    pub fn start_line(&self) -> String {
        let choices = self.choices();
        if choices.is_empty() {
            self.summary()
        } else {
            format!("{}; so: {}", self.summary(), choices.join("; "))
        }
    }

    /// The table `routebackup kernel` prints.
    pub fn table(&self) -> String {
        let mut s = format!("kernel {}\n", self.release);
        if let Some(why) = self.not_probed() {
            s.push_str(&format!("nothing could be probed: {why}\n"));
            return s;
        }
        let width = Feature::ALL
            .iter()
            .map(|f| f.name().len())
            .max()
            .unwrap_or(0);
        for c in &self.capabilities {
            let f = c.feature;
            let (state, detail) = match &c.support {
                Support::Yes => ("yes", String::new()),
                Support::No { kernel_said } => ("NO", format!("the kernel said: {kernel_said}")),
                Support::Forced => ("off", format!("forced off by {WITHOUT_ENV}")),
                Support::Unknown { why } => ("?", format!("not probed: {why}")),
            };
            s.push_str(&format!(
                "  {:width$}  {state:3}  (Linux {})\n",
                f.name(),
                f.since()
            ));
            if !c.support.usable() || matches!(c.support, Support::Unknown { .. }) {
                s.push_str(&format!("  {:width$}       {detail}\n", ""));
                s.push_str(&format!(
                    "  {:width$}       without it: {}\n",
                    "",
                    f.without()
                ));
            }
        }
        match self.check_essential() {
            Ok(()) => s.push_str("the agent can run on this kernel\n"),
            Err(e) => s.push_str(&format!("the agent cannot run here: {e}\n")),
        }
        s
    }
}

/// Feature names separated by commas (spaces and empty items ignored).
pub fn parse_features(names: &str) -> Result<Vec<Feature>, UnknownFeature> {
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            Feature::from_name(n).ok_or_else(|| UnknownFeature {
                name: n.to_string(),
                known: Feature::ALL.map(Feature::name).join(", "),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(
            parse_features(" tcx, xdp-metadata ,").unwrap(),
            vec![Feature::Tcx, Feature::XdpMetadata]
        );
        let e = parse_features("tcx,xdp-meta").unwrap_err();
        assert!(e.to_string().contains("\"xdp-meta\""), "{e}");
        assert!(e.to_string().contains("xdp-metadata"), "{e}");
    }

    #[test]
    fn forced_features_are_off_and_essential_ones_stop_the_agent() {
        let k = Kernel::full().without(&[Feature::XdpMetadata]);
        assert!(!k.has(Feature::XdpMetadata));
        assert!(k.has(Feature::Tcx));
        assert!(k.check_essential().is_ok());
        assert!(
            k.summary().contains("xdp-metadata (forced off)"),
            "{}",
            k.summary()
        );

        let mut k = Kernel::full();
        k.capabilities[3].support = Support::No {
            kernel_said: "invalid func unknown#152".into(),
        };
        let e = k.check_essential().unwrap_err().to_string();
        assert!(e.contains("redirect-neigh"), "{e}");
        assert!(e.contains("invalid func unknown#152"), "{e}");
        assert!(e.contains("Linux 5.10 or later"), "{e}");
        assert!(k.table().contains("the agent cannot run here"));
    }

    #[test]
    fn a_kernel_nothing_could_be_probed_on_says_so_once() {
        let mut k = Kernel::full();
        for c in &mut k.capabilities {
            c.support = Support::Unknown {
                why: "not allowed".into(),
            };
        }
        assert_eq!(k.not_probed(), Some("not allowed"));
        assert_eq!(k.table().matches("not allowed").count(), 1, "{}", k.table());
        k.capabilities[0].support = Support::Yes;
        assert_eq!(k.not_probed(), None);
    }

    #[test]
    fn status_document_round_trips() {
        let k = Kernel::full().without(&[Feature::Tcx]);
        let json = serde_json::to_string(&k).unwrap();
        assert!(
            json.contains(r#""feature":"tcx","state":"forced""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Kernel>(&json).unwrap(), k);
    }
}
