//! What each group is steered to, as the engine's `Steer` and `Unsteer`
//! said. The executors whose work follows the steering (the fast path's
//! entries, the kernel routes, the neighbour follower) each keep their own
//! copy, updated by the same actions: none reads another's state.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;

use super::neighbours::NextHopKey;
use super::segments::steer_entry;
use crate::model::{Action, GroupId, SteerTarget};

/// What each steered group is steered to, and its segments.
pub(super) type Steering = HashMap<GroupId, (SteerTarget, Vec<IpNet>)>;

/// An executor whose work follows the steering.
pub(super) trait FollowsSteering {
    fn steer(&mut self, group: GroupId, to: &SteerTarget, segments: &[IpNet]);
    fn unsteer(&mut self, group: GroupId, segments: &[IpNet]);
}

/// Hands `action` to `executor` if it is a `Steer` or an `Unsteer`;
/// returns whether it was.
pub(super) fn dispatch(executor: &mut impl FollowsSteering, action: &Action) -> bool {
    match action {
        Action::Steer {
            group,
            target,
            segments,
        } => executor.steer(*group, target, segments),
        Action::Unsteer { group, segments } => executor.unsteer(*group, segments),
        _ => return false,
    }
    true
}

/// Takes in a `Steer`. Segments steered to the group's current target are
/// added to its own (a reload steers a segment added to a steered group
/// alone); another target replaces them.
pub(super) fn steer(steering: &mut Steering, group: GroupId, to: &SteerTarget, segments: &[IpNet]) {
    match steering.get_mut(&group) {
        Some((t, segs)) if t == to => {
            segs.extend(
                segments
                    .iter()
                    .filter(|p| !segs.contains(p))
                    .collect::<Vec<_>>(),
            );
        }
        _ => {
            steering.insert(group, (*to, segments.to_vec()));
        }
    }
}

/// Takes in an `Unsteer`; returns whether the group was steered.
pub(super) fn unsteer(steering: &mut Steering, group: GroupId, segments: &[IpNet]) -> bool {
    let Some((_, segs)) = steering.get_mut(&group) else {
        return false;
    };
    segs.retain(|p| !segments.contains(p));
    if segs.is_empty() {
        steering.remove(&group);
    }
    true
}

/// The next hops the steered segments use: those of Ethernet backups with
/// a gateway (see `segments::steer_entry`).
pub(super) fn next_hops(steering: &Steering) -> HashSet<NextHopKey> {
    steering
        .iter()
        .flat_map(|(g, (to, segments))| {
            segments
                .iter()
                .filter_map(|p| steer_entry(*g, to, p, |_| None).next_hop)
        })
        .collect()
}
