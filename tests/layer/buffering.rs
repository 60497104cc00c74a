//! Buffering over real TCP with a plain hyper server: tags, the cap, chunking,
//! trailers, body errors and responses that must not be delayed.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::SizeHint;
use http_body_util::BodyExt;
use tower::ServiceBuilder;
use tower_etag::ETagLayer;

use crate::common::*;

const CAP: usize = 1000;

/// Deterministic, non-repeating test content.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// Serves `make()` for every request behind the layer with a 1000-byte cap.
async fn serve<F>(make: F) -> std::net::SocketAddr
where
    F: Fn() -> Response<ScriptBody> + Clone + Send + Sync + 'static,
{
    serve_with(ETagLayer::new().max_body_size(CAP), make).await
}

async fn serve_with<F>(layer: ETagLayer, make: F) -> std::net::SocketAddr
where
    F: Fn() -> Response<ScriptBody> + Clone + Send + Sync + 'static,
{
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req| {
            let response = make();
            async move { response }
        }));
    serve_hyper(service).await
}

#[tokio::test]
async fn tagged_response_carries_blake3_tag_and_exact_length() {
    let bytes = content(500);
    let body = bytes.clone();
    let addr = serve(move || Response::new(ScriptBody::chunked(&body, 64))).await;

    let got = get(addr, "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.etag(), Some(expected_tag(&bytes).as_str()));
    assert_eq!(got.header("content-length"), Some("500"));
    assert_eq!(got.body, bytes);
}

#[tokio::test]
async fn tag_is_strong_quoted_and_valid_etagc() {
    let addr = serve(|| Response::new(ScriptBody::new([Bytes::from_static(b"x")]))).await;
    let tag = get(addr, "/", &[]).await.etag().unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let opaque = &tag[1..tag.len() - 1];
    assert_eq!(opaque.len(), 32, "128 bits in hex");
    assert!(opaque
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[tokio::test]
async fn tag_does_not_depend_on_chunking() {
    let bytes = content(CAP);
    let mut tags = Vec::new();
    for chunk in [CAP, 333, 64, 7, 1] {
        let body = bytes.clone();
        let addr = serve(move || Response::new(ScriptBody::chunked(&body, chunk))).await;
        let got = get(addr, "/", &[]).await;
        assert_eq!(got.body, bytes, "chunk size {chunk}");
        tags.push(got.etag().unwrap().to_owned());
    }
    assert!(tags.iter().all(|t| *t == expected_tag(&bytes)), "{tags:?}");
}

#[tokio::test]
async fn empty_frames_do_not_change_the_tag() {
    let addr = serve(|| {
        Response::new(ScriptBody::new(
            ["", "ab", "", "", "c", ""].map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        ))
    })
    .await;
    let got = get(addr, "/", &[]).await;
    assert_eq!(got.body, "abc");
    assert_eq!(got.etag(), Some(expected_tag(b"abc").as_str()));
    assert_eq!(got.header("content-length"), Some("3"));
}

#[tokio::test]
async fn bodies_up_to_the_cap_are_tagged() {
    for len in [0, 1, CAP - 1, CAP] {
        for chunk in [CAP, 10] {
            let bytes = content(len);
            let body = bytes.clone();
            let addr = serve(move || Response::new(ScriptBody::chunked(&body, chunk))).await;
            let got = get(addr, "/", &[]).await;
            assert_eq!(got.body, bytes, "len {len} chunk {chunk}");
            assert_eq!(got.etag(), Some(expected_tag(&bytes).as_str()), "len {len}");
            assert_eq!(got.header("content-length"), Some(len.to_string().as_str()));
        }
    }
}

#[tokio::test]
async fn body_growing_past_the_cap_is_sent_whole_and_untagged() {
    for (len, chunk) in [
        (CAP + 1, CAP + 1),
        (CAP + 1, 10),
        (CAP + 1, 1),
        (50_000, 999),
    ] {
        let bytes = content(len);
        let body = bytes.clone();
        let addr = serve(move || Response::new(ScriptBody::chunked(&body, chunk))).await;
        let got = get(addr, "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.etag(), None, "len {len} chunk {chunk}");
        assert_eq!(got.body.len(), len, "len {len} chunk {chunk}");
        assert_eq!(got.body, bytes, "every byte, in order");
    }
}

#[tokio::test]
async fn overflow_keeps_the_inner_content_length() {
    // A handler that lies low in its size hint but sets the header.
    let bytes = content(CAP + 500);
    let body = bytes.clone();
    let addr = serve(move || {
        Response::builder()
            .header("content-length", CAP + 500)
            .body(ScriptBody::chunked(&body, 100))
            .unwrap()
    })
    .await;
    let got = get(addr, "/", &[]).await;
    assert_eq!(got.etag(), None);
    assert_eq!(got.body, bytes);
}

/// A response whose first chunk arrives at once and whose body then never
/// ends: if the layer buffered it, the client would see nothing.
async fn first_chunk_arrives(addr: std::net::SocketAddr) -> (http::response::Parts, Bytes) {
    let response = send_head(addr, request("GET", "/", &[])).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk must not wait for the end of the body")
        .unwrap()
        .unwrap();
    (parts, frame.into_data().unwrap())
}

#[tokio::test]
async fn content_length_over_the_cap_is_not_buffered() {
    let addr = serve(|| {
        Response::builder()
            .header("content-length", CAP + 1)
            .body(ScriptBody::new([Bytes::from_static(b"first")]).end(End::Hang))
            .unwrap()
    })
    .await;
    let (parts, chunk) = first_chunk_arrives(addr).await;
    assert!(!parts.headers.contains_key("etag"));
    assert_eq!(chunk, "first");
}

#[tokio::test]
async fn size_hint_over_the_cap_is_not_buffered() {
    let addr = serve(|| {
        let mut hint = SizeHint::new();
        hint.set_lower(CAP as u64 + 1);
        Response::new(
            ScriptBody::new([Bytes::from_static(b"first")])
                .end(End::Hang)
                .size_hint(hint),
        )
    })
    .await;
    let (parts, chunk) = first_chunk_arrives(addr).await;
    assert!(!parts.headers.contains_key("etag"));
    assert_eq!(chunk, "first");
}

#[tokio::test]
async fn event_streams_are_not_delayed() {
    let addr = serve(|| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(ScriptBody::new([Bytes::from_static(b"data: 1\n\n")]).end(End::Hang))
            .unwrap()
    })
    .await;
    let (parts, chunk) = first_chunk_arrives(addr).await;
    assert!(!parts.headers.contains_key("etag"));
    assert_eq!(chunk, "data: 1\n\n");
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
    trailers
}

/// Serves `bytes` in 100-byte chunks followed by trailers.
async fn serve_with_trailers(bytes: &[u8]) -> std::net::SocketAddr {
    let body = bytes.to_vec();
    serve(move || {
        Response::builder()
            // hyper's HTTP/1.1 writer sends only the trailer fields announced here.
            .header("trailer", "x-checksum")
            .body(ScriptBody::chunked(&body, 100).trailers(trailers()))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn trailers_are_preserved_over_http1() {
    let bytes = content(300);
    let addr = serve_with_trailers(&bytes).await;
    let got = send(addr, request("GET", "/", &[("te", "trailers")]))
        .await
        .unwrap();
    assert_eq!(got.body, bytes);
    assert_eq!(got.etag(), Some(expected_tag(&bytes).as_str()));
    // Chunked framing, so that the trailers can follow the content.
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert_eq!(got.trailers, Some(trailers()));
}

#[tokio::test]
async fn trailers_are_preserved_over_http2() {
    let bytes = content(300);
    let addr = serve_with_trailers(&bytes).await;
    let got = send_h2(addr, request("GET", "http://localhost/", &[]))
        .await
        .unwrap();
    assert_eq!(got.body, bytes);
    assert_eq!(got.etag(), Some(expected_tag(&bytes).as_str()));
    assert_eq!(got.trailers, Some(trailers()));
}

#[tokio::test]
async fn a_trailers_only_body_is_tagged_as_empty_and_keeps_its_trailers() {
    let addr = serve_with_trailers(b"").await;
    let h1 = send(addr, request("GET", "/", &[("te", "trailers")]))
        .await
        .unwrap();
    let h2 = send_h2(addr, request("GET", "http://localhost/", &[]))
        .await
        .unwrap();
    for got in [h1, h2] {
        assert!(got.body.is_empty());
        assert_eq!(got.etag(), Some(expected_tag(b"").as_str()));
        assert_eq!(got.trailers, Some(trailers()));
    }
}

#[tokio::test]
async fn trailers_after_overflow_are_preserved() {
    let bytes = content(CAP * 3);
    let addr = serve_with_trailers(&bytes).await;
    let got = send(addr, request("GET", "/", &[("te", "trailers")]))
        .await
        .unwrap();
    assert_eq!(got.etag(), None);
    assert_eq!(got.body, bytes);
    assert_eq!(got.trailers, Some(trailers()));
}

#[tokio::test]
async fn body_error_is_passed_on_after_every_byte_read_before_it() {
    use tower::{service_fn, ServiceExt};
    let service = ServiceBuilder::new()
        .layer(ETagLayer::new().max_body_size(CAP))
        .service(service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(
                ScriptBody::chunked(&content(300), 100).end(End::Fail),
            ))
        }));
    let response = service.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        !response.headers().contains_key("etag"),
        "an error is not tagged"
    );
    let mut body = response.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(error)) => break Some(error),
            None => break None,
        }
    };
    assert_eq!(received, content(300));
    assert!(error.is_some(), "the error must reach the server");
    assert!(
        body.frame().await.is_none(),
        "the body ends after its error"
    );
}

#[tokio::test]
async fn body_error_aborts_the_connection_as_without_the_layer() {
    // Every other response fails midway.
    fn flaky() -> impl Fn() -> Response<ScriptBody> + Clone + Send + Sync + 'static {
        let calls = Arc::new(AtomicUsize::new(0));
        move || {
            if calls.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                Response::new(ScriptBody::chunked(&content(300), 100).end(End::Fail))
            } else {
                Response::new(ScriptBody::chunked(&content(300), 100))
            }
        }
    }
    let plain = {
        let make = flaky();
        serve_hyper(service_fn(move |_req| {
            let response = make();
            async move { response }
        }))
        .await
    };
    let layered = serve(flaky()).await;

    for addr in [plain, layered] {
        // The client sees a broken response, not a complete one.
        let result = send(addr, request("GET", "/", &[])).await;
        assert!(result.is_err(), "{result:?}");
        // The server keeps serving.
        let got = get(addr, "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, content(300));
        if addr == layered {
            assert_eq!(got.etag(), Some(expected_tag(&content(300)).as_str()));
        }
    }
}

#[tokio::test]
async fn body_error_after_overflow_still_aborts() {
    let addr =
        serve(|| Response::new(ScriptBody::chunked(&content(CAP * 2), 100).end(End::Fail))).await;
    let result = send(addr, request("GET", "/", &[])).await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn client_disconnect_while_buffering_drops_the_inner_body() {
    let drops = Arc::new(AtomicUsize::new(0));
    let counter = drops.clone();
    let addr = serve(move || {
        Response::new(
            ScriptBody::new([Bytes::from_static(b"partial")])
                .end(End::Hang)
                .count_drop(counter.clone()),
        )
    })
    .await;
    // The body never ends, so the layer is still buffering when the client
    // gives up.
    let attempt = tokio::time::timeout(
        Duration::from_millis(300),
        send_head(addr, request("GET", "/", &[])),
    )
    .await;
    assert!(attempt.is_err(), "no response head while buffering");
    drop(attempt);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while drops.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "inner body leaked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn weak_option_emits_weak_tags_that_still_revalidate() {
    let bytes = content(100);
    let body = bytes.clone();
    let layer = ETagLayer::new().weak(true);
    let addr = serve_with(layer, move || Response::new(ScriptBody::chunked(&body, 10))).await;
    let got = get(addr, "/", &[]).await;
    let tag = got.etag().unwrap().to_owned();
    assert_eq!(tag, format!("W/{}", expected_tag(&bytes)));
    let revalidated = get(addr, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    // If-Match needs a strong match, which a weak tag never gives.
    let guarded = get(addr, "/", &[("if-match", &tag)]).await;
    assert_eq!(guarded.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn default_cap_is_two_mebibytes() {
    let at_cap = content(2 * 1024 * 1024);
    let over = content(2 * 1024 * 1024 + 1);
    let (a, b) = (at_cap.clone(), over.clone());
    let layer = ETagLayer::new();
    let addr_at = serve_with(layer.clone(), move || {
        Response::new(ScriptBody::chunked(&a, 64 * 1024))
    })
    .await;
    let addr_over = serve_with(layer, move || {
        Response::new(ScriptBody::chunked(&b, 64 * 1024))
    })
    .await;
    let got = get(addr_at, "/", &[]).await;
    assert_eq!(got.etag(), Some(expected_tag(&at_cap).as_str()));
    assert_eq!(got.body.len(), at_cap.len());
    let got = get(addr_over, "/", &[]).await;
    assert_eq!(got.etag(), None);
    assert_eq!(got.body, over);
}
