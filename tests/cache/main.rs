//! The validator cache's integration tests, in one binary: over real TCP
//! (`cache`), and with arbitrary fields in the model world of
//! `tests/cache_world`, which the fuzz target shares (`cache_robustness`).

// Helpers of which these tests use some.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

#[path = "../cache_world/mod.rs"]
mod cache_world;

mod cache;
mod cache_robustness;
mod cache_status;
#[cfg(feature = "metrics")]
mod metrics;
