//! Tests of the timers and link bookkeeping around outages: the `pending`
//! state, the retry backoff per outage, attempt ids, release and readiness.

use super::tests::*;
use crate::model::*;

#[test]
fn backoff_restarts_for_every_new_outage() {
    let mut h = H::standard(BASE);
    assert_eq!(h.lose_all(), ["up 0", "arm UpTimeout(0) 30s"]);
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    let out = h.b(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(out.last().map(String::as_str), Some("arm Retry(0) 5s"));
    h.ev(Event::TimerFired(Timer::Retry(0)));
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

#[test]
fn a_new_outage_after_activating_gave_up_also_starts_fresh() {
    let mut h = H::standard(BASE);
    h.lose_all();
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    h.ev(Event::TimerFired(Timer::UpTimeout(DSL)));
    h.ev(Event::TimerFired(Timer::Retry(0)));
    // Primary back while the second round is still trying lte.
    h.ev(via("10.20.0.0/16", ETH0));
    assert_eq!(h.group(0).state, GroupState::Primary);
    h.ev(del("10.20.0.0/16"));
    h.ev(Event::TimerFired(Timer::UpTimeout(LTE)));
    let out = h.b(Event::TimerFired(Timer::UpTimeout(DSL)));
    assert_eq!(out.last().map(String::as_str), Some("arm Retry(0) 5s"));
}
