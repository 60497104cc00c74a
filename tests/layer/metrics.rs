//! The ETag layer's metrics (feature `metrics`): exact counts per outcome,
//! bytes hashed and the largest body held, from `metrics-util`'s debugging
//! recorder registered for the layer alone (`with_local_recorder`).

use axum::{
    body::Body,
    http::{header, StatusCode},
    response::Response,
    routing, Extension, Router,
};
use bytes::Bytes;
use metrics_util::debugging::DebuggingRecorder;
use tower_etag::{predicate::SkipETag, ETagLayer};

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
        .route(
            "/opted-out",
            routing::get(|| async { (Extension(SkipETag), "no tag") }),
        )
        .route(
            "/own",
            routing::get(|| async { ([(header::ETAG, "\"v1\"")], "own tag") }),
        )
        .route(
            "/events",
            routing::get(|| async {
                ([(header::CONTENT_TYPE, "text/event-stream")], "data: 1\n\n")
            }),
        )
        .route(
            "/failing",
            routing::get(|| async {
                let body = ScriptBody::new([Bytes::from_static(b"ab")]).end(End::Fail);
                Response::new(Body::new(body))
            }),
        )
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
    get(addr, "/opted-out", &[]).await;
    get(addr, "/own", &[]).await;
    get(addr, "/events", &[]).await;
    // Two bytes read, then the body fails: the error reaches the client.
    assert!(send(addr, request("GET", "/failing", &[])).await.is_err());

    let values = metric_values(&snapshotter);
    let passed = |reason: &str| {
        format!("tower_etag_responses_total{{layer=notes,outcome=passed_through,reason={reason}}}")
    };
    let mut expected = vec![
        (
            "tower_etag_responses_total{layer=notes,outcome=tagged}".to_owned(),
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=not_modified}".to_owned(),
            1.0,
        ),
        (
            "tower_etag_responses_total{layer=notes,outcome=precondition_failed}".to_owned(),
            1.0,
        ),
        // "hello" hashed for the 200, the 304 and the 412.
        (
            "tower_etag_hashed_bytes_total{layer=notes}".to_owned(),
            15.0,
        ),
        ("tower_etag_buffered_bytes_max{layer=notes}".to_owned(), 5.0),
    ];
    for reason in [
        "method",
        "status",
        "too_large",
        "opted_out",
        "own_validator",
        "predicate",
        "body_error",
    ] {
        expected.push((passed(reason), 1.0));
    }
    for (name, value) in expected {
        assert_eq!(values.get(&name), Some(&value), "{name} in {values:#?}");
    }
}
