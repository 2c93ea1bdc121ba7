use std::path::Path;
use std::time::Instant;

use super::*;
use crate::config::TableNames;

fn config(hook: &str, timeout: &str) -> Config {
    let text = format!(
        r#"
[agent]
on_change = ["/bin/sh", "-c", {hook:?}]
hook_timeout = "{timeout}"
[fastpath]
interfaces = ["lan0"]
[[link]]
name = "lte"
interface = "ppp0"
driver = "always-up"
[[group]]
name = "hq"
segments = ["10.20.0.0/16"]
links = ["lte"]
[[group]]
name = "quiet"
segments = ["10.30.0.0/16"]
links = ["lte"]
on_change = ["/bin/true"]
"#
    );
    Config::parse_with_tables(&text, "t.toml", &TableNames::builtin()).unwrap()
}

fn transition(n: usize) -> Transition {
    Transition {
        group: "hq".into(),
        previous: GroupState::Primary,
        state: GroupState::Activating,
        link: "lte".into(),
        interface: "ppp0".into(),
        reason: format!("reason {n}"),
        segments: "10.20.0.0/16".into(),
    }
}

async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn runs(m: &Metrics, result: &str) -> String {
    let text = m.render();
    let series = format!("routebackup_hook_runs_total{{group=\"hq\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series).map(String::from))
        .unwrap_or_else(|| "0".into())
}

#[tokio::test]
async fn hook_sees_every_transition_in_order_with_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hook = format!(
        "echo \"$ROUTEBACKUP_GROUP|$ROUTEBACKUP_PREVIOUS_STATE|$ROUTEBACKUP_STATE|$ROUTEBACKUP_LINK|$ROUTEBACKUP_INTERFACE|$ROUTEBACKUP_REASON|$ROUTEBACKUP_SEGMENTS\" >> {}",
        out.display()
    );
    let metrics = Arc::new(Metrics::new());
    let hooks = Hooks::new(&config(&hook, "5s"), metrics.clone());
    assert!(hooks.wants(GroupId(0)) && hooks.wants(GroupId(1)));
    for n in 0..5 {
        hooks.changed(GroupId(0), transition(n));
    }
    let lines = wait_for_lines(&out, 5).await;
    let want: Vec<String> = (0..5)
        .map(|n| format!("hq|primary|activating|lte|ppp0|reason {n}|10.20.0.0/16"))
        .collect();
    assert_eq!(lines, want);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(runs(&metrics, "ok"), "5");
}

#[tokio::test]
async fn a_hanging_hook_is_killed_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The first run hangs (with a child of its own); later ones write.
    let hook = format!(
        "case \"$ROUTEBACKUP_REASON\" in 'reason 0') sleep 917364 & wait;; *) echo \"$ROUTEBACKUP_REASON\" >> {};; esac",
        out.display()
    );
    let metrics = Arc::new(Metrics::new());
    let hooks = Hooks::new(&config(&hook, "300ms"), metrics.clone());
    let start = Instant::now();
    hooks.changed(GroupId(0), transition(0));
    hooks.changed(GroupId(0), transition(1));
    let lines = wait_for_lines(&out, 1).await;
    assert_eq!(lines, ["reason 1"]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "the second ran before the first was killed: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(runs(&metrics, "timeout"), "1");
    // The hook's own child went with it.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 917364"])
        .output();
    if let Ok(ps) = ps {
        assert!(
            ps.stdout.is_empty(),
            "the hook's child survived: {:?}",
            String::from_utf8_lossy(&ps.stdout)
        );
    }
}

#[tokio::test]
async fn more_than_sixteen_waiting_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let go = dir.path().join("go");
    // Every run waits for `go`, so the queue fills behind the first.
    let hook = format!(
        "while [ ! -e {go} ]; do sleep 0.01; done; echo \"$ROUTEBACKUP_REASON\" >> {out}",
        go = go.display(),
        out = out.display()
    );
    let metrics = Arc::new(Metrics::new());
    let hooks = Hooks::new(&config(&hook, "20s"), metrics.clone());
    hooks.changed(GroupId(0), transition(0));
    // Let the worker take the first one off the queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hooks.groups[GroupId(0)]
        .queue
        .waiting
        .lock()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the worker never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for n in 1..20 {
        hooks.changed(GroupId(0), transition(n));
    }
    std::fs::write(&go, "").unwrap();
    let lines = wait_for_lines(&out, 17).await;
    let want: Vec<String> = [0]
        .into_iter()
        .chain(4..20)
        .map(|n| format!("reason {n}"))
        .collect();
    assert_eq!(lines, want);
    assert!(metrics
        .render()
        .contains("routebackup_hooks_dropped_total{group=\"hq\"} 3"));
}

#[tokio::test]
async fn a_missing_program_is_counted_not_fatal() {
    let mut c = config("true", "1s");
    c.agent.on_change = vec!["/nonexistent/hook".into()];
    let metrics = Arc::new(Metrics::new());
    let hooks = Hooks::new(&c, metrics.clone());
    hooks.changed(GroupId(0), transition(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs(&metrics, "spawn_error") != "1" {
        assert!(Instant::now() < deadline, "{}", metrics.render());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn reconfigure_keeps_unchanged_hooks_and_follows_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hook = |tag: &str| format!("echo {tag} >> {}", out.display());
    let metrics = Arc::new(Metrics::new());
    let mut hooks = Hooks::new(&config(&hook("old"), "5s"), metrics.clone());
    // Group 0's argv changes; group 1 keeps its own; a vacant slot (a
    // removed group, as a reload lays it out) has no hook.
    let mut c = config(&hook("new"), "5s");
    c.groups.set(GroupId(1), None);
    hooks.reconfigure(&c);
    assert!(!hooks.wants(GroupId(1)));
    hooks.changed(GroupId(0), transition(0));
    assert_eq!(wait_for_lines(&out, 1).await, ["new"]);

    let mut hooks = Hooks::new(&config(&hook("x"), "5s"), metrics);
    let before = Arc::clone(&hooks.groups[GroupId(1)].queue);
    hooks.reconfigure(&config(&hook("y"), "5s"));
    let after = &hooks.groups[GroupId(1)].queue;
    assert!(
        Arc::ptr_eq(&before, after),
        "an unchanged group's worker was replaced"
    );
}
