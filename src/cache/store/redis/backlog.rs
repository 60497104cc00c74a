//! Invalidations that could not reach Redis yet, kept for a retry. Until
//! one lands, this replica neither answers nor stores what it concerns.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use crate::cache::keys::Key;

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

/// What is waiting, taken out for a retry.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) resources: HashSet<Key>,
    pub(super) tags: HashSet<Key>,
    pub(super) clear: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.tags.is_empty() && !self.clear
    }
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.nonempty.load(Ordering::Acquire)
    }

    /// Adds to what is waiting.
    pub(super) fn add(&self, add: impl FnOnce(&mut Pending)) {
        let mut pending = self.lock();
        add(&mut pending);
        self.nonempty.store(!pending.is_empty(), Ordering::Release);
    }

    /// Whether an invalidation of `resource` is waiting (or a clear).
    pub(super) fn has_resource(&self, resource: &Key) -> bool {
        if self.is_empty() {
            return false;
        }
        let pending = self.lock();
        pending.clear || pending.resources.contains(resource)
    }

    /// Whether an invalidation of any of `tags` is waiting (or a clear).
    pub(super) fn has_tag(&self, tags: &[(Key, u64)]) -> bool {
        if tags.is_empty() || self.is_empty() {
            return false;
        }
        let pending = self.lock();
        pending.clear || tags.iter().any(|(tag, _)| pending.tags.contains(tag))
    }

    /// A copy of what is waiting, for a retry.
    pub(super) fn snapshot(&self) -> (Vec<Key>, Vec<Key>, bool) {
        let pending = self.lock();
        (
            pending.resources.iter().copied().collect(),
            pending.tags.iter().copied().collect(),
            pending.clear,
        )
    }

    /// Removes what a retry landed (what was added since stays).
    pub(super) fn landed(&self, resources: &[Key], tags: &[Key], clear: bool) {
        let mut pending = self.lock();
        if clear {
            pending.clear = false;
        }
        for resource in resources {
            pending.resources.remove(resource);
        }
        for tag in tags {
            pending.tags.remove(tag);
        }
        self.nonempty.store(!pending.is_empty(), Ordering::Release);
    }

    /// Claims the retry loop; `false` if one runs already.
    pub(super) fn start_retrying(&self) -> bool {
        !self.retrying.swap(true, Ordering::AcqRel)
    }

    /// Leaves the retry loop once nothing is waiting; `false` (and the loop
    /// goes on) when something was added meanwhile and no other loop took
    /// over.
    pub(super) fn stop_retrying(&self) -> bool {
        self.retrying.store(false, Ordering::Release);
        // Something added after the loop's last look and before the flag
        // was lowered would otherwise wait for the next failure.
        self.is_empty() || !self.start_retrying()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_landed_leaves_and_what_was_added_meanwhile_stays() {
        let backlog = Backlog::default();
        assert!(backlog.is_empty());
        backlog.add(|p| {
            p.resources.insert(1);
            p.tags.insert(7);
        });
        assert!(backlog.has_resource(&1));
        assert!(!backlog.has_resource(&2));
        assert!(backlog.has_tag(&[(7, 0)]));
        let (resources, tags, clear) = backlog.snapshot();
        backlog.add(|p| {
            p.resources.insert(2);
        });
        backlog.landed(&resources, &tags, clear);
        assert!(!backlog.has_resource(&1));
        assert!(backlog.has_resource(&2));
        assert!(!backlog.is_empty());
        backlog.landed(&[2], &[], false);
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_pending_clear_covers_everything() {
        let backlog = Backlog::default();
        backlog.add(|p| p.clear = true);
        assert!(backlog.has_resource(&42));
        assert!(backlog.has_tag(&[(9, 1)]));
        backlog.landed(&[], &[], true);
        assert!(backlog.is_empty());
    }

    #[test]
    fn one_retry_loop_at_a_time() {
        let backlog = Backlog::default();
        assert!(backlog.start_retrying());
        assert!(!backlog.start_retrying());
        assert!(backlog.stop_retrying(), "nothing waiting: it stops");
        backlog.add(|p| {
            p.resources.insert(1);
        });
        assert!(backlog.start_retrying());
        assert!(!backlog.stop_retrying(), "something waits: it goes on");
    }
}
