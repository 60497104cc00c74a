//! The hyper example (`examples/hyper.rs`: a `service_fn` behind
//! `ServiceBuilder`, no axum) served on a real port, with real clients.

#[path = "../../examples/hyper.rs"]
#[allow(dead_code)]
mod example;

use std::net::SocketAddr;

use http::StatusCode;
use tokio::net::TcpListener;

use crate::common::*;

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener));
    addr
}

#[tokio::test]
async fn get_is_tagged_and_revalidates_to_304() {
    let addr = start().await;
    let first = get(addr, "/", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, example::PAGE);
    let tag = expected_tag(example::PAGE.as_bytes());
    assert_eq!(first.etag(), Some(tag.as_str()));
    assert_eq!(first.header("content-length"), Some("32"));

    let second = get(addr, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(second.status, StatusCode::NOT_MODIFIED);
    assert!(second.body.is_empty());
    assert_eq!(second.etag(), Some(tag.as_str()));
    assert_eq!(second.header("cache-control"), Some("no-cache"));
    assert_eq!(second.header("content-type"), None);
}

#[tokio::test]
async fn head_gets_the_get_tag_and_length_and_no_body() {
    let addr = start().await;
    let tag = expected_tag(example::PAGE.as_bytes());
    let response = raw(addr, "HEAD", "/", &[]).await;
    let fields = raw_head(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(fields.contains(&format!("etag: {tag}")), "{fields:?}");
    assert!(
        fields.contains(&"content-length: 32".to_owned()),
        "{fields:?}"
    );
    assert!(
        response.ends_with("\r\n\r\n"),
        "a HEAD response has no body"
    );

    let conditional = head(addr, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn http2_clients_get_the_same_tag() {
    let addr = start().await;
    let response = send_h2(addr, request("GET", &format!("http://{addr}/version"), &[]))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let tag = expected_tag(&response.body);
    assert_eq!(response.etag(), Some(tag.as_str()));

    let again = send_h2(
        addr,
        request(
            "GET",
            &format!("http://{addr}/version"),
            &[("if-none-match", &tag)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn not_found_and_post_pass_through_untagged() {
    let addr = start().await;
    for method in ["GET", "POST"] {
        let path = if method == "GET" { "/missing" } else { "/" };
        let response = send(addr, request(method, path, &[("if-none-match", "*")]))
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(response.etag(), None);
        assert_eq!(response.body, "not found\n");
    }
}
