//! The ETag layer's metrics (feature `metrics`): responses by outcome (and
//! why one was passed through untagged), bytes hashed, and the largest body
//! held to be hashed. Handles are registered when the layer is made (with
//! the recorder current then), one per label value, as the validator
//! cache's are; without the feature, every method is an empty inline
//! function.

use crate::outcome::{Outcome, SkipReason};

#[cfg(feature = "metrics")]
pub(crate) use enabled::ETagMetrics;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::ETagMetrics;

/// Each skip reason's index and label.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn skip(reason: SkipReason) -> (usize, &'static str) {
    match reason {
        SkipReason::Method => (0, "method"),
        SkipReason::Status => (1, "status"),
        SkipReason::OptedOut => (2, "opted_out"),
        SkipReason::OwnValidator => (3, "own_validator"),
        SkipReason::Predicate => (4, "predicate"),
        SkipReason::TooLarge => (5, "too_large"),
        SkipReason::BodyError => (6, "body_error"),
    }
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const SKIPS: [SkipReason; 7] = [
    SkipReason::Method,
    SkipReason::Status,
    SkipReason::OptedOut,
    SkipReason::OwnValidator,
    SkipReason::Predicate,
    SkipReason::TooLarge,
    SkipReason::BodyError,
];

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    };

    use metrics::{Counter, Gauge};

    use crate::metric_labels::labels as labels_of;

    use super::{skip, Outcome, SKIPS};

    struct Handles {
        /// The names the handles were registered under, to register them
        /// again with another prefix or label.
        prefix: String,
        labels: Vec<(String, String)>,
        tagged: Counter,
        not_modified: Counter,
        precondition_failed: Counter,
        passed_through: [Counter; SKIPS.len()],
        hashed: Counter,
        buffered_max: Gauge,
        /// The largest body held so far (the gauge's value).
        largest: AtomicU64,
    }

    /// The handles of one layer's metrics, shared by its services.
    #[derive(Clone)]
    pub(crate) struct ETagMetrics(Arc<Handles>);

    impl ETagMetrics {
        /// Registers the handles with the current recorder: names under
        /// `prefix`, with `labels` on each.
        pub(crate) fn new(prefix: &str, labels: &[(String, String)]) -> Self {
            let with = |own: &[(&'static str, &'static str)]| labels_of(labels, own);
            let responses = |extra: &[(&'static str, &'static str)]| {
                metrics::counter!(format!("{prefix}_responses_total"), with(extra))
            };
            Self(Arc::new(Handles {
                prefix: prefix.to_owned(),
                labels: labels.to_vec(),
                tagged: responses(&[("outcome", "tagged")]),
                not_modified: responses(&[("outcome", "not_modified")]),
                precondition_failed: responses(&[("outcome", "precondition_failed")]),
                passed_through: SKIPS.map(|reason| {
                    responses(&[("outcome", "passed_through"), ("reason", skip(reason).1)])
                }),
                hashed: metrics::counter!(format!("{prefix}_hashed_bytes_total"), with(&[])),
                buffered_max: metrics::gauge!(format!("{prefix}_buffered_bytes_max"), with(&[])),
                largest: AtomicU64::new(0),
            }))
        }

        /// The same metrics under another prefix.
        pub(crate) fn with_prefix(&self, prefix: String) -> Self {
            Self::new(&prefix, &self.0.labels)
        }

        /// The same metrics with one more label.
        pub(crate) fn with_label(&self, key: String, value: String) -> Self {
            let mut labels = self.0.labels.clone();
            labels.push((key, value));
            Self::new(&self.0.prefix, &labels)
        }

        #[inline]
        pub(crate) fn outcome(&self, outcome: Outcome) {
            let handles = &self.0;
            match outcome {
                Outcome::Tagged => handles.tagged.increment(1),
                Outcome::NotModified => handles.not_modified.increment(1),
                Outcome::PreconditionFailed => handles.precondition_failed.increment(1),
                Outcome::Skipped(reason) => handles.passed_through[skip(reason).0].increment(1),
                // The validator cache counts its own.
                Outcome::NotModifiedFromCache => {}
            }
        }

        /// A body of `len` bytes, held and hashed.
        #[inline]
        pub(crate) fn hashed(&self, len: u64) {
            self.0.hashed.increment(len);
            self.held(len);
        }

        /// `len` bytes held for hashing (a body sent on untagged after
        /// it was partly read counts too).
        #[inline]
        pub(crate) fn held(&self, len: u64) {
            let handles = &self.0;
            if handles.largest.fetch_max(len, Ordering::Relaxed) < len {
                // The largest at this point (a concurrent larger one may
                // have set it since).
                let largest = handles.largest.load(Ordering::Relaxed);
                handles.buffered_max.set(largest as f64);
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::Outcome;

    /// Without the feature: nothing.
    #[derive(Clone, Default)]
    pub(crate) struct ETagMetrics;

    impl ETagMetrics {
        #[inline]
        pub(crate) fn outcome(&self, _: Outcome) {}

        #[inline]
        pub(crate) fn hashed(&self, _: u64) {}

        #[inline]
        pub(crate) fn held(&self, _: u64) {}
    }
}
