//! The [`ETagLayer`] and its options.

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{config::Config, mint::tag_of, service::ETag};
use crate::{predicate::DefaultPredicate, protocol::entity_tag::EntityTag};

/// Adds an `ETag` to responses and answers conditional `GET` and `HEAD`
/// requests with 304 Not Modified or 412 Precondition Failed.
///
/// See the [crate documentation](crate) for what it does and why.
///
/// ```
/// use tower_etag::ETagLayer;
///
/// let layer = ETagLayer::new()
///     // Buffer and tag bodies of up to 512 KiB; larger ones stream untagged.
///     .max_body_size(512 * 1024);
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct ETagLayer<P = DefaultPredicate> {
    pub(crate) config: Config<P>,
}

impl ETagLayer {
    /// A layer with the defaults: strong tags, a 2 MiB buffering cap and the
    /// [`DefaultPredicate`].
    pub fn new() -> Self {
        Self {
            config: Config::default(),
        }
    }
}

impl Default for ETagLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> ETagLayer<P> {
    /// Sets the buffering cap in bytes (default 2 MiB).
    ///
    /// A response whose `Content-Length` or body size hint already exceeds
    /// the cap is passed through without buffering. A body that grows past
    /// the cap while it is read is sent on untagged: first every byte already
    /// read, then the rest of the stream. Memory held per response is thus
    /// bounded by the cap plus one chunk.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config.settings.max_body_size = bytes;
        self
    }

    /// Emits weak tags (`W/"…"`) instead of strong ones (default `false`).
    ///
    /// The tag is still a hash of the exact bytes. A weak tag only tells
    /// clients and caches not to use it where byte-for-byte identity is
    /// needed (`If-Match`, `If-Range`), which is useful when something after
    /// this layer, such as a proxy that compresses, may change the bytes.
    pub fn weak(mut self, weak: bool) -> Self {
        self.config.settings.weak = weak;
        self
    }

    /// Inserts an [`Outcome`](crate::Outcome) into the extensions of every
    /// response that passes through (default `false`), so that an outer
    /// layer can count tags, 304s, 412s and skipped responses by reason.
    ///
    /// Off by default because inserting an extension allocates. With the
    /// `tracing` feature the outcome is logged at `debug` level either way.
    pub fn record_outcome(mut self, record: bool) -> Self {
        self.config.settings.record_outcome = record;
        self
    }

    /// The prefix of the layer's metric names (feature `metrics`; default
    /// `tower_etag`: `tower_etag_responses_total`, …). The layer registers
    /// its metrics when it is made and again here, with the recorder
    /// installed then.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        let metrics = &mut self.config.settings.metrics;
        *metrics = metrics.with_prefix(prefix.into());
        self
    }

    /// A label added to every metric of this layer (feature `metrics`).
    /// Its key must not be one the metrics use (`outcome`, `reason`), nor
    /// repeat one.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let metrics = &mut self.config.settings.metrics;
        *metrics = metrics.with_label(key.into(), value.into());
        self
    }

    /// Derives tags with keyed BLAKE3 (`blake3::keyed_hash`) under a secret
    /// 32-byte `key` (default: unkeyed).
    ///
    /// An unkeyed tag is a public function of the body: whoever can guess a
    /// small private body (a PIN, a yes/no flag, a balance) can confirm the
    /// guess offline by hashing candidates and comparing them with a tag seen
    /// in a log, a cache or a shared proxy. A keyed tag reveals nothing
    /// without the key. Use it when responses carry secrets of low entropy
    /// and tags may be seen by parties that must not read the bodies.
    ///
    /// Every replica that must validate another's tags needs the same key,
    /// and changing the key changes every tag (clients then refetch once).
    /// Load it from your secret store; never derive it from the content.
    ///
    /// ```
    /// use tower_etag::ETagLayer;
    ///
    /// # let key_from_secret_store = || [7u8; 32];
    /// let layer = ETagLayer::new().keyed(key_from_secret_store());
    /// assert!(format!("{layer:?}").contains("keyed: true"));
    /// ```
    pub fn keyed(mut self, key: [u8; 32]) -> Self {
        self.config.settings.key = Some(Arc::new(key));
        self
    }

    /// The tag this layer gives a `200` whose body is `bytes`: strong or weak
    /// and keyed as configured, the same however the body is chunked.
    ///
    /// A handler that writes a resource can compare a request's `If-Match`
    /// with the tag its `GET` carries, or send the new representation's tag
    /// with a `204` (see [`conditional`](crate::conditional)), as long as it
    /// serializes the resource exactly as its `GET` does. With
    /// [`weak`](Self::weak) tags no `If-Match` can hold (it uses the strong
    /// comparison), so resources written conditionally want strong tags.
    ///
    /// ```
    /// use tower_etag::ETagLayer;
    ///
    /// let layer = ETagLayer::new();
    /// let tag = layer.tag_for(br#"{"title":"hello"}"#);
    /// assert!(!tag.is_weak());
    /// assert_eq!(tag.opaque().len(), 32);
    /// ```
    pub fn tag_for(&self, bytes: impl AsRef<[u8]>) -> EntityTag {
        tag_of(
            bytes.as_ref(),
            self.config.settings.key.as_deref(),
            self.config.settings.weak,
        )
        .to_public()
    }

    /// Replaces the rule that decides which responses are buffered and
    /// tagged (default: [`DefaultPredicate`]), as tower-http's
    /// `CompressionLayer::compress_when` does for compression.
    ///
    /// See [`Predicate`](crate::predicate::Predicate) for what the rule sees
    /// and which checks always apply, and the [`predicate`](crate::predicate)
    /// module for the building blocks of the default.
    ///
    /// ```
    /// use tower_etag::{predicate::{DefaultPredicate, NotForContentType, Predicate}, ETagLayer};
    ///
    /// // The default rule, and never JSON.
    /// let layer = ETagLayer::new()
    ///     .tag_when(DefaultPredicate::new().and(NotForContentType::const_new("application/json")));
    /// # let _ = layer;
    /// ```
    pub fn tag_when<Q>(self, predicate: Q) -> ETagLayer<Q> {
        ETagLayer {
            config: Config {
                settings: self.config.settings,
                predicate,
            },
        }
    }
}

impl<P> fmt::Debug for ETagLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ETagLayer");
        self.config.debug_fields(&mut debug);
        debug.finish()
    }
}

impl<S, P: Clone> Layer<S> for ETagLayer<P> {
    type Service = ETag<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ETag::from_config(inner, self.config.clone())
    }
}

impl<S> ETag<S> {
    /// Returns a new [`ETagLayer`] with the default configuration.
    pub fn layer() -> ETagLayer {
        ETagLayer::new()
    }
}
