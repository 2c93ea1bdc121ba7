use std::time::Duration;

use super::*;
use crate::links::driver::command::Command;
use crate::links::driver::pppd::Pppd;

const BASE: &str = r#"
[fastpath]
interfaces = ["lan0"]

[[link]]
name = "lte"
interface = "ppp0"
driver = "pppd"
peer = "lte"

[[link]]
name = "dsl"
interface = "eth2"
driver = "interface"

[[group]]
name = "hq"
segments = ["10.20.0.0/16", "2001:db8:20::/48"]
links = ["lte", "dsl"]
"#;

fn names() -> TableNames {
    let mut t = TableNames::builtin();
    t.add_text("# comment\n100 isp2\n0x65 hexa # trailing\n");
    t
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_tables(text, "routebackup.toml", &names())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn always_up_links_are_prearmed_unless_turned_off() {
    let hot = "[[link]]\nname = \"hot\"\ninterface = \"eth3\"\ndriver = \"always-up\"\n";
    let on = parse(&format!("{BASE}\n{hot}")).expect("parses");
    assert!(on.links[LinkId(2)].prearm);
    let off = parse(&format!("{BASE}\n{hot}prearm = false\n")).expect("parses");
    assert!(!off.links[LinkId(2)].prearm);
}

#[test]
fn defaults_are_filled_in() {
    let c = parse(BASE).expect("base config parses");
    assert_eq!(c.agent.pin_path, PathBuf::from(DEFAULT_PIN_PATH));
    assert_eq!(
        c.agent.control_socket,
        PathBuf::from(DEFAULT_CONTROL_SOCKET)
    );
    assert_eq!(c.agent.tables, vec![RT_TABLE_MAIN]);
    assert_eq!(c.agent.resync_interval, Duration::from_secs(30));
    assert!(c.agent.backup_interfaces.is_empty());
    assert_eq!(c.fastpath.mode, AttachMode::Auto);
    assert_eq!(c.fastpath.interfaces, vec!["lan0".to_string()]);

    let lte = &c.links[LinkId(0)];
    assert_eq!(
        lte.driver,
        DriverConfig::Pppd(Pppd {
            peer: "lte".into(),
            pppd_path: PathBuf::from("/usr/sbin/pppd")
        })
    );
    assert!(lte.require_address, "pppd links need an address by default");
    assert_eq!(lte.up_timeout, Duration::from_secs(30));
    assert_eq!(lte.retry_interval, Duration::from_secs(5));
    assert!(!lte.kernel_routes);
    assert_eq!(lte.route_metric, 1024);
    assert_eq!(lte.gateway_v4, None);
    assert!(!lte.prearm, "dialled links are pre-armed only when asked");
    assert!(!c.links[LinkId(1)].prearm);
    assert!(
        !c.links[LinkId(1)].require_address,
        "non-pppd links do not need an address by default"
    );

    let g = &c.groups[GroupId(0)];
    assert_eq!(g.links, vec![LinkId(0), LinkId(1)]);
    assert_eq!(g.match_mode, MatchMode::Exact);
    assert!(!g.allow_default);
    assert_eq!(g.activate_delay, Duration::ZERO);
    assert_eq!(g.deactivate_delay, Duration::from_secs(20));
    assert_eq!(g.segments.len(), 2);
    assert_eq!(
        c.backup_interfaces(),
        vec!["eth2".to_string(), "ppp0".to_string()]
    );
}

#[test]
fn full_config_parses() {
    let text = r#"
[agent]
pin_path = "/sys/fs/bpf/rb2"
control_socket = "/run/rb2.sock"
tables = ["main", "isp2", 200, "hexa", "300"]
resync_interval = "1m"
backup_interfaces = ["wg0"]

[fastpath]
interfaces = ["lan0", "lan1"]
mode = "xdp-generic"

[[link]]
name = "cmd"
interface = "tun0"
driver = "command"
up = ["/usr/local/bin/up", "--fast"]
gateway = "10.0.3.2"
gateway6 = "fe80::1"
require_address = true
up_timeout = "10s"
retry_interval = "2s"
kernel_routes = true
route_metric = 50

[[link]]
name = "hot"
interface = "eth3"
driver = "always-up"
gateway = "2001:db8::1"

[[group]]
name = "a"
segments = ["10.0.0.0/8"]
links = ["hot", "cmd"]
match = "covering"
allow_default = true
activate_delay = "500ms"
deactivate_delay = "0s"
"#;
    let c = parse(text).expect("parses");
    assert_eq!(c.agent.tables, vec![254, 100, 200, 101, 300]);
    assert_eq!(c.agent.resync_interval, Duration::from_mins(1));
    assert_eq!(c.fastpath.mode, AttachMode::XdpGeneric);
    assert_eq!(
        c.links[LinkId(0)].driver,
        DriverConfig::Command(Command {
            up: vec!["/usr/local/bin/up".into(), "--fast".into()],
            down: vec![]
        })
    );
    assert_eq!(
        c.links[LinkId(0)].gateway_v4,
        Some("10.0.3.2".parse().unwrap())
    );
    assert_eq!(
        c.links[LinkId(0)].gateway_v6,
        Some("fe80::1".parse().unwrap())
    );
    assert_eq!(c.links[LinkId(0)].route_metric, 50);
    assert!(c.links[LinkId(0)].kernel_routes);
    assert_eq!(
        c.links[LinkId(1)].gateway_v6,
        Some("2001:db8::1".parse().unwrap())
    );
    assert_eq!(c.groups[GroupId(0)].links, vec![LinkId(1), LinkId(0)]);
    assert_eq!(c.groups[GroupId(0)].match_mode, MatchMode::Covering);
    assert_eq!(
        c.groups[GroupId(0)].activate_delay,
        Duration::from_millis(500)
    );
    assert_eq!(c.groups[GroupId(0)].deactivate_delay, Duration::ZERO);
    assert_eq!(c.backup_interfaces(), vec!["eth3", "tun0", "wg0"]);
}

/// (name, edit applied to BASE, expected fragments of the error)
#[test]
fn rejections() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "unknown top-level key",
            "[fastpath]",
            "[fastpath]\nspeed = 1",
            &["routebackup.toml:3:1:", "unknown field `speed`", "hint:"],
        ),
        (
            "unknown agent key",
            "[fastpath]",
            "[agent]\npinpath = \"/x\"\n[fastpath]",
            &["routebackup.toml:3:1:", "unknown field `pinpath`"],
        ),
        (
            "unknown group key",
            "name = \"hq\"",
            "name = \"hq\"\nsegmentz = []",
            &["unknown field `segmentz`"],
        ),
        (
            "peer on a command link",
            "driver = \"interface\"",
            "driver = \"command\"\nup = [\"/bin/true\"]\npeer = \"x\"",
            &[
                "routebackup.toml:16:8:",
                "key `peer` does not apply to driver \"command\"",
                "is for driver \"pppd\"",
            ],
        ),
        (
            "up on a pppd link",
            "peer = \"lte\"",
            "peer = \"lte\"\nup = [\"/bin/true\"]",
            &["key `up` does not apply to driver \"pppd\""],
        ),
        (
            "pppd without peer",
            "peer = \"lte\"",
            "",
            &["driver \"pppd\" needs `peer`"],
        ),
        (
            "command without up",
            "driver = \"interface\"",
            "driver = \"command\"",
            &["driver \"command\" needs `up`"],
        ),
        (
            "command with empty up",
            "driver = \"interface\"",
            "driver = \"command\"\nup = []",
            &["`up` needs at least a program"],
        ),
        (
            "unknown driver",
            "driver = \"interface\"",
            "driver = \"modem\"",
            &[
                "unknown driver \"modem\"",
                "pppd, command, interface, always-up",
            ],
        ),
        (
            "host bits",
            "\"10.20.0.0/16\"",
            "\"10.20.1.0/16\"",
            &[
                "routebackup.toml:18:13:",
                "10.20.1.0/16 has host bits set; did you mean 10.20.0.0/16?",
            ],
        ),
        (
            "not a prefix",
            "\"10.20.0.0/16\"",
            "\"10.20.0.0/33\"",
            &["\"10.20.0.0/33\" is not an IP prefix"],
        ),
        (
            "no prefix length",
            "\"10.20.0.0/16\"",
            "\"10.20.0.1\"",
            &["has no prefix length", "10.20.0.1/32"],
        ),
        (
            "duplicate link name",
            "name = \"dsl\"",
            "name = \"lte\"",
            &["routebackup.toml:12:8:", "duplicate link name \"lte\""],
        ),
        (
            "unknown link in group",
            "links = [\"lte\", \"dsl\"]",
            "links = [\"lte\", \"lte2\"]",
            &[
                "routebackup.toml:19:17:",
                "group \"hq\" names unknown link \"lte2\" (known links: lte, dsl)",
            ],
        ),
        (
            "group without links",
            "links = [\"lte\", \"dsl\"]",
            "links = []",
            &["group \"hq\" has no links", "known links: lte, dsl"],
        ),
        (
            "group without links key",
            "links = [\"lte\", \"dsl\"]",
            "",
            &["group \"hq\" has no links"],
        ),
        (
            "group without segments",
            "segments = [\"10.20.0.0/16\", \"2001:db8:20::/48\"]",
            "segments = []",
            &["group \"hq\" has no segments"],
        ),
        (
            "duration without unit (integer)",
            "name = \"hq\"",
            "name = \"hq\"\ndeactivate_delay = 20",
            &["durations need a unit, e.g. \"20s\""],
        ),
        (
            "duration without unit (string)",
            "name = \"hq\"",
            "name = \"hq\"\nactivate_delay = \"20\"",
            &["durations need a unit, e.g. \"20s\""],
        ),
        (
            "bad duration",
            "name = \"hq\"",
            "name = \"hq\"\nactivate_delay = \"soon\"",
            &["is not a duration"],
        ),
        (
            "zero up_timeout",
            "peer = \"lte\"",
            "peer = \"lte\"\nup_timeout = \"0s\"",
            &["up_timeout must be more than 0s"],
        ),
        (
            "unknown table",
            "[fastpath]",
            "[agent]\ntables = [\"isp9\"]\n[fastpath]",
            &[
                "routebackup.toml:3:11:",
                "unknown routing table \"isp9\"",
                "isp2",
            ],
        ),
        (
            "table zero",
            "[fastpath]",
            "[agent]\ntables = [0]\n[fastpath]",
            &["routing table ids range"],
        ),
        (
            "interface name too long",
            "interface = \"eth2\"",
            "interface = \"a-very-long-ifname0\"",
            &["interface name \"a-very-long-ifname0\" is 19 bytes long; Linux allows at most 15"],
        ),
        (
            "bad interface name",
            "interface = \"eth2\"",
            "interface = \"eth/2\"",
            &["not a valid interface name"],
        ),
        (
            "empty fastpath interfaces",
            "interfaces = [\"lan0\"]",
            "interfaces = []",
            &["routebackup.toml:3:14:", "fastpath.interfaces is empty"],
        ),
        (
            "missing fastpath",
            "[fastpath]\ninterfaces = [\"lan0\"]",
            "",
            &["missing [fastpath] section"],
        ),
        (
            "bad mode",
            "interfaces = [\"lan0\"]",
            "interfaces = [\"lan0\"]\nmode = \"fast\"",
            &[
                "unknown fastpath mode \"fast\"",
                "auto, xdp, xdp-generic, tc",
            ],
        ),
        (
            "bad match",
            "name = \"hq\"",
            "name = \"hq\"\nmatch = \"longest\"",
            &["unknown match mode \"longest\""],
        ),
        (
            "bad gateway",
            "driver = \"interface\"",
            "driver = \"interface\"\ngateway = \"10.0.0.0/24\"",
            &["gateway \"10.0.0.0/24\" is not an IP address"],
        ),
        (
            "gateway6 not v6",
            "driver = \"interface\"",
            "driver = \"interface\"\ngateway6 = \"10.0.0.1\"",
            &["is not an IPv6 address"],
        ),
        (
            "relative pin path",
            "[fastpath]",
            "[agent]\npin_path = \"bpf\"\n[fastpath]",
            &["is not an absolute path"],
        ),
        (
            "two links one interface",
            "interface = \"eth2\"",
            "interface = \"ppp0\"",
            &["both use interface \"ppp0\""],
        ),
        (
            "syntax error",
            "[fastpath]",
            "[fastpath\n",
            &["routebackup.toml:2:10: invalid table header; expected"],
        ),
        (
            "wrong type",
            "interfaces = [\"lan0\"]",
            "interfaces = \"lan0\"",
            &["routebackup.toml:3:14:", "invalid type", "hint:"],
        ),
    ];
    for (name, from, to, expected) in cases {
        assert!(BASE.contains(from), "{name}: base lacks {from:?}");
        let text = BASE.replacen(from, to, 1);
        let e = err(&text);
        for frag in *expected {
            assert!(e.contains(frag), "{name}: error {e:?} lacks {frag:?}");
        }
    }
}

#[test]
fn segment_in_two_groups_is_rejected() {
    let text = format!(
        "{BASE}\n[[group]]\nname = \"branch\"\nsegments = [\"10.30.0.0/16\", \"10.20.0.0/16\"]\nlinks = [\"dsl\"]\n"
    );
    let e = err(&text);
    assert!(
        e.contains("segment 10.20.0.0/16 is already in group \"hq\""),
        "{e}"
    );
    assert!(e.contains("routebackup.toml:23:29:"), "{e}");
}

#[test]
fn duplicate_group_name_is_rejected() {
    let text = format!(
        "{BASE}\n[[group]]\nname = \"hq\"\nsegments = [\"10.30.0.0/16\"]\nlinks = [\"dsl\"]\n"
    );
    assert!(err(&text).contains("duplicate group name \"hq\""));
}

#[test]
fn every_error_is_reported() {
    let text = BASE
        .replacen("\"10.20.0.0/16\"", "\"10.20.1.0/16\"", 1)
        .replacen("links = [\"lte\", \"dsl\"]", "links = [\"lte\", \"x\"]", 1);
    let e = err(&text);
    assert_eq!(
        e.lines()
            .filter(|l| l.starts_with("routebackup.toml:"))
            .count(),
        2,
        "{e}"
    );
}

#[test]
fn backup_interfaces_are_validated() {
    let text = BASE.replacen(
        "[fastpath]",
        "[agent]\nbackup_interfaces = [\"wg0\", \"\"]\n[fastpath]",
        1,
    );
    assert!(err(&text).contains("an interface name cannot be empty"));
}

#[test]
fn normalised_round_trips() {
    let c = parse(BASE).expect("parses");
    let text = c.normalised();
    assert!(text.contains("tables = [254]  # 254 = main"), "{text}");
    assert!(text.contains("deactivate_delay = \"20s\""), "{text}");
    assert!(text.contains("activate_delay = \"0s\""), "{text}");
    assert!(text.contains("pppd_path = \"/usr/sbin/pppd\""), "{text}");
    let again =
        parse(&text).unwrap_or_else(|e| panic!("normalised output does not parse: {e}\n{text}"));
    assert_eq!(again, c);
}

#[test]
fn command_links_round_trip() {
    let text = BASE.replace(
        "driver = \"interface\"",
        "driver = \"command\"\nup = [\"/usr/local/bin/up\", \"a \\\"b\\\"\"]",
    );
    let c = parse(&text).expect("parses");
    let normal = c.normalised();
    assert!(
        normal
            .contains("driver = \"command\"\nup = [\"/usr/local/bin/up\", 'a \"b\"']\ndown = []\n"),
        "{normal}"
    );
    assert_eq!(parse(&normal).expect("normalised parses"), c);
}

#[test]
fn table_names_from_text() {
    let t = names();
    assert_eq!(t.id("isp2"), Some(100));
    assert_eq!(t.id("hexa"), Some(0x65));
    assert_eq!(t.id("main"), Some(254));
    assert_eq!(t.name(255), Some("local"));
}

#[test]
fn probe_parses_with_defaults_and_round_trips() {
    let text = BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\nprobe = { targets = [\"198.51.100.1\", \"2001:db8::1\"] }",
    );
    let c = parse(&text).expect("parses");
    let p = c.groups[GroupId(0)].probe.as_ref().expect("probe");
    assert_eq!(
        p.targets,
        vec![
            "198.51.100.1".parse::<std::net::IpAddr>().unwrap(),
            "2001:db8::1".parse().unwrap()
        ]
    );
    assert_eq!(p.interval, DEFAULT_PROBE_INTERVAL);
    assert_eq!(p.timeout, DEFAULT_PROBE_INTERVAL);
    assert_eq!(
        (p.down_after, p.up_after),
        (DEFAULT_PROBE_DOWN_AFTER, DEFAULT_PROBE_UP_AFTER)
    );
    let normal = c.normalised();
    assert!(
        normal.contains(
            "probe = { targets = [\"198.51.100.1\", \"2001:db8::1\"], interval = \"1s\", timeout = \"1s\", down_after = 3, up_after = 5 }"
        ),
        "{normal}"
    );
    assert_eq!(parse(&normal).expect("normalised parses"), c);

    let text = BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\nprobe = { targets = [\"192.0.2.9\"], interval = \"2s\", timeout = \"500ms\", down_after = 1, up_after = 2 }",
    );
    let p = parse(&text).expect("parses").groups[GroupId(0)]
        .probe
        .clone()
        .unwrap();
    assert_eq!(p.interval, Duration::from_secs(2));
    assert_eq!(p.timeout, Duration::from_millis(500));
    assert_eq!((p.down_after, p.up_after), (1, 2));
    assert!(parse(BASE).unwrap().groups[GroupId(0)].probe.is_none());
}

#[test]
fn probe_rejections() {
    let cases: &[(&str, &[&str])] = &[
        ("{ interval = \"1s\" }", &["has no targets"]),
        ("{ targets = [] }", &["probes no targets"]),
        ("{ targets = [\"gw.example\"] }", &["is not an IP address"]),
        ("{ targets = [\"0.0.0.0\"] }", &["is not a unicast address"]),
        (
            "{ targets = [\"192.0.2.1\", \"192.0.2.1\"] }",
            &["lists probe target 192.0.2.1 twice"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], interval = \"1s\", timeout = \"2s\" }",
            &["probe.timeout (2s) is longer than probe.interval (1s)"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], timeout = \"2s\" }",
            &["probe.timeout (2s) is longer than probe.interval (1s)"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], down_after = 0 }",
            &["probe.down_after must be a whole number of rounds, at least 1"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], up_after = -2 }",
            &["probe.up_after must be a whole number of rounds, at least 1"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], interval = \"0s\" }",
            &["probe.interval must be more than 0s"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], interval = 1 }",
            &["durations need a unit"],
        ),
        (
            "{ targets = [\"192.0.2.1\"], count = 3 }",
            &["unknown field `count`"],
        ),
    ];
    for (probe, want) in cases {
        let text = BASE.replace(
            "links = [\"lte\", \"dsl\"]",
            &format!("links = [\"lte\", \"dsl\"]\nprobe = {probe}"),
        );
        let e = err(&text);
        for w in *want {
            assert!(e.contains(w), "probe = {probe}: expected {w:?} in:\n{e}");
        }
    }
}

#[test]
fn verify_parses_round_trips_and_is_validated() {
    let text = BASE.replace(
        "driver = \"interface\"",
        "driver = \"interface\"\nverify = { target = \"192.0.2.7\" }",
    );
    let c = parse(&text).expect("parses");
    let v = c.links[LinkId(1)].verify.expect("verify");
    assert_eq!(v.target, "192.0.2.7".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(v.timeout, DEFAULT_VERIFY_TIMEOUT);
    assert!(c.links[LinkId(0)].verify.is_none());
    let normal = c.normalised();
    assert!(
        normal.contains("verify = { target = \"192.0.2.7\", timeout = \"3s\" }"),
        "{normal}"
    );
    assert_eq!(parse(&normal).expect("normalised parses"), c);

    for (verify, want) in [
        (
            "{ timeout = \"1s\" }",
            "the verify of link \"dsl\" has no target",
        ),
        ("{ target = \"ff02::1\" }", "is not a unicast address"),
        ("{ target = \"modem\" }", "is not an IP address"),
        (
            "{ target = \"192.0.2.7\", timeout = \"0s\" }",
            "verify.timeout must be more than 0s",
        ),
        (
            "{ target = \"192.0.2.7\", tries = 2 }",
            "unknown field `tries`",
        ),
    ] {
        let text = BASE.replace(
            "driver = \"interface\"",
            &format!("driver = \"interface\"\nverify = {verify}"),
        );
        let e = err(&text);
        assert!(
            e.contains(want),
            "verify = {verify}: expected {want:?} in:\n{e}"
        );
    }
}
