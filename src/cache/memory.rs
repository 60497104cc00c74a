//! The in-memory store, on moka's concurrent cache: bounded, with a
//! time-to-live, safe to share between threads.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use moka::{policy::EvictionPolicy, sync::Cache};

use super::{
    entry::{Entry, Variant},
    key::Key,
    store::{Fill, Lookup, Store},
};

/// An entry and the generation of its resource at fill time.
#[derive(Clone)]
struct Stored {
    generation: u64,
    entry: Entry,
}

pub(crate) struct MemoryStore {
    entries: Cache<Key, Stored>,
    /// Generations of resources and surrogate tags.
    generations: Cache<Key, u64>,
    /// The source of fresh generations: every generation this store ever
    /// issues is larger than the ones before, so a record lost to eviction is
    /// replaced by a new, larger one and can never revive an old entry.
    next: AtomicU64,
    epoch: AtomicU64,
    time_to_live: Duration,
}

impl MemoryStore {
    pub(crate) fn new(time_to_live: Duration, max_entries: u64) -> Self {
        // LRU rather than moka's default TinyLFU: TinyLFU's admission may
        // refuse a new key when the cache is full, and a refused fill or a
        // refused generation record would turn every revalidation of a newly
        // written resource into a miss until its key became "popular". With
        // LRU the latest fill is always stored and the least recently used
        // entry goes.
        let entries = Cache::builder()
            .max_capacity(max_entries)
            .weigher(|_key, stored: &Stored| stored.entry.weight())
            .time_to_live(time_to_live)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        let generations = Cache::builder()
            .max_capacity(max_entries)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            entries,
            generations,
            next: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            time_to_live,
        }
    }

    fn fresh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    fn is_current(&self, variant: &Variant) -> bool {
        // RFC 9111 §4.2: never past the time-to-live, on a monotonic clock.
        variant.filled.elapsed() < self.time_to_live
            && variant
                .tags
                .iter()
                .all(|(tag, generation)| self.generations.get(tag) == Some(*generation))
    }

    /// Waits for moka's pending maintenance (evictions, counts).
    #[cfg(test)]
    pub(crate) fn sync(&self) {
        self.entries.run_pending_tasks();
        self.generations.run_pending_tasks();
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .field("generations", &self.generations.entry_count())
            .field("time_to_live", &self.time_to_live)
            .finish()
    }
}

impl Store for MemoryStore {
    fn lookup(&self, resource: &Key, key: &Key) -> Lookup {
        let generation = self.generations.get_with(*resource, || self.fresh());
        let epoch = self.epoch.load(Ordering::SeqCst);
        let entry = self
            .entries
            .get(key)
            .filter(|stored| stored.generation == generation)
            .and_then(|stored| stored.entry.retain(|v| self.is_current(v)));
        Lookup {
            generation,
            epoch,
            entry,
        }
    }

    fn fill(&self, fill: Fill) -> bool {
        // Read the tags' generations first, then check the epoch: a tag
        // invalidated after the request arrived shows in the epoch, one
        // invalidated after this read shows in the generation.
        let tags: Box<[(Key, u64)]> = fill
            .tags
            .iter()
            .map(|tag| (*tag, self.generations.get_with(*tag, || self.fresh())))
            .collect();
        if !tags.is_empty() && self.epoch.load(Ordering::SeqCst) != fill.epoch {
            return false;
        }
        // The check and the insert are not one atomic step, and need not
        // be: an invalidation between them leaves an entry whose generation
        // no lookup will match.
        if self.generations.get(&fill.resource) != Some(fill.generation) {
            return false;
        }
        let entry = Entry::with(fill.base.as_ref(), fill.variant.with_tags(tags));
        self.entries.insert(
            fill.key,
            Stored {
                generation: fill.generation,
                entry,
            },
        );
        true
    }

    fn invalidate(&self, keys: &[Key], tags: bool) {
        for key in keys {
            self.generations.invalidate(key);
        }
        if tags {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn clear(&self) {
        // moka: entries inserted before this call are never returned again.
        self.generations.invalidate_all();
        self.entries.invalidate_all();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn len(&self) -> u64 {
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use http::{Extensions, HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::cache::{entry::remember, key::default_vary};

    const RESOURCE: Key = [1; 16];
    const KEY: Key = [2; 16];
    const TAG: Key = [3; 16];

    fn variant() -> Variant {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"a\""));
        let (variant, _) = remember(
            StatusCode::OK,
            &headers,
            &Extensions::new(),
            &default_vary(),
            &[],
        )
        .unwrap();
        variant
    }

    fn fill(store: &MemoryStore, lookup: &Lookup, tags: Vec<Key>) -> bool {
        store.fill(Fill {
            resource: RESOURCE,
            key: KEY,
            generation: lookup.generation,
            epoch: lookup.epoch,
            variant: variant(),
            base: None,
            tags,
        })
    }

    fn store() -> MemoryStore {
        MemoryStore::new(Duration::from_secs(60), 100)
    }

    #[test]
    fn a_fill_is_used_until_its_resource_is_invalidated() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(lookup.entry.is_none());
        assert!(fill(&store, &lookup, vec![]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
        store.invalidate(&[RESOURCE], false);
        let after = store.lookup(&RESOURCE, &KEY);
        assert!(after.entry.is_none());
        assert!(after.generation > lookup.generation, "never reused");
    }

    #[test]
    fn a_fill_that_arrived_before_an_invalidation_stores_nothing() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        store.invalidate(&[RESOURCE], false);
        assert!(!fill(&store, &lookup, vec![]));
        // Even once the generation record exists again.
        let _ = store.lookup(&RESOURCE, &KEY);
        assert!(!fill(&store, &lookup, vec![]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn a_tagged_fill_is_refused_after_any_tag_invalidation_since_arrival() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        store.invalidate(&[TAG], true);
        assert!(!fill(&store, &lookup, vec![TAG]));
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![TAG]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
        store.invalidate(&[TAG], true);
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn an_evicted_generation_record_is_replaced_by_a_larger_one() {
        let store = MemoryStore::new(Duration::from_secs(60), 4);
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![]));
        // Other resources push the record out (LRU); their lookups create
        // generation records only, so the entry itself stays.
        for i in 0..64u8 {
            let _ = store.lookup(&[i + 10; 16], &[i + 100; 16]);
            store.sync();
        }
        assert!(store.entries.contains_key(&KEY), "the entry is still there");
        let after = store.lookup(&RESOURCE, &KEY);
        assert!(after.generation > lookup.generation);
        assert!(
            after.entry.is_none(),
            "a lost record never revives an entry"
        );
    }

    #[test]
    fn entries_past_the_time_to_live_are_not_returned() {
        let store = MemoryStore::new(Duration::from_millis(50), 100);
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn clear_forgets_entries_and_generations() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![]));
        store.clear();
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
        assert!(!fill(&store, &lookup, vec![]), "an in-flight fill is void");
    }
}
