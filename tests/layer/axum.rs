//! The layer in axum apps over real TCP, in both placements: `Router::layer`
//! and wrapped around the whole `Router`.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    response::{
        sse::{Event, Sse},
        IntoResponse,
    },
    routing, Extension, Json, Router,
};
use futures_util::stream::{self, StreamExt};
use http_body_util::BodyExt;
use tower::ServiceBuilder;
use tower_etag::{predicate::SkipETag, ETagLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::common::*;

const PAGE: &str = "<h1>hello</h1>";

fn routes() -> Router {
    Router::new()
        .route(
            "/",
            routing::get(|| async { axum::response::Html(PAGE) }).post(|| async { "posted" }),
        )
        .route("/json", routing::get(|| async { Json(serde_json_value()) }))
        .route(
            "/own-tag",
            routing::get(|| async { ([(header::ETAG, "\"mine\"")], PAGE) }),
        )
        .route(
            "/skip",
            routing::get(|| async { (Extension(SkipETag), PAGE) }),
        )
        .route(
            "/events",
            routing::get(|| async {
                let first = stream::once(async { Ok::<_, Infallible>(Event::default().data("1")) });
                Sse::new(first.chain(stream::pending()))
            }),
        )
        .route(
            "/created",
            routing::get(|| async { (StatusCode::CREATED, PAGE) }),
        )
        .route("/empty", routing::get(|| async { StatusCode::NO_CONTENT }))
        // Inside the ETag layer: the 304 must keep what these add.
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        ))
        .layer(SetResponseHeaderLayer::appending(
            header::VARY,
            HeaderValue::from_static("accept-encoding"),
        ))
}

fn serde_json_value() -> [u32; 3] {
    [1, 2, 3]
}

/// `Router::layer`, the usual placement.
async fn router_layer() -> SocketAddr {
    serve_axum(routes().layer(ETagLayer::new())).await
}

/// Around the whole `Router`, served by `axum::serve`.
async fn around_router() -> SocketAddr {
    let app = ServiceBuilder::new()
        .layer(ETagLayer::new())
        .service(routes());
    serve_axum_service(app).await
}

/// Around the whole `Router`, served by hyper directly.
async fn around_router_on_hyper() -> SocketAddr {
    let app = ServiceBuilder::new()
        .layer(ETagLayer::new())
        .service(routes());
    serve_hyper(app).await
}

async fn placements() -> [(&'static str, SocketAddr); 3] {
    [
        ("Router::layer", router_layer().await),
        ("around Router", around_router().await),
        ("around Router on hyper", around_router_on_hyper().await),
    ]
}

#[tokio::test]
async fn get_is_tagged_in_every_placement() {
    for (placement, addr) in placements().await {
        let got = get(addr, "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{placement}");
        assert_eq!(
            got.etag(),
            Some(expected_tag(PAGE.as_bytes()).as_str()),
            "{placement}"
        );
        assert_eq!(got.header("content-length"), Some("14"), "{placement}");
        assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(got.body, PAGE);

        let got = get(addr, "/json", &[]).await;
        assert_eq!(got.body, "[1,2,3]");
        assert_eq!(
            got.etag(),
            Some(expected_tag(b"[1,2,3]").as_str()),
            "{placement}"
        );
    }
}

#[tokio::test]
async fn revalidation_gets_a_304_that_keeps_cache_control_and_vary() {
    for (placement, addr) in placements().await {
        let tag = get(addr, "/", &[]).await.etag().unwrap().to_owned();
        let wire = raw(addr, "GET", "/", &[("if-none-match", &tag)]).await;
        assert!(wire.starts_with("HTTP/1.1 304"), "{placement}: {wire}");
        assert!(
            wire.ends_with("\r\n\r\n"),
            "{placement}: no content: {wire:?}"
        );
        let head = raw_head(&wire);
        assert!(
            head.contains(&format!("etag: {tag}")),
            "{placement}: {head:?}"
        );
        assert!(
            head.contains(&"cache-control: public, max-age=60".to_owned()),
            "{placement}: {head:?}"
        );
        assert!(
            head.contains(&"vary: accept-encoding".to_owned()),
            "{placement}: {head:?}"
        );
        for dropped in ["content-length", "content-type"] {
            assert!(
                !has_field(&head, dropped),
                "{placement}: {dropped} in {head:?}"
            );
        }
    }
}

#[tokio::test]
async fn head_gets_the_get_tag_and_length_in_every_placement() {
    for (placement, addr) in placements().await {
        let got_get = get(addr, "/", &[]).await;
        let got_head = head(addr, "/", &[]).await;
        assert_eq!(got_head.status, StatusCode::OK, "{placement}");
        assert_eq!(got_head.etag(), got_get.etag(), "{placement}");
        assert_eq!(got_head.header("content-length"), Some("14"), "{placement}");
        assert!(got_head.body.is_empty());

        let wire = raw(addr, "HEAD", "/", &[]).await;
        let lines = raw_head(&wire);
        assert!(
            lines.contains(&"content-length: 14".to_owned()),
            "{placement}: {lines:?}"
        );
        assert!(
            lines.contains(&format!("etag: {}", expected_tag(PAGE.as_bytes()))),
            "{placement}: {lines:?}"
        );
        assert!(wire.ends_with("\r\n\r\n"), "{placement}: {wire:?}");

        let tag = got_get.etag().unwrap();
        let got = head(addr, "/", &[("if-none-match", tag)]).await;
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{placement}");
        assert_eq!(got.etag(), Some(tag), "{placement}");
    }
}

#[tokio::test]
async fn post_404_201_and_204_pass_through() {
    for (placement, addr) in placements().await {
        let got = send(addr, request("POST", "/", &[("if-none-match", "*")]))
            .await
            .unwrap();
        assert_eq!(
            (got.status, got.etag()),
            (StatusCode::OK, None),
            "{placement}"
        );
        assert_eq!(got.body, "posted");

        let got = get(addr, "/nowhere", &[("if-none-match", "*")]).await;
        assert_eq!(
            (got.status, got.etag()),
            (StatusCode::NOT_FOUND, None),
            "{placement}"
        );

        let got = get(addr, "/created", &[]).await;
        assert_eq!(
            (got.status, got.etag()),
            (StatusCode::CREATED, None),
            "{placement}"
        );
        assert_eq!(got.body, PAGE);

        let wire = raw(addr, "GET", "/empty", &[]).await;
        assert!(wire.starts_with("HTTP/1.1 204"), "{placement}: {wire}");
        let lines = raw_head(&wire);
        assert!(!has_field(&lines, "etag"), "{placement}: {lines:?}");
        assert!(
            !has_field(&lines, "content-length"),
            "{placement}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn handler_tag_and_skip_marker_are_respected() {
    for (placement, addr) in placements().await {
        let got = get(addr, "/own-tag", &[]).await;
        assert_eq!(got.etag(), Some("\"mine\""), "{placement}");
        let got = get(addr, "/own-tag", &[("if-none-match", "\"mine\"")]).await;
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{placement}");

        let got = get(addr, "/skip", &[("if-none-match", "*")]).await;
        assert_eq!(
            (got.status, got.etag()),
            (StatusCode::OK, None),
            "{placement}"
        );
    }
}

#[tokio::test]
async fn server_sent_events_are_not_delayed() {
    for (placement, addr) in placements().await {
        let response = send_head(addr, request("GET", "/events", &[]))
            .await
            .unwrap();
        assert!(!response.headers().contains_key("etag"), "{placement}");
        let mut body = response.into_body();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{placement}: the first event must arrive at once"))
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: 1\n\n", "{placement}");
    }
}

#[tokio::test]
async fn works_with_axum_request_extractors_and_into_response() {
    // A handler that reads the method it was given: HEAD arrives as GET.
    let app = Router::new()
        .route(
            "/method",
            routing::get(|req: Request| async move { req.method().to_string().into_response() }),
        )
        .layer(ETagLayer::new());
    let addr = serve_axum(app).await;
    assert_eq!(get(addr, "/method", &[]).await.body, "GET");
    let got = head(addr, "/method", &[]).await;
    assert_eq!(got.etag(), Some(expected_tag(b"GET").as_str()));
    assert_eq!(got.header("content-length"), Some("3"));
}

#[tokio::test]
async fn not_modified_leaves_axum_no_reason_to_add_content_length_zero() {
    // RFC 9110 §8.6: a 304 must not claim `Content-Length: 0` for a non-empty
    // representation. hyper's HTTP/1.1 writer would hide such a header, other
    // servers and HTTP/2 may not, so check what the Router itself returns.
    use tower::ServiceExt;
    let app = routes().layer(ETagLayer::new());
    let tag = expected_tag(PAGE.as_bytes());
    let request = Request::builder()
        .uri("/")
        .header(header::IF_NONE_MATCH, &tag)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers().get(header::CONTENT_LENGTH), None);

    let addr = serve_axum(app).await;
    let got = send_h2(addr, request_h2("/", &[("if-none-match", &tag)]))
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.header("content-length"), None);
}

fn request_h2(
    path: &str,
    headers: &[(&str, &str)],
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    request("GET", &format!("http://localhost{path}"), headers)
}

#[tokio::test]
async fn head_of_a_stream_claims_no_length() {
    // A HEAD whose GET is a stream of unknown length must not be given
    // `Content-Length: 0`: that would describe a different representation.
    for (placement, addr) in placements().await {
        let wire = raw(addr, "HEAD", "/events", &[]).await;
        assert!(wire.starts_with("HTTP/1.1 200"), "{placement}: {wire}");
        let lines = raw_head(&wire);
        assert!(
            !has_field(&lines, "content-length"),
            "{placement}: {lines:?}"
        );
    }
}
