//! The ETag layer's integration tests, in one binary: a module per subject,
//! with the real servers and clients of `tests/common`.
//!
//! The other test binaries: `tests/cache` (the validator cache),
//! `tests/external` (the tests that need redis-server or curl, with a harness
//! that reports them ignored where the program is missing), and
//! `tests/allocations.rs` and `tests/tracing.rs` (each installs process-wide
//! state: a counting global allocator, the global tracing subscriber).

#[path = "../common/mod.rs"]
mod common;

mod adversarial;
mod axum;
mod buffering;
mod cancellation;
mod compression;
mod conditional;
mod documents;
mod hyper;
mod keyed;
#[cfg(feature = "metrics")]
mod metrics;
mod model;
mod outcome;
mod robustness;
mod tonic;
