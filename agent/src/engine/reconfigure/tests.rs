//! Reload scenarios on the fake clock: each reload must do only what the
//! difference between the configs calls for.

use super::super::tests::{brief, config, iface, net, via, BASE, DSL, ETH0, ETH3, H, LTE};
use super::*;
use crate::model::{Event, GroupId, GroupState, LinkState};

/// `hq` on the hot-standby link `hot` (eth3, Ethernet, gateway .1), and a
/// second group `branch` on `lte`.
fn hot_config(gateway: &str) -> String {
    format!(
        "{}\n[[group]]\nname = \"branch\"\nsegments = [\"10.30.0.0/16\"]\nlinks = [\"lte\"]\n",
        BASE.replace("links = [\"lte\", \"dsl\"]", "links = [\"hot\"]")
            .replace(
                "driver = \"always-up\"",
                &format!("driver = \"always-up\"\ngateway = \"{gateway}\""),
            )
    )
}

/// The engine with `text` loaded, `branch` primary-up too, and `hq` steered
/// to `hot` (its three segments lost).
fn steered(text: &str) -> H {
    let mut h = H::standard_with(text, vec![via("10.30.0.0/16", ETH0)]);
    let acts = h.lose_all();
    assert_eq!(acts, vec![format!("steer g0 l2 if{ETH3}")]);
    assert_eq!(h.group(0).state, GroupState::Backup);
    h
}

/// Reloads `text` the way the daemon does (slotted on the running config).
fn reload(h: &mut H, running: &Config, text: &str) -> (Config, Vec<Action>) {
    let new = slotted(running, &config(text));
    h.now += 100;
    let actions = h.e.reconfigure(h.now, &new);
    (new, actions)
}

#[test]
fn unchanged_config_does_nothing() {
    let text = hot_config("192.0.2.1");
    let mut h = steered(&text);
    let running = config(&text);
    let (new, actions) = reload(&mut h, &running, &text);
    assert_eq!(new, running, "an unchanged config keeps every id");
    assert_eq!(actions, Vec::<Action>::new());
    assert!(!h.e.awaiting_routes());
    assert_eq!(h.group(0).state, GroupState::Backup);
}

#[test]
fn added_group_waits_for_the_redump_then_acts() {
    let text = hot_config("192.0.2.1");
    let mut h = steered(&text);
    let running = config(&text);
    let added = format!(
        "{text}\n[[group]]\nname = \"lab\"\nsegments = [\"10.40.0.0/16\"]\nlinks = [\"lte\"]\n"
    );
    let (new, actions) = reload(&mut h, &running, &added);
    assert_eq!(new.groups.slot_count(), 3);
    assert_eq!(new.groups[GroupId(2)].name, "lab");
    assert_eq!(brief(&actions), Vec::<String>::new(), "{actions:?}");
    assert!(h.e.awaiting_routes());
    // Its route arrives with the watcher's re-dump: nothing starts before
    // the dump is complete, and then nothing is lost.
    assert!(h.b(via("10.40.0.0/16", ETH0)).is_empty());
    assert!(h.b(Event::Synced).is_empty());
    assert!(!h.e.awaiting_routes());
    assert_eq!(h.group(2).state, GroupState::Primary);
    assert_eq!(h.group(0).state, GroupState::Backup);
    // A new group whose segment has no route starts its backup after the
    // re-dump, not before.
    let more = format!(
        "{added}\n[[group]]\nname = \"dark\"\nsegments = [\"10.50.0.0/16\"]\nlinks = [\"lte\"]\n"
    );
    let (_, actions) = reload(&mut h, &new, &more);
    assert_eq!(brief(&actions), Vec::<String>::new());
    assert_eq!(
        h.b(Event::Synced),
        vec![format!("up {LTE}"), "arm UpTimeout(0) 30s".to_string(),]
    );
}

#[test]
fn removed_steered_group_is_unsteered_and_its_link_released() {
    // hq steered to lte (a dialled link), branch primary.
    let text = format!(
        "{BASE}\n[[group]]\nname = \"branch\"\nsegments = [\"10.30.0.0/16\"]\nlinks = [\"dsl\"]\n"
    );
    let mut h = H::standard_with(&text, vec![via("10.30.0.0/16", ETH0)]);
    h.lose_all();
    h.ppp_up();
    assert_eq!(h.group(0).state, GroupState::Backup);
    let running = config(&text);
    // hq goes; branch moves from id 1 to index 0 of the file but keeps id 1.
    let without = text.replace(
        "[[group]]\nname = \"hq\"\nsegments = [\"10.20.0.0/16\", \"10.21.0.0/16\", \"10.22.0.0/16\"]\nlinks = [\"lte\", \"dsl\"]\n",
        "",
    );
    assert_eq!(config(&without).groups.slot_count(), 1);
    let (new, actions) = reload(&mut h, &running, &without);
    assert_eq!(new.groups.slot_count(), 2);
    assert!(new.groups.is_vacant(GroupId(0)), "slot 0 is vacant");
    assert_eq!(new.groups[GroupId(1)].name, "branch");
    assert_eq!(
        brief(&actions),
        vec![
            "unsteer g0",
            "cancel Activate(0)",
            "cancel Deactivate(0)",
            "cancel Retry(0)",
            &format!("down {LTE}"),
        ]
    );
    let status = h.e.status();
    assert_eq!(status.groups.len(), 1, "vacant slots are not shown");
    assert_eq!(status.groups[0].name, "branch");
    // Released like any link: down once the driver's `down` finished.
    assert_eq!(h.link(LTE).state, LinkState::Releasing);
    h.ev(Event::LinkReleased { link: LTE });
    assert_eq!(h.link(LTE).state, LinkState::Down);
    // A group added later takes the vacant slot.
    let again = format!(
        "{without}\n[[group]]\nname = \"lab\"\nsegments = [\"10.40.0.0/16\"]\nlinks = [\"lte\"]\n"
    );
    let (newer, _) = reload(&mut h, &new, &again);
    assert_eq!(newer.groups[GroupId(0)].name, "lab");
    assert_eq!(newer.groups[GroupId(1)].name, "branch");
}

#[test]
fn changed_gateway_resteers_without_touching_the_link() {
    let text = hot_config("192.0.2.1");
    let mut h = steered(&text);
    let running = config(&text);
    let (_, actions) = reload(&mut h, &running, &hot_config("192.0.2.9"));
    assert_eq!(brief(&actions), vec![format!("steer g0 l2 if{ETH3}")]);
    let Some(Action::Steer {
        target, segments, ..
    }) = actions.iter().find(|a| matches!(a, Action::Steer { .. }))
    else {
        unreachable!()
    };
    assert_eq!(target.gateway_v4, Some("192.0.2.9".parse().unwrap()));
    assert_eq!(segments.len(), 3);
    assert_eq!(h.group(0).state, GroupState::Backup);
}

#[test]
fn segment_added_to_a_steered_group_is_steered_alone() {
    let text = hot_config("192.0.2.1");
    let mut h = steered(&text);
    let running = config(&text);
    let more = text.replace("\"10.22.0.0/16\"]", "\"10.22.0.0/16\", \"10.23.0.0/16\"]");
    let (_, actions) = reload(&mut h, &running, &more);
    assert_eq!(brief(&actions), vec![format!("steer g0 l2 if{ETH3}")]);
    let steered: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Steer { segments, .. } => Some(segments.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steered, vec![vec![net("10.23.0.0/16")]]);
    assert_eq!(h.group(0).segments.len(), 4);
    assert!(h.group(0).segments.iter().all(|s| s.steered));
    // The re-dump finds no route for it either: still steered, no flap.
    assert!(h.b(Event::Synced).is_empty());
    assert_eq!(h.group(0).state, GroupState::Backup);

    // Removing a segment unsteers just it.
    let (_, actions) = reload(&mut h, &config(&more), &text);
    let unsteered: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Unsteer { segments, .. } => Some(segments.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(unsteered, vec![vec![net("10.23.0.0/16")]]);
    assert_eq!(brief(&actions), vec!["unsteer g0"]);
}

#[test]
fn removed_link_in_use_goes_down_after_its_group_moved_on() {
    // hq on lte (up, steered); the reload leaves it only dsl.
    let mut h = H::standard(BASE);
    h.lose_all();
    h.ppp_up();
    assert_eq!(h.group(0).state, GroupState::Backup);
    let running = config(BASE);
    let text = BASE
        .replace(
            "[[link]]\nname = \"lte\"\ninterface = \"ppp0\"\ndriver = \"pppd\"\npeer = \"lte\"\n",
            "",
        )
        .replace("links = [\"lte\", \"dsl\"]", "links = [\"dsl\"]");
    let (new, actions) = reload(&mut h, &running, &text);
    assert!(new.links.is_vacant(LTE), "lte's slot is vacant");
    assert_eq!(new.links[DSL].name, "dsl");
    assert_eq!(new.groups[GroupId(0)].links, vec![DSL]);
    assert_eq!(
        brief(&actions),
        vec![
            "unsteer g0".to_string(),
            "up 1".to_string(),
            "arm UpTimeout(1) 30s".to_string(),
            format!("down {LTE}"),
        ]
    );
    assert_eq!(h.group(0).state, GroupState::Activating);
    assert_eq!(h.group(0).active_link.as_deref(), Some("dsl"));
}

#[test]
fn changed_driver_replaces_the_link_in_a_new_slot() {
    let running = config(BASE);
    let text = BASE.replace("driver = \"interface\"", "driver = \"always-up\"");
    let new = slotted(&running, &config(&text));
    assert!(new.links.is_vacant(DSL), "the old dsl's slot is vacant");
    assert_eq!(new.links[LinkId(3)].name, "dsl");
    assert_eq!(new.groups[GroupId(0)].links, vec![LTE, LinkId(3)]);
    // The slot it left is reused by a link added in a later reload.
    let more =
        format!("{text}\n[[link]]\nname = \"wg\"\ninterface = \"wg0\"\ndriver = \"always-up\"\n");
    let newer = slotted(&new, &config(&more));
    assert_eq!(newer.links[DSL].name, "wg");
    let mut h = H::standard(BASE);
    assert!(h.b(iface(ETH3, "eth3", true)).is_empty());
    let actions = h.e.reconfigure(h.now, &new);
    assert_eq!(brief(&actions), Vec::<String>::new());
    assert_eq!(h.e.status().links.len(), 3);
}
