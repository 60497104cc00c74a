//! The tonic example (`examples/tonic.rs`): gRPC beside a plain `GET` route
//! on one tonic server with the layer around both, called by a real tonic
//! client and by hyper over TCP.

#[path = "../../examples/tonic.rs"]
#[allow(dead_code)]
mod example;

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Channel, Server},
    Code,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::common::*;

/// The example's server, with the layer.
async fn start_layered() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener));
    addr
}

/// The same routes without the layer.
async fn start_plain() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = example::routes().await;
    tokio::spawn(
        Server::builder()
            .accept_http1(true)
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn check_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn grpc_unary_calls_pass_through_the_layer() {
    let addr = start_layered().await;
    let mut client = health_client(addr).await;
    for service in ["", example::SERVICE] {
        let response = client.check(check_request(service)).await.unwrap();
        assert_eq!(
            response.into_inner().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    // An error status travels in the trailers-only response, untouched.
    let status = client.check(check_request("unknown")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "service not registered");
}

#[tokio::test]
async fn grpc_server_streaming_is_not_held_back() {
    let addr = start_layered().await;
    let mut client = health_client(addr).await;
    let mut stream = client
        .watch(check_request(example::SERVICE))
        .await
        .unwrap()
        .into_inner();
    // The stream stays open (the service waits for status changes), so the
    // first message arrives only if nothing waits for the end of the body.
    let first = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("the first message arrives while the stream is open")
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
}

/// One gRPC call made by hand over HTTP/2, so that every byte of the answer
/// can be compared.
async fn grpc_by_hand(addr: SocketAddr, service: &str) -> Received {
    // A gRPC message: compressed flag, big-endian length, then the protobuf
    // HealthCheckRequest (field 1, length-delimited; empty when "").
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a);
        message.put_u8(u8::try_from(service.len()).unwrap());
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap());
    frame.put_slice(&message);

    let mut sender = connect_h2(addr).await.unwrap();
    let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame.freeze()))
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let mut headers = parts.headers;
    // The only field that differs between two calls.
    headers.remove("date");
    Received {
        status: parts.status,
        headers,
        trailers: collected.trailers().cloned(),
        body: collected.to_bytes(),
    }
}

#[tokio::test]
async fn grpc_answers_are_byte_for_byte_those_of_the_server_without_the_layer() {
    let layered = start_layered().await;
    let plain = start_plain().await;
    for service in ["", example::SERVICE, "unknown"] {
        let with = grpc_by_hand(layered, service).await;
        let without = grpc_by_hand(plain, service).await;
        assert_eq!(with.status, without.status, "{service:?}");
        assert_eq!(with.headers, without.headers, "{service:?}");
        assert_eq!(with.body, without.body, "{service:?}");
        assert_eq!(with.trailers, without.trailers, "{service:?}");
        assert!(!with.headers.contains_key("etag"));
        // Success carries its grpc-status in the trailers; the failure is a
        // trailers-only response with grpc-status in the head.
        let grpc_status = with
            .trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| with.headers.get("grpc-status"))
            .unwrap();
        let expected = if service == "unknown" { "5" } else { "0" };
        assert_eq!(grpc_status, expected, "{service:?}");
    }
}

#[tokio::test]
async fn the_get_route_beside_grpc_is_tagged_and_revalidates() {
    let addr = start_layered().await;
    let tag = expected_tag(example::PAGE.as_bytes());

    // HTTP/1.1, as a browser or curl would ask.
    let first = get(addr, "/", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, example::PAGE);
    assert_eq!(first.etag(), Some(tag.as_str()));
    let second = get(addr, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(second.status, StatusCode::NOT_MODIFIED);
    assert!(second.body.is_empty());

    // HTTP/2, the connection gRPC clients use.
    let uri = format!("http://{addr}/");
    let h2 = send_h2(addr, request("GET", &uri, &[("if-none-match", &tag)]))
        .await
        .unwrap();
    assert_eq!(h2.status, StatusCode::NOT_MODIFIED);
    assert_eq!(h2.etag(), Some(tag.as_str()));
}

/// The example's routes behind the validator cache and the ETag layer.
async fn start_cached(cache: tower_etag::cache::ValidatorCache) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = example::routes().await;
    tokio::spawn(
        Server::builder()
            .accept_http1(true)
            .layer(tower_etag::cache::ValidatorCacheLayer::new(cache))
            .layer(tower_etag::ETagLayer::new())
            .add_routes(routes)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

#[tokio::test]
async fn grpc_calls_pass_through_the_cache_without_invalidating_unless_asked() {
    use tower_etag::cache::ValidatorCache;

    for grpc_invalidates in [false, true] {
        let cache = ValidatorCache::builder()
            .grpc_invalidates(grpc_invalidates)
            .build();
        let addr = start_cached(cache.clone()).await;
        // The GET route beside the gRPC service is cached as usual.
        let first = get(addr, "/", &[]).await;
        let tag = first.etag().unwrap().to_owned();
        let hit = get(addr, "/", &[("if-none-match", &tag)]).await;
        assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
        assert_eq!(cache.stats().hits, 1);
        let mut client = health_client(addr).await;
        for _ in 0..3 {
            let response = client.check(check_request(example::SERVICE)).await;
            assert_eq!(
                response.unwrap().into_inner().status(),
                ServingStatus::Serving
            );
        }
        let status = client.check(check_request("unknown")).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        // RFC 9111 §4.4 would invalidate each call's target, at its arrival
        // and after its response; by default a gRPC call is left alone.
        let invalidations = cache.stats().invalidations;
        if grpc_invalidates {
            assert_eq!(invalidations, 8, "two per call");
        } else {
            assert_eq!(invalidations, 0);
        }
    }
}
