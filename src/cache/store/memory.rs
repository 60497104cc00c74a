//! The in-memory store: entries in moka's concurrent cache (bounded, with a
//! time-to-live), generations in a fixed table of atomic counters.

use std::{
    fmt,
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use moka::{policy::EvictionPolicy, sync::Cache};

use super::{Answer, Attach, Begin, Fill, FillDone, Lookup, Query, Setup, Store, WriteId};
use crate::cache::{
    entry::{Entry, Variant},
    hashing::Key,
};

/// An entry and the generation of its resource at fill time.
#[derive(Clone)]
struct Stored {
    generation: u64,
    entry: Entry,
}

/// Hashes a [`Key`] to itself for moka's table: keys are already outputs of
/// a keyed pseudorandom function, evenly spread, so hashing them again (moka
/// defaults to SipHash) would only cost time on every lookup.
#[derive(Clone, Copy, Debug, Default)]
struct KeyIsHash;

#[derive(Default)]
struct Identity(u64);

impl BuildHasher for KeyIsHash {
    type Hasher = Identity;

    fn build_hasher(&self) -> Identity {
        Identity(0)
    }
}

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    // Only `u64` keys are hashed here; anything else is folded in anyway.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// The in-memory store's configuration: attached to a cache, it becomes a
/// [`MemoryStore`] bounded by the cache's `max_entries`.
#[derive(Debug)]
pub(crate) struct InMemory;

impl Attach for InMemory {
    fn attach(self: Box<Self>, settings: &Setup) -> Arc<dyn Store> {
        Arc::new(MemoryStore::new(
            settings.time_to_live,
            settings.max_entries,
        ))
    }
}

pub(crate) struct MemoryStore {
    entries: Cache<Key, Stored, KeyIsHash>,
    /// Generations of resources and surrogate tags, one slot per key hash
    /// (keys are keyed-PRF outputs, so slots are evenly used).
    ///
    /// A table rather than a record per key: nothing to evict, so no
    /// generation is ever lost and none can be refused admission, and a read
    /// is one atomic load. Keys that share a slot share invalidations: a
    /// write to one costs the others a miss, never a stale hit. With two to
    /// four slots per entry, an invalidation spuriously costs a full cache
    /// at most half an entry (and 8 bytes a slot: 2 MiB for 100,000
    /// entries).
    generations: Box<[AtomicU64]>,
    /// Writes under way, per generation slot: fills of a slot with a write
    /// under way are refused.
    writing: Box<[AtomicU32]>,
    /// The source of fresh generations: every generation this store ever
    /// issues is larger than the ones before, so no slot ever returns to a
    /// value a stored entry was filled at.
    next: AtomicU64,
    /// Bumped by every surrogate-tag invalidation.
    tag_epoch: AtomicU64,
    time_to_live: Duration,
}

/// The longest time-to-live moka takes: entries kept longer than that
/// (`Duration::MAX`, say) are kept that long.
const LONGEST_TIME_TO_LIVE: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

impl MemoryStore {
    pub(crate) fn new(time_to_live: Duration, max_entries: u64) -> Self {
        // LRU rather than moka's default TinyLFU: TinyLFU's admission may
        // refuse a new key when the cache is full, which would turn every
        // revalidation of a newly written resource into a miss until its key
        // became "popular". With LRU the latest fill is always stored and the
        // least recently used entry goes.
        let entries = Cache::builder()
            .max_capacity(max_entries)
            .weigher(|_key, stored: &Stored| stored.entry.weight())
            // moka refuses (panics on) more than 1,000 years.
            .time_to_live(time_to_live.min(LONGEST_TIME_TO_LIVE))
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(KeyIsHash);
        // Two to four slots per entry, at least 4,096 and at most 2^22
        // (32 MiB).
        let slots = (max_entries.saturating_mul(2))
            .clamp(4096, 1 << 22)
            .next_power_of_two();
        let generations = (0..slots).map(|_| AtomicU64::new(0)).collect();
        let writing = (0..slots).map(|_| AtomicU32::new(0)).collect();
        Self {
            entries,
            generations,
            writing,
            next: AtomicU64::new(1),
            tag_epoch: AtomicU64::new(0),
            time_to_live,
        }
    }

    fn index(&self, key: &Key) -> usize {
        // The length is a power of two.
        (*key as usize) & (self.generations.len() - 1)
    }

    fn slot(&self, key: &Key) -> &AtomicU64 {
        &self.generations[self.index(key)]
    }

    fn writing(&self, key: &Key) -> &AtomicU32 {
        &self.writing[self.index(key)]
    }

    fn generation(&self, key: &Key) -> u64 {
        self.slot(key).load(Ordering::SeqCst)
    }

    fn bump(&self, key: &Key) {
        self.renew(self.slot(key));
    }

    /// Moves a slot to a fresh generation.
    fn renew(&self, slot: &AtomicU64) {
        let fresh = self.next.fetch_add(1, Ordering::SeqCst);
        slot.store(fresh, Ordering::SeqCst);
    }

    fn is_current(&self, newest: bool, variant: &Variant) -> bool {
        // RFC 9111 §4.2: never past the time-to-live, on a monotonic clock.
        // The newest variant was stored with the entry, whose age moka has
        // just checked against the same time-to-live.
        (newest || variant.age() < self.time_to_live)
            && variant
                .tags
                .iter()
                .all(|(tag, generation)| self.generation(tag) == *generation)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .field("generation_slots", &self.generations.len())
            .field("time_to_live", &self.time_to_live)
            .finish()
    }
}

impl MemoryStore {
    #[cfg(test)]
    fn lookup(&self, resource: &Key, key: &Key) -> Lookup {
        self.read(resource, key, true)
    }

    /// The generations, and the entry if `entry` (a request that can
    /// neither be answered nor stored does not need it).
    fn read(&self, resource: &Key, key: &Key, entry: bool) -> Lookup {
        let generation = self.generation(resource);
        let tag_epoch = self.tag_epoch.load(Ordering::SeqCst);
        let entry = entry
            .then(|| self.entries.get(key))
            .flatten()
            .filter(|stored| stored.generation == generation)
            .and_then(|stored| stored.entry.retain(|i, v| self.is_current(i == 0, v)));
        Lookup {
            generation,
            tag_epoch,
            entry,
            session: 0,
        }
    }

    fn try_fill(&self, fill: Fill) -> bool {
        // Read the tags' generations first, then check the epoch: a tag
        // invalidated after the request arrived shows in the epoch, one
        // invalidated after this read shows in the generation.
        let tags: Box<[(Key, u64)]> = fill
            .tags
            .iter()
            .map(|tag| (*tag, self.generation(tag)))
            .collect();
        if !tags.is_empty() && self.tag_epoch.load(Ordering::SeqCst) != fill.tag_epoch {
            return false;
        }
        // No fill while a write is under way; the generation is read after
        // that check: a write that ended since the request arrived has moved
        // it on before it let fills happen again (see `finish_write`).
        if self.writing(&fill.resource).load(Ordering::SeqCst) != 0 {
            return false;
        }
        // The checks and the insert are not one atomic step, and need not
        // be: an invalidation between them leaves an entry whose generation
        // no lookup will match.
        if self.generation(&fill.resource) != fill.generation {
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

    fn invalidate_keys(&self, keys: &[Key], tags: bool) {
        for key in keys {
            self.bump(key);
        }
        if tags {
            self.tag_epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn start_write(&self, resource: &Key) {
        self.writing(resource).fetch_add(1, Ordering::SeqCst);
        self.bump(resource);
    }

    fn finish_write(&self, resource: &Key, others: &[Key], invalidate: bool) {
        if invalidate {
            self.bump(resource);
            for key in others {
                self.bump(key);
            }
        }
        self.writing(resource).fetch_sub(1, Ordering::SeqCst);
    }

    fn clear_all(&self) {
        // Every slot moves on, so fills in flight store nothing; moka never
        // returns entries inserted before `invalidate_all`.
        for slot in self.generations.iter() {
            self.renew(slot);
        }
        self.entries.invalidate_all();
    }

    fn weight(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// Every operation answers at once.
impl Store for MemoryStore {
    fn lookup(&self, query: Query) -> Answer<Option<Lookup>> {
        let entry = query.may_hit || query.may_fill;
        Answer::Now(Some(self.read(&query.resource, &query.entry, entry)))
    }

    fn fill(&self, fill: Fill, done: FillDone) {
        done(self.try_fill(fill));
    }

    fn invalidate(&self, keys: Vec<Key>, tags: bool) -> Answer<bool> {
        self.invalidate_keys(&keys, tags);
        Answer::Now(true)
    }

    fn begin_write(&self, resource: Key) -> (WriteId, Answer<Begin>) {
        self.start_write(&resource);
        (WriteId(0), Answer::Now(Begin::Proceed))
    }

    fn end_write(
        &self,
        resource: Key,
        _id: WriteId,
        others: Vec<Key>,
        invalidate: bool,
    ) -> Answer<()> {
        self.finish_write(&resource, &others, invalidate);
        Answer::Now(())
    }

    fn clear(&self) -> Answer<bool> {
        self.clear_all();
        Answer::Now(true)
    }

    fn entries(&self) -> u64 {
        self.weight()
    }

    fn entries_now(&self) -> u64 {
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::test_variant;

    const RESOURCE: Key = 1;
    const KEY: Key = 2;
    const TAG: Key = 3;

    fn variant() -> Variant {
        test_variant(&[("etag", "\"a\"")], 0)
    }

    fn fill(store: &MemoryStore, lookup: &Lookup, tags: Vec<Key>) -> bool {
        store.try_fill(Fill {
            resource: RESOURCE,
            key: KEY,
            generation: lookup.generation,
            tag_epoch: lookup.tag_epoch,
            session: 0,
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
        store.invalidate_keys(&[RESOURCE], false);
        let after = store.lookup(&RESOURCE, &KEY);
        assert!(after.entry.is_none());
        assert!(after.generation > lookup.generation, "never reused");
    }

    #[test]
    fn a_fill_that_arrived_before_an_invalidation_stores_nothing() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        store.invalidate_keys(&[RESOURCE], false);
        assert!(!fill(&store, &lookup, vec![]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn no_fill_is_stored_while_a_write_is_under_way() {
        let store = store();
        store.start_write(&RESOURCE);
        // A GET that arrives while the write runs and reads the old data.
        let during = store.lookup(&RESOURCE, &KEY);
        assert!(!fill(&store, &during, vec![]), "refused during the write");
        store.finish_write(&RESOURCE, &[], true);
        assert!(
            !fill(&store, &during, vec![]),
            "and after it: the generation moved"
        );
        let after = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &after, vec![]));
        // A write that failed lets fills happen again without invalidating.
        store.start_write(&RESOURCE);
        let during = store.lookup(&RESOURCE, &KEY);
        assert!(during.entry.is_none(), "the arrival invalidated");
        store.finish_write(&RESOURCE, &[], false);
        assert!(fill(&store, &during, vec![]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
    }

    #[test]
    fn a_tagged_fill_is_refused_after_any_tag_invalidation_since_arrival() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        store.invalidate_keys(&[TAG + 1000], true);
        assert!(!fill(&store, &lookup, vec![TAG]));
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![TAG]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
        store.invalidate_keys(&[TAG], true);
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn keys_sharing_a_slot_share_invalidations_and_nothing_is_evicted() {
        let store = MemoryStore::new(Duration::from_secs(60), 1);
        let slots = store.generations.len() as u64;
        assert_eq!(slots, 4096);
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![]));
        // A key in another slot leaves the entry alone; one in the same slot
        // (a hash collision) invalidates it: a miss, never a stale hit.
        store.invalidate_keys(&[RESOURCE + 1], false);
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
        store.invalidate_keys(&[RESOURCE + slots], false);
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn a_time_to_live_of_duration_max_is_taken() {
        let store = MemoryStore::new(Duration::MAX, 10);
        assert_eq!(store.time_to_live, Duration::MAX);
    }

    #[test]
    fn entries_past_the_time_to_live_are_not_returned() {
        let store = MemoryStore::new(Duration::from_millis(300), 100);
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![]));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_some());
        std::thread::sleep(Duration::from_millis(400));
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
    }

    #[test]
    fn clear_forgets_entries_and_voids_fills_in_flight() {
        let store = store();
        let lookup = store.lookup(&RESOURCE, &KEY);
        assert!(fill(&store, &lookup, vec![]));
        let in_flight = store.lookup(&RESOURCE, &KEY);
        store.clear_all();
        assert!(store.lookup(&RESOURCE, &KEY).entry.is_none());
        assert!(!fill(&store, &in_flight, vec![]));
    }

    #[test]
    fn the_entry_bound_is_kept() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        for key in 0..100 {
            let lookup = store.lookup(&key, &key);
            store.try_fill(Fill {
                resource: key,
                key,
                generation: lookup.generation,
                tag_epoch: lookup.tag_epoch,
                session: 0,
                variant: variant(),
                base: None,
                tags: vec![],
            });
        }
        assert!(store.weight() <= 10, "{}", store.weight());
    }
}
