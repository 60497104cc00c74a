//! The Redis store's metrics (feature `metrics`): each operation's latency,
//! timeouts and errors, the invalidations waiting for a retry, and whether
//! Redis answers. Handles are registered when the store is built, as the
//! cache's are (see `cache::metrics`).

#[cfg(feature = "metrics")]
pub(super) use enabled::RedisMetrics;

#[cfg(not(feature = "metrics"))]
pub(super) use disabled::RedisMetrics;

/// The operations, as `guarded` names them, and their label values.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const OPERATIONS: [(&str, &str); 7] = [
    ("lookup", "lookup"),
    ("fill", "fill"),
    ("invalidate", "invalidate"),
    ("begin write", "begin_write"),
    ("end write", "end_write"),
    ("clear", "clear"),
    ("retry", "retry"),
];

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(super) enum Ended {
    Ok,
    Timeout,
    Error,
}

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Instant;

    use metrics::{Counter, Gauge, Histogram};

    use crate::metric_labels::labels as labels_of;

    use super::{Ended, OPERATIONS};

    struct Operation {
        duration: Histogram,
        timeouts: Counter,
        errors: Counter,
    }

    /// The handles of one store's metrics.
    pub(crate) struct RedisMetrics {
        operations: [Operation; OPERATIONS.len()],
        pending: Gauge,
        available: Gauge,
    }

    impl RedisMetrics {
        /// Registers the handles with the current recorder: names under
        /// `prefix`, with `labels` on each.
        pub(crate) fn new(prefix: &str, labels: &[(String, String)]) -> Self {
            let with = |operation: Option<&'static str>| match operation {
                Some(operation) => labels_of(labels, &[("operation", operation)]),
                None => labels_of(labels, &[]),
            };
            let operations = OPERATIONS.map(|(_, label)| Operation {
                duration: metrics::histogram!(
                    format!("{prefix}_redis_operation_duration_seconds"),
                    with(Some(label))
                ),
                timeouts: metrics::counter!(
                    format!("{prefix}_redis_timeouts_total"),
                    with(Some(label))
                ),
                errors: metrics::counter!(
                    format!("{prefix}_redis_errors_total"),
                    with(Some(label))
                ),
            });
            let available = metrics::gauge!(format!("{prefix}_redis_available"), with(None));
            available.set(1.0);
            Self {
                operations,
                pending: metrics::gauge!(format!("{prefix}_redis_pending"), with(None)),
                available,
            }
        }

        /// When an operation starts.
        #[inline]
        pub(crate) fn start(&self) -> Instant {
            Instant::now()
        }

        /// Records one operation named `what` (as `guarded` names it).
        pub(crate) fn operation(&self, what: &str, started: Instant, ended: Ended) {
            let Some(index) = OPERATIONS.iter().position(|(name, _)| *name == what) else {
                return;
            };
            let operation = &self.operations[index];
            operation.duration.record(started.elapsed().as_secs_f64());
            match ended {
                Ended::Ok => {}
                Ended::Timeout => operation.timeouts.increment(1),
                Ended::Error => operation.errors.increment(1),
            }
        }

        pub(crate) fn pending(&self, pending: usize) {
            self.pending.set(pending as f64);
        }

        pub(crate) fn available(&self, available: bool) {
            self.available.set(if available { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::Ended;

    /// Without the feature: nothing.
    pub(crate) struct RedisMetrics;

    /// Without the feature, no clock is read.
    #[derive(Clone, Copy)]
    pub(crate) struct Started;

    impl RedisMetrics {
        #[inline]
        pub(crate) fn start(&self) -> Started {
            Started
        }

        #[inline]
        pub(crate) fn operation(&self, _: &str, _: Started, _: Ended) {}

        #[inline]
        pub(crate) fn pending(&self, _: usize) {}

        #[inline]
        pub(crate) fn available(&self, _: bool) {}
    }
}
