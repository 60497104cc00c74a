//! `Cache-Status` (RFC 9211) over real TCP: every path a request takes
//! through the validator cache, read back with a Structured Field parser
//! (the `sfv` crate), as a client or a CDN reads it.

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing, Router,
};
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

use crate::common::*;

/// One member of the field: the cache's name and its parameters, each
/// written as its Structured Field value (`?1`, `200`, a token).
type Member = (String, Vec<(String, String)>);

/// The `Cache-Status` list of a response, all its field lines together
/// (RFC 9110 §5.3), parsed as a Structured Field List; panics on anything
/// that is not one.
fn members(received: &Received) -> Vec<Member> {
    let lines: Vec<&str> = received
        .headers
        .get_all("cache-status")
        .iter()
        .map(|line| line.to_str().unwrap())
        .collect();
    if lines.is_empty() {
        return Vec::new();
    }
    let joined = lines.join(", ");
    let list: sfv::List = sfv::Parser::new(&joined)
        .parse()
        .unwrap_or_else(|error| panic!("not a Structured Field List: {joined:?}: {error}"));
    list.into_iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else {
                panic!("an inner list in {joined:?}");
            };
            let name = bare(&item.bare_item);
            let params = item
                .params
                .iter()
                .map(|(key, value)| (key.as_str().to_owned(), bare(value)))
                .collect();
            (name, params)
        })
        .collect()
}

fn bare(item: &sfv::BareItem) -> String {
    if let Some(token) = item.as_token() {
        return token.as_str().to_owned();
    }
    if let Some(string) = item.as_string() {
        return string.as_str().to_owned();
    }
    if let Some(boolean) = item.as_boolean() {
        return if boolean { "?1" } else { "?0" }.to_owned();
    }
    if let Some(integer) = item.as_integer() {
        return i64::from(integer).to_string();
    }
    panic!("unexpected item {item:?}");
}

/// `name` with `params` (`(key, value)`; `?1` for a bare flag).
fn member(name: &str, params: &[(&str, &str)]) -> Member {
    let params = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (name.to_owned(), params)
}

const NAME: &str = "app-cache";

async fn note() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "max-age=0, must-revalidate"),
            (header::VARY, "accept-encoding"),
        ],
        "note v1",
    )
}

async fn secret() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "secret")
}

/// A response that already passed through a cache behind this one.
async fn upstream() -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        "cache-status",
        "OriginCache; fwd=uri-miss; fwd-status=200".parse().unwrap(),
    );
    (headers, "from upstream")
}

fn app(cache: ValidatorCache) -> Router {
    Router::new()
        .route(
            "/notes/{id}",
            routing::get(note).put(|| async { StatusCode::NO_CONTENT }),
        )
        .route("/secret", routing::get(secret))
        .route("/upstream", routing::get(upstream))
        .route(
            "/options",
            routing::options(|| async { StatusCode::NO_CONTENT }),
        )
        .layer(ETagLayer::new())
        .layer(ValidatorCacheLayer::new(cache))
}

async fn started(cache: ValidatorCache) -> std::net::SocketAddr {
    serve_axum(app(cache)).await
}

#[tokio::test]
async fn every_path_through_the_cache_says_what_it_did() {
    let addr = started(ValidatorCache::builder().cache_status(NAME).build()).await;

    // Nothing stored: forwarded, and the 200 stored.
    let first = get(addr, "/notes/1", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let stored = [("fwd", "uri-miss"), ("fwd-status", "200"), ("stored", "?1")];
    assert_eq!(members(&first), [member(NAME, &stored)]);
    let tag = first.etag().unwrap().to_owned();

    // A revalidation with the stored tag: a 304 from the cache.
    let hit = get(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    assert_eq!(members(&hit), [member(NAME, &[("hit", "?1")])]);
    // The same as a HEAD.
    let hit = head(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    assert_eq!(members(&hit), [member(NAME, &[("hit", "?1")])]);

    // Another `Accept-Encoding`: no variant for it; the ETag layer answers
    // the handler's 200 with a 304 (not the cache), which is stored.
    let other = get(
        addr,
        "/notes/1",
        &[("if-none-match", &tag), ("accept-encoding", "br")],
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_MODIFIED);
    let vary_miss = [
        ("fwd", "vary-miss"),
        ("fwd-status", "304"),
        ("stored", "?1"),
    ];
    assert_eq!(members(&other), [member(NAME, &vary_miss)]);

    // A stored variant that cannot answer: another tag, or no condition.
    // The response confirms what is stored, which is not stored again.
    let unchanged = [
        ("fwd", "miss"),
        ("fwd-status", "200"),
        ("detail", "unchanged"),
    ];
    let stale = get(addr, "/notes/1", &[("if-none-match", "\"old\"")]).await;
    assert_eq!(members(&stale), [member(NAME, &unchanged)]);
    let plain = get(addr, "/notes/1", &[]).await;
    assert_eq!(members(&plain), [member(NAME, &unchanged)]);

    // The client asks for a response from the origin.
    let no_cache = get(
        addr,
        "/notes/1",
        &[("if-none-match", &tag), ("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(no_cache.status, StatusCode::NOT_MODIFIED);
    let request = members(&no_cache);
    assert_eq!(request.len(), 1);
    assert_eq!(request[0].0, NAME);
    assert_eq!(
        request[0].1[..2],
        [
            ("fwd".to_owned(), "request".to_owned()),
            ("fwd-status".to_owned(), "304".to_owned())
        ]
    );

    // A HEAD that misses: forwarded, not stored.
    let head_miss = head(addr, "/notes/2", &[]).await;
    let not_stored = [
        ("fwd", "uri-miss"),
        ("fwd-status", "200"),
        ("detail", "head"),
    ];
    assert_eq!(members(&head_miss), [member(NAME, &not_stored)]);

    // Not storable.
    let secret = get(addr, "/secret", &[]).await;
    let refused = [
        ("fwd", "uri-miss"),
        ("fwd-status", "200"),
        ("detail", "cache-control"),
    ];
    assert_eq!(members(&secret), [member(NAME, &refused)]);

    // Other methods.
    let put = send(addr, request_with("PUT", "/notes/1")).await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let method = [("fwd", "method"), ("fwd-status", "204")];
    assert_eq!(members(&put), [member(NAME, &method)]);
    let options = send(addr, request_with("OPTIONS", "/options"))
        .await
        .unwrap();
    assert_eq!(members(&options), [member(NAME, &method)]);
}

fn request_with(method: &str, path: &str) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    request(method, path, &[])
}

#[tokio::test]
async fn the_member_follows_those_the_inner_service_set() {
    let addr = started(ValidatorCache::builder().cache_status(NAME).build()).await;
    let got = get(addr, "/upstream", &[]).await;
    // Two field lines, read as one list: the cache nearer the origin first.
    assert_eq!(got.headers.get_all("cache-status").iter().count(), 2);
    let upstream = member("OriginCache", &[("fwd", "uri-miss"), ("fwd-status", "200")]);
    let ours = member(
        NAME,
        &[("fwd", "uri-miss"), ("fwd-status", "200"), ("stored", "?1")],
    );
    assert_eq!(members(&got), [upstream, ours]);
}

#[tokio::test]
async fn a_request_kept_away_by_the_partition_function_is_a_bypass() {
    let cache = ValidatorCache::builder()
        .cache_status("edge cache")
        .partition(|parts| {
            parts
                .headers
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .build();
    let addr = started(cache).await;
    let got = get(addr, "/notes/1", &[]).await;
    let bypass = [
        ("fwd", "bypass"),
        ("fwd-status", "200"),
        ("detail", "partition"),
    ];
    // A name that is no token is a string.
    assert_eq!(members(&got), [member("edge cache", &bypass)]);
    assert!(got
        .headers
        .get("cache-status")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("\"edge cache\";"));
}

#[tokio::test]
async fn without_a_name_no_field_is_added() {
    let addr = started(ValidatorCache::builder().build()).await;
    let first = get(addr, "/notes/1", &[]).await;
    let tag = first.etag().unwrap().to_owned();
    let hit = get(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
    for got in [&first, &hit] {
        assert!(got.headers.get("cache-status").is_none(), "{got:?}");
    }
    // The upstream's member is left as it was.
    let got = get(addr, "/upstream", &[]).await;
    assert_eq!(got.headers.get_all("cache-status").iter().count(), 1);
}
