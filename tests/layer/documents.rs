//! The documents example (`examples/documents.rs`) over TCP: conditional
//! writes checked inside the SQLite transaction, 412 with the current tag,
//! 428 when required, tags that chain from a 204 to the next `If-Match`,
//! and no lost update among 50 concurrent writers.

#[path = "../../examples/documents.rs"]
#[allow(dead_code)]
mod example;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower_etag::{cache::ValidatorCache, ETagLayer};

use crate::common::*;

async fn start(require_precondition: bool) -> SocketAddr {
    let docs = example::Documents::in_memory(require_precondition).unwrap();
    serve_axum(example::app(docs, ValidatorCache::builder().build())).await
}

async fn call(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Received {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(addr, request).await.unwrap()
}

fn tag_of(body: &str) -> String {
    ETagLayer::new().tag_for(body).to_string()
}

#[tokio::test]
async fn put_creates_replaces_and_chains_tags_without_a_get() {
    let addr = start(false).await;
    let doc = "/documents/a";
    let got = call(addr, "PUT", doc, &[], r#"{"title":"draft"}"#).await;
    assert_eq!(got.status, StatusCode::CREATED);

    let got = get(addr, doc, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], br#"{"title":"draft"}"#, "as stored");
    let tag = got.etag().unwrap().to_owned();
    assert_eq!(
        tag,
        tag_of(r#"{"title":"draft"}"#),
        "tag_for equals the minted tag"
    );

    // Replace with If-Match: 204 with the tag the next GET will carry.
    let got = call(
        addr,
        "PUT",
        doc,
        &[("if-match", &tag)],
        r#"{"title":"final"}"#,
    )
    .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    let chained = got.etag().unwrap().to_owned();
    assert_eq!(get(addr, doc, &[]).await.etag(), Some(chained.as_str()));
    // Chain the next edit on the 204's tag; the old tag now fails with the
    // current one.
    let got = call(
        addr,
        "PATCH",
        doc,
        &[("if-match", &chained)],
        r#"{"tags":["x"]}"#,
    )
    .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    let patched = got.etag().unwrap().to_owned();
    let got = get(addr, doc, &[]).await;
    assert_eq!(&got.body[..], br#"{"tags":["x"],"title":"final"}"#);
    assert_eq!(got.etag(), Some(patched.as_str()));
    let got = call(
        addr,
        "PUT",
        doc,
        &[("if-match", &tag)],
        r#"{"title":"lost"}"#,
    )
    .await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        got.etag(),
        Some(patched.as_str()),
        "the 412 carries the current tag"
    );

    let got = call(addr, "DELETE", doc, &[("if-match", &patched)], "").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(get(addr, doc, &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_writers_with_the_same_tag_one_wins_one_gets_412() {
    let addr = start(false).await;
    let doc = "/documents/b";
    call(addr, "PUT", doc, &[], r#"{"n":0}"#).await;
    let tag = get(addr, doc, &[]).await.etag().unwrap().to_owned();
    let if_match = [("if-match", tag.as_str())];
    let (a, b) = tokio::join!(
        call(addr, "PUT", doc, &if_match, r#"{"n":"a"}"#),
        call(addr, "PUT", doc, &if_match, r#"{"n":"b"}"#),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::NO_CONTENT, StatusCode::PRECONDITION_FAILED]
    );
    let current = get(addr, doc, &[]).await;
    let loser = if a.status == StatusCode::PRECONDITION_FAILED {
        &a
    } else {
        &b
    };
    assert_eq!(
        loser.etag(),
        current.etag(),
        "the 412 names the winner's version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writers_lose_no_update() {
    let addr = start(true).await;
    let doc = "/documents/counter";
    call(addr, "PUT", doc, &[], r#"{"count":0}"#).await;
    let mut writers = Vec::new();
    for _ in 0..50 {
        writers.push(tokio::spawn(async move {
            let mut accepted_from = Vec::new();
            let mut conflicts = 0;
            // Each writer adds one, retrying on 412 as a client should.
            loop {
                let got = get(addr, doc, &[]).await;
                let tag = got.etag().unwrap().to_owned();
                let value: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
                let count = value["count"].as_u64().unwrap();
                let body = format!(r#"{{"count":{}}}"#, count + 1);
                let put = call(addr, "PUT", doc, &[("if-match", &tag)], &body).await;
                match put.status {
                    StatusCode::NO_CONTENT => {
                        accepted_from.push(tag);
                        return (accepted_from, conflicts);
                    }
                    StatusCode::PRECONDITION_FAILED => conflicts += 1,
                    other => panic!("unexpected {other}"),
                }
            }
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        let (accepted, lost) = writer.await.unwrap();
        winners.extend(accepted);
        conflicts += lost;
    }
    // Exactly one winner per version: no two accepted writes started from
    // the same tag.
    let unique: std::collections::HashSet<_> = winners.iter().collect();
    assert_eq!(unique.len(), 50);
    let got = get(addr, doc, &[]).await;
    assert_eq!(
        &got.body[..],
        br#"{"count":50}"#,
        "every accepted edit is there"
    );
    assert!(conflicts > 0, "the writers did race");
}

#[tokio::test]
async fn preconditions_fail_safe_and_create_only_if_absent() {
    let addr = start(false).await;
    let doc = "/documents/c";
    let create = [("if-none-match", "*")];
    let got = call(addr, "PUT", doc, &create, r#"{"v":1}"#).await;
    assert_eq!(got.status, StatusCode::CREATED);
    let got = call(addr, "PUT", doc, &create, r#"{"v":2}"#).await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
    let tag = get(addr, doc, &[]).await.etag().unwrap().to_owned();

    // A weak form of the right tag never satisfies If-Match; a malformed
    // If-Match fails safe; If-Match on a missing document fails, even `*`.
    let weak = format!("W/{tag}");
    for (uri, if_match) in [
        (doc, weak.as_str()),
        (doc, tag.trim_matches('"')),
        (doc, "\"unterminated"),
        ("/documents/missing", "*"),
    ] {
        let got = call(addr, "PUT", uri, &[("if-match", if_match)], r#"{"v":3}"#).await;
        assert_eq!(
            got.status,
            StatusCode::PRECONDITION_FAILED,
            "{uri} {if_match}"
        );
    }
    let got = get(addr, doc, &[]).await;
    assert_eq!(&got.body[..], br#"{"v":1}"#, "nothing written");
    assert_eq!(
        get(addr, "/documents/missing", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn required_preconditions_answer_428_only_when_absent() {
    let addr = start(true).await;
    let doc = "/documents/d";
    // Creating needs no precondition.
    let got = call(addr, "PUT", doc, &[], r#"{"v":1}"#).await;
    assert_eq!(got.status, StatusCode::CREATED);
    for (method, body) in [
        ("PUT", r#"{"v":2}"#),
        ("PATCH", r#"{"v":2}"#),
        ("DELETE", ""),
    ] {
        let got = call(addr, method, doc, &[], body).await;
        assert_eq!(got.status, StatusCode::PRECONDITION_REQUIRED, "{method}");
        assert!(String::from_utf8_lossy(&got.body).contains("If-Match"));
    }
    let tag = get(addr, doc, &[]).await.etag().unwrap().to_owned();
    let got = call(addr, "PATCH", doc, &[("if-match", &tag)], r#"{"v":2}"#).await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_write_invalidates_the_validator_cache() {
    let addr = start(false).await;
    let doc = "/documents/e";
    call(addr, "PUT", doc, &[], r#"{"v":1}"#).await;
    let tag = get(addr, doc, &[]).await.etag().unwrap().to_owned();
    let got = get(addr, doc, &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    call(addr, "PUT", doc, &[("if-match", &tag)], r#"{"v":2}"#).await;
    let got = get(addr, doc, &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], br#"{"v":2}"#);
}

#[tokio::test]
async fn tag_for_matches_the_minted_tag_in_every_configuration() {
    use axum::{routing::get as route_get, Router};

    let body = "{\"a\":1}";
    for layer in [
        ETagLayer::new(),
        ETagLayer::new().weak(true),
        ETagLayer::new().keyed([9; 32]),
        ETagLayer::new().keyed([9; 32]).weak(true),
    ] {
        let expected = layer.tag_for(body);
        let router = Router::new()
            .route("/", route_get(move || async move { body }))
            .layer(layer);
        let addr = serve_axum(router).await;
        let got = get(addr, "/", &[]).await;
        assert_eq!(
            got.etag(),
            Some(expected.to_string().as_str()),
            "{expected:?}"
        );
    }
}

/// With the `axum` feature: `Preconditions` as an extractor and `Rejection`
/// as a response, in a handler of a few lines.
#[cfg(feature = "axum")]
#[tokio::test]
async fn preconditions_extract_and_reject_in_axum() {
    use axum::{http::HeaderMap, response::IntoResponse, routing::put, Router};
    use tower_etag::{
        conditional::{Current, Preconditions},
        EntityTag,
    };

    async fn update(preconditions: Preconditions) -> axum::response::Response {
        let current = EntityTag::strong("v2").unwrap();
        match preconditions.check(Current::tagged(&current)) {
            Ok(()) => {
                let mut headers = HeaderMap::new();
                headers.insert("etag", EntityTag::strong("v3").unwrap().into());
                (StatusCode::NO_CONTENT, headers).into_response()
            }
            Err(rejection) => rejection.into_response(),
        }
    }
    let addr = serve_axum(Router::new().route("/", put(update))).await;
    let got = call(addr, "PUT", "/", &[("if-match", "\"v1\"")], "").await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(got.etag(), Some("\"v2\""));
    let got = call(addr, "PUT", "/", &[("if-match", "\"v2\"")], "").await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(got.etag(), Some("\"v3\""));
}
