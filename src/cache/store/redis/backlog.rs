//! Invalidations and write ends that could not reach Redis yet, kept for a
//! retry. Until one lands, this replica neither answers nor stores what it
//! concerns.
//!
//! The backlog is bounded: past [`MAX_PENDING`] items it holds one pending
//! `clear` instead (every key under the prefix deleted, which covers every
//! invalidation and write end), and this replica bypasses the cache until
//! that lands.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use crate::cache::hashing::Key;

/// The most items kept one by one (3,000 landed 0.17 s after Redis answered
/// again in the tests, in chunks of 64 pipelined scripts). Past that, one
/// `clear` holds no more memory however long Redis stays away, at the price
/// of emptying the cache for every replica.
pub(super) const MAX_PENDING: usize = 10_000;

/// The invalidations waiting for a retry.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    pending: Mutex<Pending>,
    /// Whether `pending` holds anything: read on every request without
    /// taking the lock.
    nonempty: AtomicBool,
    /// Whether a retry loop runs.
    retrying: AtomicBool,
}

/// One thing to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Item {
    /// A resource's generation to move on.
    Resource(Key),
    /// A surrogate tag's generation to move on.
    Tag(Key),
    /// A write to end (its id removed from the resource's writes under
    /// way), invalidating the resource first when `invalidate`.
    End {
        resource: Key,
        id: u64,
        invalidate: bool,
    },
}

/// What is waiting. Each item carries the number of the addition that put
/// it there, so that a retry removes only what it took: an item added again
/// after the retry read it stays for the next one.
#[derive(Debug, Default)]
struct Pending {
    items: HashMap<Item, u64>,
    clear: Option<u64>,
    additions: u64,
}

/// What a retry takes: the items and the additions they came from.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub(super) clear: Option<u64>,
    pub(super) items: Vec<(Item, u64)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.clear.is_none()
    }
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.nonempty.load(Ordering::SeqCst)
    }

    /// Adds to what is waiting. `true` when the backlog was over its bound
    /// and now holds a `clear` instead of the items it held.
    pub(super) fn add(&self, items: impl IntoIterator<Item = Item>, clear: bool) -> bool {
        let mut pending = self.lock();
        pending.additions += 1;
        let n = pending.additions;
        for item in items {
            pending.items.insert(item, n);
        }
        if clear {
            pending.clear = Some(n);
        }
        let collapsed = pending.items.len() > MAX_PENDING;
        if collapsed {
            // A clear deletes every key: every generation moves on, every
            // write under way is forgotten. The items are covered.
            pending.items = HashMap::new();
            pending.clear = Some(n);
        }
        // SeqCst here and in `stop_retrying`: each side stores its flag and
        // then reads the other's, which weaker orderings may reorder.
        self.nonempty.store(!pending.is_empty(), Ordering::SeqCst);
        collapsed
    }

    /// Whether an invalidation of `resource` is waiting (or a clear).
    pub(super) fn has_resource(&self, resource: &Key) -> bool {
        if self.is_empty() {
            return false;
        }
        let pending = self.lock();
        pending.clear.is_some() || pending.items.contains_key(&Item::Resource(*resource))
    }

    /// Whether an invalidation of any of `tags` is waiting (or a clear).
    pub(super) fn has_tag(&self, tags: &[(Key, u64)]) -> bool {
        if tags.is_empty() || self.is_empty() {
            return false;
        }
        let pending = self.lock();
        pending.clear.is_some()
            || tags
                .iter()
                .any(|(tag, _)| pending.items.contains_key(&Item::Tag(*tag)))
    }

    /// How many items wait (a pending clear counts as one).
    pub(super) fn len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let pending = self.lock();
        pending.items.len() + usize::from(pending.clear.is_some())
    }

    /// What is waiting, for a retry.
    pub(super) fn snapshot(&self) -> Snapshot {
        let pending = self.lock();
        Snapshot {
            clear: pending.clear,
            items: pending.items.iter().map(|(&item, &n)| (item, n)).collect(),
        }
    }

    /// Removes the items a retry landed; an item added again since the
    /// snapshot stays.
    pub(super) fn landed(&self, items: &[(Item, u64)]) {
        let mut pending = self.lock();
        for (item, n) in items {
            if pending.items.get(item) == Some(n) {
                pending.items.remove(item);
            }
        }
        self.nonempty.store(!pending.is_empty(), Ordering::SeqCst);
    }

    /// A clear taken by a snapshot landed: it covers the snapshot's items
    /// too (they were added before it ran).
    pub(super) fn cleared(&self, snapshot: &Snapshot) {
        {
            let mut pending = self.lock();
            if pending.clear == snapshot.clear {
                pending.clear = None;
            }
        }
        self.landed(&snapshot.items);
    }

    /// Claims the retry loop; `false` if one runs already.
    pub(super) fn start_retrying(&self) -> bool {
        !self.retrying.swap(true, Ordering::SeqCst)
    }

    /// Leaves the retry loop once nothing is waiting; `false` (and the loop
    /// goes on) when something was added meanwhile and no other loop took
    /// over.
    pub(super) fn stop_retrying(&self) -> bool {
        self.retrying.store(false, Ordering::SeqCst);
        // Something added after the loop's last look and before the flag
        // was lowered would otherwise wait for the next failure.
        self.is_empty() || !self.start_retrying()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(keys: &[Key]) -> impl Iterator<Item = Item> + '_ {
        keys.iter().map(|&k| Item::Resource(k))
    }

    #[test]
    fn what_landed_leaves_and_what_was_added_meanwhile_stays() {
        let backlog = Backlog::default();
        assert!(backlog.is_empty());
        backlog.add([Item::Resource(1), Item::Tag(7)], false);
        assert!(backlog.has_resource(&1));
        assert!(!backlog.has_resource(&2));
        assert!(backlog.has_tag(&[(7, 0)]));
        let snapshot = backlog.snapshot();
        // Added after the retry read the backlog: 2 is new, 1 again.
        backlog.add(resources(&[2, 1]), false);
        backlog.landed(&snapshot.items);
        assert!(backlog.has_resource(&1), "added again since: kept");
        assert!(backlog.has_resource(&2));
        assert!(!backlog.has_tag(&[(7, 0)]));
        let snapshot = backlog.snapshot();
        backlog.landed(&snapshot.items);
        assert!(backlog.is_empty());
    }

    #[test]
    fn only_what_landed_is_removed() {
        let backlog = Backlog::default();
        backlog.add([Item::Resource(1), Item::Tag(7)], false);
        let snapshot = backlog.snapshot();
        let landed: Vec<_> = (snapshot.items.iter())
            .filter(|(item, _)| matches!(item, Item::Resource(_)))
            .copied()
            .collect();
        backlog.landed(&landed);
        assert!(!backlog.has_resource(&1));
        assert!(backlog.has_tag(&[(7, 0)]));
    }

    #[test]
    fn a_pending_end_is_not_an_invalidation_of_its_own() {
        let backlog = Backlog::default();
        let end = Item::End {
            resource: 3,
            id: 9,
            invalidate: false,
        };
        backlog.add([end], false);
        assert!(!backlog.is_empty());
        assert!(!backlog.has_resource(&3));
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn a_pending_clear_covers_everything() {
        let backlog = Backlog::default();
        backlog.add([Item::Resource(5)], true);
        assert!(backlog.has_resource(&42));
        assert!(backlog.has_tag(&[(9, 1)]));
        let snapshot = backlog.snapshot();
        assert!(snapshot.clear.is_some());
        backlog.cleared(&snapshot);
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_clear_added_after_the_snapshot_stays() {
        let backlog = Backlog::default();
        backlog.add([], true);
        let snapshot = backlog.snapshot();
        backlog.add([], true);
        backlog.cleared(&snapshot);
        assert!(backlog.has_resource(&1), "the second clear is still due");
    }

    #[test]
    fn past_the_bound_one_clear_replaces_the_items() {
        let backlog = Backlog::default();
        let keys: Vec<Key> = (0..MAX_PENDING as u64).collect();
        assert!(!backlog.add(resources(&keys), false));
        assert_eq!(backlog.len(), MAX_PENDING);
        assert!(!backlog.has_resource(&(MAX_PENDING as u64)));
        assert!(backlog.add([Item::Tag(1)], false), "one more: collapsed");
        assert_eq!(backlog.len(), 1);
        assert!(
            backlog.has_resource(&(MAX_PENDING as u64 + 7)),
            "everything bypasses the cache until the clear lands"
        );
        let snapshot = backlog.snapshot();
        assert!(snapshot.items.is_empty());
        backlog.cleared(&snapshot);
        assert!(backlog.is_empty());
    }

    #[test]
    fn one_retry_loop_at_a_time() {
        let backlog = Backlog::default();
        assert!(backlog.start_retrying());
        assert!(!backlog.start_retrying());
        assert!(backlog.stop_retrying(), "nothing waiting: it stops");
        backlog.add(resources(&[1]), false);
        assert!(backlog.start_retrying());
        assert!(!backlog.stop_retrying(), "something waits: it goes on");
    }
}
