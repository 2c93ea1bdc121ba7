use std::sync::Arc;
use std::time::{Duration, Instant};

use routebackup_common::GroupStats;

use super::*;
use crate::kernel::Feature;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn snapshot_and_event_families_render_in_the_text_format() {
    let m = Metrics::new();
    let watcher = Arc::new(WatcherStats::default());
    watcher.routes_seen.store(12, Relaxed);
    watcher.initial_sync_ms.store(1500, Relaxed);
    watcher.view_divergences.store(2, Relaxed);
    let before = Instant::now().checked_sub(Duration::from_secs(3)).unwrap();
    m.publish(Snapshot {
        groups: vec![GroupSnapshot {
            name: "hq".into(),
            state: GroupState::Backup,
            since: before,
        }],
        links: vec![LinkSnapshot {
            name: "lte".into(),
            state: LinkState::Up,
            up_since: Some(before),
        }],
        fastpath: vec![GroupCounters {
            name: "hq".into(),
            stats: GroupStats {
                steered_packets: 7,
                redirect_failures: 2,
                ..GroupStats::default()
            },
        }],
        kernel: Some(Kernel::full().without(&[Feature::XdpMetadata])),
        watcher: Some(watcher),
    });
    m.transition("hq", GroupState::Activating, GroupState::Backup);
    m.link_attempt("lte");
    m.link_failure("lte", FailureReason::UpTimeout);
    m.steer_latency(0.000_3);
    m.hook_run("hq", HookResult::Timeout);
    m.config_reload(true);
    m.config_reload(false);
    m.config_reload(false);
    let text = m.render();
    for (series, want) in [
        ("routebackup_build_info{version=\"0.1.0\"}", 1.0),
        (
            "routebackup_group_state{group=\"hq\",state=\"backup\"}",
            1.0,
        ),
        (
            "routebackup_group_state{group=\"hq\",state=\"primary\"}",
            0.0,
        ),
        ("routebackup_link_state{link=\"lte\",state=\"up\"}", 1.0),
        (
            "routebackup_kernel_feature{feature=\"xdp-metadata\",state=\"forced\"}",
            1.0,
        ),
        (
            "routebackup_kernel_feature{feature=\"xdp-metadata\",state=\"yes\"}",
            0.0,
        ),
        (
            "routebackup_kernel_feature{feature=\"tcx\",state=\"yes\"}",
            1.0,
        ),
        ("routebackup_link_state{link=\"lte\",state=\"down\"}", 0.0),
        (
            "routebackup_group_transitions_total{group=\"hq\",from=\"activating\",to=\"backup\"}",
            1.0,
        ),
        ("routebackup_link_attempts_total{link=\"lte\"}", 1.0),
        (
            "routebackup_link_failures_total{link=\"lte\",reason=\"up_timeout\"}",
            1.0,
        ),
        (
            "routebackup_hook_runs_total{group=\"hq\",result=\"timeout\"}",
            1.0,
        ),
        (
            "routebackup_fastpath_steered_packets_total{group=\"hq\"}",
            7.0,
        ),
        (
            "routebackup_fastpath_redirect_failures_total{group=\"hq\"}",
            2.0,
        ),
        ("routebackup_watcher_routes_seen_total", 12.0),
        ("routebackup_watcher_initial_sync_seconds", 1.5),
        ("routebackup_watcher_view_divergences_total", 2.0),
        ("routebackup_config_reloads_total{result=\"applied\"}", 1.0),
        ("routebackup_config_reloads_total{result=\"refused\"}", 2.0),
        (
            "routebackup_link_state{link=\"lte\",state=\"releasing\"}",
            0.0,
        ),
        ("routebackup_steer_latency_seconds_count", 1.0),
        (
            "routebackup_steer_latency_seconds_bucket{le=\"0.00032\"}",
            1.0,
        ),
        (
            "routebackup_steer_latency_seconds_bucket{le=\"0.00016\"}",
            0.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    let in_state = value(
        &text,
        "routebackup_group_state_duration_seconds{group=\"hq\"}",
    )
    .unwrap();
    assert!((3.0..60.0).contains(&in_state), "{in_state}\n{text}");
    let up = value(&text, "routebackup_link_up_duration_seconds{link=\"lte\"}").unwrap();
    assert!((3.0..60.0).contains(&up), "{up}\n{text}");
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split(' ').nth(2).unwrap();
        let kind = line.split(' ').nth(3).unwrap();
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "counters and only counters end in _total: {line}"
        );
    }
}

#[test]
fn an_empty_snapshot_renders_only_build_info_and_event_families() {
    let text = Metrics::new().render();
    assert!(text.contains("routebackup_build_info"), "{text}");
    assert!(!text.contains("routebackup_group_state{"), "{text}");
    assert!(!text.contains("routebackup_watcher_"), "{text}");
}

#[tokio::test]
async fn http_endpoint_serves_metrics_and_refuses_other_paths() {
    use std::io::{Read, Write};
    let m = Arc::new(Metrics::new());
    m.link_attempt("lte");
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(http::serve(listener, m));
    let get = move |req: &'static str| {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        })
    };
    let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("content-type: text/plain; version=0.0.4"),
        "{ok}"
    );
    assert!(
        ok.contains("routebackup_link_attempts_total{link=\"lte\"} 1"),
        "{ok}"
    );
    let missing = get("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post =
        get("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    server.abort();
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let first = http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let e = http::bind(addr).unwrap_err();
    let text = crate::error::Report(&e).to_string();
    assert!(
        text.contains(&format!("cannot listen for metrics on {addr}")),
        "{text}"
    );
    assert!(text.contains("change [metrics] listen"), "{text}");
}
