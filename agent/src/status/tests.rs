use super::*;
use crate::kernel::{Feature, Kernel};
use crate::model::{GroupState, GroupStatus, LinkState, LinkStatus, SegmentStatus};

pub(crate) fn status() -> EngineStatus {
    EngineStatus {
        synced: true,
        groups: vec![GroupStatus {
            name: "hq".into(),
            state: GroupState::Backup,
            active_link: Some("lte".into()),
            since_ms: 5_000,
            segments: vec![
                SegmentStatus {
                    prefix: "10.1.0.0/16".parse().unwrap(),
                    primary_up: false,
                    steered: true,
                    held_by: None,
                    why_not: Some("blackhole route 10.1.0.0/17 (table 254)".into()),
                },
                SegmentStatus {
                    prefix: "10.2.0.0/16".parse().unwrap(),
                    primary_up: true,
                    steered: true,
                    held_by: Some(HoldingRoute {
                        prefix: "10.0.0.0/8".parse().unwrap(),
                        via: Some("10.0.1.2".parse().unwrap()),
                        dev: "wan0".into(),
                        proto: "bgp".into(),
                        table: 254,
                        metric: 20,
                    }),
                    why_not: None,
                },
            ],
        }],
        links: vec![LinkStatus {
            name: "lte".into(),
            interface: "ppp0".into(),
            state: LinkState::Up,
            ifindex: Some(7),
            attempts: 1,
            last_error: None,
        }],
    }
}

#[test]
fn report_from_engine_status() {
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let r = StatusReport::from_engine(&status(), 65_000, started);
    assert_eq!(r.groups[0].state, GroupState::Backup);
    assert_eq!(r.groups[0].since, "2023-11-14T22:13:25Z");
    assert_eq!(r.groups[0].since_s_ago, 60);
    assert_eq!(r.links[0].state, LinkState::Up);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["groups"][0]["state"], "backup");
    assert_eq!(json["links"][0]["state"], "up");
    assert_eq!(json["groups"][0]["segments"][0]["prefix"], "10.1.0.0/16");
    assert_eq!(json["groups"][0]["segments"][0]["steered"], true);
    assert!(json.get("fastpath").is_none());
    assert_eq!(json["groups"][0]["segments"][1]["held_by"]["dev"], "wan0");
    assert_eq!(json["groups"][0]["segments"][1]["held_by"]["metric"], 20);
    let back: StatusReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
    let text = r.render();
    assert!(text.contains("group hq: backup via lte"), "{text}");
    assert!(text.contains("10.1.0.0/16"), "{text}");
    assert!(text.contains("ppp0"), "{text}");
    assert!(
        text.contains("blackhole route 10.1.0.0/17 (table 254)"),
        "{text}"
    );
    assert!(
        text.contains("10.0.0.0/8 via 10.0.1.2 dev wan0 proto bgp table 254 metric 20"),
        "{text}"
    );
}

/// The document `routebackup status --json` prints and tests and scripts
/// read by key: every key of the fast path's part, and the round trip.
#[test]
fn report_with_fastpath_round_trips_through_json() {
    use crate::status::{
        AttachmentReport, DriverReport, DriverStatus, GroupCounters, Via, XdpReport,
    };
    use routebackup_common::GroupStats;

    let mut r = StatusReport::from_engine(&status(), 65_000, SystemTime::UNIX_EPOCH);
    r.groups[0].last_steer_latency_us = Some(420);
    r.watcher = Some(WatcherReport {
        routes_seen: 12,
        ..WatcherReport::default()
    });
    r.fastpath = Some(DataplaneStatus {
        pin_path: "/sys/fs/bpf/routebackup".into(),
        attachments: vec![AttachmentReport {
            interface: "lan0".into(),
            ifindex: 3,
            xdp: XdpReport::Native,
            tc: true,
            adopted: false,
            xdp_mechanism: Some(Via::BpfLink),
            tc_mechanism: Some(Via::Tcx),
        }],
        groups: vec![GroupCounters {
            name: "hq".into(),
            stats: GroupStats {
                steered_packets: 1,
                steered_bytes: 2,
                passed_packets: 3,
                passed_bytes: 4,
                redirect_failures: 5,
                deferred_packets: 6,
            },
        }],
        drivers: vec![
            DriverStatus {
                link: "lte".into(),
                driver: DriverReport::Running { pid: 4242 },
            },
            DriverStatus {
                link: "dsl".into(),
                driver: DriverReport::Idle,
            },
        ],
        kernel_routes: vec!["10.1.0.0/16".into()],
        tc_fallbacks: Vec::new(),
        tc_fallbacks_total: 0,
        prearmed: vec!["10.2.0.0/16".into()],
        kernel: Some(Kernel::full().without(&[Feature::Tcx])),
    });
    assert!(
        r.render().contains("lacks tcx (forced off)"),
        "{}",
        r.render()
    );
    let text = serde_json::to_string_pretty(&r).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fp = &json["fastpath"];
    assert_eq!(fp["pin_path"], "/sys/fs/bpf/routebackup");
    let a = &fp["attachments"][0];
    assert_eq!(
        (
            &a["interface"],
            &a["ifindex"],
            &a["xdp"],
            &a["tc"],
            &a["adopted"]
        ),
        (
            &"lan0".into(),
            &3.into(),
            &"native".into(),
            &true.into(),
            &false.into()
        )
    );
    assert_eq!(
        (&a["xdp_mechanism"], &a["tc_mechanism"]),
        (&"link".into(), &"tcx".into())
    );
    let g = fp["groups"][0].as_object().unwrap();
    let keys: Vec<&str> = g.keys().map(String::as_str).collect();
    for (key, want) in [
        ("steered_packets", 1),
        ("steered_bytes", 2),
        ("passed_packets", 3),
        ("passed_bytes", 4),
        ("redirect_failures", 5),
        ("deferred_packets", 6),
    ] {
        assert_eq!(g[key], want, "{key} in {keys:?}");
    }
    assert_eq!(g["name"], "hq");
    assert_eq!(g.len(), 7, "counters sit next to the name: {keys:?}");
    assert_eq!(fp["drivers"][0]["link"], "lte");
    assert_eq!(fp["drivers"][0]["driver"]["state"], "running");
    assert_eq!(fp["drivers"][0]["driver"]["pid"], 4242);
    assert_eq!(fp["drivers"][1]["driver"]["state"], "idle");
    assert_eq!(fp["kernel_routes"][0], "10.1.0.0/16");
    assert_eq!(fp["kernel"]["capabilities"][5]["feature"], "tcx");
    assert_eq!(fp["kernel"]["capabilities"][5]["state"], "forced");
    assert_eq!(json["groups"][0]["last_steer_latency_us"], 420);
    assert_eq!(json["watcher"]["routes_seen"], 12);

    let back: StatusReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);

    let human = back.render();
    for needle in [
        "fast path (/sys/fs/bpf/routebackup)",
        // The column counts failures, as `link_failures` does (issue 20).
        "STATE       FAILURES  LAST ERROR",
        "lan0 (ifindex 3): xdp native, tc attached (via xdp link, tc tcx)",
        "STEERED PKTS",
        "driver lte: running (pid 4242)",
        "driver dsl: idle",
        "kernel routes installed: 10.1.0.0/16",
    ] {
        assert!(human.contains(needle), "{needle:?} not in:\n{human}");
    }
}
