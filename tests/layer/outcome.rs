//! The `Outcome` the layer records for each response, read by an outer
//! layer, over real TCP.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tower::ServiceBuilder;
use tower_etag::{predicate::SkipETag, ETagLayer, Outcome};

use crate::common::*;

/// Serves routes for every outcome behind `layer`, with an outer layer that
/// reports the outcome recorded in each response (a channel rather than a
/// header, because a failing body aborts the response before its head).
async fn start(layer: ETagLayer) -> (SocketAddr, UnboundedReceiver<Option<Outcome>>) {
    let (outcomes, received) = unbounded_channel();
    let inner = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let mut response = Response::new(ScriptBody::new([Bytes::from_static(b"hello")]));
        match request.uri().path() {
            "/missing" => *response.status_mut() = StatusCode::NOT_FOUND,
            "/created" => *response.status_mut() = StatusCode::CREATED,
            "/skip" => {
                response.extensions_mut().insert(SkipETag);
            }
            "/own" => {
                let tag = HeaderValue::from_static("\"mine\"");
                response.headers_mut().insert(header::ETAG, tag);
            }
            "/no-store" => {
                let no_store = HeaderValue::from_static("no-store");
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, no_store);
            }
            "/large" => {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(100));
                *response.body_mut() = ScriptBody::new([Bytes::from(vec![b'x'; 100])]);
            }
            "/grows" => *response.body_mut() = ScriptBody::chunked(&[b'x'; 100], 10),
            "/fails" => {
                *response.body_mut() = ScriptBody::new([Bytes::from_static(b"part")]).end(End::Fail)
            }
            _ => {}
        }
        response
    });
    let service = ServiceBuilder::new()
        .map_response(move |response: Response<_>| {
            let _ = outcomes.send(response.extensions().get::<Outcome>().copied());
            response
        })
        .layer(layer.max_body_size(64))
        .service(inner);
    (serve_hyper(service).await, received)
}

#[tokio::test]
async fn every_outcome_is_recorded() {
    let (addr, mut outcomes) = start(ETagLayer::new().record_outcome(true)).await;
    let tag = expected_tag(b"hello");
    // Method, path, request header fields, the outcome expected.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "/", &[], "Tagged"),
        ("HEAD", "/", &[], "Tagged"),
        ("GET", "/", &[("if-none-match", &tag)], "NotModified"),
        (
            "GET",
            "/",
            &[("if-match", "\"other\"")],
            "PreconditionFailed",
        ),
        ("POST", "/", &[], "Skipped(Method)"),
        ("GET", "/missing", &[], "Skipped(Status)"),
        ("GET", "/created", &[], "Skipped(Status)"),
        ("GET", "/skip", &[], "Skipped(OptedOut)"),
        ("GET", "/own", &[], "Skipped(OwnValidator)"),
        (
            "GET",
            "/own",
            &[("if-none-match", "\"mine\"")],
            "NotModified",
        ),
        (
            "GET",
            "/own",
            &[("if-match", "\"other\"")],
            "PreconditionFailed",
        ),
        ("GET", "/no-store", &[], "Skipped(Predicate)"),
        ("GET", "/large", &[], "Skipped(TooLarge)"),
        ("GET", "/grows", &[], "Skipped(TooLarge)"),
        ("GET", "/fails", &[], "Skipped(BodyError)"),
    ];
    for (method, path, headers, expected) in cases {
        // The failing body aborts the response: its result is an error.
        let result = send(addr, request(method, path, headers)).await;
        assert_eq!(result.is_ok(), *path != "/fails", "{path}");
        let outcome = outcomes.recv().await.unwrap().unwrap();
        assert_eq!(
            format!("{outcome:?}"),
            *expected,
            "{method} {path} {headers:?}"
        );
    }
}

#[tokio::test]
async fn nothing_is_recorded_unless_asked() {
    let (addr, mut outcomes) = start(ETagLayer::new()).await;
    for path in ["/", "/missing", "/grows"] {
        get(addr, path, &[]).await;
        assert_eq!(outcomes.recv().await.unwrap(), None, "{path}");
    }
}
