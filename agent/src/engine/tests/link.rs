//! Tests of the timers and link bookkeeping around outages: the `pending`
//! state, the retry backoff per outage, attempt ids, release and readiness.

use super::*;
use crate::model::*;

#[test]
fn backoff_restarts_for_every_new_outage() {
    let mut h = H::standard(BASE);
    assert_eq!(h.lose_all(), ["up 0", "arm UpTimeout(0) 30s"]);
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    let out = h.b(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(out.last().map(String::as_str), Some("arm Retry(0) 5s"));
    h.ev(Event::TimerFired(Timer::Retry(GroupId(0))));
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    let out = h.b(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(out.last().map(String::as_str), Some("arm Retry(0) 10s"));
    assert_eq!(h.b(via("10.20.0.0/16", ETH0)), ["cancel Retry(0)"]);

    // A new outage: the first attempt at once, then retry_interval again.
    assert_eq!(h.b(del("10.20.0.0/16")), ["up 0", "arm UpTimeout(0) 30s"]);
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    let out = h.b(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(out.last().map(String::as_str), Some("arm Retry(0) 5s"));
}

/// Applies `ev` and answers every `LinkDown` it asks for as a driver does
/// (`LinkReleased`); returns the brief actions of `ev` itself.
fn step(h: &mut H, ev: Event) -> Vec<String> {
    let out = h.ev(ev);
    for a in &out {
        if let Action::LinkDown { link } = a {
            h.ev(Event::LinkReleased { link: *link });
        }
    }
    brief(&out)
}

#[test]
fn a_new_outage_after_activating_gave_up_also_starts_fresh() {
    let mut h = H::standard(BASE);
    h.lose_all();
    step(&mut h, Event::TimerFired(Timer::UpTimeout(LTE)));
    step(&mut h, Event::TimerFired(Timer::UpTimeout(DSL)));
    step(&mut h, Event::TimerFired(Timer::Retry(GroupId(0))));
    // Primary back while the second round is still trying lte.
    step(&mut h, via("10.20.0.0/16", ETH0));
    assert_eq!(h.group(0).state, GroupState::Primary);
    assert_eq!(
        step(&mut h, del("10.20.0.0/16")),
        ["up 0", "arm UpTimeout(0) 30s"]
    );
    step(&mut h, Event::TimerFired(Timer::UpTimeout(LTE)));
    let out = step(&mut h, Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(out.last().map(String::as_str), Some("arm Retry(0) 5s"));
}

#[test]
fn a_late_failure_report_of_an_earlier_attempt_is_ignored() {
    let mut h = H::standard(BASE);
    h.lose_all();
    let first = h.e.current_attempt(LTE);
    // lte times out, dsl too; the retry dials lte again.
    step(&mut h, Event::TimerFired(Timer::UpTimeout(LTE)));
    step(&mut h, Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(
        step(&mut h, Event::TimerFired(Timer::Retry(GroupId(0)))),
        ["up 0", "arm UpTimeout(0) 30s"]
    );
    let second = h.e.current_attempt(LTE);
    assert!(second > first);
    // The first attempt's pppd exits only now: not about the second attempt.
    let out = h.ev(Event::LinkFailed {
        link: LTE,
        attempt: first,
        error: "pppd exited with status 8".into(),
    });
    assert_eq!(brief(&out), Vec::<String>::new());
    assert!(
        notices(&out)
            .join(" ")
            .contains("ignoring a report of attempt"),
        "{out:?}"
    );
    assert_eq!(h.link(LTE).state, LinkState::Connecting);
    assert_eq!(h.group(0).active_link.as_deref(), Some("lte"));
    // The second attempt succeeds.
    assert_eq!(h.ppp_up(), ["cancel UpTimeout(0)", "steer g0 l0 if10"]);
    // Its own failure report counts.
    let out = h.b(Event::LinkFailed {
        link: LTE,
        attempt: second,
        error: "pppd exited with status 16".into(),
    });
    assert_eq!(out[..2], ["down 0".to_string(), "unsteer g0".to_string()]);
}

/// hq and "b2" share lte; both give the link up at once when their primary
/// is back.
fn shared() -> H {
    let text = format!(
        "{}\n[[group]]\nname = \"b2\"\nsegments = [\"10.40.0.0/16\"]\nlinks = [\"lte\"]\ndeactivate_delay = \"0s\"\n",
        BASE.replace(
            "links = [\"lte\", \"dsl\"]",
            "links = [\"lte\", \"dsl\"]\ndeactivate_delay = \"0s\""
        )
    );
    H::standard_with(
        &text,
        vec![iface(ETH0, "eth0", true), via("10.40.0.0/16", ETH0)],
    )
}

#[test]
fn a_link_being_released_is_not_used_until_its_down_finished() {
    let mut h = shared();
    h.lose_all();
    h.ppp_up();
    assert_eq!(h.group(0).state, GroupState::Backup);
    // hq's primary is back: lte is released.
    assert_eq!(h.b(via("10.20.0.0/16", ETH0)), ["unsteer g0", "down 0"]);
    assert_eq!(h.link(LTE).state, LinkState::Releasing);
    // b2 loses its primary while ppp0 still looks up: it must not steer into
    // a link whose `down` is under way.
    let out = h.ev(del("10.40.0.0/16"));
    assert_eq!(brief(&out), Vec::<String>::new());
    assert!(
        notices(&out).join(" ").contains("to finish going down"),
        "{out:?}"
    );
    assert_eq!(h.group(1).state, GroupState::Activating);
    assert!(!h.group(1).segments[0].steered);
    // The down finished, yet ppp0 is still there (not yet removed, or an
    // interface that outlives its process): a leftover, so lte is dialled
    // again and only counts once ppp0 was seen gone and back.
    assert_eq!(
        h.b(Event::LinkReleased { link: LTE }),
        ["up 0", "arm UpTimeout(0) 30s"]
    );
    assert_eq!(h.link(LTE).state, LinkState::Connecting);
    assert!(h.b(iface(PPP0, "ppp0", true)).is_empty());
    assert!(h.b(Event::InterfaceDelete(PPP0)).is_empty());
    assert_eq!(h.ppp_up(), ["cancel UpTimeout(0)", "steer g1 l0 if10"]);
}

#[test]
fn a_released_command_link_whose_interface_outlives_it_is_not_ready_at_once() {
    let mut h = H::standard(&BASE.replace(
        "links = [\"lte\", \"dsl\"]",
        "links = [\"lte\", \"dsl\"]\ndeactivate_delay = \"0s\"",
    ));
    h.lose_all();
    h.ppp_up();
    h.ev(via("10.20.0.0/16", ETH0));
    assert_eq!(h.b(Event::LinkReleased { link: LTE }), Vec::<String>::new());
    assert_eq!(h.link(LTE).state, LinkState::Down);
    // ppp0 stays (its process is gone). A new outage must dial, not steer
    // into the leftover.
    assert_eq!(h.b(del("10.20.0.0/16")), ["up 0", "arm UpTimeout(0) 30s"]);
    assert!(!h.group(0).segments[0].steered);
}

#[test]
fn readiness_needs_an_address_in_the_links_family() {
    let mut h = H::standard(BASE);
    h.lose_all();
    assert!(h.b(iface(PPP0, "ppp0", true)).is_empty());
    // hq's segments are IPv4: an IPv6 address is not enough.
    let ll = addr(PPP0, "fe80::1/64", None);
    assert!(h.b(Event::AddressAdd(ll)).is_empty());
    assert_eq!(h.link(LTE).state, LinkState::Connecting);
    let v4 = addr(PPP0, "10.64.0.1/32", Some("10.64.0.2"));
    assert_eq!(
        h.b(Event::AddressAdd(v4)),
        ["cancel UpTimeout(0)", "steer g0 l0 if10"]
    );
}
