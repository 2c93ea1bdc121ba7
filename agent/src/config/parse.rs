//! TOML text → validated `Config`, with `FILE:LINE:COL: message` errors.
//!
//! Deserialisation goes through `Raw*` mirror types whose fields are wrapped in
//! `toml::Spanned` so that semantic errors can point at the offending value.
//! Every semantic problem found is reported, not only the first. `[[link]]`
//! is in `link.rs`, `[metrics]` and the hooks in `operator.rs`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::ids::LinkId;

use super::tables::TableNames;
use super::{
    AgentConfig, AttachMode, Config, ConfigError, FastpathConfig, GroupConfig, MatchMode, Position,
    ProbeConfig, Problem, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_PATH,
};

pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_UP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_DEACTIVATE_DELAY: Duration = Duration::from_secs(20);
pub const DEFAULT_ROUTE_METRIC: u32 = 1024;
/// `probe.interval` (and `probe.timeout`, which defaults to the interval).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_PROBE_DOWN_AFTER: u32 = 3;
pub const DEFAULT_PROBE_UP_AFTER: u32 = 5;
/// A link's `verify.timeout`.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(3);
/// Linux IFNAMSIZ minus the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

type S<T> = Spanned<T>;

mod link;
mod operator;
use link::{check_interfaces_unique, link_configs, RawLink};
pub use operator::DEFAULT_HOOK_TIMEOUT;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent: Option<RawAgent>,
    fastpath: Option<S<RawFastpath>>,
    #[serde(default)]
    link: Vec<S<RawLink>>,
    #[serde(default)]
    group: Vec<S<RawGroup>>,
    metrics: Option<operator::RawMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    pin_path: Option<S<String>>,
    control_socket: Option<S<String>>,
    tables: Option<S<Vec<S<toml::Value>>>>,
    resync_interval: Option<S<toml::Value>>,
    backup_interfaces: Option<Vec<S<String>>>,
    on_change: Option<S<Vec<String>>>,
    hook_timeout: Option<S<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFastpath {
    interfaces: Option<S<Vec<S<String>>>>,
    mode: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: S<String>,
    segments: Option<S<Vec<S<String>>>>,
    links: Option<S<Vec<S<String>>>>,
    #[serde(rename = "match")]
    match_mode: Option<S<String>>,
    allow_default: Option<bool>,
    activate_delay: Option<S<toml::Value>>,
    deactivate_delay: Option<S<toml::Value>>,
    on_change: Option<S<Vec<String>>>,
    probe: Option<S<RawProbe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    targets: Option<S<Vec<S<String>>>>,
    interval: Option<S<toml::Value>>,
    timeout: Option<S<toml::Value>>,
    down_after: Option<S<i64>>,
    up_after: Option<S<i64>>,
}

/// Collects positioned problems.
struct Reporter<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Reporter<'_> {
    fn problem(&self, span: Option<Range<usize>>, message: &str, hint: Option<&str>) -> Problem {
        Problem {
            at: span.map(|span| Position::of_offset(self.text, span.start)),
            message: message.to_string(),
            hint: hint.map(str::to_string),
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl AsRef<str>) {
        let p = self.problem(Some(span), message.as_ref(), None);
        self.problems.push(p);
    }

    fn hinted(&mut self, span: Range<usize>, message: impl AsRef<str>, hint: impl AsRef<str>) {
        let p = self.problem(Some(span), message.as_ref(), Some(hint.as_ref()));
        self.problems.push(p);
    }
}

/// Hint for a toml/serde error message, if we know a useful one.
fn parse_error_hint(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        return Some(
            "remove the key or fix its spelling; the message lists the keys this table accepts"
                .into(),
        );
    }
    if message.starts_with("missing field") {
        return Some("add the key; see README \"Configuration\"".into());
    }
    if message.contains("invalid type") {
        return Some(
            "check the value's type: strings need quotes, lists need [ ], durations are strings like \"20s\"".into(),
        );
    }
    None
}

pub fn parse(text: &str, origin: &str, tables: &TableNames) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    };
    let mut rep = Reporter {
        text,
        problems: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().trim().replace('\n', "; ");
            let hint = parse_error_hint(&message);
            return Err(invalid(vec![rep.problem(
                e.span(),
                &message,
                hint.as_deref(),
            )]));
        }
    };

    let agent = agent_config(&mut rep, raw.agent, tables);
    let fastpath = fastpath_config(&mut rep, raw.fastpath);
    let links = link_configs(&mut rep, &raw.link);
    let groups = group_configs(&mut rep, &raw.group, &raw.link);
    check_interfaces_unique(&mut rep, &raw.link);
    let metrics = operator::metrics_config(&mut rep, raw.metrics.as_ref());

    if rep.problems.is_empty() {
        Ok(Config {
            agent,
            fastpath,
            links: links.into(),
            groups: groups.into(),
            metrics,
        })
    } else {
        Err(invalid(rep.problems))
    }
}

fn agent_config(rep: &mut Reporter, raw: Option<RawAgent>, names: &TableNames) -> AgentConfig {
    let mut agent = AgentConfig {
        pin_path: PathBuf::from(DEFAULT_PIN_PATH),
        control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        tables: vec![super::RT_TABLE_MAIN],
        resync_interval: DEFAULT_RESYNC_INTERVAL,
        backup_interfaces: Vec::new(),
        on_change: Vec::new(),
        hook_timeout: DEFAULT_HOOK_TIMEOUT,
    };
    let Some(raw) = raw else { return agent };
    if let Some(argv) = &raw.on_change {
        agent.on_change = operator::hook_argv(rep, argv, "agent");
    }
    agent.hook_timeout = positive_duration(
        rep,
        raw.hook_timeout.as_ref(),
        "hook_timeout",
        DEFAULT_HOOK_TIMEOUT,
    );
    if let Some(p) = raw.pin_path {
        agent.pin_path = absolute_path(rep, &p, "pin_path");
    }
    if let Some(p) = raw.control_socket {
        agent.control_socket = absolute_path(rep, &p, "control_socket");
    }
    if let Some(tables) = raw.tables {
        let mut ids = Vec::new();
        if tables.get_ref().is_empty() {
            rep.hinted(
                tables.span(),
                "agent.tables is empty: no routing table would be watched",
                "remove the key to watch the main table, or list tables, e.g. tables = [\"main\"]",
            );
        }
        for t in tables.get_ref() {
            if let Some(id) = table_id(rep, t, names) {
                if ids.contains(&id) {
                    rep.error(t.span(), format!("table {id} is listed twice"));
                } else {
                    ids.push(id);
                }
            }
        }
        agent.tables = ids;
    }
    agent.resync_interval = positive_duration(
        rep,
        raw.resync_interval.as_ref(),
        "resync_interval",
        DEFAULT_RESYNC_INTERVAL,
    );
    if let Some(list) = raw.backup_interfaces {
        for name in list {
            if ifname_ok(rep, &name) {
                agent.backup_interfaces.push(name.get_ref().clone());
            }
        }
    }
    agent
}

fn absolute_path(rep: &mut Reporter, p: &S<String>, key: &str) -> PathBuf {
    let path = PathBuf::from(p.get_ref());
    if !path.is_absolute() {
        rep.hinted(
            p.span(),
            format!("{key} \"{}\" is not an absolute path", p.get_ref()),
            format!(
                "write it from /, e.g. {key} = \"/{}\"",
                p.get_ref().trim_start_matches("./")
            ),
        );
    }
    path
}

fn table_id(rep: &mut Reporter, t: &S<toml::Value>, names: &TableNames) -> Option<u32> {
    let id = match t.get_ref() {
        toml::Value::Integer(n) => u32::try_from(*n).ok(),
        toml::Value::String(s) => match s.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => match names.id(s) {
                Some(id) => Some(id),
                None => {
                    let known: Vec<&str> = names.names().collect();
                    rep.hinted(
                        t.span(),
                        format!("unknown routing table \"{s}\""),
                        format!(
                            "use a table number or a name from /etc/iproute2/rt_tables (known names: {})",
                            known.join(", ")
                        ),
                    );
                    return None;
                }
            },
        },
        other => {
            rep.hinted(
                t.span(),
                format!(
                    "a routing table must be a name or a number, not {}",
                    other.type_str()
                ),
                "e.g. tables = [\"main\", 100]",
            );
            return None;
        }
    };
    match id {
        Some(0) | None => {
            rep.hinted(
                t.span(),
                "routing table ids range from 1 to 4294967295",
                "main is 254; see /etc/iproute2/rt_tables",
            );
            None
        }
        Some(id) => Some(id),
    }
}

/// Parses a humantime duration ("20s", "1m30s", "500ms").
fn duration(rep: &mut Reporter, v: &S<toml::Value>, key: &str) -> Option<Duration> {
    let text = match v.get_ref() {
        toml::Value::String(s) => s.trim().to_string(),
        toml::Value::Integer(n) => {
            rep.hinted(
                v.span(),
                format!("{key} = {n}: durations need a unit, e.g. \"{n}s\""),
                format!("write {key} = \"{n}s\" (units: ms, s, m, h)"),
            );
            return None;
        }
        other => {
            rep.hinted(
                v.span(),
                format!("{key} must be a duration string, not {}", other.type_str()),
                format!("durations need a unit, e.g. {key} = \"20s\""),
            );
            return None;
        }
    };
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        rep.hinted(
            v.span(),
            format!("{key} = \"{text}\": durations need a unit, e.g. \"{text}s\""),
            "units: ms, s, m, h (\"1m30s\" works too)",
        );
        return None;
    }
    match humantime::parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            rep.hinted(
                v.span(),
                format!("{key} = \"{text}\" is not a duration: {e}"),
                "durations need a unit, e.g. \"20s\", \"500ms\", \"5m\"",
            );
            None
        }
    }
}

/// Linux's rules for interface names (dev_valid_name).
fn ifname_ok(rep: &mut Reporter, name: &S<String>) -> bool {
    let n = name.get_ref();
    let problem = if n.is_empty() {
        Some("an interface name cannot be empty".to_string())
    } else if n.len() > MAX_IFNAME_LEN {
        Some(format!(
            "interface name \"{n}\" is {} bytes long; Linux allows at most {MAX_IFNAME_LEN}",
            n.len()
        ))
    } else if n == "." || n == ".." || n.contains(['/', ':']) || n.chars().any(char::is_whitespace)
    {
        Some(format!(
            "\"{n}\" is not a valid interface name (no '/', ':', whitespace, \".\" or \"..\")"
        ))
    } else {
        None
    };
    match problem {
        Some(p) => {
            rep.hinted(name.span(), p, "use the name `ip link` shows");
            false
        }
        None => true,
    }
}

fn fastpath_config(rep: &mut Reporter, raw: Option<S<RawFastpath>>) -> FastpathConfig {
    let mut fp = FastpathConfig {
        interfaces: Vec::new(),
        mode: AttachMode::Auto,
    };
    let Some(raw) = raw else {
        rep.hinted(
            0..0,
            "missing [fastpath] section",
            "add [fastpath] with interfaces = [\"lan0\"] (the ingress interfaces whose traffic is steered)",
        );
        return fp;
    };
    let span = raw.span();
    let raw = raw.into_inner();
    match raw.interfaces {
        None => rep.hinted(
            span,
            "[fastpath] needs interfaces",
            "add interfaces = [\"lan0\"] (the ingress interfaces whose traffic is steered)",
        ),
        Some(list) if list.get_ref().is_empty() => rep.hinted(
            list.span(),
            "fastpath.interfaces is empty: no traffic would be steered",
            "list the ingress (LAN side) interfaces, e.g. interfaces = [\"lan0\"]",
        ),
        Some(list) => {
            for name in list.get_ref() {
                if ifname_ok(rep, name) {
                    if fp.interfaces.contains(name.get_ref()) {
                        rep.error(
                            name.span(),
                            format!("interface \"{}\" is listed twice", name.get_ref()),
                        );
                    } else {
                        fp.interfaces.push(name.get_ref().clone());
                    }
                }
            }
        }
    }
    if let Some(mode) = raw.mode {
        fp.mode = match mode.get_ref().as_str() {
            "auto" => AttachMode::Auto,
            "xdp" => AttachMode::Xdp,
            "xdp-generic" => AttachMode::XdpGeneric,
            "tc" => AttachMode::Tc,
            other => {
                rep.hinted(
                    mode.span(),
                    format!("unknown fastpath mode \"{other}\""),
                    "mode is one of: auto, xdp, xdp-generic, tc",
                );
                AttachMode::Auto
            }
        };
    }
    fp
}

fn positive_duration(
    rep: &mut Reporter,
    v: Option<&S<toml::Value>>,
    key: &str,
    default: Duration,
) -> Duration {
    let Some(v) = v else { return default };
    match duration(rep, v, key) {
        Some(d) if d.is_zero() => {
            rep.hinted(
                v.span(),
                format!("{key} must be more than 0s"),
                format!("e.g. {key} = \"{}\"", humantime::format_duration(default)),
            );
            default
        }
        Some(d) => d,
        None => default,
    }
}

fn name_ok(rep: &mut Reporter, name: &S<String>, what: &str) -> bool {
    let n = name.get_ref();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        rep.hinted(
            name.span(),
            format!("{what} name \"{n}\" is not valid"),
            "use letters, digits, '-', '_' or '.'",
        );
        return false;
    }
    true
}

fn group_configs(
    rep: &mut Reporter,
    raw: &[S<RawGroup>],
    raw_links: &[S<RawLink>],
) -> Vec<GroupConfig> {
    let link_names: Vec<&str> = raw_links
        .iter()
        .map(|l| l.get_ref().name.get_ref().as_str())
        .collect();
    let mut out = Vec::new();
    let mut seen_names: HashSet<&str> = HashSet::new();
    // segment → (group name) for the "same segment in two groups" check
    let mut seen_segments: BTreeMap<IpNet, String> = BTreeMap::new();
    let mut v4_count = 0u32;
    let mut v6_count = 0u32;
    if raw.len() > routebackup_common::MAX_GROUPS as usize {
        rep.hinted(
            raw.get(routebackup_common::MAX_GROUPS as usize)
                .map(Spanned::span)
                .unwrap_or(0..0),
            format!(
                "too many groups ({}); the fast path counts at most {}",
                raw.len(),
                routebackup_common::MAX_GROUPS
            ),
            "merge groups: a group can hold many segments",
        );
    }
    for g in raw {
        let gspan = g.span();
        let g = g.get_ref();
        let name = g.name.get_ref();
        if name_ok(rep, &g.name, "group") && !seen_names.insert(name.as_str()) {
            rep.hinted(
                g.name.span(),
                format!("duplicate group name \"{name}\""),
                "every [[group]] needs its own name",
            );
        }
        let mut segments = Vec::new();
        match &g.segments {
            None => rep.hinted(
                gspan.clone(),
                format!("group \"{name}\" has no segments"),
                "add segments = [\"10.20.0.0/16\", ...] (the prefixes this group monitors)",
            ),
            Some(list) if list.get_ref().is_empty() => rep.hinted(
                list.span(),
                format!("group \"{name}\" has no segments"),
                "list the prefixes this group monitors, e.g. segments = [\"10.20.0.0/16\"]",
            ),
            Some(list) => {
                for s in list.get_ref() {
                    let Some(net) = segment(rep, s) else { continue };
                    if let Some(other) = seen_segments.get(&net) {
                        if other == name {
                            rep.error(
                                s.span(),
                                format!("group \"{name}\" lists segment {net} twice"),
                            );
                        } else {
                            rep.hinted(
                                s.span(),
                                format!("segment {net} is already in group \"{other}\""),
                                "a segment belongs to one group only; remove it from one of them",
                            );
                        }
                        continue;
                    }
                    seen_segments.insert(net, name.clone());
                    match net {
                        IpNet::V4(_) => v4_count += 1,
                        IpNet::V6(_) => v6_count += 1,
                    }
                    segments.push(net);
                }
            }
        }
        let mut links = Vec::new();
        match &g.links {
            None => rep.hinted(
                gspan.clone(),
                format!("group \"{name}\" has no links"),
                format!(
                    "add links = [...] naming [[link]]s in the order to try (known links: {})",
                    known(&link_names)
                ),
            ),
            Some(list) if list.get_ref().is_empty() => rep.hinted(
                list.span(),
                format!("group \"{name}\" has no links"),
                format!(
                    "name the backup links to try, in order (known links: {})",
                    known(&link_names)
                ),
            ),
            Some(list) => {
                for l in list.get_ref() {
                    match link_names.iter().position(|n| n == l.get_ref()).map(LinkId) {
                        Some(i) if links.contains(&i) => rep.error(
                            l.span(),
                            format!("group \"{name}\" names link \"{}\" twice", l.get_ref()),
                        ),
                        Some(i) => links.push(i),
                        None => rep.hinted(
                            l.span(),
                            format!(
                                "group \"{name}\" names unknown link \"{}\" (known links: {})",
                                l.get_ref(),
                                known(&link_names)
                            ),
                            "define it in a [[link]] section or fix the spelling",
                        ),
                    }
                }
            }
        }
        let match_mode = match &g.match_mode {
            None => MatchMode::Exact,
            Some(m) => match m.get_ref().as_str() {
                "exact" => MatchMode::Exact,
                "covering" => MatchMode::Covering,
                other => {
                    rep.hinted(
                        m.span(),
                        format!("unknown match mode \"{other}\""),
                        "match is \"exact\" or \"covering\"",
                    );
                    MatchMode::Exact
                }
            },
        };
        let allow_default = g.allow_default.unwrap_or(false);
        let activate_delay = g
            .activate_delay
            .as_ref()
            .and_then(|d| duration(rep, d, "activate_delay"))
            .unwrap_or(Duration::ZERO);
        let deactivate_delay = g
            .deactivate_delay
            .as_ref()
            .and_then(|d| duration(rep, d, "deactivate_delay"))
            .unwrap_or(DEFAULT_DEACTIVATE_DELAY);
        let probe = g.probe.as_ref().map(|p| probe_config(rep, name, p));
        out.push(GroupConfig {
            name: name.clone(),
            segments,
            links,
            match_mode,
            allow_default,
            activate_delay,
            deactivate_delay,
            on_change: g
                .on_change
                .as_ref()
                .map(|argv| operator::hook_argv(rep, argv, &format!("group \"{name}\""))),
            probe,
        });
    }
    let max = routebackup_common::MAX_SEGMENTS;
    if v4_count > max || v6_count > max {
        rep.hinted(
            0..0,
            format!("too many segments ({v4_count} IPv4, {v6_count} IPv6); the fast path holds at most {max} per family"),
            "aggregate segments into shorter prefixes",
        );
    }
    out
}

/// A probe or verify target: a unicast address.
fn probe_target(rep: &mut Reporter, t: &S<String>, whose: &str) -> Option<IpAddr> {
    match t.get_ref().trim().parse::<IpAddr>() {
        Ok(a) if a.is_unspecified() || a.is_multicast() => {
            rep.hinted(
                t.span(),
                format!("probe target {a} of {whose} is not a unicast address"),
                "name a host that answers echo requests, e.g. the provider's gateway",
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            rep.hinted(
                t.span(),
                format!("probe target \"{}\" is not an IP address", t.get_ref()),
                "targets are addresses, e.g. \"198.51.100.1\" or \"2001:db8::1\" (no names)",
            );
            None
        }
    }
}

/// A group's `probe = { ... }`.
fn probe_config(rep: &mut Reporter, group: &str, raw: &S<RawProbe>) -> ProbeConfig {
    let p = raw.get_ref();
    let mut targets = Vec::new();
    match &p.targets {
        Some(list) if !list.get_ref().is_empty() => {
            for t in list.get_ref() {
                match probe_target(rep, t, &format!("group \"{group}\"")) {
                    Some(a) if targets.contains(&a) => rep.error(
                        t.span(),
                        format!("group \"{group}\" lists probe target {a} twice"),
                    ),
                    Some(a) => targets.push(a),
                    None => {}
                }
            }
        }
        Some(list) => rep.hinted(
            list.span(),
            format!("group \"{group}\" probes no targets"),
            "list hosts that answer echo requests, e.g. targets = [\"198.51.100.1\"]",
        ),
        None => rep.hinted(
            raw.span(),
            format!("the probe of group \"{group}\" has no targets"),
            "add targets = [\"198.51.100.1\"] (hosts behind the primary path that answer echo requests)",
        ),
    }
    let interval = positive_duration(
        rep,
        p.interval.as_ref(),
        "probe.interval",
        DEFAULT_PROBE_INTERVAL,
    );
    let timeout = positive_duration(rep, p.timeout.as_ref(), "probe.timeout", interval);
    if timeout > interval {
        if let Some(t) = &p.timeout {
            rep.hinted(
                t.span(),
                format!(
                    "probe.timeout ({}) is longer than probe.interval ({})",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
                "a probe must be answered before the next round starts: make timeout <= interval",
            );
        }
    }
    let count = |rep: &mut Reporter, v: Option<&S<i64>>, key: &str, default: u32| match v {
        None => default,
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(c) if c >= 1 => c,
            _ => {
                rep.hinted(
                    n.span(),
                    format!("{key} must be a whole number of rounds, at least 1"),
                    format!("e.g. {key} = {default}"),
                );
                default
            }
        },
    };
    let down_after = count(
        rep,
        p.down_after.as_ref(),
        "probe.down_after",
        DEFAULT_PROBE_DOWN_AFTER,
    );
    let up_after = count(
        rep,
        p.up_after.as_ref(),
        "probe.up_after",
        DEFAULT_PROBE_UP_AFTER,
    );
    ProbeConfig {
        targets,
        interval,
        timeout,
        down_after,
        up_after,
    }
}

fn known(names: &[&str]) -> String {
    if names.is_empty() {
        "none; add a [[link]] section".to_string()
    } else {
        names.join(", ")
    }
}

fn segment(rep: &mut Reporter, s: &S<String>) -> Option<IpNet> {
    let text = s.get_ref().trim();
    match text.parse::<IpNet>() {
        Ok(net) => {
            let trunc = net.trunc();
            if trunc != net {
                rep.hinted(
                    s.span(),
                    format!("segment {net} has host bits set; did you mean {trunc}?"),
                    format!("write segments as network prefixes, e.g. \"{trunc}\""),
                );
                return None;
            }
            Some(net)
        }
        Err(_) => {
            if let Ok(addr) = text.parse::<IpAddr>() {
                let len = if addr.is_ipv4() { 32 } else { 128 };
                rep.hinted(
                    s.span(),
                    format!("segment \"{text}\" has no prefix length"),
                    format!("write \"{addr}/{len}\" for a single address, or the network prefix"),
                );
            } else {
                rep.hinted(
                    s.span(),
                    format!("segment \"{text}\" is not an IP prefix"),
                    "e.g. \"10.20.0.0/16\" or \"2001:db8:20::/48\"",
                );
            }
            None
        }
    }
}
