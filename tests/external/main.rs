//! The tests that need a program besides this crate's dependencies: a real
//! `redis-server` (the validator cache shared on Redis, with the `redis`
//! feature) and curl as a client. Their harness (`harness`) reports them
//! ignored, with the reason, where the program is missing, and failed
//! instead under `TOWER_ETAG_REQUIRE_SERVERS=1`, as in CI.

// Helpers of which these tests use some.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

mod curl;
mod harness;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_cluster;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(feature = "redis-tls")]
mod redis_tls;
#[cfg(feature = "redis")]
mod redis_writes;

fn main() {
    let mut suite = harness::Suite::default();
    curl::add_to(&mut suite);
    #[cfg(feature = "redis")]
    redis::add_to(&mut suite);
    #[cfg(feature = "redis")]
    redis_writes::add_to(&mut suite);
    #[cfg(feature = "redis")]
    redis_cluster::add_to(&mut suite);
    #[cfg(feature = "redis-tls")]
    redis_tls::add_to(&mut suite);
    suite.run()
}
