//! The server `benches/load.sh` drives with wrk: the same content served
//! plain, through tower-etag, and through a naive hand-written `from_fn`
//! middleware, on one tokio thread so that its CPU time per request can be
//! read from `/proc`.
//!
//! ```text
//! cargo run --release --example load_server -- 127.0.0.1:0
//! ```
//!
//! Routes, for each prefix `/plain`, `/etag`, `/naive`, `/noop` (a layer that
//! does nothing):
//! - `GET {prefix}/{size}` with size one of 64, 1k, 16k, 1m, 16m: one chunk;
//! - `GET {prefix}/{size}/multi`: the same bytes as a stream of chunks of at
//!   most 16 KiB;
//! - `POST {prefix}/post`: 1 KiB, never tagged;
//! - `GET {prefix}/missing`: a 404 with 1 KiB.
//!
//! - `GET {prefix}/announced`: 1 KiB with a `Content-Length` header;
//! - `GET {prefix}/stream/{mib}`: `mib` MiB streamed in 64 KiB chunks.
//!
//! - `GET {prefix}/slow/{size}`: the one-chunk content after 2 ms of
//!   awaited latency, as a handler that queries a database.
//!
//! `/etag-small` has a 512-byte cap, so `/etag-small/announced` is passed
//! through unbuffered; `/etag-default` has the default 2 MiB cap. `/cached`
//! is `/etag` with a validator cache outside it, `/cached-one` the same
//! two layers in one `Router::layer` call, `/etag-noop` `/etag` with a layer
//! that does nothing outside it.

use std::{convert::Infallible, net::SocketAddr, sync::OnceLock, time::Duration};

use axum::{
    body::Body,
    extract::Path,
    http::{header, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use futures_util::stream;
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

#[path = "../benches/support/naive.rs"]
mod naive;

const SIZES: [(&str, usize); 5] = [
    ("64", 64),
    ("1k", 1024),
    ("16k", 16 * 1024),
    ("1m", 1024 * 1024),
    ("16m", 16 * 1024 * 1024),
];

fn content(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// The content of each size, built on first use and shared by every route, so
/// that a fresh server's resident memory is small.
fn shared_content(index: usize) -> Bytes {
    static CONTENT: [OnceLock<Bytes>; SIZES.len()] = [const { OnceLock::new() }; SIZES.len()];
    CONTENT[index]
        .get_or_init(|| content(SIZES[index].1))
        .clone()
}

/// A 1 KiB response that announces its length, for the over-the-cap path.
async fn announced() -> impl IntoResponse {
    ([(header::CONTENT_LENGTH, "1024")], shared_content(1))
}

fn chunks(bytes: &Bytes) -> Vec<Bytes> {
    let size = (bytes.len() / 4).clamp(1, 16 * 1024);
    (0..bytes.len())
        .step_by(size)
        .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
        .collect()
}

fn content_routes() -> Router {
    let mut router = Router::new()
        .route("/post", post(|| async { shared_content(1) }))
        .route("/announced", get(announced))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, shared_content(1)) }),
        )
        .route(
            "/stream/{mib}",
            get(|Path(mib): Path<usize>| async move {
                let chunk = Bytes::from(vec![0x5a; 64 * 1024]);
                let chunks = std::iter::repeat_n(chunk, mib * 16).map(Ok::<_, Infallible>);
                Body::from_stream(stream::iter(chunks))
            }),
        );
    for (index, (name, _)) in SIZES.into_iter().enumerate() {
        router = router
            .route(
                &format!("/slow/{name}"),
                get(move || async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Body::from(shared_content(index))
                }),
            )
            .route(
                &format!("/{name}"),
                get(move || async move { Body::from(shared_content(index)) }),
            )
            .route(
                &format!("/{name}/multi"),
                get(move || async move {
                    let pieces = chunks(&shared_content(index));
                    Body::from_stream(stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)))
                }),
            );
    }
    router
}

fn app() -> Router {
    Router::new()
        .nest("/plain", content_routes())
        // A cap above every size served, so that every size is tagged.
        .nest(
            "/etag",
            content_routes().layer(ETagLayer::new().max_body_size(64 * 1024 * 1024)),
        )
        // The same, answering revalidations from a validator cache.
        .nest(
            "/cached",
            content_routes()
                .layer(ETagLayer::new().max_body_size(64 * 1024 * 1024))
                .layer(ValidatorCacheLayer::new(
                    ValidatorCache::builder()
                        .time_to_live(Duration::from_secs(3600))
                        .build(),
                )),
        )
        // The same two layers in one `Router::layer` call: axum then boxes
        // and clones one service per request instead of two.
        .nest(
            "/cached-one",
            content_routes().layer(
                tower::ServiceBuilder::new()
                    .layer(ValidatorCacheLayer::new(
                        ValidatorCache::builder()
                            .time_to_live(Duration::from_secs(3600))
                            .build(),
                    ))
                    .layer(ETagLayer::new().max_body_size(64 * 1024 * 1024)),
            ),
        )
        // `/etag` with a second layer that does nothing: what the cache's
        // `Router::layer` costs before the cache does anything.
        .nest(
            "/etag-noop",
            content_routes()
                .layer(ETagLayer::new().max_body_size(64 * 1024 * 1024))
                .layer(tower::layer::util::Identity::new()),
        )
        // The default cap, for the streaming memory check.
        .nest("/etag-default", content_routes().layer(ETagLayer::new()))
        // Content-Length above this layer's cap: passed through unbuffered.
        .nest(
            "/etag-small",
            content_routes().layer(ETagLayer::new().max_body_size(512)),
        )
        // A layer that does nothing: what `Router::layer` itself costs.
        .nest(
            "/noop",
            content_routes().layer(tower::layer::util::Identity::new()),
        )
        .nest(
            "/naive",
            content_routes().layer(middleware::from_fn(naive::naive_etag)),
        )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()?;
    // One thread: the server's CPU time per request is then one core's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app()).await
    })?;
    Ok(())
}
