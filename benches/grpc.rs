//! A unary gRPC call (the health service's `Check`) through the ETag layer
//! and the validator cache on Redis, against the same tonic server with the
//! ETag layer alone: what the cache costs a gRPC stack (gRPC calls pass
//! through it without any Redis command).
//!
//! ```text
//! cargo bench --bench grpc --features redis
//! REPS=9 SECONDS=2 CONCURRENCY=16 cargo bench --bench grpc --features redis
//! ```
//!
//! It starts `redis-server` (from `PATH`, `/usr/bin` or `/usr/sbin`) on a
//! free port; servers and client share this process (one multi-threaded
//! runtime). The two stacks are measured alternately, one run of each per
//! repetition, which one first changing every repetition; the ratio is the
//! median of the per-repetition ratios.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tonic::transport::{server::TcpIncoming, Channel, Server};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower_etag::{
    cache::{RedisStore, ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-server` on a free port, killed when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Self {
        let binary = [
            "redis-server",
            "/usr/bin/redis-server",
            "/usr/sbin/redis-server",
        ]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok()
        })
        .expect("redis-server is needed (Debian: apt-get install redis-server)");
        let port = free_port();
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The health service behind the ETag layer, and the cache on Redis too
/// when `cache` is given.
async fn serve(cache: Option<ValidatorCache>) -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("notes", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = TcpIncoming::from(listener);
    match cache {
        Some(cache) => tokio::spawn(
            Server::builder()
                .layer(ValidatorCacheLayer::new(cache))
                .layer(ETagLayer::new())
                .add_service(health)
                .serve_with_incoming(incoming),
        ),
        None => tokio::spawn(
            Server::builder()
                .layer(ETagLayer::new())
                .add_service(health)
                .serve_with_incoming(incoming),
        ),
    };
    // The reporter keeps the service's status; it lives as long as the
    // bench.
    std::mem::forget(reporter);
    addr
}

/// Unary calls from `concurrency` tasks on one channel for `duration`:
/// calls per second.
async fn load(addr: SocketAddr, concurrency: u64, duration: Duration) -> f64 {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = HealthClient::new(channel.clone());
            tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    let request = HealthCheckRequest {
                        service: "notes".to_owned(),
                    };
                    client.check(request).await.unwrap();
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for task in tasks {
        calls += task.await.unwrap();
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // there is nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let reps = setting("REPS", 5);
    let seconds = setting("SECONDS", 2);
    let concurrency = setting("CONCURRENCY", 16);
    let redis = Redis::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = RedisStore::builder(format!("redis://127.0.0.1:{}/", redis.1))
            .build()
            .unwrap();
        let cache = ValidatorCache::builder().redis(store).build();
        let cached = serve(Some(cache.clone())).await;
        let plain = serve(None).await;
        let duration = Duration::from_secs(seconds);
        // Warm both up.
        load(cached, concurrency, Duration::from_millis(500)).await;
        load(plain, concurrency, Duration::from_millis(500)).await;
        let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        println!("rep  with cache (calls/s)  ETag layer only (calls/s)  ratio");
        for rep in 1..=reps {
            // Alternated: which runs first changes every repetition.
            let (a, b) = if rep % 2 == 1 {
                let a = load(cached, concurrency, duration).await;
                (a, load(plain, concurrency, duration).await)
            } else {
                let b = load(plain, concurrency, duration).await;
                (load(cached, concurrency, duration).await, b)
            };
            println!("{rep:>3}  {a:>21.0}  {b:>26.0}  {:.3}", a / b);
            with.push(a);
            without.push(b);
            ratios.push(a / b);
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "median: {:.0} vs {:.0} calls/s; with / without the cache {:.3} ({lo:.3}–{hi:.3})",
            median(with),
            median(without),
            median(ratios),
        );
        let stats = cache.stats();
        println!(
            "the cache's lookups, invalidations and Redis failures during the calls: {} {} {}",
            stats.hits + stats.misses,
            stats.invalidations,
            stats.unavailable
        );
    });
}
