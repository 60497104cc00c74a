//! The store behind a [`ValidatorCache`](super::ValidatorCache): entries
//! and per-key generations, with the four operations the cache needs.
//!
//! Generations make invalidation cheap and the fill race harmless:
//! - every resource (path and query) and every surrogate tag has a
//!   generation, a number never issued twice by a store;
//! - an entry is stored with the generation its resource had when the
//!   request *arrived*, and is used only while the resource still has it;
//! - invalidating moves the generation to a fresh, larger value, so every
//!   entry stored before is dead at once, whatever `Vary` variant or
//!   authority it was stored under;
//! - a fill whose request arrived before an invalidation finds a different
//!   generation and stores nothing, however late it finishes (a GET that
//!   read old data cannot store its tag after a write invalidated it).
//!
//! A store that can lose a generation record (eviction, a restart) must
//! replace it by a fresh, larger value, never restart it: then losing it can
//! only cause a miss, never a stale hit.

use std::fmt;

use super::{
    entry::{Entry, Variant},
    key::Key,
};

/// What a lookup found.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The resource's current generation.
    pub(crate) generation: u64,
    /// The store's surrogate-tag epoch, which every tag invalidation bumps.
    pub(crate) tag_epoch: u64,
    /// The store's clock at the lookup, in microseconds (shared stores; 0
    /// in memory): the fill time recorded with a fill.
    pub(crate) clock: u64,
    /// The variants stored under the entry key that are still current:
    /// filled at `generation`, younger than the time-to-live, and with every
    /// surrogate tag at the generation it had at fill time.
    pub(crate) entry: Option<Entry>,
}

/// A conditional store.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) resource: Key,
    pub(crate) key: Key,
    /// From the lookup made when the request arrived.
    pub(crate) generation: u64,
    pub(crate) tag_epoch: u64,
    /// The new variant, stored beside `base`'s other variants; its
    /// surrogate tags are `tags`, whose generations the store records.
    pub(crate) variant: Variant,
    pub(crate) base: Option<Entry>,
    pub(crate) tags: Vec<Key>,
}

/// The store a cache uses.
pub(crate) enum Backend {
    Memory(super::memory::MemoryStore),
    #[cfg(feature = "redis")]
    Redis(std::sync::Arc<super::redis_store::Attached>),
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory(store) => store.fmt(f),
            #[cfg(feature = "redis")]
            Self::Redis(store) => store.fmt(f),
        }
    }
}

/// Keeps entries and generations in this process.
///
/// Kept small on purpose (lookup, conditional fill, invalidate, clear) so
/// that a store shared between processes can implement it with a script per
/// operation on the server.
pub(crate) trait Store: fmt::Debug + Send + Sync + 'static {
    /// Reads the resource's generation and the current variants stored
    /// under `key`.
    fn lookup(&self, resource: &Key, key: &Key) -> Lookup;

    /// Stores the fill under `fill.key` only if the resource still has
    /// `fill.generation`, no write to it is under way, and, when the
    /// response has surrogate tags, no tag was invalidated since
    /// `fill.tag_epoch`. Returns whether it stored.
    fn fill(&self, fill: Fill) -> bool;

    /// Moves the generations of `keys` (resources or tags) to fresh values,
    /// so that nothing stored under them is used again. With `tags`, also
    /// bumps the tag epoch.
    fn invalidate(&self, keys: &[Key], tags: bool);

    /// A write to `resource` begins: invalidates it, and refuses every fill
    /// of it until the write ends, so that a `GET` that reads the old data
    /// while the write runs cannot store it (it would otherwise be valid
    /// from its fill to the end of the write, after the write committed).
    fn begin_write(&self, resource: &Key);

    /// The write that [`begin_write`](Store::begin_write) announced has
    /// ended: invalidates `resource` and `others` first when `invalidate`
    /// (a non-error response, or an unknown outcome), then lets fills of
    /// `resource` happen again.
    fn end_write(&self, resource: &Key, others: &[Key], invalidate: bool);

    /// Forgets every entry and generation.
    fn clear(&self);

    /// How many responses are stored (approximately, for statistics).
    fn len(&self) -> u64;
}
