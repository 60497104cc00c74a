//! Memory held by the validator cache: fills `ENTRIES` (default 100,000)
//! entries with typical response headers through `ValidatorCacheLayer` and
//! `ETagLayer`, then reports the live heap bytes (counted by a global
//! allocator) and the resident set growth per entry.
//!
//! ```text
//! cargo bench --bench cache_memory
//! ENTRIES=10000 cargo bench --bench cache_memory
//! ```

use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size.wrapping_sub(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let entries: u64 = std::env::var("ENTRIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    // `cargo bench` passes `--bench`; nothing else is understood.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let handler = service_fn(|request: Request<()>| async move {
            let body = format!(r#"{{"path":"{}","items":[1,2,3]}}"#, request.uri().path());
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CACHE_CONTROL, "public, max-age=60")
                    .header(header::VARY, "accept-encoding")
                    .header(header::LAST_MODIFIED, "Mon, 01 Jan 2024 00:00:00 GMT")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
        });
        let heap_before = LIVE.load(Ordering::Relaxed);
        let rss_before = rss_bytes();
        let cache = ValidatorCache::builder()
            .time_to_live(Duration::from_secs(3600))
            .max_entries(entries)
            .build();
        let mut service =
            ValidatorCacheLayer::new(cache.clone()).layer(ETagLayer::new().layer(handler));
        for i in 0..entries {
            let request = Request::builder()
                .uri(format!("/items/{i}?view=full"))
                .header(header::HOST, "api.example.com")
                .header(header::ACCEPT_ENCODING, "gzip, br")
                .header(header::ACCEPT, "application/json")
                .body(())
                .unwrap();
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let stats = cache.stats();
        let heap = LIVE.load(Ordering::Relaxed) - heap_before;
        let rss = rss_bytes().saturating_sub(rss_before);
        println!(
            "entries stored:        {} (of {entries} fills)",
            stats.entries
        );
        println!(
            "live heap:             {:.1} MiB, {} bytes per entry",
            heap as f64 / (1 << 20) as f64,
            heap as u64 / stats.entries.max(1)
        );
        println!(
            "resident set growth:   {:.1} MiB, {} bytes per entry",
            rss as f64 / (1 << 20) as f64,
            rss as u64 / stats.entries.max(1)
        );
        assert_eq!(stats.fills, entries);
        drop(service);
    });
}
