//! Keyed tags (`ETagLayer::keyed`) over real TCP: a keyed tag is
//! `blake3::keyed_hash(key, body)`, cannot be recomputed without the key,
//! and replicas that share the key validate each other's tags.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode};
use tower::ServiceBuilder;
use tower_etag::ETagLayer;

use crate::common::*;

const KEY: [u8; 32] = *b"an example key of 32 bytes long!";

/// A small private body, of the kind an unkeyed tag would let anyone guess.
const SECRET: &[u8] = b"{\"pin\":\"4821\"}";

/// Serves `body` in chunks of `chunk` bytes behind `layer`.
async fn start(layer: ETagLayer, body: Bytes, chunk: usize) -> SocketAddr {
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req| {
            let body = body.clone();
            async move { Response::new(ScriptBody::chunked(&body, chunk)) }
        }));
    serve_hyper(service).await
}

fn keyed_tag(key: &[u8; 32], bytes: &[u8]) -> String {
    format!("\"{}\"", &blake3::keyed_hash(key, bytes).to_hex()[..32])
}

#[tokio::test]
async fn a_keyed_tag_is_the_keyed_hash_and_not_the_public_one() {
    // One chunk, several small ones (joined), and large bodies in small
    // frames (hashed incrementally).
    let large: Bytes = (0..300_000u32).map(|i| (i * 13 + i / 5) as u8).collect();
    for (body, chunk) in [
        (Bytes::from_static(SECRET), SECRET.len()),
        (Bytes::from_static(SECRET), 3),
        (large.clone(), large.len()),
        (large.clone(), 4096),
    ] {
        let addr = start(ETagLayer::new().keyed(KEY), body.clone(), chunk).await;
        let response = get(addr, "/", &[]).await;
        assert_eq!(response.body, body);
        let tag = keyed_tag(&KEY, &body);
        assert_eq!(response.etag(), Some(tag.as_str()), "chunks of {chunk}");
        // Whoever hashes a guess of the body without the key gets another tag.
        assert_ne!(response.etag(), Some(expected_tag(&body).as_str()));

        let again = get(addr, "/", &[("if-none-match", &tag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test]
async fn replicas_sharing_a_key_validate_each_other() {
    let body = Bytes::from_static(SECRET);
    let one = start(ETagLayer::new().keyed(KEY), body.clone(), 5).await;
    let two = start(ETagLayer::new().keyed(KEY), body.clone(), 14).await;
    let other_key = start(ETagLayer::new().keyed([1; 32]), body.clone(), 14).await;

    let tag = get(one, "/", &[]).await.etag().unwrap().to_owned();
    let revalidated = get(two, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);

    // A replica with another key gives another tag: a full response.
    let elsewhere = get(other_key, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    assert_eq!(elsewhere.etag(), Some(keyed_tag(&[1; 32], SECRET).as_str()));
}

#[test]
fn debug_output_never_shows_the_key() {
    let layer = ETagLayer::new().keyed(KEY);
    let debug = format!("{layer:?}");
    assert!(debug.contains("keyed: true"), "{debug}");
    assert!(!debug.contains("example"), "{debug}");
    let as_bytes = format!("{:?}", &KEY[..4]);
    assert!(!debug.contains(as_bytes.trim_end_matches(']')), "{debug}");
}
