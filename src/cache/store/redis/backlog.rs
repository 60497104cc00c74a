//! Invalidations that could not reach Redis yet, kept for a retry. Until
//! one lands, this replica neither answers nor stores what it concerns.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use crate::cache::hashing::Key;

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

/// What is waiting. Each key carries the number of the addition that put
/// it there, so that a retry removes only what it took: a key added again
/// after the retry read it stays for the next one.
#[derive(Debug, Default)]
pub(super) struct Pending {
    resources: HashMap<Key, u64>,
    tags: HashMap<Key, u64>,
    clear: Option<u64>,
    additions: u64,
}

/// One addition to the backlog.
#[derive(Debug, Default)]
pub(super) struct Add<'a> {
    pub(super) resources: &'a [Key],
    pub(super) tags: &'a [Key],
    pub(super) clear: bool,
}

/// What a retry takes: the keys and the additions they came from.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub(super) resources: Vec<Key>,
    pub(super) tags: Vec<Key>,
    pub(super) clear: bool,
    seen: Vec<(Kind, Key, u64)>,
    clear_seen: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Resource,
    Tag,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.tags.is_empty() && self.clear.is_none()
    }
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.nonempty.load(Ordering::SeqCst)
    }

    /// Adds to what is waiting.
    pub(super) fn add(&self, add: Add<'_>) {
        let mut pending = self.lock();
        pending.additions += 1;
        let n = pending.additions;
        for resource in add.resources {
            pending.resources.insert(*resource, n);
        }
        for tag in add.tags {
            pending.tags.insert(*tag, n);
        }
        if add.clear {
            pending.clear = Some(n);
        }
        // SeqCst here and in `stop_retrying`: each side stores its flag and
        // then reads the other's, which weaker orderings may reorder.
        self.nonempty.store(!pending.is_empty(), Ordering::SeqCst);
    }

    /// Whether an invalidation of `resource` is waiting (or a clear).
    pub(super) fn has_resource(&self, resource: &Key) -> bool {
        if self.is_empty() {
            return false;
        }
        let pending = self.lock();
        pending.clear.is_some() || pending.resources.contains_key(resource)
    }

    /// Whether an invalidation of any of `tags` is waiting (or a clear).
    pub(super) fn has_tag(&self, tags: &[(Key, u64)]) -> bool {
        if tags.is_empty() || self.is_empty() {
            return false;
        }
        let pending = self.lock();
        pending.clear.is_some() || tags.iter().any(|(tag, _)| pending.tags.contains_key(tag))
    }

    /// What is waiting, for a retry.
    pub(super) fn snapshot(&self) -> Snapshot {
        let pending = self.lock();
        let mut snapshot = Snapshot {
            clear: pending.clear.is_some(),
            clear_seen: pending.clear,
            ..Snapshot::default()
        };
        for (&key, &n) in &pending.resources {
            snapshot.resources.push(key);
            snapshot.seen.push((Kind::Resource, key, n));
        }
        for (&key, &n) in &pending.tags {
            snapshot.tags.push(key);
            snapshot.seen.push((Kind::Tag, key, n));
        }
        snapshot
    }

    /// Removes what a retry landed: the resources if `resources`, the tags
    /// if `tags`, the clear if `clear`; a key added again since the
    /// snapshot stays.
    pub(super) fn landed(&self, snapshot: &Snapshot, resources: bool, tags: bool, clear: bool) {
        let mut pending = self.lock();
        if clear && pending.clear == snapshot.clear_seen {
            pending.clear = None;
        }
        for &(kind, key, n) in &snapshot.seen {
            let (done, set) = match kind {
                Kind::Resource => (resources, &mut pending.resources),
                Kind::Tag => (tags, &mut pending.tags),
            };
            if done && set.get(&key) == Some(&n) {
                set.remove(&key);
            }
        }
        self.nonempty.store(!pending.is_empty(), Ordering::SeqCst);
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

    fn resources(keys: &[Key]) -> Add<'_> {
        Add {
            resources: keys,
            ..Add::default()
        }
    }

    #[test]
    fn what_landed_leaves_and_what_was_added_meanwhile_stays() {
        let backlog = Backlog::default();
        assert!(backlog.is_empty());
        backlog.add(Add {
            resources: &[1],
            tags: &[7],
            clear: false,
        });
        assert!(backlog.has_resource(&1));
        assert!(!backlog.has_resource(&2));
        assert!(backlog.has_tag(&[(7, 0)]));
        let snapshot = backlog.snapshot();
        // Added after the retry read the backlog: 2 is new, 1 again.
        backlog.add(resources(&[2, 1]));
        backlog.landed(&snapshot, true, true, false);
        assert!(backlog.has_resource(&1), "added again since: kept");
        assert!(backlog.has_resource(&2));
        assert!(!backlog.has_tag(&[(7, 0)]));
        let snapshot = backlog.snapshot();
        backlog.landed(&snapshot, true, true, false);
        assert!(backlog.is_empty());
    }

    #[test]
    fn only_what_landed_is_removed() {
        let backlog = Backlog::default();
        backlog.add(Add {
            resources: &[1],
            tags: &[7],
            clear: false,
        });
        let snapshot = backlog.snapshot();
        backlog.landed(&snapshot, true, false, false);
        assert!(!backlog.has_resource(&1));
        assert!(backlog.has_tag(&[(7, 0)]));
    }

    #[test]
    fn a_pending_clear_covers_everything() {
        let backlog = Backlog::default();
        backlog.add(Add {
            clear: true,
            ..Add::default()
        });
        assert!(backlog.has_resource(&42));
        assert!(backlog.has_tag(&[(9, 1)]));
        let snapshot = backlog.snapshot();
        assert!(snapshot.clear);
        backlog.landed(&snapshot, true, true, true);
        assert!(backlog.is_empty());
    }

    #[test]
    fn one_retry_loop_at_a_time() {
        let backlog = Backlog::default();
        assert!(backlog.start_retrying());
        assert!(!backlog.start_retrying());
        assert!(backlog.stop_retrying(), "nothing waiting: it stops");
        backlog.add(resources(&[1]));
        assert!(backlog.start_retrying());
        assert!(!backlog.stop_retrying(), "something waits: it goes on");
    }
}
