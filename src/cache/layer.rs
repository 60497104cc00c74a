//! The [`ValidatorCacheLayer`].

use tower_layer::Layer;

use super::{ValidatorCache, ValidatorCacheService};

/// Answers revalidations from a [`ValidatorCache`] without calling the inner
/// service, and invalidates it on writes.
///
/// Place it **outside** [`ETagLayer`](crate::ETagLayer) and **inside**
/// authentication and authorization: a hit skips everything below it. See
/// the [module documentation](super).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_etag::{cache::{ValidatorCache, ValidatorCacheLayer}, ETagLayer};
///
/// let cache = ValidatorCache::builder().build();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(ETagLayer::new())
///     // Added after, so outside.
///     .layer(ValidatorCacheLayer::new(cache));
/// # let _ = app;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ValidatorCacheLayer {
    cache: ValidatorCache,
}

impl ValidatorCacheLayer {
    /// A layer that uses `cache`.
    pub fn new(cache: ValidatorCache) -> Self {
        Self { cache }
    }
}

impl<S> Layer<S> for ValidatorCacheLayer {
    type Service = ValidatorCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidatorCacheService::new(inner, self.cache.clone())
    }
}
