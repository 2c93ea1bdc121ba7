//! Verifying a backup link before steering (`verify`), with a fake clock.

use super::{brief, notices, BASE, DSL, H, LTE, PPP0};
use crate::model::*;

fn verified_lte() -> H {
    H::standard(&BASE.replace(
        "peer = \"lte\"",
        "peer = \"lte\"\nverify = { target = \"192.0.2.1\", timeout = \"3s\" }",
    ))
}

fn result(seq: u64, ok: bool) -> Event {
    Event::ProbeResult {
        group: GroupId(0),
        ifindex: PPP0,
        target: "192.0.2.1".parse().unwrap(),
        seq,
        ok,
    }
}

/// lte dialled and ready: the verification probe goes out, no steering yet.
fn up_and_verifying(h: &mut H) {
    assert_eq!(
        h.lose_all(),
        vec![format!("up {LTE}"), "arm UpTimeout(0) 30s".into()]
    );
    let a = h.ppp_up();
    assert_eq!(
        a,
        vec![
            "cancel UpTimeout(0)".to_string(),
            format!("probe g0 192.0.2.1 if{PPP0} #1"),
            "arm Verify(0) 3s".into()
        ]
    );
    let n = notices(&h.last);
    assert!(
        n.iter()
            .any(|n| n.contains("link lte is up; verifying it: probe to 192.0.2.1 via ppp0")),
        "{n:?}"
    );
    assert_eq!(h.group(0).state, GroupState::Activating);
}

#[test]
fn an_answer_lets_the_group_steer() {
    let mut h = verified_lte();
    up_and_verifying(&mut h);
    assert_eq!(
        h.b(result(1, true)),
        vec![
            "cancel Verify(0)".to_string(),
            format!("steer g0 l{LTE} if{PPP0}")
        ]
    );
    assert_eq!(h.group(0).state, GroupState::Backup);
    // A late timer fire changes nothing.
    assert!(h.b(Event::TimerFired(Timer::Verify(LTE))).is_empty());
}

#[test]
fn no_answer_fails_the_attempt_and_the_next_link_is_tried() {
    for fail in [result(1, false), Event::TimerFired(Timer::Verify(LTE))] {
        let mut h = verified_lte();
        up_and_verifying(&mut h);
        let a = h.ev(fail.clone());
        let b = brief(&a);
        assert!(b.contains(&format!("down {LTE}")), "{fail:?}: {b:?}");
        assert!(b.contains(&format!("up {DSL}")), "{fail:?}: {b:?}");
        assert!(!b.iter().any(|x| x.starts_with("steer")), "{b:?}");
        assert_eq!(
            h.link(LTE).last_error.as_deref(),
            Some("verify probe to 192.0.2.1 via ppp0 got no answer")
        );
        assert_eq!(h.link(LTE).attempts, 1);
        assert_eq!(h.group(0).active_link.as_deref(), Some("dsl"));
        // The other report of the same verification is ignored.
        let other = match fail {
            Event::ProbeResult { .. } => Event::TimerFired(Timer::Verify(LTE)),
            _ => result(1, false),
        };
        let late = h.b(other);
        assert!(late.is_empty(), "{late:?}");
    }
}

#[test]
fn a_new_session_is_verified_again() {
    let mut h = verified_lte();
    up_and_verifying(&mut h);
    h.b(result(1, true));
    // ppp0 drops: the group moves on to dsl, which does not come up; the
    // round wraps around to lte, whose new session must pass a new probe.
    let a = h.b(super::iface(PPP0, "ppp0", false));
    assert_eq!(
        a,
        vec![
            format!("down {LTE}"),
            format!("unsteer g0"),
            format!("up {DSL}"),
            "arm UpTimeout(1) 30s".into()
        ]
    );
    h.b(Event::LinkReleased { link: LTE });
    let a = h.b(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert!(a.contains(&format!("up {LTE}")), "{a:?}");
    let a = h.ppp_up();
    assert_eq!(
        a,
        vec![
            "cancel UpTimeout(0)".to_string(),
            format!("probe g0 192.0.2.1 if{PPP0} #2"),
            "arm Verify(0) 3s".into()
        ]
    );
}

#[test]
fn primary_back_while_verifying_releases_the_link_and_voids_the_probe() {
    let mut h = verified_lte();
    up_and_verifying(&mut h);
    let a = h.b(super::via("10.20.0.0/16", super::ETH0));
    assert!(a.contains(&"cancel Verify(0)".to_string()), "{a:?}");
    assert!(a.contains(&format!("down {LTE}")), "{a:?}");
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert!(h.b(result(1, true)).is_empty(), "a void verification");
}
