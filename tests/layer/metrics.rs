//! The ETag layer's metrics (feature `metrics`): exact counts per outcome,
//! bytes hashed and the largest body held, from `metrics-util`'s debugging
//! recorder registered for the layer alone (`with_local_recorder`).

use axum::{http::StatusCode, routing, Router};
use metrics_util::debugging::DebuggingRecorder;
use tower_etag::ETagLayer;

use crate::common::*;

#[tokio::test]
async fn each_outcome_and_every_hashed_byte_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        ETagLayer::new()
            .max_body_size(16)
            .metrics_label("layer", "notes")
    });
    let app = Router::new()
        .route(
            "/",
            routing::get(|| async { "hello" }).post(|| async { "posted" }),
        )
        .route(
            "/missing",
            routing::get(|| async { (StatusCode::NOT_FOUND, "no") }),
        )
        .route("/big", routing::get(|| async { "x".repeat(64) }))
        .layer(layer);
    let addr = serve_axum(app).await;

    let tag = get(addr, "/", &[]).await.etag().unwrap().to_owned();
    assert_eq!(
        get(addr, "/", &[("if-none-match", &tag)]).await.status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get(addr, "/", &[("if-match", "\"other\"")]).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    send(addr, request("POST", "/", &[])).await.unwrap();
    get(addr, "/missing", &[]).await;
    // 64 bytes announced, over the 16-byte cap: sent on without buffering.
    get(addr, "/big", &[]).await;

    let values = metric_values(&snapshotter);
    let expected = [
        (
            "tower_etag_responses_total{layer=notes,outcome=tagged}",
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=not_modified}",
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=precondition_failed}",
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=passed_through,reason=method}",
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=passed_through,reason=status}",
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=passed_through,reason=too_large}",
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=passed_through,reason=predicate}",
            0.0,
        ),
        // "hello" hashed for the 200, the 304 and the 412.
        ("tower_etag_hashed_bytes_total{layer=notes}", 15.0),
        ("tower_etag_buffered_bytes_max{layer=notes}", 5.0),
    ];
    for (name, value) in expected {
        assert_eq!(values.get(name), Some(&value), "{name} in {values:#?}");
    }
}
