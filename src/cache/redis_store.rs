//! The shared store on Redis (feature `redis`): entries, generations and
//! invalidations seen by every replica that points at the same Redis (or
//! Valkey) and key prefix.
//!
//! # Client
//!
//! redis-rs (`redis` 1.x) with its Tokio `ConnectionManager`: the most used
//! Rust client, kept by the Redis organisation, one multiplexed connection
//! per store (commands from every request share it, pipelined), and it
//! reconnects by itself after an I/O error. Its types stay inside this
//! module, so a major release of the client is not one of this crate.
//!
//! # Layout (`P` is the prefix, `R` a resource's key, `E` an entry's key, `T`
//! a surrogate tag's key, all hexadecimal)
//!
//! - `P:{R}:g`: the resource's generation;
//! - `P:{R}:w`: the ids of the writes to it under way (a set);
//! - `P:{R}:e:E`: an entry ([`Entry::encode`]), with `PX` at the
//!   time-to-live;
//! - `P:{tags}:epoch` and `P:{tags}:T`: the surrogate-tag epoch and each
//!   tag's generation.
//!
//! The keys of one resource share a hash slot (`{R}`), and so do all tag
//! keys (`{tags}`), so every script touches one slot and works on Redis
//! Cluster too.
//!
//! # Atomicity and generations
//!
//! Each operation is one Lua script (`EVALSHA`, loaded again on `NOSCRIPT`
//! by the client): a lookup reads the generation (creating it if missing)
//! and the entry; a fill stores only if the generation is the one read at
//! arrival and no write is under way; an invalidation moves the generation
//! to `max(g + 1, server time in µs)`. Generations are therefore never
//! reused, also after Redis restarts empty or evicts a generation: a lost
//! generation is created again at the current time, larger than any issued
//! before, so an entry stored under the old one is a miss, never a stale
//! hit. A fill whose generation key is missing stores nothing.
//!
//! # Faults
//!
//! Every operation is bounded by the store's timeout. A lookup that fails or
//! times out sends the request to the inner service, as without a cache,
//! and stores nothing. An invalidation (from a write or from app code) that
//! fails is kept and retried after the next operation that succeeds; until
//! it lands, this replica answers the resources and tags concerned from its
//! handlers. Other replicas may answer from the old entries until the retry
//! lands or the entries' time-to-live runs out: that is the only staleness a
//! fault allows.

use std::{
    collections::HashSet,
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ::redis::{aio::ConnectionManager, Client, Script, ScriptInvocation, Value};
use http::HeaderName;
use tokio::{runtime::Handle, task::JoinHandle};

use super::{
    entry::Entry,
    key::Key,
    store::{Fill, Lookup},
};

/// How often invalidations that could not reach Redis are tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The shared part of every script: reading a value that may be missing or
/// of another type (written by hand), the server clock, and moving a
/// generation on.
const PRELUDE: &str = r"
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then return false end
  return v
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(n)
  return string.format('%.0f', n)
end
local function valid(v)
  local n = tonumber(v)
  if n and n >= 1 and n == math.floor(n) and num(n) == v then return n end
  return false
end
local function bump(key, life)
  local g = valid(get(key)) or 0
  local n = math.max(g + 1, now())
  if life then
    redis.call('SET', key, num(n), 'PX', life)
  else
    redis.call('SET', key, num(n))
  end
end
";

/// KEYS: generation, entry. ARGV: the generation's lifetime (ms).
/// Returns the generation (created if missing or not a positive integer in
/// canonical form), the server time, the entry.
const LOOKUP: &str = r"
local g = get(KEYS[1])
local t = now()
if not valid(g) then
  g = num(t)
  redis.call('SET', KEYS[1], g, 'PX', ARGV[1])
end
return {g, num(t), get(KEYS[2])}
";

/// KEYS: generation, entry, writes. ARGV: the generation read at arrival,
/// the entry, its time-to-live (ms), the generation's lifetime (ms).
const FILL: &str = r"
if get(KEYS[1]) ~= ARGV[1] then return 0 end
local w = redis.pcall('SCARD', KEYS[3])
if type(w) ~= 'number' or w > 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// KEYS: generations. ARGV: their lifetime (ms).
const INVALIDATE: &str = r"
for i = 1, #KEYS do bump(KEYS[i], ARGV[1]) end
return 1
";

/// KEYS: generation, writes. ARGV: the generation's lifetime (ms), the
/// write's id, how long the write may hold fills off (ms).
const BEGIN_WRITE: &str = r"
bump(KEYS[1], ARGV[1])
if type(redis.pcall('SADD', KEYS[2], ARGV[2])) ~= 'number' then
  redis.call('DEL', KEYS[2])
  redis.call('SADD', KEYS[2], ARGV[2])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// KEYS: generation, writes, then other generations to invalidate. ARGV:
/// the generations' lifetime (ms), the write's id, `1` to invalidate.
const END_WRITE: &str = r"
if ARGV[3] == '1' then
  for i = 1, #KEYS do
    if i ~= 2 then bump(KEYS[i], ARGV[1]) end
  end
end
redis.pcall('SREM', KEYS[2], ARGV[2])
return 1
";

/// KEYS: the tag epoch. Returns it, created if missing.
const TAG_EPOCH: &str = r"
local e = get(KEYS[1])
if not valid(e) then
  e = num(now())
  redis.call('SET', KEYS[1], e)
end
return e
";

/// KEYS: the tag epoch, then tags. ARGV: the epoch read at arrival, the
/// tags' lifetime (ms). Returns the tags' generations (created if missing),
/// or nil when a tag was invalidated since arrival.
const TAG_FILL: &str = r"
if get(KEYS[1]) ~= ARGV[1] then return false end
local out = {}
for i = 2, #KEYS do
  local g = get(KEYS[i])
  if not valid(g) then
    g = num(now())
    redis.call('SET', KEYS[i], g, 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  out[#out + 1] = g
end
return out
";

/// KEYS: the tag epoch, then tags. ARGV: the tags' lifetime (ms).
const TAG_INVALIDATE: &str = r"
for i = 2, #KEYS do bump(KEYS[i], ARGV[1]) end
bump(KEYS[1], false)
return 1
";

struct Scripts {
    lookup: Script,
    fill: Script,
    invalidate: Script,
    begin_write: Script,
    end_write: Script,
    tag_epoch: Script,
    tag_fill: Script,
    tag_invalidate: Script,
}

impl Scripts {
    fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            lookup: script(LOOKUP),
            fill: script(FILL),
            invalidate: script(INVALIDATE),
            begin_write: script(BEGIN_WRITE),
            end_write: script(END_WRITE),
            tag_epoch: script(TAG_EPOCH),
            tag_fill: script(TAG_FILL),
            tag_invalidate: script(TAG_INVALIDATE),
        }
    }
}

/// A validator cache store on Redis (or Valkey), shared by every replica
/// that uses the same Redis and prefix; give it to
/// [`ValidatorCacheBuilder::redis`](super::ValidatorCacheBuilder::redis).
///
/// ```no_run
/// use std::time::Duration;
/// use tower_etag::cache::{RedisStore, ValidatorCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_etag::cache::RedisStoreError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .prefix("notes")
///     .timeout(Duration::from_millis(5))
///     .build()?;
/// let cache = ValidatorCache::builder()
///     .time_to_live(Duration::from_secs(300))
///     .redis(store)
///     .build();
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
///
/// It connects lazily, reconnects by itself, and never makes a request
/// fail: see [the module documentation](super#on-redis) for what happens
/// when Redis is away. Cloning it shares its connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    runtime: Handle,
    prefix: String,
    /// What the keyed hash of keys is derived from: the prefix and the
    /// secret.
    key_context: Vec<u8>,
    timeout: Duration,
    scripts: Scripts,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
    flushing: AtomicBool,
    healthy: AtomicBool,
    unavailable: AtomicU64,
    next_write: AtomicU64,
}

/// Invalidations that could not reach Redis yet.
#[derive(Default)]
struct Pending {
    resources: HashSet<Key>,
    tags: HashSet<Key>,
    clear: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.tags.is_empty() && !self.clear
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field(
                "unavailable",
                &self.inner.unavailable.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for a store at `url` (`redis://host:port/db`, with
    /// `rediss://` and credentials as the redis crate accepts them).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "tower-etag".to_owned(),
            secret: Vec::new(),
            timeout: Duration::from_millis(5),
        }
    }

    /// Operations that failed or ran past the timeout since the store was
    /// built (the requests concerned went to the inner service).
    pub fn unavailable(&self) -> u64 {
        self.inner.unavailable.load(Ordering::Relaxed)
    }
}

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    secret: Vec<u8>,
    timeout: Duration,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password, and the secret is one.
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key (default `tower-etag`), so that several apps
    /// can share one Redis. Replicas of one app must use the same. It may
    /// not contain `{` or `}`, which Redis Cluster reads as hash tags.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Key material for the keyed hash that turns URIs, credentials and
    /// request fields into Redis keys (default: none, the keys are then
    /// derived from the prefix alone). Replicas of one app must use the
    /// same. With a secret, someone who can read the Redis keys cannot test
    /// guesses of the URIs or credentials behind them.
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = secret.into();
        self
    }

    /// How long a request waits for Redis before it goes to the inner
    /// service as without a cache (default 5 ms). Invalidations wait as
    /// long, then are retried later.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the store. It connects on first use, in the Tokio runtime this
    /// is called in.
    ///
    /// # Errors
    ///
    /// When the URL is not one the redis client accepts, the prefix holds
    /// `{` or `}`, or no Tokio runtime is running.
    pub fn build(self) -> Result<RedisStore, RedisStoreError> {
        if self.prefix.contains(['{', '}']) {
            return Err(RedisStoreError::new("the prefix may not contain { or }"));
        }
        let runtime = Handle::try_current()
            .map_err(|_| RedisStoreError::new("no Tokio runtime is running"))?;
        let client = Client::open(self.url.as_str()).map_err(RedisStoreError::from_redis)?;
        // Retry connecting for ever (with backoff up to one second): an
        // outage longer than the default's few attempts must not leave the
        // store disconnected until a request notices.
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(usize::MAX)
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        let connection = {
            let _guard = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, config)
                .map_err(RedisStoreError::from_redis)?
        };
        let mut key_context = Vec::with_capacity(self.prefix.len() + 1 + self.secret.len());
        key_context.extend_from_slice(self.prefix.as_bytes());
        key_context.push(0);
        key_context.extend_from_slice(&self.secret);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                runtime,
                prefix: self.prefix,
                key_context,
                timeout: self.timeout,
                scripts: Scripts::new(),
                pending: Mutex::default(),
                has_pending: AtomicBool::new(false),
                flushing: AtomicBool::new(false),
                healthy: AtomicBool::new(true),
                unavailable: AtomicU64::new(0),
                next_write: AtomicU64::new(random_u64()),
            }),
        })
    }
}

/// Why a [`RedisStore`] could not be built.
#[derive(Debug)]
pub struct RedisStoreError {
    message: String,
}

impl RedisStoreError {
    fn new(message: &str) -> Self {
        Self {
            message: message.to_owned(),
        }
    }

    fn from_redis(error: ::redis::RedisError) -> Self {
        Self {
            message: error.to_string(),
        }
    }
}

impl fmt::Display for RedisStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis store: {}", self.message)
    }
}

impl std::error::Error for RedisStoreError {}

/// A [`RedisStore`] attached to one cache, with the cache's settings.
pub(crate) struct Attached {
    store: RedisStore,
    time_to_live: Duration,
    vary: Box<[HeaderName]>,
}

impl fmt::Debug for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.store.fmt(f)
    }
}

/// What went wrong with one operation.
enum Failure {
    Redis(::redis::RedisError),
    Timeout,
    /// A reply of an unexpected shape.
    Reply,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(error) => error.fmt(f),
            Self::Timeout => f.write_str("timed out"),
            Self::Reply => f.write_str("unexpected reply"),
        }
    }
}

impl From<::redis::RedisError> for Failure {
    fn from(error: ::redis::RedisError) -> Self {
        Self::Redis(error)
    }
}

/// A write's id in the store's set of writes under way.
pub(crate) type WriteId = u64;

impl Attached {
    pub(crate) fn new(store: RedisStore, time_to_live: Duration, vary: Box<[HeaderName]>) -> Self {
        Self {
            store,
            time_to_live,
            vary,
        }
    }

    pub(crate) fn key_context(&self) -> &[u8] {
        &self.store.inner.key_context
    }

    pub(crate) fn unavailable(&self) -> u64 {
        self.store.unavailable()
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.store.inner
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.time_to_live.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// How long generations live after their last use: twice the entries'
    /// time-to-live, so a generation outlives every entry stored under it.
    fn life_ms(&self) -> u64 {
        self.ttl_ms().saturating_mul(2)
    }

    /// Whether an invalidation of `resource` has not reached Redis yet: this
    /// replica then neither answers nor stores it.
    pub(crate) fn is_pending(&self, resource: &Key) -> bool {
        let inner = self.inner();
        if !inner.has_pending.load(Ordering::Acquire) {
            return false;
        }
        let pending = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.clear || pending.resources.contains(resource)
    }

    fn pending_tag(&self, tags: &[(Key, u64)]) -> bool {
        let inner = self.inner();
        if tags.is_empty() || !inner.has_pending.load(Ordering::Acquire) {
            return false;
        }
        let pending = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.clear || tags.iter().any(|(tag, _)| pending.tags.contains(tag))
    }

    /// Starts a lookup on the store's runtime; the handle yields `None` when
    /// Redis did not answer in time.
    ///
    /// `fill`: the response may be stored (a `GET`), so a tagged response
    /// needs the tag epoch as of now. `may_hit`: the request revalidates.
    /// One command when an entry is found for a revalidation (the likely
    /// hit); otherwise the tag epoch is read too, before the handler runs.
    pub(crate) fn lookup(
        self: &Arc<Self>,
        resource: Key,
        key: Key,
        fill: bool,
        may_hit: bool,
    ) -> JoinHandle<Option<Lookup>> {
        let this = Arc::clone(self);
        self.inner().runtime.spawn(async move {
            let lookup = async {
                let mut lookup = this.lookup_now(resource, key).await?;
                if fill && !(may_hit && lookup.entry.is_some()) {
                    lookup.tag_epoch = this.tag_epoch().await?;
                }
                Ok(lookup)
            };
            this.guarded("lookup", lookup).await
        })
    }

    async fn lookup_now(&self, resource: Key, key: Key) -> Result<Lookup, Failure> {
        let inner = self.inner();
        let mut invocation = inner.scripts.lookup.prepare_invoke();
        invocation
            .key(self.generation_key(resource))
            .key(self.entry_key(resource, key))
            .arg(self.life_ms());
        let reply = self.run(&invocation).await?;
        let Value::Array(items) = reply else {
            return Err(Failure::Reply);
        };
        let generation = items.first().and_then(number).ok_or(Failure::Reply)?;
        let clock = items.get(1).and_then(number).ok_or(Failure::Reply)?;
        let entry = match items.get(2) {
            Some(Value::BulkString(bytes)) => {
                match Entry::decode(bytes, &self.vary, clock, self.time_to_live) {
                    Some((stored, entry)) if stored == generation => entry,
                    Some(_) => None,
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(target: "tower_etag::cache", "tower-etag cache: unreadable entry in Redis, a miss");
                        None
                    }
                }
            }
            _ => None,
        };
        let entry = match entry {
            Some(entry) => self.current_tags(entry).await?,
            None => None,
        };
        // 0: no epoch read; a tagged fill is then refused.
        Ok(Lookup {
            generation,
            tag_epoch: 0,
            clock,
            entry,
        })
    }

    /// The surrogate-tag epoch (in another hash slot than the resource's
    /// keys, hence a command of its own).
    async fn tag_epoch(&self) -> Result<u64, Failure> {
        let inner = self.inner();
        let mut invocation = inner.scripts.tag_epoch.prepare_invoke();
        invocation.key(self.epoch_key());
        let value = self.run(&invocation).await?;
        number(&value).ok_or(Failure::Reply)
    }

    /// Runs a script (`EVALSHA`, loaded again on `NOSCRIPT`) on a handle of
    /// the shared connection.
    async fn run(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        let mut connection = self.inner().connection.clone();
        Ok(invocation.invoke_async(&mut connection).await?)
    }

    /// The entry without the variants whose surrogate tags were invalidated
    /// since their fill (one more round trip, for tagged entries only).
    async fn current_tags(&self, entry: Entry) -> Result<Option<Entry>, Failure> {
        let mut tags: Vec<Key> = entry
            .variants()
            .iter()
            .flat_map(|v| v.tags.iter().map(|(tag, _)| *tag))
            .collect();
        if tags.is_empty() {
            return Ok(Some(entry));
        }
        tags.sort_unstable();
        tags.dedup();
        let mut command = ::redis::cmd("MGET");
        for tag in &tags {
            command.arg(self.tag_key(*tag));
        }
        let mut connection = self.inner().connection.clone();
        let values: Vec<Value> = command.query_async(&mut connection).await?;
        let current = |tag: &Key| {
            let index = tags.binary_search(tag).ok()?;
            values.get(index).and_then(number)
        };
        Ok(entry.retain(|_, variant| {
            !self.pending_tag(&variant.tags)
                && variant
                    .tags
                    .iter()
                    .all(|(tag, generation)| current(tag) == Some(*generation))
        }))
    }

    /// Stores a fill in the background, then calls `done` with whether it
    /// stored.
    pub(crate) fn fill(
        self: &Arc<Self>,
        fill: Fill,
        clock: u64,
        done: impl FnOnce(bool) + Send + 'static,
    ) {
        if self.is_pending(&fill.resource) {
            return done(false);
        }
        let this = Arc::clone(self);
        self.inner().runtime.spawn(async move {
            let stored = this.guarded("fill", this.fill_now(fill, clock)).await;
            done(stored == Some(true));
        });
    }

    async fn fill_now(&self, fill: Fill, clock: u64) -> Result<bool, Failure> {
        let inner = self.inner();
        let mut tags = Vec::with_capacity(fill.tags.len());
        if !fill.tags.is_empty() {
            let mut invocation = inner.scripts.tag_fill.prepare_invoke();
            invocation.key(self.epoch_key());
            for tag in &fill.tags {
                invocation.key(self.tag_key(*tag));
            }
            invocation.arg(fill.tag_epoch).arg(self.life_ms());
            let Value::Array(generations) = self.run(&invocation).await? else {
                // A tag was invalidated since the request arrived.
                return Ok(false);
            };
            for (tag, generation) in fill.tags.iter().zip(&generations) {
                tags.push((*tag, number(generation).ok_or(Failure::Reply)?));
            }
            if tags.len() != fill.tags.len() {
                return Err(Failure::Reply);
            }
        }
        let mut variant = fill.variant.with_tags(tags.into());
        if self.pending_tag(&variant.tags) {
            return Ok(false);
        }
        variant.filled_at = clock;
        let entry = Entry::with(fill.base.as_ref(), variant);
        let mut invocation = inner.scripts.fill.prepare_invoke();
        invocation
            .key(self.generation_key(fill.resource))
            .key(self.entry_key(fill.resource, fill.key))
            .key(self.writes_key(fill.resource))
            .arg(fill.generation)
            .arg(entry.encode(fill.generation))
            .arg(self.ttl_ms())
            .arg(self.life_ms());
        let stored = self.run(&invocation).await?;
        Ok(number(&stored) == Some(1))
    }

    /// Invalidates resources (or, with `tags`, surrogate tags); done when it
    /// returns, or kept for a retry if Redis did not answer in time.
    pub(crate) async fn invalidate(self: &Arc<Self>, keys: &[Key], tags: bool) {
        let done = self
            .guarded("invalidate", self.invalidate_now(keys, tags))
            .await;
        if done.is_none() {
            self.keep_pending(|pending| {
                let set = if tags {
                    &mut pending.tags
                } else {
                    &mut pending.resources
                };
                set.extend(keys.iter().copied());
            });
        }
    }

    async fn invalidate_now(&self, keys: &[Key], tags: bool) -> Result<(), Failure> {
        let inner = self.inner();
        if tags {
            let mut invocation = inner.scripts.tag_invalidate.prepare_invoke();
            invocation.key(self.epoch_key());
            for tag in keys {
                invocation.key(self.tag_key(*tag));
            }
            invocation.arg(self.life_ms());
            self.run(&invocation).await?;
            return Ok(());
        }
        // One script per resource: each is in its own hash slot.
        let calls = keys.iter().map(|resource| {
            let mut invocation = inner.scripts.invalidate.prepare_invoke();
            invocation
                .key(self.generation_key(*resource))
                .arg(self.life_ms());
            async move { self.run(&invocation).await }
        });
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }

    /// Begins a write: invalidates `resource` and holds its fills off until
    /// [`end_write`](Self::end_write). The handle yields the write's id.
    pub(crate) fn begin_write(self: &Arc<Self>, resource: Key) -> (WriteId, JoinHandle<()>) {
        // Ids only need to differ between the writes under way on one
        // resource, across replicas: a counter from a random start per store.
        let id = self.inner().next_write.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let handle = self.inner().runtime.spawn(async move {
            let begun = this.guarded("begin write", this.begin_write_now(resource, id));
            if begun.await.is_none() {
                this.keep_pending(|pending| {
                    pending.resources.insert(resource);
                });
            }
        });
        (id, handle)
    }

    async fn begin_write_now(&self, resource: Key, id: WriteId) -> Result<(), Failure> {
        let inner = self.inner();
        let mut invocation = inner.scripts.begin_write.prepare_invoke();
        invocation
            .key(self.generation_key(resource))
            .key(self.writes_key(resource))
            .arg(self.life_ms())
            .arg(id)
            .arg(self.ttl_ms());
        self.run(&invocation).await?;
        Ok(())
    }

    /// Ends a write in the background: invalidates `resource` and `others`
    /// when `invalidate`, then lets fills of `resource` happen again.
    pub(crate) fn end_write(
        self: &Arc<Self>,
        resource: Key,
        id: WriteId,
        others: Vec<Key>,
        invalidate: bool,
    ) {
        let this = Arc::clone(self);
        self.inner().runtime.spawn(async move {
            let ended = this.guarded(
                "end write",
                this.end_write_now(resource, id, &others, invalidate),
            );
            if ended.await.is_none() && invalidate {
                this.keep_pending(|pending| {
                    pending.resources.insert(resource);
                    pending.resources.extend(others.iter().copied());
                });
            }
        });
    }

    async fn end_write_now(
        &self,
        resource: Key,
        id: WriteId,
        others: &[Key],
        invalidate: bool,
    ) -> Result<(), Failure> {
        let inner = self.inner();
        let mut invocation = inner.scripts.end_write.prepare_invoke();
        invocation
            .key(self.generation_key(resource))
            .key(self.writes_key(resource))
            .arg(self.life_ms())
            .arg(id)
            .arg(if invalidate { "1" } else { "0" });
        self.run(&invocation).await?;
        // Other resources are in other hash slots.
        if invalidate && !others.is_empty() {
            self.invalidate_now(others, false).await?;
        }
        Ok(())
    }

    /// Deletes every key under the prefix. Done when it returns, or kept for
    /// a retry (this replica bypasses the cache until it lands).
    pub(crate) async fn clear(self: &Arc<Self>) {
        // Scanning takes as long as the key space: each command gets the
        // timeout, not the whole.
        if self.clear_now().await.is_err() {
            self.keep_pending(|pending| pending.clear = true);
        }
    }

    async fn clear_now(self: &Arc<Self>) -> Result<(), ()> {
        let inner = self.inner();
        let pattern = format!("{}:*", glob_escape(&inner.prefix));
        let mut cursor = 0u64;
        loop {
            let mut connection = inner.connection.clone();
            let scan = async {
                let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await?;
                if !keys.is_empty() {
                    ::redis::cmd("UNLINK")
                        .arg(&keys)
                        .exec_async(&mut connection)
                        .await?;
                }
                Ok::<_, Failure>(next)
            };
            cursor = self.guarded("clear", scan).await.ok_or(())?;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    /// Runs `operation` within the timeout; counts and traces a failure.
    /// After a success, retries pending invalidations in the background.
    async fn guarded<T>(
        self: &Arc<Self>,
        what: &'static str,
        operation: impl Future<Output = Result<T, Failure>>,
    ) -> Option<T> {
        let inner = self.inner();
        let result = match tokio::time::timeout(inner.timeout, operation).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        };
        match result {
            Ok(value) => {
                if !inner.healthy.swap(true, Ordering::Relaxed) {
                    #[cfg(feature = "tracing")]
                    tracing::info!(target: "tower_etag::cache", "tower-etag cache: Redis answers again");
                }
                if inner.has_pending.load(Ordering::Acquire) {
                    self.flush();
                }
                Some(value)
            }
            Err(_failure) => {
                inner.unavailable.fetch_add(1, Ordering::Relaxed);
                // A warning when Redis stops answering, then one event per
                // failure at debug level: an outage must not flood the logs.
                if inner.healthy.swap(false, Ordering::Relaxed) {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(target: "tower_etag::cache", operation = what, error = %_failure, "tower-etag cache: Redis unavailable, requests go to the handlers");
                } else {
                    #[cfg(feature = "tracing")]
                    tracing::debug!(target: "tower_etag::cache", operation = what, error = %_failure, "tower-etag cache: Redis unavailable");
                }
                let _ = what;
                None
            }
        }
    }

    fn keep_pending(self: &Arc<Self>, add: impl FnOnce(&mut Pending)) {
        let inner = self.inner();
        {
            let mut pending = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            add(&mut pending);
            inner.has_pending.store(true, Ordering::Release);
        }
        self.flush();
    }

    /// Retries the pending invalidations until none is left: now, then
    /// every [`RETRY_INTERVAL`], one task at a time.
    fn flush(self: &Arc<Self>) {
        let inner = self.inner();
        if inner.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        inner.runtime.spawn(async move {
            let inner = this.inner();
            loop {
                this.retry_pending().await;
                if inner.has_pending.load(Ordering::Acquire) {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                    continue;
                }
                inner.flushing.store(false, Ordering::Release);
                // Something added after the check above and before the flag
                // was lowered would otherwise wait for the next failure.
                if !inner.has_pending.load(Ordering::Acquire)
                    || inner.flushing.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    async fn retry_pending(self: &Arc<Self>) {
        let inner = self.inner();
        let (resources, tags, clear) = {
            let pending = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            let resources: Vec<Key> = pending.resources.iter().copied().collect();
            let tags: Vec<Key> = pending.tags.iter().copied().collect();
            (resources, tags, pending.clear)
        };
        let cleared = !clear || self.clear_now().await.is_ok();
        let resources_done = resources.is_empty()
            || self
                .guarded("retry", self.invalidate_now(&resources, false))
                .await
                .is_some();
        let tags_done = tags.is_empty()
            || self
                .guarded("retry", self.invalidate_now(&tags, true))
                .await
                .is_some();
        let mut pending = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if cleared && clear {
            pending.clear = false;
        }
        if resources_done {
            for resource in &resources {
                pending.resources.remove(resource);
            }
        }
        if tags_done {
            for tag in &tags {
                pending.tags.remove(tag);
            }
        }
        inner
            .has_pending
            .store(!pending.is_empty(), Ordering::Release);
        #[cfg(feature = "tracing")]
        if resources_done && tags_done && cleared {
            tracing::debug!(target: "tower_etag::cache", retried = resources.len() + tags.len(), "tower-etag cache: pending invalidations reached Redis");
        }
    }

    fn generation_key(&self, resource: Key) -> String {
        format!("{}:{{{resource:016x}}}:g", self.inner().prefix)
    }

    fn writes_key(&self, resource: Key) -> String {
        format!("{}:{{{resource:016x}}}:w", self.inner().prefix)
    }

    fn entry_key(&self, resource: Key, key: Key) -> String {
        format!("{}:{{{resource:016x}}}:e:{key:016x}", self.inner().prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}:{{tags}}:epoch", self.inner().prefix)
    }

    fn tag_key(&self, tag: Key) -> String {
        format!("{}:{{tags}}:{tag:016x}", self.inner().prefix)
    }
}

/// A random number (std's per-process random SipHash keys, hashed once).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A decimal integer reply (Redis strings and integers).
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// `prefix` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
