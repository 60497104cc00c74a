//! The boundary between the cache and where it keeps entries: the [`Store`]
//! trait, what its operations take and give, and the stores behind it
//! ([`memory`] in this process, `redis` shared by replicas).
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
//!
//! A store answers each operation [now or later](Answer): in memory at once,
//! over the network once the server has answered (the request waits for it,
//! and the cache's future polls the answer). A new store is one module here
//! that implements [`Store`] and [`Attach`], and a method on the cache's
//! builder that hands it over (as `ValidatorCacheBuilder::redis` does);
//! [`map`] (for the tests) is the smallest example.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::HeaderName;

use super::{
    entry::{Entry, Variant},
    hashing::Key,
};

#[cfg(test)]
pub(crate) mod map;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// A lookup: where to look, and what the request may do with the answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Query {
    /// The resource's generation key.
    pub(crate) resource: Key,
    /// The entry key (resource, authority, requester).
    pub(crate) entry: Key,
    /// The response may be stored (a `GET`).
    pub(crate) may_fill: bool,
    /// The request revalidates, so a found entry may answer it.
    pub(crate) may_hit: bool,
}

/// What a lookup found.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The resource's current generation.
    pub(crate) generation: u64,
    /// The store's mark of the request's arrival, against which a fill's
    /// surrogate tags are checked: in memory an epoch that every tag
    /// invalidation bumps, on Redis the server's time (each tag's
    /// generation tells when it was last invalidated).
    pub(crate) tag_epoch: u64,
    /// The variants stored under the entry key that are still current:
    /// filled at `generation`, younger than the time-to-live, and with every
    /// surrogate tag at the generation it had at fill time.
    pub(crate) entry: Option<Entry>,
    /// The store's session the lookup was made in (a Redis connection and
    /// the dataset it verified); a fill from another session is refused.
    /// Always 0 in memory.
    pub(crate) session: u64,
}

/// A response to store, on conditions (see [`Store::fill`]).
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) resource: Key,
    pub(crate) key: Key,
    /// From the lookup made when the request arrived.
    pub(crate) generation: u64,
    pub(crate) tag_epoch: u64,
    /// From the lookup: only the Redis store has sessions.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) session: u64,
    /// The new variant, stored beside `base`'s other variants; its
    /// surrogate tags are `tags`, whose generations the store records.
    pub(crate) variant: Variant,
    pub(crate) base: Option<Entry>,
    pub(crate) tags: Vec<Key>,
}

/// A store's name for one write under way, given back when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteId(pub(crate) u64);

/// Whether a write may run, once the store has been told that it begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The store confirmed the arrival's invalidation, or the write goes on
    /// without that confirmation (the default write mode).
    Proceed,
    /// The store could not confirm the invalidation and writes are strict:
    /// the request is refused before the handler runs.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Refuse,
}

/// Told whether a fill was stored, once the store knows.
pub(crate) type FillDone = Box<dyn FnOnce(bool) + Send>;

/// A store's answer: ready now, or later.
pub(crate) enum Answer<T> {
    Now(T),
    // Only stores outside this process answer later.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Later(Box<dyn Later<T>>),
}

/// An answer still on its way. `Sync` so that the futures waiting for it
/// stay `Sync`; polled through `&mut`, so a wrapper can make any `Send`
/// future one.
pub(crate) trait Later<T>: Send + Sync {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<T>;
}

impl<T> Answer<T> {
    /// Waits for the answer.
    pub(crate) async fn get(self) -> T {
        match self {
            Self::Now(value) => value,
            Self::Later(mut later) => std::future::poll_fn(|cx| later.poll_answer(cx)).await,
        }
    }
}

impl<T> fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Now(_) => "Answer::Now",
            Self::Later(_) => "Answer::Later",
        })
    }
}

/// Where a cache keeps its entries and generations.
///
/// What matters is that no entry can answer after an invalidation that
/// happened after it was current: a fill's checks and its write may be one
/// atomic step (a script on a server) or separate steps ordered so that an
/// invalidation between them leaves an entry no lookup will match (in
/// memory).
pub(crate) trait Store: fmt::Debug + Send + Sync + 'static {
    /// For a store shared by several processes: what each one derives its
    /// keys from (the same everywhere, so that they agree on keys). `None`:
    /// keys are drawn at random in this process.
    fn key_material(&self) -> Option<&[u8]> {
        None
    }

    /// Reads the resource's generation and the current variants stored
    /// under the entry key. `None`: the store cannot answer (down, slow, or
    /// an invalidation of this resource has not reached it yet); the request
    /// then goes on as without a cache and stores nothing.
    fn lookup(&self, query: Query) -> Answer<Option<Lookup>>;

    /// Stores the fill under `fill.key` only if the resource still has
    /// `fill.generation`, no write to it is under way, and, when the
    /// response has surrogate tags, no tag was invalidated since
    /// `fill.tag_epoch`; then calls `done` with whether it stored.
    fn fill(&self, fill: Fill, done: FillDone);

    /// Moves the generations of `keys` (resources, or surrogate tags with
    /// `tags`) to fresh values, so that
    /// nothing stored under them is used again. `true` when that landed;
    /// `false` when it is kept for a retry (this process then neither
    /// answers nor stores what it concerns until it lands).
    fn invalidate(&self, keys: Vec<Key>, tags: bool) -> Answer<bool>;

    /// A write to `resource` begins: invalidates it, and refuses every fill
    /// of it until the write ends, so that a `GET` that reads the old data
    /// while the write runs cannot store it (it would otherwise be valid
    /// from its fill to the end of the write, after the write committed).
    /// The write goes on once the answer is in, or is refused (see
    /// [`Begin`]).
    fn begin_write(&self, resource: Key) -> (WriteId, Answer<Begin>);

    /// The write that [`begin_write`](Store::begin_write) announced has
    /// ended: invalidates `resource` and `others` first when `invalidate`
    /// (a non-error response, or an unknown outcome), then lets fills of
    /// `resource` happen again. The response is held until the answer is
    /// in, so that no request that follows it can be answered from what the
    /// write replaced (an end that does not land is kept for a retry).
    fn end_write(
        &self,
        resource: Key,
        id: WriteId,
        others: Vec<Key>,
        invalidate: bool,
    ) -> Answer<()>;

    /// Forgets every entry and generation; `true` when that landed.
    fn clear(&self) -> Answer<bool>;

    /// How many responses are stored (approximately), if the store counts
    /// them.
    fn entries(&self) -> u64 {
        0
    }

    /// The same without the store's pending maintenance (cheap enough for
    /// every fill, for the entries gauge; may count evicted entries for a
    /// while).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn entries_now(&self) -> u64 {
        0
    }

    /// How many operations failed or timed out (for a store that can).
    fn unavailable(&self) -> u64 {
        0
    }

    /// How many invalidations wait for a retry (for a store that can fail).
    fn pending(&self) -> u64 {
        0
    }
}

/// What a store is built with, from the cache's builder.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) time_to_live: Duration,
    pub(crate) max_entries: u64,
    /// For a store that reads entries back (and checks them again).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) vary: Box<[HeaderName]>,
}

/// A store's configuration, attached to one cache when it is built.
pub(crate) trait Attach: fmt::Debug + Send + Sync {
    fn attach(self: Box<Self>, settings: &Setup) -> Arc<dyn Store>;
}
