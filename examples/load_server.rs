//! The server `benches/load.sh` drives with wrk: the same content served
//! plain, through tower-etag, and through a naive hand-written `from_fn`
//! middleware, on one tokio thread so that its CPU time per request can be
//! read from `/proc`.
//!
//! ```text
//! cargo run --release --example load_server -- 127.0.0.1:0
//! ```
//!
//! Routes, for each prefix `/plain`, `/etag`, `/naive`:
//! - `GET {prefix}/{size}` with size one of 64, 1k, 16k, 1m, 16m: one chunk;
//! - `GET {prefix}/{size}/multi`: the same bytes as a stream of chunks of at
//!   most 16 KiB;
//! - `POST {prefix}/post`: 1 KiB, never tagged;
//! - `GET {prefix}/missing`: a 404 with 1 KiB.
//!
//! Also `GET /etag-small/1k`, whose `Content-Length` exceeds that layer's
//! 512-byte cap, and `GET {prefix}/stream/{mib}`, an endless-looking stream
//! of `mib` MiB in 64 KiB chunks, for the memory checks.

use std::{convert::Infallible, net::SocketAddr};

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
use tower_etag::ETagLayer;

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

fn chunks(bytes: &Bytes) -> Vec<Bytes> {
    let size = (bytes.len() / 4).clamp(1, 16 * 1024);
    (0..bytes.len())
        .step_by(size)
        .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
        .collect()
}

fn content_routes() -> Router {
    let mut router = Router::new()
        .route("/post", post(|| async { content(1024) }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, content(1024)) }),
        )
        .route(
            "/stream/{mib}",
            get(|Path(mib): Path<usize>| async move {
                let chunk = content(64 * 1024);
                let chunks = std::iter::repeat_n(chunk, mib * 16).map(Ok::<_, Infallible>);
                Body::from_stream(stream::iter(chunks))
            }),
        );
    for (name, len) in SIZES {
        let bytes = content(len);
        let pieces = chunks(&bytes);
        router = router
            .route(
                &format!("/{name}"),
                get(move || {
                    let bytes = bytes.clone();
                    async move { Body::from(bytes) }
                }),
            )
            .route(
                &format!("/{name}/multi"),
                get(move || {
                    let pieces = pieces.clone();
                    async move {
                        Body::from_stream(stream::iter(pieces.into_iter().map(Ok::<_, Infallible>)))
                    }
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
        // The default cap, for the streaming memory check.
        .nest("/etag-default", content_routes().layer(ETagLayer::new()))
        .nest(
            "/etag-small",
            Router::new()
                .route(
                    "/1k",
                    get(|| async {
                        ([(header::CONTENT_LENGTH, "1024")], content(1024)).into_response()
                    }),
                )
                .layer(ETagLayer::new().max_body_size(512)),
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
