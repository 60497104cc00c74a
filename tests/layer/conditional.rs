//! Conditional requests over real TCP against a plain hyper service: which
//! responses are tagged, RFC 9110 §13.2.2 evaluation, the 304 and 412 on the
//! wire, HEAD, and what passes through untouched.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_etag::{
    predicate::{DefaultPredicate, Predicate, SkipETag},
    ETagLayer,
};

use crate::common::*;

const HELLO: &str = "hello, world";
// Sun, 06 Nov 1994 08:49:37 GMT
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
const AFTER: &str = "Sun, 06 Nov 1994 08:50:00 GMT";

/// The origin: answers by path, and echoes the method it was called with.
fn respond(method: &http::Method, path: &str) -> Response<Full<Bytes>> {
    let builder = Response::builder().header("x-inner-method", method.as_str());
    let ok = |builder: http::response::Builder| builder.body(Full::from(HELLO)).unwrap();
    match path {
        "/" => ok(builder
            .header("content-type", "text/plain; charset=utf-8")
            .header("content-language", "en")
            .header("content-location", "/index.txt")
            .header("cache-control", "public, max-age=60")
            .header("expires", "Thu, 01 Dec 2094 16:00:00 GMT")
            .header("vary", "accept-encoding")
            .header("vary", "origin")
            .header("set-cookie", "session=1")
            .header("access-control-allow-origin", "*")
            .header("x-custom", "kept")),
        "/strong" => ok(builder.header("etag", "\"v1\"")),
        "/weak" => ok(builder.header("etag", "W/\"v1\"")),
        "/unquoted" => ok(builder.header("etag", "v1")),
        "/last-modified" => ok(builder.header("last-modified", LAST_MODIFIED)),
        "/both" => ok(builder
            .header("etag", "\"v1\"")
            .header("last-modified", LAST_MODIFIED)),
        "/no-content" => builder
            .status(StatusCode::NO_CONTENT)
            .body(Full::default())
            .unwrap(),
        "/no-store" => ok(builder.header("cache-control", "no-store")),
        "/grpc" => ok(builder.header("content-type", "application/grpc")),
        "/range" => ok(builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header("content-range", "bytes 0-11/100")),
        "/range-200" => ok(builder.header("content-range", "bytes 0-11/12")),
        "/skip" => ok(builder.extension(SkipETag)),
        "/json" => ok(builder.header("content-type", "application/json")),
        "/gone-tagged" => ok(builder.status(StatusCode::GONE).header("etag", "\"v1\"")),
        "/chunked" => ok(builder.header("transfer-encoding", "chunked")),
        "/length-right" => ok(builder.header("content-length", "12")),
        "/length-wrong" => ok(builder.header("content-length", "13")),
        "/length-signed" => ok(builder.header("content-length", "+12")),
        "/length-twice" => ok(builder
            .header("content-length", "12")
            .header("content-length", "12")),
        other => {
            let code = other
                .strip_prefix("/status/")
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(404);
            ok(builder.status(code))
        }
    }
}

async fn origin_with(layer: ETagLayer<impl Predicate + Send + Sync + 'static>) -> SocketAddr {
    let service = ServiceBuilder::new().layer(layer).service(service_fn(
        |req: http::Request<hyper::body::Incoming>| {
            let response = respond(req.method(), req.uri().path());
            async move { response }
        },
    ));
    serve_hyper(service).await
}

async fn origin() -> SocketAddr {
    origin_with(ETagLayer::new()).await
}

fn tag() -> String {
    expected_tag(HELLO.as_bytes())
}

// Which responses are tagged (behaviour 1, 2).

#[tokio::test]
async fn get_200_is_tagged() {
    let addr = origin().await;
    let got = get(addr, "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.etag(), Some(tag().as_str()));
    assert_eq!(got.header("content-length"), Some("12"));
    assert_eq!(got.body, HELLO);
}

#[tokio::test]
async fn a_tagged_response_is_framed_by_its_exact_length() {
    // The handler asked for chunked framing; once the length is known the
    // layer frames by Content-Length, and never sends both.
    let addr = origin().await;
    let wire = raw(addr, "GET", "/chunked", &[]).await;
    let head = raw_head(&wire);
    assert!(head.contains(&"content-length: 12".to_owned()), "{head:?}");
    assert!(!has_field(&head, "transfer-encoding"), "{head:?}");
    assert!(wire.ends_with(&format!("\r\n\r\n{HELLO}")), "{wire:?}");
}

#[tokio::test]
async fn a_tagged_response_carries_one_right_content_length() {
    // RFC 9110 §8.6: Content-Length is 1*DIGIT, the length of the content.
    // Whatever the handler wrote, the tagged response states the length of
    // the bytes that were hashed, on one line.
    let addr = origin().await;
    for path in [
        "/length-right",
        "/length-wrong",
        "/length-signed",
        "/length-twice",
    ] {
        let wire = raw(addr, "GET", path, &[]).await;
        let head = raw_head(&wire);
        let lengths: Vec<_> = head
            .iter()
            .filter(|line| line.starts_with("content-length:"))
            .collect();
        assert_eq!(lengths, ["content-length: 12"], "{path}: {head:?}");
        assert!(
            wire.ends_with(&format!("\r\n\r\n{HELLO}")),
            "{path}: {wire:?}"
        );
    }
}

#[tokio::test]
async fn other_statuses_pass_through_untagged() {
    let addr = origin().await;
    for code in [
        201, 202, 203, 206, 301, 302, 307, 400, 401, 404, 410, 500, 503,
    ] {
        let got = get(addr, &format!("/status/{code}"), &[("if-none-match", "*")]).await;
        assert_eq!(
            got.status.as_u16(),
            code,
            "preconditions ignored for {code}"
        );
        assert_eq!(got.etag(), None, "{code}");
        assert_eq!(got.body, HELLO, "{code}");
    }
}

#[tokio::test]
async fn not_found_stays_not_found_whatever_the_preconditions() {
    let addr = origin().await;
    for (name, value) in [
        ("if-match", "\"nope\""),
        ("if-none-match", "*"),
        ("if-unmodified-since", BEFORE),
        ("if-modified-since", AFTER),
    ] {
        let got = get(addr, "/missing", &[(name, value)]).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{name}");
        assert_eq!(got.body, HELLO);
    }
}

#[tokio::test]
async fn error_responses_with_a_tag_ignore_preconditions() {
    // RFC 9110 §13.2.1: only a response that would be 2xx is evaluated.
    let addr = origin().await;
    for (name, value) in [("if-none-match", "\"v1\""), ("if-match", "\"v2\"")] {
        let got = get(addr, "/gone-tagged", &[(name, value)]).await;
        assert_eq!(got.status, StatusCode::GONE, "{name}");
        assert_eq!(got.body, HELLO);
    }
}

#[tokio::test]
async fn no_content_leaves_exactly_as_it_came() {
    let addr = origin().await;
    let wire = raw(addr, "GET", "/no-content", &[]).await;
    assert!(wire.starts_with("HTTP/1.1 204"), "{wire}");
    let head = raw_head(&wire);
    assert!(!has_field(&head, "etag"), "{head:?}");
    assert!(!has_field(&head, "content-length"), "{head:?}");
    assert!(wire.ends_with("\r\n\r\n"), "no body: {wire:?}");
    let got = get(addr, "/no-content", &[("if-none-match", "*")]).await;
    assert_eq!(got.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn other_methods_pass_through_untouched() {
    let addr = origin().await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let got = send(addr, request(method, "/", &[("if-match", "\"nope\"")]))
            .await
            .unwrap();
        assert_eq!(got.status, StatusCode::OK, "{method}");
        assert_eq!(got.etag(), None, "{method}");
        assert_eq!(got.header("x-inner-method"), Some(method));
        assert_eq!(got.body, HELLO);
    }
}

#[tokio::test]
async fn default_rule_skips_no_store_grpc_and_ranges() {
    let addr = origin().await;
    for path in ["/no-store", "/grpc", "/range", "/range-200", "/skip"] {
        let got = get(addr, path, &[("if-none-match", "*")]).await;
        assert!(got.status.is_success(), "{path}: {}", got.status);
        assert_eq!(got.etag(), None, "{path}");
        assert_eq!(got.body, HELLO, "{path}");
    }
}

#[tokio::test]
async fn a_custom_predicate_replaces_the_default_rule() {
    let layer = ETagLayer::new().tag_when(|response: &http::response::Parts| {
        DefaultPredicate::new().should_tag(response)
            && response
                .headers
                .get("content-type")
                .is_none_or(|v| v != "application/json")
    });
    let addr = origin_with(layer).await;
    assert_eq!(get(addr, "/json", &[]).await.etag(), None);
    assert_eq!(get(addr, "/", &[]).await.etag(), Some(tag().as_str()));
    assert_eq!(get(addr, "/no-store", &[]).await.etag(), None);

    // Tag everything the layer may tag, no-store included.
    let addr = origin_with(ETagLayer::new().tag_when(|_: &http::response::Parts| true)).await;
    assert_eq!(
        get(addr, "/no-store", &[]).await.etag(),
        Some(tag().as_str())
    );
    // The per-response marker still applies.
    assert_eq!(get(addr, "/skip", &[]).await.etag(), None);
}

// Preconditions (behaviour 5, 6).

#[tokio::test]
async fn if_none_match_with_the_tag_is_304() {
    let addr = origin().await;
    let tag = tag();
    for value in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"a\", {tag}, \"b\""),
        "*".to_owned(),
    ] {
        let got = get(addr, "/", &[("if-none-match", &value)]).await;
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{value}");
        assert!(got.body.is_empty());
    }
}

#[tokio::test]
async fn if_none_match_list_over_several_lines_is_one_list() {
    let addr = origin().await;
    let tag = tag();
    let got = get(
        addr,
        "/",
        &[("if-none-match", "\"a\""), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn stale_or_invalid_if_none_match_gets_the_200() {
    let addr = origin().await;
    let tag = tag();
    let unquoted = tag.trim_matches('"').to_owned();
    let lowercase_weak = format!("w/{tag}");
    for value in [
        "\"stale\"",
        unquoted.as_str(),       // invalid: ignored
        lowercase_weak.as_str(), // invalid: ignored
        "\"unterminated",        // invalid: ignored
        "\"a\" \"b\"",           // invalid: ignored
    ] {
        let got = get(addr, "/", &[("if-none-match", value)]).await;
        assert_eq!(got.status, StatusCode::OK, "{value}");
        assert_eq!(got.body, HELLO);
    }
}

#[tokio::test]
async fn if_match_uses_strong_comparison() {
    let addr = origin().await;
    let tag = tag();
    assert_eq!(
        get(addr, "/", &[("if-match", &tag)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(addr, "/", &[("if-match", "*")]).await.status,
        StatusCode::OK
    );
    let weak = format!("W/{tag}");
    assert_eq!(
        get(addr, "/", &[("if-match", &weak)]).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        get(addr, "/", &[("if-match", "\"stale\"")]).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    // Invalid: ignored.
    assert_eq!(
        get(addr, "/", &[("if-match", "stale")]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn if_match_is_evaluated_first() {
    let addr = origin().await;
    let got = get(
        addr,
        "/",
        &[("if-match", "\"stale\""), ("if-none-match", &tag())],
    )
    .await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn handler_tags_are_honoured_not_rehashed() {
    let addr = origin().await;
    let got = get(addr, "/strong", &[]).await;
    assert_eq!(got.etag(), Some("\"v1\""));
    assert_eq!(got.body, HELLO);
    let got = get(addr, "/strong", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.etag(), Some("\"v1\""));
    let got = get(addr, "/strong", &[("if-match", "\"v2\"")]).await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);

    let got = get(addr, "/weak", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.etag(), Some("W/\"v1\""));
    let got = get(addr, "/weak", &[("if-match", "W/\"v1\"")]).await;
    assert_eq!(
        got.status,
        StatusCode::PRECONDITION_FAILED,
        "weak never matches strongly"
    );

    // An invalid handler tag is left alone and matches nothing but `*`.
    let got = get(addr, "/unquoted", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((got.status, got.etag()), (StatusCode::OK, Some("v1")));
    let got = get(addr, "/unquoted", &[("if-none-match", "*")]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn last_modified_is_honoured() {
    let addr = origin().await;
    let got = get(addr, "/last-modified", &[]).await;
    // RFC 9110 §8.8.1: a 200 to GET should carry an entity tag and a
    // Last-Modified; the layer mints the tag beside the handler's date.
    assert_eq!(got.etag(), Some(expected_tag(&got.body).as_str()));
    assert_eq!(got.header("last-modified"), Some(LAST_MODIFIED));
    let head_got = head(addr, "/last-modified", &[]).await;
    assert_eq!(head_got.etag(), got.etag(), "HEAD gets the GET's tag");

    // If-Modified-Since, in all three HTTP-date forms.
    for date in [
        LAST_MODIFIED,
        AFTER,
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        let got = get(addr, "/last-modified", &[("if-modified-since", date)]).await;
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{date}");
        assert_eq!(got.header("last-modified"), Some(LAST_MODIFIED));
    }
    for date in [BEFORE, "not a date", "Mon, 06 Nov 1994 08:49:37 GMT"] {
        let got = get(addr, "/last-modified", &[("if-modified-since", date)]).await;
        assert_eq!(got.status, StatusCode::OK, "{date}");
    }

    // If-Unmodified-Since.
    let got = get(addr, "/last-modified", &[("if-unmodified-since", BEFORE)]).await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
    let got = get(
        addr,
        "/last-modified",
        &[("if-unmodified-since", LAST_MODIFIED)],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let got = get(
        addr,
        "/last-modified",
        &[("if-unmodified-since", "garbage")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn tag_beside_last_modified_is_evaluated_in_rfc_9110_order() {
    let addr = origin().await;
    let tag = get(addr, "/last-modified", &[])
        .await
        .etag()
        .unwrap()
        .to_owned();
    // RFC 9110 §13.2.2 step 3: If-None-Match against the minted tag ...
    let got = get(addr, "/last-modified", &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.etag(), Some(tag.as_str()));
    assert_eq!(got.header("last-modified"), Some(LAST_MODIFIED));
    // ... and, when present, it decides alone: If-Modified-Since is ignored
    // (§13.1.3), even when the date alone would give 304.
    let got = get(
        addr,
        "/last-modified",
        &[("if-none-match", "\"other\""), ("if-modified-since", AFTER)],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    // Step 1: If-Match uses the strong comparison against the minted tag.
    let got = get(addr, "/last-modified", &[("if-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::OK);
    let got = get(addr, "/last-modified", &[("if-match", "\"other\"")]).await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
    // Step 2: If-Unmodified-Since against the handler's date.
    let got = get(addr, "/last-modified", &[("if-unmodified-since", BEFORE)]).await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn date_preconditions_need_last_modified() {
    let addr = origin().await;
    let got = get(addr, "/", &[("if-modified-since", AFTER)]).await;
    assert_eq!(got.status, StatusCode::OK);
    let got = get(addr, "/", &[("if-unmodified-since", BEFORE)]).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn if_none_match_wins_over_if_modified_since() {
    let addr = origin().await;
    let got = get(
        addr,
        "/both",
        &[("if-none-match", "\"v0\""), ("if-modified-since", AFTER)],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let got = get(
        addr,
        "/both",
        &[("if-none-match", "\"v1\""), ("if-modified-since", BEFORE)],
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn if_unmodified_since_is_ignored_when_if_match_is_sent() {
    let addr = origin().await;
    let got = get(
        addr,
        "/both",
        &[("if-match", "\"v1\""), ("if-unmodified-since", BEFORE)],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
}

// The 304 and the 412 on the wire (behaviour 7).

#[tokio::test]
async fn not_modified_on_the_wire_keeps_what_it_must_and_nothing_else() {
    let addr = origin().await;
    let ok = raw_head(&raw(addr, "GET", "/", &[]).await);
    let wire = raw(addr, "GET", "/", &[("if-none-match", &tag())]).await;
    assert!(wire.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{wire}");
    assert!(wire.ends_with("\r\n\r\n"), "no content: {wire:?}");
    let head = raw_head(&wire);
    for kept in [
        "cache-control",
        "content-location",
        "etag",
        "expires",
        "vary",
        "set-cookie",
        "access-control-allow-origin",
        "x-custom",
        "x-inner-method",
    ] {
        let lines = |h: &[String]| {
            h.iter()
                .filter(|l| l.starts_with(&format!("{kept}:")))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(!lines(&ok).is_empty(), "the 200 had {kept}");
        assert_eq!(lines(&head), lines(&ok), "the 304 keeps {kept}");
    }
    for dropped in [
        "content-type",
        "content-length",
        "content-language",
        "content-encoding",
        "transfer-encoding",
    ] {
        assert!(
            !has_field(&head, dropped),
            "the 304 drops {dropped}: {head:?}"
        );
    }
    assert!(has_field(&head, "date"), "{head:?}");
}

#[tokio::test]
async fn precondition_failed_on_the_wire_has_no_content_and_keeps_the_tag() {
    let addr = origin().await;
    let wire = raw(addr, "GET", "/", &[("if-match", "\"stale\"")]).await;
    assert!(
        wire.starts_with("HTTP/1.1 412 Precondition Failed\r\n"),
        "{wire}"
    );
    assert!(wire.ends_with("\r\n\r\n"), "no content: {wire:?}");
    let head = raw_head(&wire);
    assert!(head.contains(&format!("etag: {}", tag())), "{head:?}");
    assert!(head.contains(&"content-length: 0".to_owned()), "{head:?}");
    assert!(!has_field(&head, "content-type"), "{head:?}");
    assert!(!has_field(&head, "cache-control"), "{head:?}");
}

// HEAD over plain hyper (behaviour 8).

#[tokio::test]
async fn head_gets_the_tag_and_length_of_get() {
    let addr = origin().await;
    let get_response = get(addr, "/", &[]).await;
    let head_response = head(addr, "/", &[]).await;
    assert_eq!(head_response.status, StatusCode::OK);
    assert_eq!(head_response.etag(), get_response.etag());
    assert_eq!(head_response.header("content-length"), Some("12"));
    assert!(head_response.body.is_empty());
    // The tag is the GET content's: the inner service was asked for GET.
    assert_eq!(head_response.header("x-inner-method"), Some("GET"));

    let wire = raw(addr, "HEAD", "/", &[]).await;
    let lines = raw_head(&wire);
    assert!(
        lines.contains(&"content-length: 12".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&format!("etag: {}", tag())), "{lines:?}");
    assert!(wire.ends_with("\r\n\r\n"), "no content: {wire:?}");
}

#[tokio::test]
async fn conditional_head_gets_304_and_412() {
    let addr = origin().await;
    let got = head(addr, "/", &[("if-none-match", &tag())]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.etag(), Some(tag().as_str()));
    let got = head(addr, "/", &[("if-match", "\"stale\"")]).await;
    assert_eq!(got.status, StatusCode::PRECONDITION_FAILED);
    let got = head(addr, "/last-modified", &[("if-modified-since", AFTER)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn head_of_untagged_responses_keeps_the_get_length() {
    let addr = origin().await;
    for path in ["/status/404", "/no-store", "/strong"] {
        let got = head(addr, path, &[]).await;
        assert_eq!(got.header("content-length"), Some("12"), "{path}");
        assert!(got.body.is_empty());
    }
    let got = head(addr, "/no-content", &[]).await;
    assert_eq!(got.header("content-length"), None);
}

// HTTP/2.

#[tokio::test]
async fn http2_gets_tags_and_304s() {
    let addr = origin().await;
    let got = send_h2(addr, request("GET", "http://localhost/", &[]))
        .await
        .unwrap();
    assert_eq!(got.etag(), Some(tag().as_str()));
    assert_eq!(got.header("content-length"), Some("12"));
    let got = send_h2(
        addr,
        request("GET", "http://localhost/", &[("if-none-match", &tag())]),
    )
    .await
    .unwrap();
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.header("vary"), Some("accept-encoding"));
    assert!(got.body.is_empty());
}
