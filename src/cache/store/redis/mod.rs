//! The shared store on Redis (feature `redis`): entries, generations and
//! invalidations seen by every replica that points at the same Redis (or
//! Valkey) and key prefix.
//!
//! # Client
//!
//! redis-rs (`redis` 1.x): the most used Rust client, kept by the Redis
//! organisation. The store holds one multiplexed connection per server
//! (commands from every request share it, pipelined), made, verified and
//! replaced by [`link`] rather than by the client's `ConnectionManager` (see
//! there why). On a Redis Cluster it keeps one such connection per primary
//! and routes by hash slot itself ([`nodes`], which says why not with the
//! client's cluster connection). Its types stay inside this module, so a
//! major release of the client is not one of this crate.
//!
//! # Modules
//!
//! [`names`] names the Redis keys (one hash slot per resource, one per
//! surrogate tag), [`scripts`] holds the Lua scripts (`scripts/*.lua`),
//! [`codec`] the entry format, [`link`] a server's connection and when its
//! dataset may be trusted, [`nodes`] which server holds a key,
//! [`attached`] the operations of a store attached to one cache, and
//! [`backlog`] the invalidations waiting for a retry. This module is the
//! public face: [`RedisStore`] and its builder.
//!
//! # Atomicity and generations
//!
//! A lookup reads the generation and the entry in one `MGET` (one hash
//! slot: read together), and compares them here, on the server's clock as
//! the connection last read it ([`link::ServerClock`]); only when the
//! generation is missing does it run the lookup script, which creates it.
//! A surrogate tag's generation lives in a slot of its own; an entry's
//! variants record their tags' generations, read again (with the entry,
//! when the replica knows the resource's tags) to tell whether a tag was
//! invalidated since. A fill with tags is refused when a tag was
//! invalidated after the request arrived: tag generations are the server's
//! time of the change, odd for an invalidation and even for a creation,
//! and the arrival is the lookup's server time, compared with a margin of
//! [`link::MARGIN`] for the clocks of two servers.
//! Every other operation is one Lua script (`EVALSHA`, loaded again on
//! `NOSCRIPT` by the client): a fill stores only if the generation is the one read at
//! arrival and no write is under way; an invalidation moves the generation
//! to `max(g + 1, server time in µs)`. Generations are therefore never
//! reused, also after Redis restarts empty or evicts a generation: a lost
//! generation is created again at the current time, larger than any issued
//! before, so an entry stored under the old one is a miss, never a stale
//! hit. A fill whose generation key is missing stores nothing.
//!
//! # Rollbacks
//!
//! A dataset that rolls back (a restart from a snapshot, a failover to a
//! replica that missed writes, another server behind the address) brings
//! back generations that invalidations had moved on, with the entries
//! stored under them. Every connection is verified before use ([`link`]):
//! when the server behind it is not the one that last vouched for the
//! dataset, no entry stored before that moment (plus one second, for the
//! clocks of two servers) answers again; each is a miss until stored anew.
//!
//! # Faults
//!
//! Every operation is bounded by the store's timeout. A lookup that fails or
//! times out sends the request to the inner service, as without a cache,
//! and stores nothing. An invalidation (from a write or from app code) or a
//! write's end that fails is kept in the [`backlog`] and retried at once
//! after the next operation that succeeds and every 100 ms until it lands,
//! in chunks that leave the backlog as they land; meanwhile this replica
//! answers the resources and tags concerned from its handlers. Other
//! replicas may answer from the old entries until the retry lands: that is
//! the only staleness a fault allows, and strict writes (a write refused
//! when its arrival is not confirmed) remove it.

mod attached;
mod backlog;
mod codec;
mod link;
mod metrics;
mod names;
mod nodes;
mod scripts;
#[cfg(feature = "redis-tls")]
mod tls;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use redis::Client;
use tokio::runtime::Handle;

use self::{
    attached::{Attached, Connection},
    backlog::Backlog,
    link::Link,
    names::KeyNames,
    nodes::{Cluster, Nodes},
    scripts::Scripts,
};
use super::{Attach, Setup, Store};

/// A validator cache store on Redis (or Valkey), shared by every replica
/// that uses the same Redis and prefix; give it to
/// [`ValidatorCacheBuilder::redis`](crate::cache::ValidatorCacheBuilder::redis).
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
/// It starts connecting when built, reconnects by itself, and never makes a request
/// fail: see [the module documentation](crate::cache#on-redis) for what happens
/// when Redis is away. Cloning it shares its connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: Arc<Connection>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.connection.keys.prefix())
            .field("nodes", &self.connection.nodes)
            .field("timeout", &self.connection.timeout)
            .field("strict_writes", &self.connection.strict)
            .field("write_patience", &self.connection.patience)
            .field(
                "unavailable",
                &self.connection.unavailable.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A builder for a store at `url` (`redis://host:port/db`, with
    /// `rediss://` and credentials as the redis crate accepts them).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            urls: vec![url.into()],
            cluster: false,
            prefix: "tower-etag".to_owned(),
            secret: Vec::new(),
            timeout: Duration::from_millis(5),
            strict_writes: false,
            write_patience: Duration::ZERO,
            #[cfg(feature = "metrics")]
            metrics_prefix: "tower_etag".to_owned(),
            #[cfg(feature = "metrics")]
            metrics_labels: Vec::new(),
            tls_roots: None,
            tls_identity: None,
        }
    }

    /// A builder for a store on a Redis Cluster, reached first through
    /// `seeds` (URLs of some of its nodes, as [`builder`](Self::builder)
    /// takes them; the first one's credentials, database and TLS settings
    /// are used for every node). The store reads the cluster's slot map
    /// and keeps a connection to each primary.
    ///
    /// ```no_run
    /// use tower_etag::cache::RedisStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_etag::cache::RedisStoreError> {
    /// let store = RedisStore::cluster(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
    ///     .prefix("notes")
    ///     .build()?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Each shard is verified as a single server is (a failover to a
    /// replica that missed writes costs misses on that shard, never a stale
    /// 304), a redirect (`MOVED`, `ASK`) is not followed but has the slot
    /// map read again, and the request concerned goes to the handler. See
    /// the README's "Redis Cluster".
    pub fn cluster<I>(seeds: I) -> RedisStoreBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut builder = Self::builder(String::new());
        builder.urls = seeds.into_iter().map(Into::into).collect();
        builder.cluster = true;
        builder
    }

    /// Operations that failed or ran past the timeout since the store was
    /// built (the requests concerned went to the inner service).
    pub fn unavailable(&self) -> u64 {
        self.connection.unavailable.load(Ordering::Relaxed)
    }
}

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    /// The server's URL, or the cluster's seeds.
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    secret: Vec<u8>,
    timeout: Duration,
    strict_writes: bool,
    write_patience: Duration,
    #[cfg(feature = "metrics")]
    metrics_prefix: String,
    #[cfg(feature = "metrics")]
    metrics_labels: Vec<(String, String)>,
    /// PEM root certificates that replace the platform's (`redis-tls`).
    tls_roots: Option<Vec<u8>>,
    /// A PEM certificate chain and private key for mutual TLS (`redis-tls`).
    tls_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password, and the secret is one.
        f.debug_struct("RedisStoreBuilder")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("strict_writes", &self.strict_writes)
            .field("write_patience", &self.write_patience)
            .field("tls_roots", &self.tls_roots.is_some())
            .field("tls_identity", &self.tls_identity.is_some())
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

    /// Strict writes (default `false`): a write (any method but `GET`,
    /// `HEAD`, `OPTIONS` and `TRACE`) whose arrival invalidation Redis does
    /// not confirm within the timeout is refused before the handler runs,
    /// with `503 Service Unavailable` and `Retry-After: 1`, so that no
    /// replica can confirm a tag of the write's target that the write
    /// replaced while Redis is away. Reads still go to the handlers when
    /// Redis is away. Resources named by the response's `Location` or
    /// `Content-Location` are invalidated when the write ends, as in the
    /// default mode.
    ///
    /// By default a write goes on when Redis does not answer: its
    /// invalidation is retried until it lands, and other replicas may
    /// confirm the old tag until then. See the README's "Shared cache
    /// failure modes" for what each mode guarantees and when to pick it.
    pub fn strict_writes(mut self, strict: bool) -> Self {
        self.strict_writes = strict;
        self
    }

    /// How long a write waits for Redis to confirm its arrival (and, after
    /// the handler, its end) before it goes on without (default writes) or
    /// is refused (strict writes): each attempt gets the timeout, and they
    /// are repeated every 50 ms until `patience` has passed. Default: zero,
    /// one attempt.
    ///
    /// A write that waits out a short outage (a Redis restart, a cluster
    /// failover: 2–3 s with `cluster-node-timeout 1000`) neither leaves a
    /// window in which other replicas confirm the tag it replaced (default
    /// writes) nor gets a 503 (strict writes); it is slower instead. Reads
    /// never wait past the timeout.
    ///
    /// The waits add up: a write may wait up to `patience` plus one timeout
    /// before its handler runs, and as long again after it, for its end.
    /// Every failed attempt counts in [`unavailable`](RedisStore::unavailable)
    /// (and, with the `metrics` feature, in the timeouts or errors). A write
    /// whose client goes away while its arrival is retried stops retrying.
    pub fn write_patience(mut self, patience: Duration) -> Self {
        self.write_patience = patience;
        self
    }

    /// The prefix of the store's metric names (feature `metrics`; default
    /// `tower_etag`: `tower_etag_redis_operation_duration_seconds`, …).
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// A label added to every metric of this store (feature `metrics`).
    /// Its key must not be `operation`, nor repeat one.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metrics_labels.push((key.into(), value.into()));
        self
    }

    /// Trusts the certificate authorities in `pem` (one or more PEM
    /// certificates) instead of the platform's root certificates, for a
    /// `rediss://` URL: a private CA, as a self-managed Redis with TLS or a
    /// managed service's own CA uses. Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// Presents this client identity (a PEM certificate chain and its PEM
    /// private key) to a Redis that requires client certificates
    /// (`tls-auth-clients yes`): mutual TLS. Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_client_identity(
        mut self,
        certificate_chain_pem: impl Into<Vec<u8>>,
        private_key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_identity = Some((certificate_chain_pem.into(), private_key_pem.into()));
        self
    }

    /// The redis client for a URL and the TLS settings.
    fn client(&self, url: &str) -> Result<Client, RedisStoreError> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        // The schemes the redis client reads as TLS.
        let tls = scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys");
        let custom = self.tls_roots.is_some() || self.tls_identity.is_some();
        if !tls && custom {
            return Err(RedisStoreError::new(ErrorKind::TlsSettingsWithoutTls));
        }
        if !tls {
            return Client::open(url)
                .map_err(|error| RedisStoreError::new(ErrorKind::Client(error)));
        }
        #[cfg(not(feature = "redis-tls"))]
        {
            Err(RedisStoreError::new(ErrorKind::TlsNotEnabled))
        }
        #[cfg(feature = "redis-tls")]
        {
            tls::ensure_crypto_provider();
            let client = if custom {
                let certificates = redis::TlsCertificates {
                    client_tls: self.tls_identity.as_ref().map(|(certificate, key)| {
                        redis::ClientTlsConfig {
                            client_cert: certificate.clone(),
                            client_key: key.clone(),
                        }
                    }),
                    root_cert: self.tls_roots.clone(),
                };
                Client::build_with_tls(url, certificates)
            } else {
                Client::open(url)
            };
            client.map_err(|error| RedisStoreError::new(ErrorKind::Client(error)))
        }
    }

    /// Builds the store. It connects on first use, in the Tokio runtime this
    /// is called in.
    ///
    /// # Errors
    ///
    /// When the URL is not one the redis client accepts, the prefix holds
    /// `{` or `}`, no Tokio runtime is running, the URL is `rediss://`
    /// without the `redis-tls` feature, TLS settings were given for a URL
    /// without TLS, or the client refused the certificates or key; for a
    /// cluster, also when no seed was given or a seed is a Unix socket.
    pub fn build(self) -> Result<RedisStore, RedisStoreError> {
        if self.prefix.contains(['{', '}']) {
            return Err(RedisStoreError::new(ErrorKind::Prefix));
        }
        let runtime =
            Handle::try_current().map_err(|_| RedisStoreError::new(ErrorKind::NoRuntime))?;
        let clients = self
            .urls
            .iter()
            .map(|url| self.client(url))
            .collect::<Result<Vec<_>, _>>()?;
        let mut key_context = Vec::with_capacity(self.prefix.len() + 1 + self.secret.len());
        key_context.extend_from_slice(self.prefix.as_bytes());
        key_context.push(0);
        key_context.extend_from_slice(&self.secret);
        let scripts = Arc::new(Scripts::new());
        let keys = KeyNames::new(self.prefix);
        let serials = Arc::new(AtomicU64::new(0));
        let nodes = if self.cluster {
            if clients.is_empty() {
                return Err(RedisStoreError::new(ErrorKind::NoSeeds));
            }
            let cluster = Cluster::new(
                &clients,
                runtime.clone(),
                Arc::clone(&scripts),
                keys.clone(),
                serials,
            )
            .map_err(|_| RedisStoreError::new(ErrorKind::UnixSeed))?;
            Nodes::Cluster(cluster)
        } else {
            let client = clients.into_iter().next().expect("one URL");
            let dataset = keys.dataset();
            Nodes::Single(Link::new(
                client,
                runtime.clone(),
                Arc::clone(&scripts),
                dataset,
                serials,
            ))
        };
        // Connecting starts now, so that the first request finds a
        // connection; it is retried for ever, with backoff up to 250 ms.
        nodes.start();
        Ok(RedisStore {
            connection: Arc::new(Connection {
                nodes,
                runtime,
                keys,
                key_context,
                timeout: self.timeout,
                scripts,
                backlog: Backlog::default(),
                healthy: AtomicBool::new(true),
                last_failure: AtomicU64::new(0),
                started: std::time::Instant::now(),
                unavailable: AtomicU64::new(0),
                next_write: AtomicU64::new(random_u64()),
                strict: self.strict_writes,
                patience: self.write_patience,
                beginning: Default::default(),
                hints: Default::default(),
                #[cfg(feature = "metrics")]
                metrics: metrics::RedisMetrics::new(&self.metrics_prefix, &self.metrics_labels),
                #[cfg(not(feature = "metrics"))]
                metrics: metrics::RedisMetrics,
            }),
        })
    }
}

impl Attach for RedisStore {
    fn attach(self: Box<Self>, settings: &Setup) -> Arc<dyn Store> {
        Arc::new(Attached::new(
            self.connection,
            settings.time_to_live,
            settings.vary.clone(),
        ))
    }
}

/// Why a [`RedisStore`] could not be built.
#[derive(Debug)]
pub struct RedisStoreError {
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    /// The client refused the URL or the connection settings (its error is
    /// the source).
    Client(redis::RedisError),
    /// The prefix holds `{` or `}`.
    Prefix,
    /// No Tokio runtime is running.
    NoRuntime,
    /// A `rediss://` URL without the `redis-tls` feature.
    #[cfg_attr(feature = "redis-tls", allow(dead_code))]
    TlsNotEnabled,
    /// Root certificates or a client identity for a URL without TLS.
    TlsSettingsWithoutTls,
    /// A cluster without seeds.
    NoSeeds,
    /// A cluster seed that is a Unix socket.
    UnixSeed,
}

impl RedisStoreError {
    fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }
}

impl fmt::Display for RedisStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Client(_) => f.write_str(
                "redis store: the Redis client refused the URL or the connection settings",
            ),
            ErrorKind::Prefix => f.write_str("redis store: the prefix may not contain { or }"),
            ErrorKind::NoRuntime => f.write_str("redis store: no Tokio runtime is running"),
            ErrorKind::TlsNotEnabled => {
                f.write_str("redis store: a rediss:// URL needs tower-etag's `redis-tls` feature")
            }
            ErrorKind::TlsSettingsWithoutTls => f.write_str(
                "redis store: TLS certificates were given for a URL without TLS (use rediss://)",
            ),
            ErrorKind::NoSeeds => f.write_str("redis store: a cluster needs at least one seed URL"),
            ErrorKind::UnixSeed => f.write_str(
                "redis store: a cluster's seeds must be TCP addresses, not Unix sockets",
            ),
        }
    }
}

impl std::error::Error for RedisStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Client(error) => Some(error),
            _ => None,
        }
    }
}

/// A random number (std's per-process random SipHash keys, hashed once).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
