//! What the layer did with a response, for metrics and logs.

use http::{Extensions, StatusCode};

/// What the layer did with a response.
///
/// With [`ETagLayer::record_outcome`](crate::ETagLayer::record_outcome) the
/// layer inserts it into every response's extensions, where an outer layer
/// can count it; with the `tracing` feature it is also logged at `debug`
/// level.
///
/// ```
/// use axum::{extract::Request, middleware::{self, Next}, response::Response, routing::get, Router};
/// use tower_etag::{ETagLayer, Outcome};
///
/// async fn count(request: Request, next: Next) -> Response {
///     let response = next.run(request).await;
///     match response.extensions().get::<Outcome>() {
///         Some(Outcome::NotModified) => { /* a 304 saved a body */ }
///         Some(Outcome::Skipped(reason)) => { let _ = reason; /* why it was not tagged */ }
///         _ => {}
///     }
///     response
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(ETagLayer::new().record_outcome(true))
///     .layer(middleware::from_fn(count));
/// # let _ = app;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The body was hashed and the response sent with the new `ETag`.
    Tagged,
    /// The request's preconditions were answered with 304 Not Modified.
    NotModified,
    /// The request's preconditions were answered with 412 Precondition
    /// Failed.
    PreconditionFailed,
    /// A [`ValidatorCache`](crate::cache::ValidatorCache) answered the
    /// revalidation with 304 Not Modified without calling the inner service
    /// (recorded with
    /// [`ValidatorCacheBuilder::record_outcome`](crate::cache::ValidatorCacheBuilder::record_outcome)).
    NotModifiedFromCache,
    /// The response was sent on untagged, for this reason.
    Skipped(SkipReason),
}

/// Why a response was sent on untagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The request was neither `GET` nor `HEAD`.
    Method,
    /// The status was not `200 OK`. (A 2xx with a validator of its own is
    /// [`OwnValidator`](Self::OwnValidator).)
    Status,
    /// The response carried the [`SkipETag`](crate::predicate::SkipETag) marker.
    OptedOut,
    /// The response had an `ETag` of its own, or a `Last-Modified` and a
    /// body the layer could not tag; the preconditions were evaluated
    /// against those and held.
    OwnValidator,
    /// The [`Predicate`](crate::predicate::Predicate) declined it.
    Predicate,
    /// The body was larger than
    /// [`max_body_size`](crate::ETagLayer::max_body_size), announced so or
    /// found so while reading; it was streamed on whole.
    TooLarge,
    /// The body failed while it was read; what was read and then the error
    /// were passed on.
    BodyError,
}

/// Logs the outcome (with the `tracing` feature) and, when asked, records it
/// in the response's extensions.
pub(crate) fn record(
    status: StatusCode,
    extensions: &mut Extensions,
    outcome: Outcome,
    insert: bool,
) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: "tower_etag",
        outcome = ?outcome,
        status = status.as_u16(),
        "tower-etag"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = status;
    if insert {
        extensions.insert(outcome);
    }
}
