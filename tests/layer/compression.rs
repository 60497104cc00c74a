//! Composition with tower-http's `CompressionLayer`, over real TCP.
//!
//! RFC 9110 §8.8.3: a strong tag names exact bytes, so gzip and identity
//! bytes of the same page need different strong tags. With the ETag layer
//! outermost it hashes what is sent, encoded or not.

use std::{io::Read, net::SocketAddr};

use axum::{
    http::{header, StatusCode},
    routing, Router,
};
use tower::ServiceBuilder;
use tower_etag::ETagLayer;
use tower_http::compression::CompressionLayer;

use crate::common::*;

/// Large and repetitive enough to be worth compressing.
fn page() -> String {
    "<p>tower-etag hashes the bytes it sends.</p>\n".repeat(200)
}

fn routes() -> Router {
    Router::new()
        .route("/", routing::get(|| async { axum::response::Html(page()) }))
        .route(
            "/precompressed",
            routing::get(|| async {
                (
                    [(header::CONTENT_ENCODING, "gzip")],
                    gzip_of(page().as_bytes()),
                )
            }),
        )
}

/// The right order on an axum Router: the ETag layer added last, so it is
/// outermost and sees the encoded bytes.
async fn start_router() -> SocketAddr {
    serve_axum(
        routes()
            .layer(CompressionLayer::new())
            .layer(ETagLayer::new()),
    )
    .await
}

/// The right order with `ServiceBuilder`: the ETag layer first, so it is
/// outermost.
async fn start_service_builder() -> SocketAddr {
    let service = ServiceBuilder::new()
        .layer(ETagLayer::new())
        .layer(CompressionLayer::new())
        .service(routes());
    serve_axum_service(service).await
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn gzip_of(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn each_coding_gets_its_own_strong_tag() {
    for addr in [start_router().await, start_service_builder().await] {
        let identity = get(addr, "/", &[]).await;
        let gzip = get(addr, "/", &[("accept-encoding", "gzip")]).await;

        assert_eq!(identity.header("content-encoding"), None);
        assert_eq!(identity.body, page());
        assert_eq!(gzip.header("content-encoding"), Some("gzip"));
        assert_eq!(gunzip(&gzip.body), page());

        // Each tag is the hash of the bytes on the wire, so they differ.
        assert_eq!(identity.etag(), Some(expected_tag(&identity.body).as_str()));
        assert_eq!(gzip.etag(), Some(expected_tag(&gzip.body).as_str()));
        assert_ne!(identity.etag(), gzip.etag());
        assert!(!gzip.etag().unwrap().starts_with("W/"));
        assert_eq!(
            gzip.header("content-length"),
            Some(gzip.body.len().to_string().as_str())
        );
        for response in [&identity, &gzip] {
            assert_eq!(response.header("vary"), Some("accept-encoding"));
        }

        // The same request gets the same encoded bytes, hence the same tag.
        let again = get(addr, "/", &[("accept-encoding", "gzip")]).await;
        assert_eq!(again.etag(), gzip.etag());
    }
}

#[tokio::test]
async fn revalidation_matches_only_the_coding_that_was_sent() {
    for addr in [start_router().await, start_service_builder().await] {
        let gzip = get(addr, "/", &[("accept-encoding", "gzip")]).await;
        let tag = gzip.etag().unwrap();

        // Same coding: 304, which keeps Vary so a cache keys it correctly.
        let fresh = get(
            addr,
            "/",
            &[("accept-encoding", "gzip"), ("if-none-match", tag)],
        )
        .await;
        assert_eq!(fresh.status, StatusCode::NOT_MODIFIED);
        assert_eq!(fresh.etag(), Some(tag));
        assert_eq!(fresh.header("vary"), Some("accept-encoding"));
        assert_eq!(fresh.header("content-encoding"), None);
        assert!(fresh.body.is_empty());

        // A client that cannot take gzip holds no valid copy under that tag.
        let other = get(addr, "/", &[("if-none-match", tag)]).await;
        assert_eq!(other.status, StatusCode::OK);
        assert_eq!(other.body, page());
        assert_ne!(other.etag(), Some(tag));
    }
}

#[tokio::test]
async fn head_gets_the_tag_and_length_of_the_encoded_get() {
    let addr = start_router().await;
    let gzip = get(addr, "/", &[("accept-encoding", "gzip")]).await;
    let response = raw(addr, "HEAD", "/", &[("accept-encoding", "gzip")]).await;
    let fields = raw_head(&response);
    assert!(
        fields.contains(&format!("etag: {}", gzip.etag().unwrap())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&format!("content-length: {}", gzip.body.len())),
        "{fields:?}"
    );
    assert!(fields.contains(&"content-encoding: gzip".to_owned()));
    assert!(response.ends_with("\r\n\r\n"), "no body after a HEAD");
}

#[tokio::test]
async fn a_response_already_encoded_is_hashed_as_it_is() {
    let addr = start_router().await;
    let response = get(addr, "/precompressed", &[("accept-encoding", "gzip")]).await;
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.body, gzip_of(page().as_bytes()));
    assert_eq!(response.etag(), Some(expected_tag(&response.body).as_str()));
}

/// The wrong order, pinned so that the documented hazard stays true to what
/// happens: with the compression outside, the ETag layer hashes the identity
/// bytes and the compression sends gzip bytes under that same strong tag.
/// The layer cannot see a recoding done after it. `weak(true)` makes such
/// tags honest, since a weak tag may name several encodings of one content.
#[tokio::test]
async fn compression_outside_the_layer_sends_gzip_under_the_identity_tag() {
    for weak in [false, true] {
        let addr = serve_axum(
            routes()
                .layer(ETagLayer::new().weak(weak))
                .layer(CompressionLayer::new()),
        )
        .await;
        let identity = get(addr, "/", &[]).await;
        let gzip = get(addr, "/", &[("accept-encoding", "gzip")]).await;
        assert_eq!(gzip.header("content-encoding"), Some("gzip"));
        assert_eq!(identity.etag(), gzip.etag(), "the hazard");
        let prefix = if weak { "W/" } else { "" };
        assert_eq!(
            gzip.etag(),
            Some(format!("{prefix}{}", expected_tag(page().as_bytes())).as_str())
        );

        // Revalidation still works for each client.
        let tag = gzip.etag().unwrap();
        let fresh = get(
            addr,
            "/",
            &[("accept-encoding", "gzip"), ("if-none-match", tag)],
        )
        .await;
        assert_eq!(fresh.status, StatusCode::NOT_MODIFIED);
        assert!(fresh.body.is_empty());
        // The outer compression also labels the 304 as gzip: the same value
        // as the stored response it refreshes, so harmless to a cache.
        assert_eq!(fresh.header("content-encoding"), Some("gzip"));
    }
}
