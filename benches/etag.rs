//! Per-request cost of the layer, in process: an axum `Router` without the
//! layer, with it (200 and 304), with a naive `from_fn` middleware that
//! collects and hashes, and the bare BLAKE3 hash of the same bytes as the
//! floor (in one call, and for streamed bodies also frame by frame).
//!
//! ```text
//! cargo bench --bench etag                 # everything
//! cargo bench --bench etag -- '1KiB'       # one size
//! ```

// `criterion_group!` defines an undocumented `pub fn` in this binary.
#![allow(missing_docs, unreachable_pub)]

use std::{convert::Infallible, hint::black_box, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue},
    middleware,
    routing::get,
    Router,
};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::stream;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_etag::ETagLayer;

#[path = "support/naive.rs"]
mod naive;
use naive::naive_etag;

const SIZES: [(usize, &str); 5] = [
    (64, "64B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (1024 * 1024, "1MiB"),
    (16 * 1024 * 1024, "16MiB"),
];

/// Above every size benched, so that every size is tagged.
const CAP: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy)]
enum Chunking {
    /// One frame, exact size hint (`Body::from(Bytes)`).
    Single,
    /// At least four frames of at most 16 KiB, no size hint (a stream).
    Multi,
}

impl Chunking {
    fn name(self) -> &'static str {
        match self {
            Chunking::Single => "single",
            Chunking::Multi => "multi",
        }
    }
}

fn content(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn chunks(bytes: &Bytes, chunking: Chunking) -> Vec<Bytes> {
    match chunking {
        Chunking::Single => vec![bytes.clone()],
        Chunking::Multi => {
            let size = (bytes.len() / 4).clamp(1, 16 * 1024);
            (0..bytes.len())
                .step_by(size)
                .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
                .collect()
        }
    }
}

/// A router whose one route serves `bytes` without copying them.
fn router(bytes: Bytes, chunking: Chunking) -> Router {
    let chunks = chunks(&bytes, chunking);
    Router::new().route(
        "/",
        get(move || {
            let chunks = chunks.clone();
            async move {
                match chunking {
                    Chunking::Single => Body::from(chunks[0].clone()),
                    Chunking::Multi => {
                        Body::from_stream(stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)))
                    }
                }
            }
        }),
    )
}

/// One request through `app`, its body read to the end and dropped.
async fn round_trip(app: Router, if_none_match: Option<HeaderValue>) {
    let mut request = Request::new(Body::empty());
    if let Some(tag) = if_none_match {
        request.headers_mut().insert(header::IF_NONE_MATCH, tag);
    }
    let response = app.oneshot(request).await.unwrap();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        black_box(frame.unwrap());
    }
}

fn responses(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (size, size_name) in SIZES {
        let bytes = content(size);
        for chunking in [Chunking::Single, Chunking::Multi] {
            let mut group = c.benchmark_group(format!("response/{size_name}/{}", chunking.name()));
            group.throughput(Throughput::Bytes(size as u64));
            if size >= 1024 * 1024 {
                group.sample_size(20);
                group.measurement_time(Duration::from_secs(4));
            }
            let plain = router(bytes.clone(), chunking);
            let tagged = router(bytes.clone(), chunking).layer(ETagLayer::new().max_body_size(CAP));
            let naive = router(bytes.clone(), chunking).layer(middleware::from_fn(naive_etag));
            // What `Router::layer` costs with a layer that does nothing.
            let noop = router(bytes.clone(), chunking).layer(tower::layer::util::Identity::new());
            let skipped = router(bytes.clone(), chunking)
                .layer(ETagLayer::new().tag_when(|_: &http::response::Parts| false));
            let tag = rt.block_on(async {
                let response = tagged
                    .clone()
                    .oneshot(Request::new(Body::empty()))
                    .await
                    .unwrap();
                response.headers()[header::ETAG].clone()
            });

            group.bench_function("plain", |b| {
                b.to_async(&rt).iter(|| round_trip(plain.clone(), None))
            });
            group.bench_function("noop_layer", |b| {
                b.to_async(&rt).iter(|| round_trip(noop.clone(), None))
            });
            group.bench_function("etag_skipped", |b| {
                b.to_async(&rt).iter(|| round_trip(skipped.clone(), None))
            });
            group.bench_function("etag_200", |b| {
                b.to_async(&rt).iter(|| round_trip(tagged.clone(), None))
            });
            group.bench_function("etag_304", |b| {
                b.to_async(&rt)
                    .iter(|| round_trip(tagged.clone(), Some(tag.clone())))
            });
            group.bench_function("naive_200", |b| {
                b.to_async(&rt).iter(|| round_trip(naive.clone(), None))
            });
            // The floor: the bare hash of the same bytes in one call.
            group.bench_function("blake3_floor", |b| {
                b.iter(|| black_box(blake3::hash(black_box(&bytes))))
            });
            // The floor for a body that arrives in frames and is hashed as it
            // arrives, without copying it: the same frames fed to
            // `blake3::Hasher` one by one. Each `update` call hashes at most
            // its own bytes side by side, so this costs more than one call.
            if let Chunking::Multi = chunking {
                let frames = chunks(&bytes, chunking);
                group.bench_function("blake3_frames", |b| {
                    b.iter(|| {
                        let mut hasher = blake3::Hasher::new();
                        for frame in black_box(&frames) {
                            hasher.update(frame);
                        }
                        black_box(hasher.finalize())
                    })
                });
            }
            group.finish();
        }
    }
}

/// `If-None-Match` lists of growing length against a 64-byte response; the
/// matching tag comes last, so the whole list is parsed. Linear time shows
/// as a cost per tag that stays flat from 100 to 10,000 tags.
fn if_none_match(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let app = router(content(64), Chunking::Single).layer(ETagLayer::new());
    let tag = rt.block_on(async {
        let response = app
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        response.headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_owned()
    });
    let mut group = c.benchmark_group("if_none_match");
    for count in [1usize, 10, 100, 1000, 10_000] {
        let mut list: Vec<String> = (1..count).map(|i| format!("\"{i:032x}\"")).collect();
        list.push(tag.clone());
        let value = HeaderValue::from_str(&list.join(", ")).unwrap();
        group.bench_with_input(BenchmarkId::new("tags", count), &value, |b, value| {
            b.to_async(&rt)
                .iter(|| round_trip(app.clone(), Some(value.clone())))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = responses, if_none_match
}
criterion_main!(benches);
