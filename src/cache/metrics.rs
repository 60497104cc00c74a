//! The validator cache's metrics, through the `metrics` facade (feature
//! `metrics`): the app installs a recorder (a Prometheus exporter, say);
//! this crate chooses none.
//!
//! Handles are registered once, when the cache is built, with the recorder
//! installed then (or the one `metrics::with_local_recorder` names), one per
//! label value: counting is then an atomic add, without a registry lookup
//! per request. Label values are fixed sets, never a URI or a tag. Without
//! the feature, every method is an empty inline function.

#[cfg(feature = "metrics")]
pub(crate) use enabled::CacheMetrics;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::CacheMetrics;

/// Why a request was not answered from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum MissReason {
    /// A `GET` or `HEAD` without `If-None-Match`.
    NoCondition,
    /// Its tags are not the stored variant's.
    TagMismatch,
    /// Nothing stored for the URI.
    NotStored,
    /// Nothing stored for its `Vary` fields.
    VaryMismatch,
    /// `no-cache`, or `If-Match` / `If-Unmodified-Since`.
    Request,
    /// Not a `GET` or `HEAD`.
    Method,
    /// The store did not answer.
    StoreUnavailable,
    /// The app's partition function kept it away.
    Partition,
}

impl MissReason {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    const ALL: [Self; 8] = [
        Self::NoCondition,
        Self::TagMismatch,
        Self::NotStored,
        Self::VaryMismatch,
        Self::Request,
        Self::Method,
        Self::StoreUnavailable,
        Self::Partition,
    ];

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn label(self) -> &'static str {
        match self {
            Self::NoCondition => "no_condition",
            Self::TagMismatch => "tag_mismatch",
            Self::NotStored => "not_stored",
            Self::VaryMismatch => "vary_mismatch",
            Self::Request => "request",
            Self::Method => "method",
            Self::StoreUnavailable => "store_unavailable",
            Self::Partition => "partition",
        }
    }
}

/// What moved generations on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Cause {
    /// A write's target (at its arrival and again at its end).
    Write,
    /// A resource a write's `Location` or `Content-Location` names.
    Location,
    /// `ValidatorCache::invalidate`.
    AppUri,
    /// `ValidatorCache::invalidate_tag`.
    AppTag,
    /// `ValidatorCache::clear`.
    Clear,
}

impl Cause {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    const ALL: [Self; 5] = [
        Self::Write,
        Self::Location,
        Self::AppUri,
        Self::AppTag,
        Self::Clear,
    ];

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn label(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Location => "location",
            Self::AppUri => "app_uri",
            Self::AppTag => "app_tag",
            Self::Clear => "clear",
        }
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use metrics::{Counter, Gauge};

    use super::{Cause, MissReason};
    use crate::cache::status::Kept;
    use crate::metric_labels::labels as labels_of;

    /// Every fill result's label values: stored, or not and why.
    const NOT_STORED: [&str; 9] = [
        "unchanged",
        "refused",
        "head",
        "status",
        "cache_control",
        "set_cookie",
        "no_etag",
        "vary",
        "too_large",
    ];

    /// The handles of one cache's metrics.
    pub(crate) struct CacheMetrics {
        hits: Counter,
        misses: [Counter; MissReason::ALL.len()],
        stored: Counter,
        not_stored: [Counter; NOT_STORED.len()],
        invalidations: [Counter; Cause::ALL.len()],
        entries: Gauge,
    }

    impl CacheMetrics {
        /// Registers the handles with the current recorder: names under
        /// `prefix`, with `labels` on each.
        pub(crate) fn new(prefix: &str, labels: &[(String, String)]) -> Self {
            let counter = |name: &str, own: &[(&'static str, &'static str)]| {
                metrics::counter!(format!("{prefix}_cache_{name}"), labels_of(labels, own))
            };
            Self {
                hits: counter("hits_total", &[]),
                misses: MissReason::ALL
                    .map(|miss| counter("misses_total", &[("reason", miss.label())])),
                stored: counter("fills_total", &[("result", "stored")]),
                not_stored: NOT_STORED.map(|reason| {
                    counter(
                        "fills_total",
                        &[("result", "not_stored"), ("reason", reason)],
                    )
                }),
                invalidations: Cause::ALL
                    .map(|cause| counter("invalidations_total", &[("cause", cause.label())])),
                entries: metrics::gauge!(format!("{prefix}_cache_entries"), labels_of(labels, &[])),
            }
        }

        #[inline]
        pub(crate) fn hit(&self) {
            self.hits.increment(1);
        }

        #[inline]
        pub(crate) fn miss(&self, miss: MissReason) {
            self.misses[miss as usize].increment(1);
        }

        /// A `GET`'s response given to the store, or not: what became of it
        /// as far as known now (`Storing`: the store answers later, through
        /// [`filled`](Self::filled)).
        pub(crate) fn kept(&self, kept: Kept) {
            let reason = match kept {
                Kept::Nothing | Kept::Stored | Kept::Storing | Kept::Refused => return,
                Kept::Unchanged => 0,
                Kept::Head => 2,
                Kept::NotStored(reason) => {
                    use crate::cache::entry::NotStored as N;
                    match reason {
                        N::Status => 3,
                        N::CacheControl => 4,
                        N::SetCookie => 5,
                        N::NoTag => 6,
                        N::Vary => 7,
                        N::TooLarge => 8,
                    }
                }
                Kept::Partition | Kept::StoreUnavailable => return,
            };
            self.not_stored[reason].increment(1);
        }

        /// The store's answer to a fill.
        pub(crate) fn filled(&self, stored: bool) {
            if stored {
                self.stored.increment(1);
            } else {
                self.not_stored[1].increment(1);
            }
        }

        #[inline]
        pub(crate) fn invalidated(&self, cause: Cause, n: u64) {
            self.invalidations[cause as usize].increment(n);
        }

        /// The store's entries, read only with the feature.
        pub(crate) fn entries(&self, entries: impl FnOnce() -> u64) {
            self.entries.set(entries() as f64);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::{Cause, MissReason};
    use crate::cache::status::Kept;

    /// Without the feature: nothing.
    pub(crate) struct CacheMetrics;

    impl CacheMetrics {
        #[inline]
        pub(crate) fn hit(&self) {}

        #[inline]
        pub(crate) fn miss(&self, _: MissReason) {}

        #[inline]
        pub(crate) fn kept(&self, _: Kept) {}

        #[inline]
        pub(crate) fn filled(&self, _: bool) {}

        #[inline]
        pub(crate) fn invalidated(&self, _: Cause, _: u64) {}

        #[inline]
        pub(crate) fn entries(&self, _: impl FnOnce() -> u64) {}
    }
}
