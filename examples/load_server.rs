//! The server `benches/load.sh` drives with wrk: the same content served
//! plain, through tower-etag, and through a naive hand-written `from_fn`
//! middleware, on one tokio thread so that its CPU time per request can be
//! read from `/proc`.
//!
//! ```text
//! cargo run --release --example load_server -- 127.0.0.1:0
//! cargo run --release --example load_server -- 127.0.0.1:0 --cache-outside
//! ```
//!
//! With `--cache-outside`, the same routes are served with a validator cache
//! around the whole `Router` (`ValidatorCacheLayer::layer(router)`), so that
//! a hit on `/etag/...` is answered before axum routes the request.
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
//! - `GET {prefix}/frames/{body}/{frame}/{kind}`: `body` bytes (`64k`, `1m`
//!   or `16m`) streamed without `Content-Length` in frames of `frame` bytes
//!   (`1k`, `8k`, `16k`, `64k`, `256k`, or `whole` for one frame); `kind`
//!   `fresh`: each frame allocated by the handler as it is sent (a file read
//!   piecewise, a proxied upstream, a generated export), or `shared`: slices
//!   of one buffer shared by every request.
//! - `GET {prefix}/files/{name}`: tower-http's `ServeDir` over a directory
//!   holding `1m.bin` and `16m.bin` (it sends its own `ETag`, which the
//!   layer keeps without hashing), and `GET {prefix}/files-untagged/{name}`:
//!   the same with `ServeDir`'s `ETag` removed, so that the layer hashes.
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
    extract::Request,
    http::{header, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{get, post},
    serve::ListenerExt,
    Router, ServiceExt,
};
use bytes::Bytes;
use futures_util::stream;
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};
use tower_http::services::ServeDir;

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

/// Parses `64k`, `1m`, `16m`-style sizes.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: usize = digits.parse().ok()?;
    match unit {
        "k" => Some(n * 1024),
        "m" => Some(n * 1024 * 1024),
        _ => None,
    }
}

/// The body of `/frames/{body}/{frame}/{kind}`, or `None` for a path
/// outside the matrix.
fn frames(body: &str, frame: &str, kind: &str) -> Option<Body> {
    let len = parse_size(body)?;
    let index = SIZES.iter().position(|&(_, size)| size == len);
    let content = match index {
        Some(index) => shared_content(index),
        // 64 KiB is not among the one-chunk sizes.
        None => extra_content(len),
    };
    let frame = match frame {
        "whole" => len,
        frame => parse_size(frame)?,
    };
    let fresh = match kind {
        "fresh" => true,
        "shared" => false,
        _ => return None,
    };
    let pieces = (0..len).step_by(frame).map(move |at| {
        let end = (at + frame).min(len);
        Ok::<_, Infallible>(if fresh {
            Bytes::copy_from_slice(&content[at..end])
        } else {
            content.slice(at..end)
        })
    });
    Some(Body::from_stream(stream::iter(pieces)))
}

/// Content of a size outside [`SIZES`] (64 KiB), built once.
fn extra_content(len: usize) -> Bytes {
    static CONTENT: OnceLock<Bytes> = OnceLock::new();
    let content = CONTENT.get_or_init(|| content(64 * 1024));
    assert_eq!(content.len(), len, "only 64 KiB is served besides SIZES");
    content.clone()
}

/// A directory with the files `/files` serves, written at start.
fn files_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tower-etag-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        for (name, len) in [("1m.bin", 1024 * 1024), ("16m.bin", 16 * 1024 * 1024)] {
            std::fs::write(dir.join(name), content(len)).expect("a file to serve");
        }
        dir
    })
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
        .route(
            "/frames/{body}/{frame}/{kind}",
            get(
                |Path((body, frame, kind)): Path<(String, String, String)>| async move {
                    frames(&body, &frame, &kind).ok_or(StatusCode::NOT_FOUND)
                },
            ),
        )
        .nest_service("/files", ServeDir::new(files_dir()))
        .nest_service(
            "/files-untagged",
            tower::ServiceBuilder::new()
                .map_response(|mut response: axum::http::Response<_>| {
                    response.headers_mut().remove(header::ETAG);
                    response
                })
                .service(ServeDir::new(files_dir())),
        )
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

/// `--blake3-floor`: the median time of one `blake3::hash` call over each
/// body of the frame matrix, as `floor,SIZE,MICROSECONDS` lines: the least
/// any layer that hashes the body must add.
fn blake3_floor() {
    for (name, len) in [
        ("64k", 64 * 1024),
        ("1m", 1024 * 1024),
        ("16m", 16 * 1024 * 1024),
    ] {
        let body = content(len);
        let rounds = (256 * 1024 * 1024 / len).clamp(11, 4001);
        let mut times: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = std::time::Instant::now();
                std::hint::black_box(blake3::hash(std::hint::black_box(&body)));
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("floor,{name},{:.2}", times[times.len() / 2]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("--blake3-floor") {
        blake3_floor();
        return Ok(());
    }
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()?;
    // Built with `--features metrics`: every cache's metrics go to a
    // recorder (metrics-util's, which keeps them in atomics), installed
    // before the caches are built, to measure what counting costs.
    #[cfg(feature = "metrics")]
    metrics::set_global_recorder(metrics_util::debugging::DebuggingRecorder::new())
        .map_err(|_| "a recorder was installed already")?;
    // One thread: the server's CPU time per request is then one core's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cache_outside = std::env::args().nth(2).as_deref() == Some("--cache-outside");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        // axum::serve leaves Nagle's algorithm on, as most servers do;
        // `LOAD_SERVER_NODELAY=1` turns it off, to tell latency stalls from
        // CPU cost.
        let nodelay = std::env::var("LOAD_SERVER_NODELAY").is_ok_and(|v| v == "1");
        let listener = listener.tap_io(move |tcp| {
            if nodelay {
                let _ = tcp.set_nodelay(true);
            }
        });
        if cache_outside {
            let cache = ValidatorCache::builder()
                .time_to_live(Duration::from_secs(3600))
                .build();
            // axum::serve takes services that answer with axum's body type.
            let app = tower::ServiceBuilder::new()
                .map_response(IntoResponse::into_response)
                .layer(ValidatorCacheLayer::new(cache))
                .service(app());
            axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await
        } else {
            axum::serve(listener, app()).await
        }
    })?;
    Ok(())
}
