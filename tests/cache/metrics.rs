//! The validator cache's metrics (feature `metrics`): exact counts for a
//! scripted sequence of requests over real TCP, read from `metrics-util`'s
//! debugging recorder, registered for the cache alone with
//! `metrics::with_local_recorder` (so tests running in parallel do not mix
//! their counts).

use axum::{
    http::{header, StatusCode},
    response::IntoResponse,
    routing, Router,
};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheBuilder, ValidatorCacheLayer},
    predicate::SkipETag,
    ETagLayer,
};

use crate::common::*;

async fn note() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "max-age=0, must-revalidate"),
            (header::VARY, "accept-encoding"),
        ],
        "note v1",
    )
}

fn app(cache: ValidatorCache) -> Router {
    Router::new()
        .route(
            "/notes/{id}",
            routing::get(note).put(|| async { StatusCode::NO_CONTENT }),
        )
        .route(
            "/secret",
            routing::get(|| async { ([(header::CACHE_CONTROL, "no-store")], "secret") }),
        )
        .route(
            "/cookie",
            routing::get(|| async { ([(header::SET_COOKIE, "a=1")], "cookie") }),
        )
        .route(
            "/any",
            routing::get(|| async { ([(header::VARY, "*")], "varies on anything") }),
        )
        .route(
            "/untagged",
            routing::get(|| async { (axum::Extension(SkipETag), "untagged") }),
        )
        .route(
            "/notes",
            routing::post(|| async { (StatusCode::CREATED, [(header::LOCATION, "/notes/3")]) }),
        )
        .layer(ETagLayer::new())
        .layer(ValidatorCacheLayer::new(cache))
}

/// A cache whose metrics go to a recorder of its own.
fn recorded(builder: ValidatorCacheBuilder) -> (ValidatorCache, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = metrics::with_local_recorder(&recorder, || builder.build());
    (cache, snapshotter)
}

#[tokio::test]
async fn a_scripted_sequence_moves_each_counter_by_exactly_its_count() {
    let (cache, snapshotter) = recorded(
        ValidatorCache::builder()
            .metrics_label("cache", "notes")
            .cache_status("notes"),
    );
    let addr = serve_axum(app(cache.clone())).await;

    // 1. Unconditional: a miss without a condition; stored.
    let tag = get(addr, "/notes/1", &[]).await.etag().unwrap().to_owned();
    // 2. A hit.
    let hit = get(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    // 3. Another tag: the response confirms what is stored.
    get(addr, "/notes/1", &[("if-none-match", "\"other\"")]).await;
    // 4. Another Accept-Encoding: a vary miss; the ETag layer's 304 stored.
    get(
        addr,
        "/notes/1",
        &[("if-none-match", &tag), ("accept-encoding", "br")],
    )
    .await;
    // 5. no-cache: the request's own choice (its 304 is stored again: see
    // `Remembered::replayed_by`).
    get(
        addr,
        "/notes/1",
        &[("if-none-match", &tag), ("cache-control", "no-cache")],
    )
    .await;
    // 6. A HEAD: not stored.
    head(addr, "/notes/2", &[]).await;
    // 7. Not storable: no-store, Set-Cookie, Vary: *, no ETag.
    for path in ["/secret", "/cookie", "/any", "/untagged"] {
        assert_eq!(get(addr, path, &[]).await.status, StatusCode::OK);
    }
    // 8. A write: its target at arrival and at its end.
    send(addr, request("PUT", "/notes/1", &[])).await.unwrap();
    // 9. A write whose answer names another resource.
    let created = send(addr, request("POST", "/notes", &[])).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED);
    // 10. App code.
    assert!(cache.invalidate(&"/notes/1".parse().unwrap()).await);
    assert!(cache.invalidate_tag("user:1").await);
    assert!(cache.clear().await);

    let values = metric_values(&snapshotter);
    let expected = [
        ("tower_etag_cache_hits_total{cache=notes}", 1.0),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=no_condition}",
            6.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=tag_mismatch}",
            1.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=vary_mismatch}",
            1.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=request}",
            1.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=method}",
            2.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=not_stored}",
            0.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=store_unavailable}",
            0.0,
        ),
        (
            "tower_etag_cache_misses_total{cache=notes,reason=partition}",
            0.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,result=stored}",
            3.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=unchanged,result=not_stored}",
            1.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=head,result=not_stored}",
            1.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=cache_control,result=not_stored}",
            1.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=set_cookie,result=not_stored}",
            1.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=vary,result=not_stored}",
            1.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=no_etag,result=not_stored}",
            1.0,
        ),
        (
            "tower_etag_cache_fills_total{cache=notes,reason=refused,result=not_stored}",
            0.0,
        ),
        (
            "tower_etag_cache_invalidations_total{cache=notes,cause=write}",
            4.0,
        ),
        (
            "tower_etag_cache_invalidations_total{cache=notes,cause=location}",
            1.0,
        ),
        (
            "tower_etag_cache_invalidations_total{cache=notes,cause=app_uri}",
            1.0,
        ),
        (
            "tower_etag_cache_invalidations_total{cache=notes,cause=app_tag}",
            1.0,
        ),
        (
            "tower_etag_cache_invalidations_total{cache=notes,cause=clear}",
            1.0,
        ),
    ];
    for (name, value) in expected {
        assert_eq!(values.get(name), Some(&value), "{name} in {values:#?}");
    }
    // The entries gauge follows the store (moka counts lazily: present,
    // not exact).
    assert!(values.contains_key("tower_etag_cache_entries{cache=notes}"));
    // The same as `stats()`.
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.fills), (1, 3));
}

#[tokio::test]
async fn a_partitioned_request_and_a_custom_prefix() {
    let (cache, snapshotter) = recorded(ValidatorCache::builder().metrics_prefix("app").partition(
        |parts| {
            parts
                .headers
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_owned)
        },
    ));
    let addr = serve_axum(app(cache)).await;
    get(addr, "/notes/1", &[]).await;
    get(addr, "/notes/1", &[("x-tenant", "a")]).await;
    let values = metric_values(&snapshotter);
    assert_eq!(
        values.get("app_cache_misses_total{reason=partition}"),
        Some(&1.0),
        "{values:#?}"
    );
    assert_eq!(
        values.get("app_cache_misses_total{reason=no_condition}"),
        Some(&1.0)
    );
    assert!(!values.keys().any(|name| name.starts_with("tower_etag")));
}

#[tokio::test]
async fn without_a_recorder_at_build_nothing_is_recorded_and_nothing_fails() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Built outside the recorder: its handles go nowhere.
    let cache = ValidatorCache::builder().build();
    let addr = serve_axum(app(cache)).await;
    metrics::with_local_recorder(&recorder, || ());
    let tag = get(addr, "/notes/1", &[]).await.etag().unwrap().to_owned();
    let hit = get(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    assert!(metric_values(&snapshotter).is_empty());
}
