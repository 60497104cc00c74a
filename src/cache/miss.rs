//! What a `GET` that missed keeps until its response, and the fill it then
//! asks the store for.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc,
};

use http::{HeaderValue, Response};

use super::{
    entry::{remember, Entry},
    handle::{Counters, ValidatorCache},
    hashing::Key,
    read::Read,
    status::Kept,
    store::{Fill, Lookup},
};

/// A `GET` the cache did not answer, whose response it may store.
pub(crate) struct Miss {
    resource: Key,
    key: Key,
    generation: u64,
    tag_epoch: u64,
    session: u64,
    base: Option<Entry>,
    varying: Vec<(u8, HeaderValue)>,
}

impl Miss {
    /// `varying`: the request's values of the fields responses may vary on
    /// (reference-counted copies, kept until the response).
    pub(crate) fn new(read: Read, lookup: Lookup, varying: Vec<(u8, HeaderValue)>) -> Self {
        Self {
            resource: read.resource,
            key: read.entry,
            generation: lookup.generation,
            tag_epoch: lookup.tag_epoch,
            session: lookup.session,
            base: lookup.entry,
            varying,
        }
    }

    /// Stores what a 304 needs of `response`, if it may be stored and
    /// changes what is stored; says what became of it.
    pub(crate) fn complete<B>(self, response: &Response<B>, cache: &ValidatorCache) -> Kept {
        let shared = &*cache.shared;
        let remembered = match remember(
            response.status(),
            response.headers(),
            response.extensions(),
            &shared.policy.vary,
        ) {
            Ok(remembered) => remembered,
            Err(reason) => {
                #[cfg(feature = "tracing")]
                tracing::trace!(target: "tower_etag::cache", not_stored = ?reason, "tower-etag cache");
                shared.metrics.kept(Kept::NotStored(reason));
                return Kept::NotStored(reason);
            }
        };
        let fields = remembered.fields(&self.varying, &shared.hashing);
        let tags = remembered.tag_keys(&shared.hashing);
        // The response confirms what is stored, and the entry is young:
        // storing it again would only reset its age. Skipping keeps a steady
        // stream of unconditional GETs from writing to the store on every
        // request; the entry is refreshed once it is half its time-to-live
        // old.
        let unchanged = self.base.as_ref().is_some_and(|base| {
            base.variants().iter().any(|stored| {
                remembered.replayed_by(stored, fields, &tags)
                    && stored.age() < shared.policy.time_to_live / 2
            })
        });
        if unchanged {
            shared.metrics.kept(Kept::Unchanged);
            return Kept::Unchanged;
        }
        let fill = Fill {
            resource: self.resource,
            key: self.key,
            generation: self.generation,
            tag_epoch: self.tag_epoch,
            session: self.session,
            variant: remembered.to_variant(fields),
            base: self.base,
            tags,
        };
        let cache = cache.clone();
        if shared.policy.cache_status.is_none() {
            shared
                .store
                .fill(fill, Box::new(move |stored| filled(&cache, stored)));
            return Kept::Nothing;
        }
        // Whether the store answered before `fill` returned (in memory it
        // does), for `Cache-Status`.
        const PENDING: u8 = 0;
        const STORED: u8 = 1;
        const REFUSED: u8 = 2;
        let answer = Arc::new(AtomicU8::new(PENDING));
        let answered = Arc::clone(&answer);
        let done = move |stored: bool| {
            answered.store(if stored { STORED } else { REFUSED }, Ordering::Release);
            filled(&cache, stored);
        };
        shared.store.fill(fill, Box::new(done));
        match answer.load(Ordering::Acquire) {
            STORED => Kept::Stored,
            REFUSED => Kept::Refused,
            _ => Kept::Storing,
        }
    }
}

/// Counts and traces a fill.
fn filled(cache: &ValidatorCache, stored: bool) {
    let shared = &cache.shared;
    if stored {
        Counters::add(&shared.counters.fills, 1);
    }
    shared.metrics.filled(stored);
    shared.metrics.entries(|| shared.store.entries_now());
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "tower_etag::cache", stored, "tower-etag cache fill");
}
