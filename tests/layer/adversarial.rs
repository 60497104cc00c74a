//! Hostile request header fields sent as raw bytes over real TCP: huge
//! lists, long values, broken quoting, obs-text and non-UTF-8 bytes,
//! repeated lines and dates out of range. Each is ignored or answered as
//! RFC 9110 says, and the server keeps serving.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower::ServiceBuilder;
use tower_etag::ETagLayer;

use crate::common::*;

const PAGE: &[u8] = b"<p>the page</p>";

/// `/` is tagged by the layer; `/dated` carries a `Last-Modified` of 2024-01-01;
/// `/obs-text` carries the handler's own tag `"caf\xE9"` (obs-text is etagc).
async fn start() -> SocketAddr {
    let service = ServiceBuilder::new()
        .layer(ETagLayer::new())
        .service(service_fn(|request: http::Request<_>| async move {
            let mut response = Response::new(ScriptBody::new([Bytes::from_static(PAGE)]));
            let headers = response.headers_mut();
            match request.uri().path() {
                "/dated" => {
                    let date = HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT");
                    headers.insert(header::LAST_MODIFIED, date);
                }
                "/obs-text" => {
                    let tag = HeaderValue::from_bytes(b"\"caf\xE9\"").unwrap();
                    headers.insert(header::ETAG, tag);
                }
                _ => {}
            }
            response
        }));
    serve_hyper(service).await
}

/// Sends one HTTP/1.1 request whose header block is `fields` (raw bytes,
/// one field per line) and returns the status code and the raw response.
async fn send_raw(addr: SocketAddr, path: &str, fields: &[Vec<u8>]) -> (u16, Vec<u8>) {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n").into_bytes();
    for field in fields {
        request.extend_from_slice(field);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    (status, out)
}

fn field(name: &str, value: &[u8]) -> Vec<u8> {
    [name.as_bytes(), b": ", value].concat()
}

fn page_tag() -> Vec<u8> {
    expected_tag(PAGE).into_bytes()
}

#[tokio::test]
async fn ten_thousand_tags_are_read_to_the_end() {
    let addr = start().await;
    let mut list: Vec<u8> = Vec::new();
    for i in 0..10_000 {
        list.extend_from_slice(format!("\"{i:032x}\", ").as_bytes());
    }
    // The matching tag comes last: 304.
    let matching = [list.clone(), page_tag()].concat();
    let (status, _) = send_raw(addr, "/", &[field("if-none-match", &matching)]).await;
    assert_eq!(status, 304);
    // The same list broken at its very end is invalid, so ignored: 200.
    let broken = [matching, b", \"unterminated".to_vec()].concat();
    let (status, response) = send_raw(addr, "/", &[field("if-none-match", &broken)]).await;
    assert_eq!(status, 200);
    assert!(response.ends_with(PAGE));
}

#[tokio::test]
async fn malformed_tag_fields_are_ignored() {
    let addr = start().await;
    let long_junk: Vec<u8> = (0..8 * 1024).map(|i| b"ab,\" W/*"[i % 8]).collect();
    for value in [
        long_junk,
        b"\"unterminated".to_vec(),
        [page_tag(), b" \"no comma\"".to_vec()].concat(),
        b"w/\"lowercase weak\"".to_vec(),
        b"\"non-utf8 \xff\xfe\"".to_vec(), // a space inside: not etagc
        b"\xff\xfe\xfd".to_vec(),
        b",,,".to_vec(),
        b"".to_vec(),
    ] {
        for name in ["if-none-match", "if-match"] {
            let (status, response) = send_raw(addr, "/", &[field(name, &value)]).await;
            let shown = String::from_utf8_lossy(&value[..value.len().min(40)]).into_owned();
            assert_eq!(status, 200, "{name}: {shown:?}");
            assert!(response.ends_with(PAGE));
        }
    }
}

#[tokio::test]
async fn an_eight_kib_list_is_a_list() {
    let addr = start().await;
    let tags: Vec<u8> = std::iter::repeat_n(&b"\"x\", "[..], 8 * 1024 / 5)
        .flatten()
        .copied()
        .collect();
    // Valid, and nothing in it matches.
    let (status, _) = send_raw(addr, "/", &[field("if-none-match", &tags)]).await;
    assert_eq!(status, 200);
    let (status, _) = send_raw(addr, "/", &[field("if-match", &tags)]).await;
    assert_eq!(status, 412);
    let with_ours = [tags, page_tag()].concat();
    let (status, _) = send_raw(addr, "/", &[field("if-match", &with_ours)]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn obs_text_tags_match_byte_for_byte() {
    let addr = start().await;
    let (status, _) = send_raw(addr, "/obs-text", &[field("if-none-match", b"\"caf\xE9\"")]).await;
    assert_eq!(status, 304);
    let (status, _) = send_raw(addr, "/obs-text", &[field("if-match", b"\"caf\xE9\"")]).await;
    assert_eq!(status, 200);
    let (status, _) = send_raw(addr, "/obs-text", &[field("if-match", b"\"caf\xC3\xA9\"")]).await;
    assert_eq!(status, 412, "the UTF-8 spelling is other bytes");
}

#[tokio::test]
async fn repeated_lines_of_a_list_form_one_list() {
    let addr = start().await;
    let mut fields: Vec<Vec<u8>> = (0..50)
        .map(|i| field("if-none-match", format!("\"{i}\"").as_bytes()))
        .collect();
    let (status, _) = send_raw(addr, "/", &fields).await;
    assert_eq!(status, 200);
    fields.push(field("if-none-match", &page_tag()));
    let (status, _) = send_raw(addr, "/", &fields).await;
    assert_eq!(status, 304);
}

#[tokio::test]
async fn dates_out_of_range_or_repeated_are_ignored() {
    let addr = start().await;
    // A valid date after Last-Modified: 304, so a 200 below means ignored.
    let valid = field("if-modified-since", b"Tue, 02 Jan 2024 00:00:00 GMT");
    assert_eq!(
        send_raw(addr, "/dated", std::slice::from_ref(&valid))
            .await
            .0,
        304
    );
    for value in [
        &b"Mon, 01 Jan 10000 00:00:00 GMT"[..],
        b"Mon, 32 Jan 2024 00:00:00 GMT",
        b"Mon, 01 Jan 2024 24:00:00 GMT",
        b"Mon, 01 Jan 2024 00:60:00 GMT",
        b"Mon, 01 Foo 2024 00:00:00 GMT",
        b"Mon, 01 Jan 1600 00:00:00 GMT",
        b"-1",
        b"99999999999999999999",
        b"Tue, 02 Jan 2024 00:00:00 GMT\xff",
    ] {
        let (status, _) = send_raw(addr, "/dated", &[field("if-modified-since", value)]).await;
        assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(value));
        // As If-Unmodified-Since, ignored too: no 412.
        let (status, _) = send_raw(addr, "/dated", &[field("if-unmodified-since", value)]).await;
        assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(value));
    }
    // RFC 9110 §13.1.3: more than one member is invalid, even if both agree.
    let (status, _) = send_raw(addr, "/dated", &[valid.clone(), valid]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_server_keeps_serving_after_all_that() {
    let addr = start().await;
    let (status, _) = send_raw(addr, "/", &[field("if-none-match", b"\xff\"\"\"")]).await;
    assert_eq!(status, 200);
    let response = get(addr, "/", &[]).await;
    assert_eq!(response.etag(), Some(expected_tag(PAGE).as_str()));
}
