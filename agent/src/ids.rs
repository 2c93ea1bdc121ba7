//! Typed ids of groups and links, and the slot vectors they index.
//!
//! A `GroupId` is the position of a `[[group]]`, a `LinkId` that of a
//! `[[link]]`; both stay put across reloads (see `engine::reconfigure`,
//! "Ids stay stable: slots"). They are distinct types so that a group id
//! cannot be handed where a link id is meant. [`Slots`] holds one entry per
//! id, and a slot whose entry a reload removed is *vacant* (`None`), which
//! its iterators skip.

use std::fmt;
use std::marker::PhantomData;

/// An id that indexes a [`Slots`].
pub trait SlotId: Copy {
    fn from_index(index: usize) -> Self;
    fn index(self) -> usize;
}

macro_rules! slot_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub usize);

        impl $name {
            /// The position in the config and in slot vectors.
            pub const fn index(self) -> usize {
                self.0
            }
        }

        impl SlotId for $name {
            fn from_index(index: usize) -> Self {
                $name(index)
            }
            fn index(self) -> usize {
                self.0
            }
        }

        /// The bare number, as log lines have always shown it (`Timer`s
        /// and actions are logged with `{:?}`: `Activate(0)`).
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

slot_id!(
    /// A `[[group]]`'s slot in the config (also its slot in the `stats` map).
    GroupId
);
slot_id!(
    /// A `[[link]]`'s slot in the config.
    LinkId
);

/// One entry per id; a vacant slot (`None`) keeps the ids after it in place.
#[derive(Clone, Debug, PartialEq)]
pub struct Slots<I, T> {
    slots: Vec<Option<T>>,
    id: PhantomData<fn() -> I>,
}

impl<I, T> Default for Slots<I, T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            id: PhantomData,
        }
    }
}

impl<I: SlotId, T> Slots<I, T> {
    /// How many slots there are, vacant ones included: every id is below it.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The entry at `id`; None when the slot is vacant or beyond the end.
    pub fn get(&self, id: I) -> Option<&T> {
        self.slots.get(id.index()).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, id: I) -> Option<&mut T> {
        self.slots.get_mut(id.index()).and_then(Option::as_mut)
    }

    pub fn is_vacant(&self, id: I) -> bool {
        self.get(id).is_none()
    }

    /// The occupied slots with their ids, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (I, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| (I::from_index(i), v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (I, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|v| (I::from_index(i), v)))
    }

    /// The entries of the occupied slots, in id order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }

    /// Every id below `slot_count`, vacant ones included. The iterator does
    /// not borrow the slots, so the loop body may change them.
    pub fn all_ids(&self) -> impl Iterator<Item = I> {
        (0..self.slots.len()).map(I::from_index)
    }

    /// Puts `entry` (None: vacates) at `id`, adding vacant slots up to it
    /// (vacating beyond the end changes nothing).
    pub fn set(&mut self, id: I, entry: Option<T>) {
        if self.slots.len() <= id.index() {
            if entry.is_none() {
                return;
            }
            self.slots.resize_with(id.index() + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(id.index()) {
            *slot = entry;
        }
    }

    /// The entries of the occupied slots, in id order.
    pub fn into_values(self) -> impl Iterator<Item = T> {
        self.slots.into_iter().flatten()
    }

    /// The same slots, each occupied one holding `f` of its entry.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Slots<I, U> {
        Slots {
            slots: self.slots.iter().map(|s| s.as_ref().map(&mut f)).collect(),
            id: PhantomData,
        }
    }

    /// Drops the slots from `count` on.
    pub fn truncate(&mut self, count: usize) {
        self.slots.truncate(count);
    }

    /// Drops trailing vacant slots: they keep no id in place.
    pub fn trim(&mut self) {
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
    }
}

impl<I, T> FromIterator<T> for Slots<I, T> {
    fn from_iter<It: IntoIterator<Item = T>>(iter: It) -> Self {
        Slots {
            slots: iter.into_iter().map(Some).collect(),
            id: PhantomData,
        }
    }
}

impl<I, T> FromIterator<Option<T>> for Slots<I, T> {
    fn from_iter<It: IntoIterator<Item = Option<T>>>(iter: It) -> Self {
        Slots {
            slots: iter.into_iter().collect(),
            id: PhantomData,
        }
    }
}

impl<I, T> From<Vec<T>> for Slots<I, T> {
    fn from(entries: Vec<T>) -> Self {
        entries.into_iter().collect()
    }
}

/// The entry at `id`; panics on a vacant slot (tests, and callers that
/// hold an id they just got from these slots).
impl<I: SlotId, T> std::ops::Index<I> for Slots<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        self.get(id).expect("an occupied slot")
    }
}

impl<I: SlotId, T> std::ops::IndexMut<I> for Slots<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        self.get_mut(id).expect("an occupied slot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vacant_slots_keep_ids_and_are_skipped() {
        let mut s: Slots<LinkId, &str> = vec!["a", "b", "c"].into();
        s.set(LinkId(1), None);
        assert_eq!(s.slot_count(), 3);
        assert!(s.is_vacant(LinkId(1)));
        assert_eq!(s.get(LinkId(2)), Some(&"c"));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(LinkId(0), &"a"), (LinkId(2), &"c")]
        );
        s.set(LinkId(2), None);
        s.trim();
        assert_eq!(s.slot_count(), 1);
        s.set(LinkId(3), Some("d"));
        assert_eq!(s.slot_count(), 4);
        assert_eq!(s.all_ids().count(), 4);
        assert_eq!(s.values().copied().collect::<Vec<_>>(), vec!["a", "d"]);
        assert_eq!(LinkId(3).to_string(), "3");
    }
}
