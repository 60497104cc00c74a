//! Clients that give up, over real TCP: whatever the layer was doing (waiting
//! for the handler, buffering, streaming past the cap), the inner future or
//! body is dropped and the server keeps serving. (`tests/allocations.rs`
//! shows that cancelled requests free every byte.)

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Empty};
use tokio::{io::AsyncReadExt, net::TcpStream};
use tower::ServiceBuilder;
use tower_etag::ETagLayer;

use crate::common::*;

const CAP: usize = 1000;

/// Counts its own drop.
struct DropGuard(Arc<AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn wait_for(counter: &AtomicUsize, at_least: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(tokio::time::Instant::now() < deadline, "{what} leaked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `/slow` never answers; `/hang` sends `b"partial"` and never ends;
/// `/overflow` sends more than the cap and never ends; anything else gets
/// "fine". Inner futures and bodies count their drops in `drops`.
async fn start(drops: Arc<AtomicUsize>) -> SocketAddr {
    let service = ServiceBuilder::new()
        .layer(ETagLayer::new().max_body_size(CAP))
        .service(service_fn(move |request: http::Request<_>| {
            let drops = drops.clone();
            async move {
                let path = request.uri().path().to_owned();
                let body = match path.as_str() {
                    "/slow" => {
                        let _guard = DropGuard(drops.clone());
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    "/hang" => ScriptBody::new([Bytes::from_static(b"partial")]).end(End::Hang),
                    "/overflow" => {
                        ScriptBody::new([Bytes::from(vec![b'x'; CAP + 1])]).end(End::Hang)
                    }
                    _ => ScriptBody::new([Bytes::from_static(b"fine")]),
                };
                Response::new(body.count_drop(drops))
            }
        }));
    serve_hyper(service).await
}

#[tokio::test]
async fn a_client_leaving_before_the_handler_answers_drops_the_handler() {
    let drops = Arc::new(AtomicUsize::new(0));
    let addr = start(drops.clone()).await;
    let attempt = tokio::time::timeout(
        Duration::from_millis(200),
        send_head(addr, request("GET", "/slow", &[])),
    )
    .await;
    assert!(attempt.is_err(), "no answer from /slow");
    wait_for(&drops, 1, "the handler's future").await;
    assert_eq!(get(addr, "/", &[]).await.body, "fine");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_past_the_cap_drops_the_body() {
    let drops = Arc::new(AtomicUsize::new(0));
    let addr = start(drops.clone()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /overflow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read until the whole first chunk (past the cap) has arrived.
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while received.iter().filter(|&&b| b == b'x').count() < CAP + 1 {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the server closed early");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&received)
        .to_ascii_lowercase()
        .contains("etag:"));
    drop(stream);
    wait_for(&drops, 1, "the inner body").await;
}

#[tokio::test]
async fn an_http2_stream_reset_while_buffering_drops_the_body_and_keeps_the_connection() {
    let drops = Arc::new(AtomicUsize::new(0));
    let addr = start(drops.clone()).await;
    let mut sender = connect_h2(addr).await.unwrap();

    // The layer buffers /hang forever; dropping the response future resets
    // the stream.
    let hanging = sender.send_request(
        http::Request::get(format!("http://{addr}/hang"))
            .body(Empty::<Bytes>::new())
            .unwrap(),
    );
    let attempt = tokio::time::timeout(Duration::from_millis(200), hanging).await;
    assert!(attempt.is_err(), "no head while buffering");
    wait_for(&drops, 1, "the inner body").await;

    // The same connection still serves.
    let response = sender
        .send_request(
            http::Request::get(format!("http://{addr}/"))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "fine");
}
