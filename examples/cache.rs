//! An axum app whose revalidations are answered by a validator cache, and
//! whose writes invalidate it.
//!
//! ```text
//! cargo run --example cache                   # listens on 127.0.0.1:3000
//! cargo run --example cache -- 127.0.0.1:0    # any free port
//! cargo run --example cache --features metrics   # and GET /metrics
//! ```
//!
//! Every response carries a `Cache-Status` member (RFC 9211) naming the
//! cache `notes-cache`. Built with the `metrics` feature, the app installs
//! `metrics-exporter-prometheus`'s recorder before it builds the cache, and
//! serves the cache's metrics in Prometheus's text format at `GET /metrics`.
//!
//! Routes:
//! - `GET /notes/{id}`: the note, after 2 ms of "database" latency, with
//!   `Cache-Control: no-cache` so that clients revalidate every time;
//! - `PUT /notes/{id}`: replaces the note (the cache invalidates it); with
//!   `If-Match`, only if the note still has that tag (412 otherwise), and
//!   the new note's `ETag` in the answer;
//! - `POST /notes/reset`: restores every note and invalidates them all from
//!   app code, by their surrogate tag;
//! - `GET /stats`: the cache's counters;
//! - `GET /metrics` (feature `metrics`): the metrics.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Router,
};
use tower_etag::{
    cache::{CacheTags, ValidatorCache, ValidatorCacheLayer},
    conditional::{Current, Preconditions},
    ETagLayer,
};

#[derive(Clone)]
struct App {
    notes: Arc<Mutex<HashMap<String, String>>>,
    cache: ValidatorCache,
    /// The layer the `GET`s go through: its configuration decides the tags.
    etag: ETagLayer,
}

async fn show(State(app): State<App>, Path(id): Path<String>) -> impl IntoResponse {
    // What a database query would cost.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let note = app.notes.lock().unwrap().get(&id).cloned();
    match note {
        Some(note) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-cache")],
            Extension(CacheTags::new(["notes"])),
            note,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn replace(
    State(app): State<App>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> Response {
    let preconditions = Preconditions::new(&method, &headers);
    // RFC 9110 §9.3.4: the note is stored exactly as sent, so this is the
    // tag its next GET carries, which the client can send as its next
    // If-Match.
    let tag = app.etag.tag_for(&body);
    // The lock is the transaction: the note the preconditions are checked
    // against is the one replaced, with no other write in between.
    let mut notes = app.notes.lock().unwrap();
    // The tag the note's GET carries: the ETag layer's tag of its bytes.
    let current_tag = notes.get(&id).map(|note| app.etag.tag_for(note));
    let current = match &current_tag {
        Some(tag) => Current::tagged(tag),
        None => Current::missing(),
    };
    // A stale If-Match gets 412 with the current tag; a PUT without
    // preconditions still replaces the note.
    if let Err(rejection) = preconditions.check(current) {
        return rejection.into_http_response().into_response();
    }
    let created = notes.insert(id, body).is_none();
    drop(notes);
    // The cache invalidates /notes/{id} itself: this is a PUT that
    // succeeded (RFC 9111 §4.4).
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    (status, [(header::ETAG, tag.to_header_value())]).into_response()
}

async fn reset(State(app): State<App>) -> StatusCode {
    *app.notes.lock().unwrap() = initial_notes();
    // A write the cache cannot see by its URI: invalidate every note.
    app.cache.invalidate_tag("notes").await;
    StatusCode::NO_CONTENT
}

async fn stats(State(app): State<App>) -> impl IntoResponse {
    let stats = app.cache.stats();
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            r#"{{"hits":{},"misses":{},"fills":{},"invalidations":{},"entries":{}}}"#,
            stats.hits, stats.misses, stats.fills, stats.invalidations, stats.entries
        ),
    )
}

fn initial_notes() -> HashMap<String, String> {
    HashMap::from([
        ("1".to_owned(), "Buy milk\n".to_owned()),
        ("2".to_owned(), "Call Ada\n".to_owned()),
    ])
}

fn app(cache: ValidatorCache) -> Router {
    let etag = ETagLayer::new();
    let state = App {
        notes: Arc::new(Mutex::new(initial_notes())),
        cache: cache.clone(),
        etag: etag.clone(),
    };
    Router::new()
        .route("/notes/{id}", get(show).put(replace))
        .route("/notes/reset", post(reset))
        .route("/stats", get(stats))
        .layer(etag)
        // Outside the ETag layer, whose responses it remembers; an
        // authentication layer would go after this one (outside it).
        .layer(ValidatorCacheLayer::new(cache))
        .with_state(state)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    // The recorder first: the cache registers its metrics when it is built.
    // Buckets around the store's timeout (5 ms by default), for Redis
    // operations' durations.
    #[cfg(feature = "metrics")]
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_duration_seconds".to_owned()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
            ],
        )?
        .install_recorder()?;
    let cache = ValidatorCache::builder()
        .time_to_live(Duration::from_secs(300))
        .max_entries(10_000)
        .cache_status("notes-cache")
        .build();
    let app = app(cache);
    #[cfg(feature = "metrics")]
    let app = app.route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    );

    println!("tower-etag validator cache demo listening on http://{addr}");
    println!();
    println!("A 200 with an ETag, from the handler:");
    println!("  curl -i http://{addr}/notes/1");
    println!("Presenting the tag: a 304 from the cache, the handler does not run:");
    println!("  curl -i -H 'If-None-Match: <the tag>' http://{addr}/notes/1");
    println!("A write invalidates it; the same revalidation then gets the new note:");
    println!("  curl -i -X PUT --data 'Buy oat milk' http://{addr}/notes/1");
    println!("Counters:");
    println!("  curl http://{addr}/stats");
    #[cfg(feature = "metrics")]
    println!("  curl http://{addr}/metrics");

    axum::serve(listener, app).await?;
    Ok(())
}
