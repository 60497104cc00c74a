//! Tower middleware that tags responses with strong BLAKE3 `ETag`s and
//! answers conditional requests with 304 Not Modified or 412 Precondition
//! Failed, per RFC 9110.
//!
//! # Example
//!
//! ```
//! use http::{header, Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_etag::ETagLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), std::convert::Infallible> {
//! let service = ServiceBuilder::new()
//!     .layer(ETagLayer::new())
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::from("hello, world")))
//!     }));
//!
//! // The first response is tagged.
//! let response = service.clone().oneshot(Request::new(())).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! let etag = response.headers()[header::ETAG].clone();
//!
//! // A request that presents the tag is answered with 304 and no content.
//! let request = Request::builder()
//!     .header(header::IF_NONE_MATCH, etag)
//!     .body(())
//!     .unwrap();
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! For a `GET` or `HEAD` answered with `200 OK` and no entity tag of its own,
//! the layer reads the body, hashes it with
//! BLAKE3 as it arrives, and sends it on with a strong `ETag` (the first 128
//! bits of the hash, in hex) and its exact `Content-Length`. The tag is a
//! pure function of the bytes, so every process and replica computes the
//! same tag for the same content.
//!
//! Then it evaluates the request's preconditions in the order of RFC 9110
//! §13.2.2 against that tag and the handler's `Last-Modified`, if any
//! (RFC 9110 §8.8.1 asks for both in a 200), or against the `ETag` the
//! handler set itself:
//!
//! | precondition          | comparison                       | when false |
//! |-----------------------|----------------------------------|------------|
//! | `If-Match`            | strong, `*` matches              | 412        |
//! | `If-Unmodified-Since` | only without `If-Match`, needs `Last-Modified` | 412 |
//! | `If-None-Match`       | weak, `*` matches                | 304        |
//! | `If-Modified-Since`   | only without `If-None-Match`, needs `Last-Modified` | 304 |
//!
//! Invalid field values are ignored, as the RFC requires. A 304 carries no
//! content and keeps every header field of the 200 except representation
//! metadata (`Content-Type`, `Content-Length`, `Content-Encoding`,
//! `Content-Language`, `Content-Range`, `Transfer-Encoding`): `Cache-Control`,
//! `Vary`, `ETag`, `Expires`, `Set-Cookie`, CORS and custom fields stay. A 412
//! carries no content and keeps the `ETag`.
//!
//! Everything else passes through untouched and unbuffered, with no
//! precondition evaluated: other methods (`POST`, `PUT`, gRPC, …), statuses
//! other than 200 without a validator of their own (a 204 leaves exactly as it
//! came), and, by [`DefaultPredicate`](predicate::DefaultPredicate),
//! `Cache-Control: no-store`, server-sent
//! events, gRPC and partial content. A response that is not 2xx is never
//! evaluated (RFC 9110 §13.2.1): a 404 stays a 404.
//!
//! # Buffering
//!
//! Buffering is bounded by [`ETagLayer::max_body_size`] (2 MiB by default)
//! and loses nothing. A response announcing more than the cap (by
//! `Content-Length` or its body's size hint) is not buffered at all. A body
//! that grows past the cap while it is read is sent on untagged: every byte
//! already read, then the rest of the stream. A body error is passed on as a
//! body error after the bytes read before it, so the connection is aborted
//! exactly as it would be without the layer. Trailers are kept; a tagged
//! response with trailers gets no `Content-Length`, so that HTTP/1.1 can
//! still carry them in chunked framing. A body of announced length
//! (`Content-Length` or an exact size hint, up to 2 MiB) is copied as it
//! arrives into one buffer of that length and sent as one frame. Otherwise
//! frames shorter than 16 KiB to 128 KiB (growing with the body) are copied
//! as they arrive into segments, which are hashed and sent in their place,
//! longer frames are kept as they are, and the last frame of a body longer
//! than 128 KiB is made at least that long, so that no short last write is
//! held back by Nagle's algorithm; a response holds at most its body plus
//! about one segment.
//!
//! # `HEAD`
//!
//! A `HEAD` response must carry the `ETag` and `Content-Length` a `GET` would
//! (RFC 9110 §9.3.2), and many stacks return an empty body for `HEAD`, so the
//! layer forwards a `HEAD` to the inner service as a `GET`, hashes that
//! content and drops it. This holds wherever the layer sits: on an axum
//! `Router` via `Router::layer`, around the whole `Router`, or around a plain
//! hyper service. (An inner route that answers only `HEAD` and not `GET`
//! therefore sees a `GET`.)
//!
//! # Unsafe methods
//!
//! Requests with other methods, conditional or not, are passed to the inner
//! service unchanged: `If-Match` on a `PUT` is the handler's to evaluate,
//! since only it knows the current state of the resource it is about to
//! change. The [`conditional`] module gives it the means: the request's
//! preconditions as a value to check inside its transaction, 412 and 428
//! responses, and, through [`ETagLayer::tag_for`], the tag the layer gives
//! the resource's `GET`.
//!
//! # Configuration
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_etag::{predicate::{DefaultPredicate, Predicate}, ETagLayer};
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         ETagLayer::new()
//!             // Tag bodies up to 256 KiB.
//!             .max_body_size(256 * 1024)
//!             // Keep the default rule, and never tag JSON.
//!             .tag_when(DefaultPredicate::new().and(|response: &http::response::Parts| {
//!                 response.headers.get("content-type")
//!                     .is_none_or(|v| v != "application/json")
//!             })),
//!     );
//! # let _ = app;
//! ```
//!
//! A single response opts out with the [`SkipETag`](predicate::SkipETag)
//! marker in its extensions. The [`predicate`] module has the building
//! blocks the default is assembled from, to loosen it as well as narrow it.
//!
//! # Compression
//!
//! A strong tag names exact bytes, so gzip and identity bytes need different
//! tags (RFC 9110 §8.8.3). Put this layer outside any layer that changes the
//! bytes, such as tower-http's `CompressionLayer`: it then hashes the encoded
//! bytes and each coding gets its own tag.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_http::compression::CompressionLayer;
//! use tower_etag::ETagLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(CompressionLayer::new())
//!     // Added last, so outermost.
//!     .layer(ETagLayer::new());
//! # let _ = app;
//! ```
//!
//! Inside the compression the layer would tag the identity bytes it sees,
//! and the compression would send gzip bytes under that same strong tag;
//! the layer cannot see a recoding done after it. If that order cannot be
//! changed, use [`ETagLayer::weak`]. A response already carrying
//! `Content-Encoding` when the layer sees it is hashed as it is.
//!
//! # Answering revalidations without the handler
//!
//! The layer saves sending a body, not computing it: a conditional `GET`
//! still runs the handler. The [`cache`] module's
//! [`ValidatorCacheLayer`](cache::ValidatorCacheLayer), placed outside this
//! layer, remembers the tags of recent 200s and answers matching
//! revalidations with 304 at once, invalidating on writes (RFC 9111 §4.4);
//! with the `redis` feature, one cache is shared by every replica.
//!
//! # Observing outcomes
//!
//! [`ETagLayer::record_outcome`] inserts an [`Outcome`] (tagged, 304, 412, or
//! skipped with a [`SkipReason`]) into each response's extensions, for
//! metrics.
//!
//! # Feature flags
//!
//! | Name | Description | Default |
//! |---|---|---|
//! | `tracing` | Logs each [`Outcome`] at `debug` level under the target `tower_etag`, and the validator cache's fills and invalidations under `tower_etag::cache`. | off |
//! | `axum` | [`conditional::Preconditions`] as an axum extractor and [`conditional::Rejection`] as an axum response. | off |
//! | `cache` | The validator cache: the [`cache`] module (moka). | on |
//! | `redis` | The validator cache shared by several replicas on Redis: `cache::RedisStore` and `ValidatorCacheBuilder::redis` (redis-rs 1.2, Tokio). | off |

// Lints: the `[lints]` table in Cargo.toml, so that they reach the tests,
// examples and benches too.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
pub mod conditional;
mod etag;
#[cfg(feature = "metrics")]
mod metric_labels;
mod outcome;
pub mod predicate;
mod protocol;

pub use etag::{ETag, ETagLayer, ResponseBody, ResponseFuture};
pub use outcome::{Outcome, SkipReason};
pub use protocol::entity_tag::{EntityTag, InvalidEntityTag};

// Compile-time assertions: the public services, futures and bodies are
// `Send + Sync` when their inner types are (axum's `Router::layer` needs
// `Send` futures; `Sync` bodies and futures can be shared across threads).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    type Inner = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
    send_sync::<ETagLayer>();
    send_sync::<ETag<()>>();
    send_sync::<ResponseFuture<Inner, String, predicate::DefaultPredicate>>();
    send_sync::<ResponseBody<String>>();
    send_sync::<conditional::Preconditions>();
    send_sync::<conditional::Rejection>();
    send_sync::<EntityTag>();
};

// The same for the validator cache's.
#[cfg(feature = "cache")]
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    type Inner = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;
    send_sync::<cache::ValidatorCache>();
    send_sync::<cache::ValidatorCacheLayer>();
    send_sync::<cache::ValidatorCacheService<()>>();
    #[derive(Clone)]
    struct Handler;
    impl tower_service::Service<http::Request<String>> for Handler {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = Inner;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<String>) -> Inner {
            std::future::ready(Ok(http::Response::default()))
        }
    }
    send_sync::<cache::ResponseFuture<Handler, String>>();
    send_sync::<cache::ResponseBody<String>>();
    // A response body that is `Send` but not `Sync` (as axum's `Body`)
    // leaves the future `Sync` when the inner future is.
    type Unsync = std::cell::Cell<u8>;
    #[derive(Clone)]
    struct UnsyncBody;
    impl tower_service::Service<http::Request<String>> for UnsyncBody {
        type Response = http::Response<Unsync>;
        type Error = std::convert::Infallible;
        type Future = std::future::Pending<Result<http::Response<Unsync>, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<String>) -> Self::Future {
            std::future::pending()
        }
    }
    send_sync::<cache::ResponseFuture<UnsyncBody, String>>();
};

// The README's examples are compiled and run as doctests.
// (They use the validator cache too.)
#[cfg(all(doctest, feature = "cache"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
