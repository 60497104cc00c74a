//! The store's operations on Redis: each a command or a script on the
//! verified connection of the server that holds its keys ([`Nodes`]),
//! within the timeout; lookups in the request's own task, the others in a
//! task on the store's runtime; failures counted, logged at their
//! transitions, and failed invalidations kept in the [`Backlog`] and
//! retried.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::HeaderName;
use redis::{Cmd, FromRedisValue, ScriptInvocation, Value};
use sync_wrapper::SyncWrapper;
use tokio::{runtime::Handle, task::JoinHandle};

use super::{
    backlog::{Backlog, Item},
    codec,
    link::{Verified, MARGIN},
    metrics::{Ended, RedisMetrics},
    names::KeyNames,
    nodes::Nodes,
    scripts::Scripts,
};
use crate::cache::{
    entry::Entry,
    hashing::Key,
    store::{Answer, Begin, Fill, FillDone, Later, Lookup, Query, Store, WriteId},
};

/// The longest `PX` sent: Redis refuses one that, added to its clock in
/// milliseconds, passes `i64::MAX` (a time-to-live of `Duration::MAX` would).
/// 2^50 ms is some 35,000 years.
const MAX_PX: u64 = 1 << 50;

/// How long a generation created by a lookup lives without a fill: longer
/// than any request takes from its lookup to its fill.
const PROBATION_MS: u64 = 60_000;

/// How often a write waiting for Redis (within its patience) tries again.
const PATIENCE_INTERVAL: Duration = Duration::from_millis(50);

/// How often invalidations that could not reach Redis are tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// How many pending items one retry sends at once, each under the timeout:
/// the scripts are pipelined on the connections, and what lands leaves the
/// backlog item by item, so a long backlog converges however short the
/// timeout.
const CHUNK: usize = 64;

/// How long Redis must answer without a failure before it is reported as
/// answering again: one success between failures is not a recovery, and
/// logs should not flap.
const RECOVERY: Duration = Duration::from_secs(1);

/// A store's connection and state, shared by its clones and by every cache
/// it is attached to.
pub(super) struct Connection {
    /// The server, or the cluster's primaries.
    pub(super) nodes: Nodes,
    pub(super) runtime: Handle,
    pub(super) keys: KeyNames,
    /// What the keyed hash of keys is derived from: the prefix and the
    /// secret.
    pub(super) key_context: Vec<u8>,
    pub(super) timeout: Duration,
    pub(super) scripts: Arc<Scripts>,
    pub(super) backlog: Backlog,
    pub(super) healthy: AtomicBool,
    /// When the last operation failed, in milliseconds since `started`.
    pub(super) last_failure: AtomicU64,
    pub(super) started: std::time::Instant,
    pub(super) unavailable: AtomicU64,
    pub(super) next_write: AtomicU64,
    /// Writes whose arrival Redis does not confirm are refused.
    pub(super) strict: bool,
    /// How long a write's arrival and end wait for Redis.
    pub(super) patience: Duration,
    /// The writes whose arrival is being retried (with a patience), and
    /// whether each has ended meanwhile (its client went away): a retry
    /// must not record a write under way after its end.
    pub(super) beginning: Mutex<HashMap<u64, bool>>,
    pub(super) hints: TagHints,
    pub(super) metrics: RedisMetrics,
}

/// The surrogate tags last seen on each resource's entry, so that a
/// revalidation reads their generations together with the entry: a tagged
/// hit in one round trip instead of two. Only a hint: an entry found with
/// other tags has them read next. At most [`MAX_HINTS`] resources (all
/// forgotten when full: hints come back with the next lookup of each).
#[derive(Default)]
pub(super) struct TagHints(Mutex<HashMap<Key, Arc<[Key]>>>);

/// How many resources' tags [`TagHints`] keeps (some 3 MB).
const MAX_HINTS: usize = 1 << 16;

impl TagHints {
    fn get(&self, resource: Key) -> Option<Arc<[Key]>> {
        let hints = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hints.get(&resource).cloned()
    }

    /// Records `tags` (sorted, without duplicates) as `resource`'s; none
    /// forgets it.
    fn set(&self, resource: Key, tags: &[Key]) {
        let mut hints = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if tags.is_empty() {
            hints.remove(&resource);
            return;
        }
        if hints.get(&resource).is_some_and(|known| **known == *tags) {
            return;
        }
        if hints.len() >= MAX_HINTS {
            hints.clear();
        }
        hints.insert(resource, tags.into());
    }
}

impl Drop for Connection {
    /// What never reached Redis is said, not lost silently: the replicas
    /// that remain may answer from what it concerned until the entries'
    /// time-to-live runs out.
    fn drop(&mut self) {
        let pending = self.backlog.len();
        if pending > 0 {
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "tower_etag::cache", pending, "tower-etag cache: store dropped with invalidations that never reached Redis");
        }
    }
}

/// A [`Connection`] attached to one cache, with the cache's settings: the
/// store the cache uses.
pub(super) struct Attached(Arc<Inner>);

struct Inner {
    connection: Arc<Connection>,
    time_to_live: Duration,
    vary: Box<[HeaderName]>,
}

impl Attached {
    pub(super) fn new(
        connection: Arc<Connection>,
        time_to_live: Duration,
        vary: Box<[HeaderName]>,
    ) -> Self {
        Self(Arc::new(Inner {
            connection,
            time_to_live,
            vary,
        }))
    }
}

impl fmt::Debug for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connection = &self.0.connection;
        f.debug_struct("RedisStore")
            .field("prefix", &connection.keys.prefix())
            .field("timeout", &connection.timeout)
            .finish_non_exhaustive()
    }
}

/// What went wrong with one operation.
enum Failure {
    Redis(redis::RedisError),
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

impl From<redis::RedisError> for Failure {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error)
    }
}

/// A task's result as a store's answer; a task that panicked or was
/// cancelled (the runtime shutting down) answers `fallback`.
struct Task<T> {
    handle: JoinHandle<T>,
    fallback: Option<T>,
    what: &'static str,
}

impl<T> Task<T> {
    fn new(handle: JoinHandle<T>, fallback: T, what: &'static str) -> Box<Self> {
        Box::new(Self {
            handle,
            fallback: Some(fallback),
            what,
        })
    }
}

/// A future run by the task that waits for its answer. Wrapped so that it
/// is `Sync` as `Later` requires (it is only ever polled through `&mut`).
struct Inline<T>(SyncWrapper<Pin<Box<dyn Future<Output = T> + Send>>>);

impl<T> Later<T> for Inline<T> {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        self.0.get_mut().as_mut().poll(cx)
    }
}

impl<T: Send + Sync> Later<T> for Task<T> {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        std::pin::Pin::new(&mut self.handle).poll(cx).map(|result| {
            result.unwrap_or_else(|_error| {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "tower_etag::cache", operation = self.what, error = %_error, "tower-etag cache: Redis operation cancelled (runtime shutting down?)");
                let _ = self.what;
                self.fallback.take().expect("answered once")
            })
        })
    }
}

impl Store for Attached {
    fn key_material(&self) -> Option<&[u8]> {
        Some(&self.0.connection.key_context)
    }

    /// One command (`MGET`), unless the resource's generation is missing
    /// (the lookup script then creates it); for an entry with surrogate
    /// tags, their generations are read with it when this replica knows
    /// them ([`TagHints`]), else next.
    fn lookup(&self, query: Query) -> Answer<Option<Lookup>> {
        // An invalidation of this resource has not reached Redis yet: answer
        // from the handler, store nothing.
        if self.0.connection.backlog.has_resource(&query.resource) {
            return Answer::Now(None);
        }
        let this = Arc::clone(&self.0);
        // Run by the request's own task (no task of its own: nothing is
        // left to finish if the request goes away).
        let lookup = async move {
            let lookup = async {
                // The fill runs on this connection too.
                let link = this.connection.nodes.get(query.resource).await;
                // Only a revalidation can hit, and only a hit needs the
                // tags.
                let hint = query
                    .may_hit
                    .then(|| this.connection.hints.get(query.resource));
                this.lookup(&link, query.resource, query.entry, hint.flatten())
                    .await
            };
            this.guarded("lookup", lookup).await
        };
        Answer::Later(Box::new(Inline(SyncWrapper::new(Box::pin(lookup)))))
    }

    fn fill(&self, fill: Fill, done: FillDone) {
        if self.0.connection.backlog.has_resource(&fill.resource) {
            return done(false);
        }
        let this = Arc::clone(&self.0);
        self.0.connection.runtime.spawn(async move {
            let stored = this.guarded("fill", this.fill(fill)).await;
            done(stored == Some(true));
        });
    }

    fn invalidate(&self, keys: Vec<Key>, tags: bool) -> Answer<bool> {
        let this = Arc::clone(&self.0);
        let task = self.0.connection.runtime.spawn(async move {
            let done = this.guarded("invalidate", this.invalidate(&keys, tags));
            if done.await.is_some() {
                return true;
            }
            let item = if tags { Item::Tag } else { Item::Resource };
            this.keep_pending(keys.into_iter().map(item), false);
            false
        });
        Answer::Later(Task::new(task, false, "invalidate"))
    }

    fn begin_write(&self, resource: Key) -> (WriteId, Answer<Begin>) {
        // Ids only need to differ between the writes under way on one
        // resource, across replicas: a counter from a random start per store.
        let id = WriteId(self.0.connection.next_write.fetch_add(1, Ordering::Relaxed));
        let strict = self.0.connection.strict;
        let this = Arc::clone(&self.0);
        let patient = !self.0.connection.patience.is_zero();
        if patient {
            self.0.connection.lock_beginning().insert(id.0, false);
        }
        let task = self.0.connection.runtime.spawn(async move {
            let ended = || this.connection.lock_beginning().get(&id.0) == Some(&true);
            let begin = || this.begin_write(resource, id);
            let begun = this.patiently("begin write", begin, ended).await;
            if patient {
                this.connection.lock_beginning().remove(&id.0);
            }
            if begun.is_some() {
                return Begin::Proceed;
            }
            if strict {
                // Nothing will be written: no invalidation is owed (the
                // refused write's end removes its id, if the begin landed
                // after all).
                return Begin::Refuse;
            }
            this.keep_pending([Item::Resource(resource)], false);
            Begin::Proceed
        });
        let fallback = if strict {
            Begin::Refuse
        } else {
            Begin::Proceed
        };
        (id, Answer::Later(Task::new(task, fallback, "begin write")))
    }

    fn end_write(
        &self,
        resource: Key,
        id: WriteId,
        others: Vec<Key>,
        invalidate: bool,
    ) -> Answer<()> {
        if let Some(ended) = self.0.connection.lock_beginning().get_mut(&id.0) {
            *ended = true;
        }
        let this = Arc::clone(&self.0);
        let task = self.0.connection.runtime.spawn(async move {
            let end = || this.end_write(resource, id, &others, invalidate);
            if this.patiently("end write", end, || false).await.is_some() {
                return;
            }
            // The end is kept like an invalidation: the write's id must
            // leave the writes under way (or no replica fills the resource
            // until it expires), after the resource moved on.
            let end = Item::End {
                resource,
                id: id.0,
                invalidate,
            };
            let others = others.into_iter().filter(|_| invalidate);
            let resources = others.chain(invalidate.then_some(resource));
            this.keep_pending(resources.map(Item::Resource).chain([end]), false);
        });
        Answer::Later(Task::new(task, (), "end write"))
    }

    /// Deletes every key under the prefix; kept for a retry if Redis did not
    /// answer (this replica bypasses the cache until it lands).
    fn clear(&self) -> Answer<bool> {
        let this = Arc::clone(&self.0);
        let task = self.0.connection.runtime.spawn(async move {
            if this.clear().await.is_ok() {
                return true;
            }
            this.keep_pending([], true);
            false
        });
        Answer::Later(Task::new(task, false, "clear"))
    }

    fn unavailable(&self) -> u64 {
        self.0.connection.unavailable.load(Ordering::Relaxed)
    }

    fn pending(&self) -> u64 {
        self.0.connection.backlog.len() as u64
    }
}

impl Connection {
    fn lock_beginning(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        self.beginning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Inner {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.time_to_live.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_PX)
    }

    /// How long generations live after their last use: twice the entries'
    /// time-to-live, so a generation outlives every entry stored under it.
    fn life_ms(&self) -> u64 {
        self.ttl_ms().saturating_mul(2).min(MAX_PX)
    }

    /// How long a generation created by a lookup lives until a fill (or a
    /// write) extends it: a URI looked up once and never stored (a scanner's
    /// 404s) leaves a key for this long, not for two time-to-lives. A fill
    /// that comes later stores nothing (the generation is gone).
    fn probation_ms(&self) -> u64 {
        self.life_ms().min(PROBATION_MS)
    }

    /// Reads the resource's generation and the entry in one command
    /// (`MGET`: both keys are in the resource's hash slot, read together);
    /// the server's time for the entry's age comes from the connection's
    /// clock. Only when the generation is missing (or not one a script
    /// would accept) does the lookup script run, which creates it.
    ///
    /// With `hint` (the tags the resource's entry had last time), their
    /// generations are read at the same time.
    async fn lookup(
        &self,
        link: &Verified,
        resource: Key,
        key: Key,
        hint: Option<Arc<[Key]>>,
    ) -> Result<Lookup, Failure> {
        let connection = &self.connection;
        // The server's time for the entry's age (from above), and the
        // request's arrival for the fill's surrogate tags (from below: an
        // invalidation after it must not look earlier).
        let clock = link.clock.now();
        let arrival = link.clock.now_lower();
        let generation_key = connection.keys.generation(resource);
        let entry_key = connection.keys.entry(resource, key);
        let mut read = redis::cmd("MGET");
        read.arg(&generation_key).arg(&entry_key);
        let read = self.query::<Vec<Value>>(link, &read);
        let (values, tags) = match hint {
            Some(tags) => {
                let (values, current) =
                    futures_util::future::join(read, self.tag_generations(link, &tags)).await;
                (
                    values?,
                    Some(Tags {
                        tags,
                        current: current?,
                    }),
                )
            }
            None => (read.await?, None),
        };
        let generation = values.first().and_then(generation);
        if let (Some(generation), Some(entry)) = (generation, values.get(1)) {
            let mut lookup = self
                .looked_up(link, resource, generation, clock, entry, tags)
                .await?;
            lookup.tag_epoch = arrival;
            return Ok(lookup);
        }
        let mut invocation = connection.scripts.lookup.prepare_invoke();
        invocation
            .key(generation_key)
            .key(entry_key)
            .arg(self.probation_ms());
        let reply = self.run_on(link, &invocation).await?;
        let Value::Array(items) = reply else {
            return Err(Failure::Reply);
        };
        let generation = items.first().and_then(number).ok_or(Failure::Reply)?;
        let clock = items.get(1).and_then(number).ok_or(Failure::Reply)?;
        let entry = items.get(2).unwrap_or(&Value::Nil);
        let mut lookup = self
            .looked_up(link, resource, generation, clock, entry, tags)
            .await?;
        lookup.tag_epoch = arrival;
        Ok(lookup)
    }

    /// A lookup's answer from the resource's `generation`, the server's
    /// time `clock` (µs) and the stored `entry` (nil when none).
    async fn looked_up(
        &self,
        link: &Verified,
        resource: Key,
        generation: u64,
        clock: u64,
        entry: &Value,
        tags: Option<Tags>,
    ) -> Result<Lookup, Failure> {
        let entry = match entry {
            // The header first: the variants are decoded only for an entry
            // that can be used.
            Value::BulkString(bytes) => match codec::peek(bytes) {
                // Stored before the dataset may have rolled back: what
                // invalidated it since may be lost (see `link`).
                Some((stored_at, _)) if stored_at < link.barrier => None,
                // Filled at another generation: invalidated since.
                Some((_, filled_at)) if filled_at != generation => None,
                Some(_) => codec::decode(bytes, &self.vary, clock, self.time_to_live)
                    .unwrap_or_else(unreadable),
                None => unreadable(),
            },
            _ => None,
        };
        let entry = match entry {
            Some(entry) => self.current_tags(link, resource, entry, tags).await?,
            None => None,
        };
        Ok(Lookup {
            generation,
            tag_epoch: clock,
            entry,
            session: link.serial,
        })
    }

    /// Runs a script (`EVALSHA`; loaded when the connection was made, and
    /// again by the client on `NOSCRIPT`) on the verified connection of the
    /// server that holds the keys named after `key`.
    async fn run(&self, key: Key, invocation: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        let link = self.connection.nodes.get(key).await;
        self.run_on(&link, invocation).await
    }

    /// Runs a script on `link`; a connection error drops it (see `link`).
    async fn run_on(
        &self,
        link: &Verified,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<Value, Failure> {
        let mut connection = link.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.failed(link, error))
    }

    /// Runs a command on `link`; a connection error drops it.
    async fn query<T: FromRedisValue>(&self, link: &Verified, command: &Cmd) -> Result<T, Failure> {
        let mut connection = link.connection.clone();
        command
            .query_async(&mut connection)
            .await
            .map_err(|error| self.failed(link, error))
    }

    fn failed(&self, link: &Verified, error: redis::RedisError) -> Failure {
        self.connection.nodes.failed(link, &error);
        Failure::Redis(error)
    }

    /// The entry without the variants whose surrogate tags were invalidated
    /// since their fill: their generations read with the entry (`read`,
    /// from the hint), or else in one more round trip.
    async fn current_tags(
        &self,
        link: &Verified,
        resource: Key,
        entry: Entry,
        read: Option<Tags>,
    ) -> Result<Option<Entry>, Failure> {
        let tags = tags_of(&entry);
        self.connection.hints.set(resource, &tags);
        if tags.is_empty() {
            return Ok(Some(entry));
        }
        let read = match read {
            Some(read) if tags.iter().all(|tag| read.tags.binary_search(tag).is_ok()) => read,
            _ => {
                let current = self.tag_generations(link, &tags).await?;
                Tags {
                    tags: tags.into(),
                    current,
                }
            }
        };
        let current = |tag: &Key| read.current[read.tags.binary_search(tag).ok()?];
        let backlog = &self.connection.backlog;
        Ok(entry.retain(|_, variant| {
            !backlog.has_tag(&variant.tags)
                && variant
                    .tags
                    .iter()
                    .all(|(tag, generation)| current(tag) == Some(*generation))
        }))
    }

    /// The current generation of each tag, `None` for one that is missing
    /// or older than its server's barrier (it may have rolled back: the
    /// next fill with it moves it on). One `MGET` on a single server; on a
    /// cluster, where each tag has its own slot, one `GET` per tag, sent
    /// together.
    async fn tag_generations(
        &self,
        link: &Verified,
        tags: &[Key],
    ) -> Result<Vec<Option<u64>>, Failure> {
        let keys = &self.connection.keys;
        if let Nodes::Single(_) = self.connection.nodes {
            let mut command = redis::cmd("MGET");
            for tag in tags {
                command.arg(keys.tag(*tag));
            }
            let values: Vec<Value> = self.query(link, &command).await?;
            let current = |value: &Value| generation(value).filter(|g| *g >= link.barrier);
            return Ok(values.iter().map(current).collect());
        }
        let reads = tags.iter().map(|tag| async move {
            let link = self.connection.nodes.get(*tag).await;
            let mut command = redis::cmd("GET");
            command.arg(keys.tag(*tag));
            let value: Value = self.query(&link, &command).await?;
            Ok::<_, Failure>(generation(&value).filter(|g| *g >= link.barrier))
        });
        futures_util::future::try_join_all(reads).await
    }

    async fn fill(&self, fill: Fill) -> Result<bool, Failure> {
        let connection = &self.connection;
        let link = connection.nodes.get(fill.resource).await;
        // Not on the connection the lookup ran on: the dataset may have
        // rolled back since, bringing back the generation read then.
        if link.serial != fill.session {
            return Ok(false);
        }
        let mut tags = Vec::with_capacity(fill.tags.len());
        let fills = fill
            .tags
            .iter()
            .map(|tag| self.tag_fill(*tag, fill.tag_epoch, fill.session));
        for (tag, generation) in fill
            .tags
            .iter()
            .zip(futures_util::future::try_join_all(fills).await?)
        {
            // A tag invalidated since the request arrived.
            let Some(generation) = generation else {
                return Ok(false);
            };
            tags.push((*tag, generation));
        }
        let variant = fill.variant.with_tags(tags.into());
        if connection.backlog.has_tag(&variant.tags) {
            return Ok(false);
        }
        let entry = Entry::with(fill.base.as_ref(), variant);
        // The next revalidation reads these tags with the entry.
        connection.hints.set(fill.resource, &tags_of(&entry));
        let mut invocation = connection.scripts.fill.prepare_invoke();
        invocation
            .key(connection.keys.generation(fill.resource))
            .key(connection.keys.entry(fill.resource, fill.key))
            .key(connection.keys.writes(fill.resource))
            .arg(fill.generation)
            .arg(codec::encode(&entry, fill.generation))
            .arg(self.ttl_ms())
            .arg(self.life_ms());
        let stored = self.run_on(&link, &invocation).await?;
        Ok(number(&stored) == Some(1))
    }

    /// A surrogate tag's generation for a fill whose request arrived at
    /// `arrival` (µs, on its resource's server's clock), created or moved on
    /// if missing or older than its server's barrier; `None` when the tag
    /// was invalidated since the request arrived, or may have been (its
    /// server's dataset rolled back since then: what invalidated it may be
    /// lost; on the lookup's own connection, `session`, it cannot have).
    /// Both compare times of two servers, hence [`MARGIN`].
    async fn tag_fill(&self, tag: Key, arrival: u64, session: u64) -> Result<Option<u64>, Failure> {
        let connection = &self.connection;
        let margin = u64::try_from(MARGIN.as_micros()).unwrap_or(u64::MAX);
        let link = connection.nodes.get(tag).await;
        if link.serial != session && link.barrier.saturating_add(margin) > arrival {
            return Ok(None);
        }
        // A request that took longer than the time-to-live: its tags may
        // have been invalidated and then expired (after twice that) since
        // it arrived, which a missing tag would not tell.
        let took = link.clock.now().saturating_sub(arrival);
        if took >= self.ttl_ms().saturating_mul(1000) {
            return Ok(None);
        }
        let mut invocation = connection.scripts.tag_fill.prepare_invoke();
        invocation
            .key(connection.keys.tag(tag))
            .arg(arrival.saturating_sub(margin))
            .arg(link.barrier)
            .arg(self.life_ms());
        let reply = self.run_on(&link, &invocation).await?;
        match reply {
            // Lua's false: nil in RESP2, false in RESP3.
            Value::Nil | Value::Boolean(false) => Ok(None),
            reply => number(&reply).map(Some).ok_or(Failure::Reply),
        }
    }

    async fn invalidate(&self, keys: &[Key], tags: bool) -> Result<(), Failure> {
        let connection = &self.connection;
        // One script per resource or tag: each is in its own hash slot.
        let calls = keys.iter().map(|key| {
            let (script, name) = if tags {
                (
                    &connection.scripts.tag_invalidate,
                    connection.keys.tag(*key),
                )
            } else {
                (
                    &connection.scripts.invalidate,
                    connection.keys.generation(*key),
                )
            };
            let mut invocation = script.prepare_invoke();
            invocation.key(name).arg(self.life_ms());
            async move { self.run(*key, &invocation).await }
        });
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
        Ok(())
    }

    async fn begin_write(&self, resource: Key, id: WriteId) -> Result<(), Failure> {
        let connection = &self.connection;
        let mut invocation = connection.scripts.begin_write.prepare_invoke();
        invocation
            .key(connection.keys.generation(resource))
            .key(connection.keys.writes(resource))
            .arg(self.life_ms())
            .arg(id.0)
            .arg(self.ttl_ms());
        self.run(resource, &invocation).await?;
        Ok(())
    }

    async fn end_write(
        &self,
        resource: Key,
        id: WriteId,
        others: &[Key],
        invalidate: bool,
    ) -> Result<(), Failure> {
        let connection = &self.connection;
        let mut invocation = connection.scripts.end_write.prepare_invoke();
        invocation
            .key(connection.keys.generation(resource))
            .key(connection.keys.writes(resource))
            .arg(self.life_ms())
            .arg(id.0)
            .arg(if invalidate { "1" } else { "0" });
        self.run(resource, &invocation).await?;
        // Other resources are in other hash slots.
        if invalidate && !others.is_empty() {
            self.invalidate(others, false).await?;
        }
        Ok(())
    }

    /// Deletes every key under the prefix. Scanning takes as long as the
    /// key space: each command gets the timeout, not the whole.
    async fn clear(self: &Arc<Self>) -> Result<(), ()> {
        // Each primary of a cluster holds its own keys; a shard without a
        // known primary leaves the clear pending.
        let Some(primaries) = self.connection.nodes.primaries() else {
            return Err(());
        };
        for primary in primaries {
            self.clear_on(&primary).await?;
        }
        Ok(())
    }

    /// Deletes every key under the prefix on one server.
    async fn clear_on(self: &Arc<Self>, server: &Arc<super::link::Link>) -> Result<(), ()> {
        let pattern = self.connection.keys.pattern();
        let mut cursor = 0u64;
        loop {
            let scan = async {
                let link = server.get().await;
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, mut keys): (u64, Vec<Vec<u8>>) = self.query(&link, &scan).await?;
                // The dataset's identity and barrier stay: they are not
                // entries, and losing them would cost the margin for a
                // rollback (see `link`).
                keys.retain(|key| !KeyNames::is_dataset(key));
                if !keys.is_empty() {
                    // One `UNLINK` per key, pipelined: on a cluster, one
                    // command may not name keys of several slots.
                    let mut unlink = redis::pipe();
                    for key in &keys {
                        unlink.cmd("UNLINK").arg(key).ignore();
                    }
                    let mut connection = link.connection.clone();
                    unlink
                        .query_async::<()>(&mut connection)
                        .await
                        .map_err(|error| self.failed(&link, error))?;
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
        let connection = &self.connection;
        let started = connection.metrics.start();
        let result = match tokio::time::timeout(connection.timeout, operation).await {
            Ok(result) => result,
            Err(_) => {
                connection.nodes.timed_out();
                Err(Failure::Timeout)
            }
        };
        let ended = match &result {
            Ok(_) => Ended::Ok,
            Err(Failure::Timeout) => Ended::Timeout,
            Err(_) => Ended::Error,
        };
        connection.metrics.operation(what, started, ended);
        let now = connection.elapsed_ms();
        match result {
            Ok(value) => {
                // Hysteresis: back to healthy only after RECOVERY without a
                // failure, so an outage logs one warning and one recovery.
                let quiet = now.saturating_sub(connection.last_failure.load(Ordering::Relaxed));
                if !connection.healthy.load(Ordering::Relaxed)
                    && quiet >= RECOVERY.as_millis() as u64
                    && !connection.healthy.swap(true, Ordering::Relaxed)
                {
                    connection.metrics.available(true);
                    #[cfg(feature = "tracing")]
                    tracing::info!(target: "tower_etag::cache", "tower-etag cache: Redis answers again");
                }
                if !connection.backlog.is_empty() {
                    self.retry();
                }
                Some(value)
            }
            Err(_failure) => {
                connection.last_failure.store(now, Ordering::Relaxed);
                connection.unavailable.fetch_add(1, Ordering::Relaxed);
                // A warning when Redis stops answering, then one event per
                // failure at debug level: an outage must not flood the logs.
                if connection.healthy.swap(false, Ordering::Relaxed) {
                    connection.metrics.available(false);
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

    /// Runs the operation `attempt` makes, each attempt within the timeout,
    /// until one succeeds, the store's write patience has passed, or
    /// `stop` holds before a retry.
    async fn patiently<T, F>(
        self: &Arc<Self>,
        what: &'static str,
        attempt: impl Fn() -> F,
        stop: impl Fn() -> bool,
    ) -> Option<T>
    where
        F: Future<Output = Result<T, Failure>>,
    {
        let deadline = tokio::time::Instant::now() + self.connection.patience;
        loop {
            if let Some(done) = self.guarded(what, attempt()).await {
                return Some(done);
            }
            if tokio::time::Instant::now() + PATIENCE_INTERVAL > deadline {
                return None;
            }
            tokio::time::sleep(PATIENCE_INTERVAL).await;
            if stop() {
                return None;
            }
        }
    }

    /// Keeps invalidations (or a clear) for a retry, and starts retrying.
    fn keep_pending(self: &Arc<Self>, items: impl IntoIterator<Item = Item>, clear: bool) {
        let collapsed = self.connection.backlog.add(items, clear);
        self.connection
            .metrics
            .pending(self.connection.backlog.len());
        if collapsed {
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "tower_etag::cache", bound = super::backlog::MAX_PENDING, "tower-etag cache: too many invalidations wait for Redis; this replica bypasses the cache until a clear of the whole prefix lands");
        }
        self.retry();
    }

    /// Retries the pending invalidations until none is left: now, then
    /// every [`RETRY_INTERVAL`], one loop at a time.
    fn retry(self: &Arc<Self>) {
        if !self.connection.backlog.start_retrying() {
            return;
        }
        let this = Arc::clone(self);
        self.connection.runtime.spawn(async move {
            loop {
                this.retry_once().await;
                if !this.connection.backlog.is_empty() {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                    continue;
                }
                if this.connection.backlog.stop_retrying() {
                    return;
                }
            }
        });
    }

    /// One attempt at what is pending: a clear first (it covers the rest),
    /// then resources, tags and write ends in chunks of [`CHUNK`], each item
    /// under its own timeout and leaving the backlog as it lands. Stops
    /// after a chunk of which nothing landed (Redis is away; the next
    /// attempt is [`RETRY_INTERVAL`] later); on a cluster, the items of a
    /// shard that is away stay while the others land.
    async fn retry_once(self: &Arc<Self>) {
        let backlog = &self.connection.backlog;
        let snapshot = backlog.snapshot();
        if snapshot.clear.is_some() {
            if self.clear().await.is_ok() {
                backlog.cleared(&snapshot);
                self.connection.metrics.pending(backlog.len());
            }
            return;
        }
        // Resources before write ends: an end lets fills happen again, so
        // its resource moves on first (the end's script also moves it).
        let mut items = snapshot.items;
        items.sort_unstable_by_key(|(item, _)| match item {
            Item::Resource(_) => 0,
            Item::Tag(_) => 1,
            Item::End { .. } => 2,
        });
        for chunk in chunks_of_one_kind(&items) {
            let landed = self.retry_chunk(chunk).await;
            backlog.landed(&landed);
            self.connection.metrics.pending(backlog.len());
            if landed.is_empty() {
                return;
            }
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "tower_etag::cache", retried = items.len(), "tower-etag cache: pending invalidations reached Redis");
    }

    /// Sends one chunk of pending items together (pipelined on each
    /// server's connection), each under the timeout; returns those that
    /// landed.
    async fn retry_chunk(self: &Arc<Self>, chunk: &[(Item, u64)]) -> Vec<(Item, u64)> {
        let sends = chunk.iter().map(|pending| async move {
            let sent = match pending.0 {
                Item::Resource(key) => self.guarded("retry", self.invalidate(&[key], false)).await,
                Item::Tag(key) => self.guarded("retry", self.invalidate(&[key], true)).await,
                Item::End {
                    resource,
                    id,
                    invalidate,
                } => {
                    let end = self.end_write(resource, WriteId(id), &[], invalidate);
                    self.guarded("retry", end).await
                }
            };
            sent.map(|()| *pending)
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The surrogate tags of an entry's variants, sorted, without duplicates.
fn tags_of(entry: &Entry) -> Vec<Key> {
    let mut tags: Vec<Key> = entry
        .variants()
        .iter()
        .flat_map(|v| v.tags.iter().map(|(tag, _)| *tag))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}

/// Surrogate tags (sorted) and their current generations, as
/// [`Inner::tag_generations`] reads them.
struct Tags {
    tags: Arc<[Key]>,
    current: Vec<Option<u64>>,
}

/// An entry that cannot be read (another format, written by hand,
/// damaged): a miss.
fn unreadable() -> Option<Entry> {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "tower_etag::cache", "tower-etag cache: unreadable entry in Redis, a miss");
    None
}

/// Chunks of at most [`CHUNK`] items, each of one kind (`items` sorted by
/// kind).
fn chunks_of_one_kind(items: &[(Item, u64)]) -> impl Iterator<Item = &[(Item, u64)]> {
    let kind = |item: &Item| std::mem::discriminant(item);
    items
        .chunk_by(move |(a, _), (b, _)| kind(a) == kind(b))
        .flat_map(|run| run.chunks(CHUNK))
}

/// A generation as the scripts accept it (`valid` in `prelude.lua`): a
/// positive integer below 2^53 in canonical decimal form. Anything else
/// (missing, written by hand, past 2^53) is left to the lookup script,
/// which replaces it.
fn generation(value: &Value) -> Option<u64> {
    let Value::BulkString(bytes) = value else {
        return None;
    };
    let canonical = !bytes.is_empty()
        && bytes.len() <= 16
        && bytes[0] != b'0'
        && bytes.iter().all(u8::is_ascii_digit);
    let n: u64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    (canonical && n < 1 << 53).then_some(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_read_as_the_scripts_accept_them() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(generation(&bulk("1")), Some(1));
        assert_eq!(
            generation(&bulk("1733222333444555")),
            Some(1_733_222_333_444_555)
        );
        assert_eq!(generation(&bulk("9007199254740991")), Some((1 << 53) - 1));
        for refused in [
            "",
            "0",
            "01",
            "-1",
            "+1",
            "1.0",
            " 1",
            "9007199254740992",
            "x",
        ] {
            assert_eq!(generation(&bulk(refused)), None, "{refused:?}");
        }
        assert_eq!(generation(&Value::Nil), None);
        assert_eq!(generation(&Value::Int(5)), None);
    }

    #[test]
    fn numbers_are_read_from_integers_and_decimal_strings_only() {
        assert_eq!(number(&Value::Int(42)), Some(42));
        assert_eq!(number(&Value::Int(-1)), None);
        assert_eq!(number(&Value::BulkString(b"17".to_vec())), Some(17));
        assert_eq!(number(&Value::BulkString(b"1.5".to_vec())), None);
        assert_eq!(number(&Value::SimpleString("9".to_owned())), Some(9));
        assert_eq!(number(&Value::Nil), None);
    }
}
