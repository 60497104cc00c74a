//! A validator cache: answers revalidations with 304 Not Modified without
//! running the handler.
//!
//! [`ETagLayer`](crate::ETagLayer) alone saves the wire, not the work: a
//! conditional `GET` still runs the handler and hashes its body before the
//! 200 becomes a 304. [`ValidatorCacheLayer`] remembers, per request key,
//! the validators of each tagged 200 and the header fields its 304 must
//! carry; a later revalidation whose `If-None-Match` matches is answered at
//! once and the inner service is not called.
//!
//! # Example
//!
//! ```
//! use axum::{body::Body, http::{header, Request, StatusCode}, routing::get, Router};
//! use tower::ServiceExt;
//! use tower_etag::{cache::{ValidatorCache, ValidatorCacheLayer}, ETagLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = ValidatorCache::builder().build();
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ETagLayer::new())
//!     // Outside the ETag layer, inside authentication.
//!     .layer(ValidatorCacheLayer::new(cache.clone()));
//!
//! let response = app.clone().oneshot(Request::new(Body::empty())).await.unwrap();
//! let etag = response.headers()[header::ETAG].clone();
//!
//! // The revalidation is answered from the cache: the handler does not run.
//! let request = Request::builder().header(header::IF_NONE_MATCH, etag).body(Body::empty()).unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
//! assert_eq!(cache.stats().hits, 1);
//! # }
//! ```
//!
//! # When it answers
//!
//! A `GET` or `HEAD` with `If-None-Match` that weakly matches (RFC 9110
//! §13.1.2) the tag of a current entry for its key gets a 304 with the
//! entry's `ETag`, `Cache-Control`, `Content-Location`, `Expires`,
//! `Last-Modified` and `Vary`, and a `Date` generated now (§15.4.5).
//! Everything else goes to the inner service: no `If-None-Match`, no match,
//! `If-None-Match: *`, `If-Match` or `If-Unmodified-Since` present (they are
//! evaluated first, §13.2.2), request `Cache-Control: no-cache` or
//! `Pragma: no-cache` (RFC 9111 §5.2.1.4), other methods.
//!
//! The key is the authority (`Host` or the URI's), path and query (`GET`
//! and `HEAD` share entries), the requester (a hash of `Authorization` and
//! `Cookie`, or [`ValidatorCacheBuilder::partition`]), and the request's
//! values of the fields the stored response's `Vary` names (RFC 9111 §4.1;
//! an absent field matches only an absent one). Key material is hashed.
//!
//! # What it stores
//!
//! A 200 to `GET` with a valid `ETag` (the layer's or the handler's), and a
//! 304 that `ETagLayer` made out of such a 200 (the handler ran, so the tag
//! is current: RFC 9111 §4.3.4), so clients that always revalidate keep
//! hitting after an entry expires. Never: other statuses,
//! `Cache-Control: no-store` or `private`, responses with `Set-Cookie` (a
//! replayed 304 would drop it), `Vary: *` or a `Vary` naming a field outside
//! [`ValidatorCacheBuilder::vary_on`], responses to `HEAD`, untagged
//! responses, more than 4 KiB of remembered header fields.
//!
//! # Invalidation
//!
//! - RFC 9111 §4.4: a request with any method but `GET`, `HEAD`, `OPTIONS`
//!   and `TRACE` invalidates its target when it arrives (nothing is answered
//!   from the old entry while the write runs), stores nothing for it until
//!   the write ends (a `GET` that reads the old data meanwhile cannot leave
//!   it behind), and invalidates it again, with the same-authority
//!   `Location` and `Content-Location` (relative references resolved), when
//!   it is answered with 2xx or 3xx, or never answered. Every `Vary` variant
//!   and every requester's entry goes. gRPC calls (`application/grpc…`)
//!   pass through untouched unless
//!   [`grpc_invalidates`](ValidatorCacheBuilder::grpc_invalidates) is set.
//! - From app code: [`ValidatorCache::invalidate`],
//!   [`ValidatorCache::invalidate_tag`] (with [`CacheTags`] on responses),
//!   [`ValidatorCache::clear`].
//! - A `GET` that read the old data and finishes after a write invalidated
//!   its resource stores nothing: entries carry the generation their
//!   resource had when the request arrived, and generations are never
//!   reused.
//! - A write that bypasses the layer (another service, a job, another
//!   replica, unless the cache is [on Redis](#on-redis)) is not seen:
//!   entries then stay in use until their time-to-live runs out. Keep it as
//!   short as that staleness allows, or invalidate from the code that
//!   writes.
//!
//! # On Redis
//!
//! With the `redis` feature, [`ValidatorCacheBuilder::redis`] keeps the
//! cache in Redis (or Valkey, or Redis Cluster) through a [`RedisStore`],
//! shared by every replica that uses the same Redis, key prefix and secret:
//! a fill through one replica answers revalidations through all, and a
//! write through any invalidates for all. Nothing else in the app changes.
//!
//! - A hit costs one round trip: one command, and for an entry with
//!   [`CacheTags`] one read of its tags' generations sent with it (once the
//!   replica has seen the entry's tags). A miss costs one round trip before
//!   the handler; fills are stored after the response, in the background. A
//!   write waits for one round trip before its handler runs (the arrival
//!   invalidation) and one before its response goes out (its end), so that
//!   no request that follows the response finds what it replaced.
//! - A lookup is one `MGET` of the generation and the entry (a Lua script
//!   when the generation is missing); every other operation is a Lua
//!   script, atomic on the server; generations move
//!   to `max(g + 1, server time in µs)`, so losing a record (a restart
//!   empty, an eviction) causes misses, never a stale hit. A dataset that
//!   rolls back (a restart from a snapshot, a failover to a replica that
//!   missed writes) is noticed when the store verifies its connection
//!   (server identity from `INFO`), and entries stored before it are misses.
//!   Entries expire in Redis at the time-to-live. For one second after a
//!   surrogate tag is invalidated, responses carrying it are not stored
//!   (the margin for two Redis servers' clocks).
//! - On a Redis Cluster ([`RedisStore::cluster`]) every operation goes to
//!   the primary of its key's hash slot, each primary verified as a single
//!   server is; resources and tags spread over every shard.
//! - Faults fail open: every operation is bounded by the store's timeout (5
//!   ms by default); a request whose lookup fails or times out goes to the
//!   inner service and stores nothing, and is counted in
//!   [`CacheStats::unavailable`]. The store reconnects by itself (and
//!   verifies each new connection before using it).
//! - An invalidation (or a write's end) that cannot reach Redis is kept
//!   ([`CacheStats::pending`]) and retried: at once after the next operation
//!   that succeeds, and every 100 ms until it lands, in bounded chunks;
//!   meanwhile this replica answers the resources and tags concerned from
//!   its handlers. Other replicas may confirm the old tags until the retry
//!   lands (within a second of Redis answering again): the only staleness a
//!   fault allows. With
//!   [`strict_writes`](RedisStoreBuilder::strict_writes), a write whose
//!   arrival Redis does not confirm is refused with a 503 instead, so that
//!   no replica confirms a tag it replaced. The README's "Shared cache
//!   failure modes" lists each failure and what it costs in each mode.
//! - It needs a Tokio runtime with time enabled (as hyper and axum servers
//!   have) when the store is built. [`CacheStats::entries`] is not counted.
//!
//! # Layout of this module
//!
//! [`ValidatorCacheLayer`] builds a [`ValidatorCacheService`], which reads
//! each request (`read`: its keys, under the cache's keyed hash,
//! `hashing`), asks the store (`store`, behind one trait with an in-memory
//! and a Redis implementation), and returns a [`ResponseFuture`] that
//! answers a hit or calls the inner service, then stores the response of a
//! miss (`miss`, `entry`) or ends a write (`write`, `invalidation`).
//! [`ValidatorCache`] is the handle the app keeps (`handle`), with the
//! policy it was built with (`policy`).
//!
//! # Placement
//!
//! A hit skips everything below the cache layer. Put it inside
//! authentication and authorization, so that those still run for every
//! request, and outside [`ETagLayer`](crate::ETagLayer), whose responses it
//! remembers. It does not cache bodies: a request without a matching tag
//! still runs the handler.

mod body;
mod entry;
mod future;
mod handle;
mod hashing;
mod invalidation;
mod layer;
mod metrics;
mod miss;
mod policy;
mod read;
mod service;
mod status;
mod store;
mod write;

pub use body::ResponseBody;
pub use entry::CacheTags;
pub use future::ResponseFuture;
pub use handle::{CacheStats, ValidatorCache, ValidatorCacheBuilder};
pub use layer::ValidatorCacheLayer;
pub use service::ValidatorCacheService;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::redis::{RedisStore, RedisStoreBuilder, RedisStoreError};
