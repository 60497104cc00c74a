//! The [`ValidatorCache`] handle, its builder and its statistics.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{request::Parts, HeaderName, Uri};

use super::{
    hashing::Hashing,
    metrics::{CacheMetrics, Cause},
    policy::{default_vary, Partition, Policy, MAX_VARY_FIELDS},
    store::{memory::InMemory, Attach, Setup, Store},
};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) fills: AtomicU64,
    pub(crate) invalidations: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) policy: Policy,
    pub(crate) hashing: Hashing,
    pub(crate) counters: Counters,
    pub(crate) metrics: CacheMetrics,
    max_entries: u64,
}

/// Remembers the validators of tagged responses so that revalidations are
/// answered with 304 Not Modified without calling the handler.
///
/// A cloneable handle: clone it into [`ValidatorCacheLayer`](super::ValidatorCacheLayer)
/// and into the handlers and background jobs that need to invalidate
/// entries. See the [module documentation](super) for what it stores and
/// when it answers.
///
/// ```
/// use std::time::Duration;
/// use tower_etag::cache::ValidatorCache;
///
/// let cache = ValidatorCache::builder()
///     .time_to_live(Duration::from_secs(300))
///     .max_entries(50_000)
///     .build();
/// # let _ = cache;
/// ```
#[derive(Clone)]
pub struct ValidatorCache {
    pub(crate) shared: Arc<Shared>,
}

impl ValidatorCache {
    /// A builder with the defaults: a time-to-live of 60 seconds, 10,000
    /// entries, responses varying on `Accept-Encoding`, `Accept`,
    /// `Accept-Language` and `Origin`.
    pub fn builder() -> ValidatorCacheBuilder {
        ValidatorCacheBuilder::default()
    }

    /// Invalidates every response stored for the path and query of `uri`,
    /// in every `Vary` variant and for every requester. Done when it returns
    /// `true`: no later request is answered from those entries. `false`: a
    /// shared store could not be reached within its timeout; the
    /// invalidation is kept and retried until it lands, this replica answers
    /// the resource from its handler meanwhile, and other replicas may still
    /// answer from the old entries until the retry lands.
    ///
    /// The authority is not needed and not used: a URI without one
    /// (`/notes/1`) invalidates that path under every authority, and so does
    /// one with an authority.
    pub async fn invalidate(&self, uri: &Uri) -> bool {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let key = self.shared.hashing.resource(path);
        let landed = self.shared.store.invalidate(vec![key], false).get().await;
        Counters::add(&self.shared.counters.invalidations, 1);
        self.shared.metrics.invalidated(Cause::AppUri, 1);
        self.shared
            .metrics
            .entries(|| self.shared.store.entries_now());
        trace_invalidation(path);
        landed
    }

    /// Invalidates every response stored with the surrogate tag `tag` (see
    /// [`CacheTags`](super::CacheTags)). Done when it returns `true`; kept
    /// for a retry when `false`, as for [`invalidate`](Self::invalidate).
    pub async fn invalidate_tag(&self, tag: &str) -> bool {
        let key = self.shared.hashing.tag(tag);
        let landed = self.shared.store.invalidate(vec![key], true).get().await;
        Counters::add(&self.shared.counters.invalidations, 1);
        self.shared.metrics.invalidated(Cause::AppTag, 1);
        self.shared
            .metrics
            .entries(|| self.shared.store.entries_now());
        trace_invalidation(tag);
        landed
    }

    /// Forgets everything stored. Done when it returns `true`; when
    /// `false`, a shared store could not be reached, and the clear is kept
    /// for a retry, this replica bypassing the cache until it lands.
    pub async fn clear(&self) -> bool {
        let landed = self.shared.store.clear().get().await;
        Counters::add(&self.shared.counters.invalidations, 1);
        self.shared.metrics.invalidated(Cause::Clear, 1);
        self.shared
            .metrics
            .entries(|| self.shared.store.entries_now());
        trace_invalidation("*");
        landed
    }

    /// The counters since the cache was built. Counting the entries of the
    /// in-memory store first runs its pending maintenance (evictions and
    /// expiries), so that the count is current.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        let store = &self.shared.store;
        let (entries, unavailable, pending) =
            (store.entries(), store.unavailable(), store.pending());
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            fills: c.fills.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            entries,
            unavailable,
            pending,
        }
    }
}

pub(crate) fn trace_invalidation(what: &str) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "tower_etag::cache", invalidated = what, "tower-etag cache");
    #[cfg(not(feature = "tracing"))]
    let _ = what;
}

/// The configuration, the store and the counters, but not the count of
/// entries, which makes the in-memory store run its pending maintenance
/// (see [`ValidatorCache::stats`]): formatting has no side effects.
impl fmt::Debug for ValidatorCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        let c = &shared.counters;
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        f.debug_struct("ValidatorCache")
            .field("time_to_live", &shared.policy.time_to_live)
            .field("max_entries", &shared.max_entries)
            .field("vary", &shared.policy.vary)
            .field("partition", &shared.policy.partition.is_some())
            .field("record_outcome", &shared.policy.record_outcome)
            .field("cache_status", &shared.policy.cache_status)
            .field("store", &shared.store)
            .field("hits", &count(&c.hits))
            .field("misses", &count(&c.misses))
            .field("fills", &count(&c.fills))
            .field("invalidations", &count(&c.invalidations))
            .finish()
    }
}

/// What a [`ValidatorCache`] has done since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Revalidations answered with 304 from the cache, without calling the
    /// inner service.
    pub hits: u64,
    /// `GET` and `HEAD` requests passed to the inner service.
    pub misses: u64,
    /// Responses stored.
    pub fills: u64,
    /// Invalidations: by writes (at their arrival and after a non-error
    /// response), and through the handle.
    pub invalidations: u64,
    /// Responses stored now (approximately: evictions and expiries are
    /// counted lazily). Not counted in a shared store (always 0 there).
    pub entries: u64,
    /// Shared store operations that failed or ran past the store's timeout;
    /// the requests concerned went to the inner service (always 0 in
    /// memory).
    pub unavailable: u64,
    /// Invalidations (and write ends) a shared store could not confirm yet,
    /// kept and retried until they land; a pending clear counts as one.
    /// While one is pending, this replica answers what it concerns from its
    /// handlers, but other replicas may not know of it (always 0 in memory).
    pub pending: u64,
}

/// Builds a [`ValidatorCache`].
#[must_use]
pub struct ValidatorCacheBuilder {
    time_to_live: Duration,
    max_entries: u64,
    vary: Vec<HeaderName>,
    partition: Option<Partition>,
    record_outcome: bool,
    grpc_invalidates: bool,
    cache_status: Option<String>,
    #[cfg(feature = "metrics")]
    metrics_prefix: String,
    #[cfg(feature = "metrics")]
    metrics_labels: Vec<(String, String)>,
    store: Box<dyn Attach>,
}

impl Default for ValidatorCacheBuilder {
    fn default() -> Self {
        Self {
            time_to_live: Duration::from_secs(60),
            max_entries: 10_000,
            vary: default_vary(),
            partition: None,
            record_outcome: false,
            grpc_invalidates: false,
            cache_status: None,
            #[cfg(feature = "metrics")]
            metrics_prefix: "tower_etag".to_owned(),
            #[cfg(feature = "metrics")]
            metrics_labels: Vec::new(),
            store: Box::new(InMemory),
        }
    }
}

impl fmt::Debug for ValidatorCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("ValidatorCacheBuilder");
        f.field("time_to_live", &self.time_to_live)
            .field("max_entries", &self.max_entries)
            .field("vary", &self.vary)
            .field("partition", &self.partition.is_some())
            .field("record_outcome", &self.record_outcome)
            .field("grpc_invalidates", &self.grpc_invalidates)
            .field("cache_status", &self.cache_status)
            .field("store", &self.store);
        f.finish()
    }
}

impl ValidatorCacheBuilder {
    /// How long a stored response may answer revalidations (default 60 s),
    /// on a monotonic clock (in Redis: entries expire after it, and each
    /// variant's age is read on Redis's clock). A write that bypasses the
    /// layer (another service, a job, another replica with an in-memory
    /// cache) is noticed at the latest after this long.
    pub fn time_to_live(mut self, time_to_live: Duration) -> Self {
        self.time_to_live = time_to_live;
        self
    }

    /// The most responses stored in memory (default 10,000): each stored
    /// response counts one, so an entry with several `Vary` variants counts
    /// as many (moka weighs entries by their variants); the least recently
    /// used entry goes first. It bounds the in-memory store only: a shared
    /// store is bounded by its server's memory policy.
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The request fields responses may vary on (default `Accept-Encoding`,
    /// `Accept`, `Accept-Language`, `Origin`; at most 16).
    ///
    /// The values of these fields are kept (as references to the request's
    /// own) while a request runs, so that its response can be stored under
    /// them. A response whose `Vary` names any other field, or `*`, is not
    /// stored.
    ///
    /// # Panics
    ///
    /// With more than 16 fields: a response varying on a field left out
    /// would never be stored, so the list is refused rather than cut. This
    /// is a mistake in the app's configuration, found when it starts.
    pub fn vary_on(mut self, fields: impl IntoIterator<Item = HeaderName>) -> Self {
        let fields: Vec<HeaderName> = fields.into_iter().collect();
        assert!(
            fields.len() <= MAX_VARY_FIELDS,
            "ValidatorCacheBuilder::vary_on: {} fields, at most {MAX_VARY_FIELDS}",
            fields.len()
        );
        self.vary = fields;
        self
    }

    /// Partitions entries by the requester with `partition`, instead of the
    /// default (a hash of the request's `Authorization` and `Cookie`).
    ///
    /// It returns the requester's partition (for example the user id an
    /// authentication layer put in the request extensions; an empty string
    /// for anonymous requests), or `None` to keep the request away from the
    /// cache. Entries are never shared between partitions.
    ///
    /// ```
    /// use tower_etag::cache::ValidatorCache;
    ///
    /// #[derive(Clone)]
    /// struct UserId(u64);
    ///
    /// let cache = ValidatorCache::builder()
    ///     .partition(|request: &http::request::Parts| {
    ///         let user = request.extensions.get::<UserId>()?;
    ///         Some(user.0.to_string())
    ///     })
    ///     .build();
    /// # let _ = cache;
    /// ```
    pub fn partition<F>(mut self, partition: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.partition = Some(Arc::new(partition));
        self
    }

    /// Inserts [`Outcome::NotModifiedFromCache`](crate::Outcome::NotModifiedFromCache)
    /// into the extensions of each 304 the cache answers (default `false`).
    pub fn record_outcome(mut self, record: bool) -> Self {
        self.record_outcome = record;
        self
    }

    /// Whether gRPC calls (requests with a `Content-Type` of
    /// `application/grpc…`) invalidate their target as other unsafe
    /// requests do (RFC 9111 §4.4). Default `false`: a gRPC call is a `POST`
    /// to a method's path, which has no stored representation a `GET` could
    /// revalidate, so the cache lets it pass untouched, with no store round
    /// trip before or after it (and, with strict writes, no refusal while a
    /// shared store is away). Set it when the app also serves `GET`s at the
    /// paths of its gRPC methods.
    pub fn grpc_invalidates(mut self, invalidates: bool) -> Self {
        self.grpc_invalidates = invalidates;
        self
    }

    /// Adds a `Cache-Status` member (RFC 9211) naming this cache `name` to
    /// every response that passes through it (default: none). The member
    /// says what the cache did:
    ///
    /// - `name; hit`: a 304 answered from the cache;
    /// - `name; fwd=…; fwd-status=…`: the request went to the inner service,
    ///   which answered with that status, because of `fwd`: `uri-miss`
    ///   (nothing stored for the URI), `vary-miss` (nothing for this
    ///   request's `Vary` fields), `miss` (a stored variant, but the request
    ///   is not conditional or names other tags), `request` (`no-cache`, or
    ///   `If-Match` / `If-Unmodified-Since`), `method` (not `GET`/`HEAD`),
    ///   `bypass` (the partition function kept it away, or the store could
    ///   not answer: `detail=partition` / `detail=store-unavailable`);
    ///   then `stored` when a `GET`'s response was stored, or `detail=` why
    ///   not: `storing` (handed to a shared store, which stores it after the
    ///   response), `unchanged` (it confirms what is stored), `refused` (a
    ///   write or invalidation since the request arrived), `head`, `status`,
    ///   `cache-control`, `set-cookie`, `no-etag`, `vary`, `too-large`;
    /// - `name; detail=store-unavailable`: a write refused with 503 (strict
    ///   writes).
    ///
    /// The member is added after any the inner service set (the list's
    /// order is from the origin outwards). `name` is sent as a token when it
    /// is one (`ExampleCache`, `app/notes`), otherwise as a quoted string,
    /// with characters outside printable ASCII replaced by `?`.
    pub fn cache_status(mut self, name: impl Into<String>) -> Self {
        self.cache_status = Some(name.into());
        self
    }

    /// The prefix of the cache's metric names (feature `metrics`; default
    /// `tower_etag`: `tower_etag_cache_hits_total`, …).
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// A label added to every metric of this cache (feature `metrics`),
    /// to tell several caches apart: `.metrics_label("cache", "notes")`.
    /// Its key must not be one the metrics use (`reason`, `result`,
    /// `cause`), nor repeat one.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metrics_labels.push((key.into(), value.into()));
        self
    }

    /// Keeps the cache in Redis, shared by every replica configured with the
    /// same Redis and prefix, instead of in this process (`max_entries` then
    /// does not apply: Redis's own memory policy does). See
    /// [the module documentation](super#on-redis).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(self, store: super::RedisStore) -> Self {
        self.store(Box::new(store))
    }

    /// Keeps the cache in `store` instead of in memory.
    #[cfg_attr(not(any(test, feature = "redis")), allow(dead_code))]
    pub(crate) fn store(mut self, store: Box<dyn Attach>) -> Self {
        self.store = store;
        self
    }

    /// Builds the cache: in memory, or in the store given to
    /// [`redis`](Self::redis).
    pub fn build(self) -> ValidatorCache {
        let vary = self.vary.into_boxed_slice();
        let store = self.store.attach(&Setup {
            time_to_live: self.time_to_live,
            max_entries: self.max_entries,
            vary: vary.clone(),
        });
        let hashing = store
            .key_material()
            .map_or_else(Hashing::default, Hashing::shared);
        ValidatorCache {
            shared: Arc::new(Shared {
                store,
                policy: Policy {
                    time_to_live: self.time_to_live,
                    vary,
                    partition: self.partition,
                    record_outcome: self.record_outcome,
                    grpc_invalidates: self.grpc_invalidates,
                    cache_status: self
                        .cache_status
                        .as_deref()
                        .map(super::status::serialize_name),
                },
                hashing,
                counters: Counters::default(),
                #[cfg(feature = "metrics")]
                metrics: CacheMetrics::new(&self.metrics_prefix, &self.metrics_labels),
                #[cfg(not(feature = "metrics"))]
                metrics: CacheMetrics,
                max_entries: self.max_entries,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn fields(n: usize) -> Vec<HeaderName> {
        (0..n)
            .map(|i| HeaderName::try_from(format!("x-field-{i}")).unwrap())
            .collect()
    }

    #[test]
    fn vary_on_takes_up_to_sixteen_fields() {
        let cache = ValidatorCache::builder().vary_on(fields(16)).build();
        assert_eq!(cache.shared.policy.vary.len(), 16);
    }

    #[test]
    #[should_panic(expected = "17 fields, at most 16")]
    fn vary_on_refuses_more_than_sixteen_fields_rather_than_cutting_them() {
        let _ = ValidatorCache::builder().vary_on(fields(17));
    }

    #[test]
    fn debug_shows_the_settings_the_store_and_the_counters() {
        let cache = ValidatorCache::builder().max_entries(7).build();
        let debug = format!("{cache:?}");
        for field in ["max_entries: 7", "hits: 0", "MemoryStore"] {
            assert!(debug.contains(field), "{debug}");
        }
        let builder = format!("{:?}", ValidatorCache::builder());
        assert!(builder.contains("store: InMemory"), "{builder}");
    }
}
