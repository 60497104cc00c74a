//! The validator cache over real TCP: an axum app with the cache outside the
//! ETag layer, a counter of handler calls, and hyper's client.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::{Path, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing, Extension, Router,
};
use tokio::sync::Notify;
use tower_etag::{
    cache::{CacheTags, ValidatorCache, ValidatorCacheLayer},
    ETagLayer, Outcome,
};

use crate::common::*;

const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

#[derive(Clone, Default)]
struct App {
    calls: Arc<AtomicUsize>,
    notes: Arc<Mutex<HashMap<String, String>>>,
    /// When set, `GET /gated/...` reads its note and then waits here.
    gate: Arc<Mutex<Option<Arc<Notify>>>>,
    read_done: Arc<Notify>,
}

impl App {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn note(&self, id: &str) -> String {
        self.notes
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("note {id} v1"))
    }
}

async fn count(State(app): State<App>, request: Request, next: Next) -> Response {
    app.calls.fetch_add(1, Ordering::SeqCst);
    next.run(request).await
}

async fn show(State(app): State<App>, Path(id): Path<String>) -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "max-age=10, must-revalidate"),
            (header::CONTENT_LOCATION, "/notes/canonical"),
            (header::EXPIRES, "Thu, 01 Dec 2094 16:00:00 GMT"),
            (header::VARY, "accept-encoding"),
            (header::LAST_MODIFIED, LAST_MODIFIED),
        ],
        app.note(&id),
    )
}

async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    if headers.contains_key("x-fail") {
        return (StatusCode::CONFLICT, HeaderMap::new());
    }
    let mut notes = app.notes.lock().unwrap();
    let next = notes.get(&id).map_or(2, |n| n.len() + 1);
    notes.insert(id, format!("note v{next}"));
    let mut response = HeaderMap::new();
    if let Some(location) = headers.get("x-location") {
        response.insert(header::LOCATION, location.clone());
    }
    (StatusCode::NO_CONTENT, response)
}

async fn gated(State(app): State<App>, Path(id): Path<String>) -> String {
    let body = app.note(&id);
    let gate = app.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        app.read_done.notify_one();
        gate.notified().await;
    }
    body
}

fn router(app: App, cache: ValidatorCache) -> Router {
    let fixed = |headers: &'static [(&'static str, &'static str)]| {
        move || async move {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(*name, value.parse().unwrap());
            }
            (map, "fixed")
        }
    };
    Router::new()
        .route(
            "/notes/{id}",
            routing::get(show).put(update).delete(update).post(update),
        )
        .route("/gated/{id}", routing::get(gated).put(update))
        .route(
            "/private",
            routing::get(fixed(&[("cache-control", "private")])),
        )
        .route(
            "/no-store",
            routing::get(fixed(&[("cache-control", "no-store")])),
        )
        .route("/cookie", routing::get(fixed(&[("set-cookie", "a=1")])))
        .route("/vary-ua", routing::get(fixed(&[("vary", "user-agent")])))
        .route("/vary-star", routing::get(fixed(&[("vary", "*")])))
        .route("/vary-accept", routing::get(fixed(&[("vary", "Accept")])))
        .route(
            "/own-tag",
            routing::get(|| async { ([(header::ETAG, "\"v7\"")], "own") }),
        )
        .route(
            "/tagged/{id}",
            routing::get(|Path(id): Path<String>| async move {
                (Extension(CacheTags::new([format!("user:{id}")])), "tagged")
            }),
        )
        .route(
            "/hang",
            routing::get(|| async { "hang" }).put(std::future::pending::<StatusCode>),
        )
        .route(
            "/missing",
            routing::get(|| async { (StatusCode::NOT_FOUND, "missing") }),
        )
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .layer(ETagLayer::new())
        .layer(ValidatorCacheLayer::new(cache))
        .with_state(app)
}

async fn start(cache: ValidatorCache) -> (SocketAddr, App) {
    let app = App::default();
    let addr = serve_axum(router(app.clone(), cache)).await;
    (addr, app)
}

fn cache() -> ValidatorCache {
    ValidatorCache::builder()
        .time_to_live(Duration::from_secs(60))
        .max_entries(1000)
        .build()
}

/// Whether a revalidation of `path` with `tag` (and `headers`) reaches the
/// handler.
async fn reaches_handler(
    addr: SocketAddr,
    app: &App,
    path: &str,
    tag: &str,
    headers: &[(&str, &str)],
) -> bool {
    let before = app.calls();
    let mut headers = headers.to_vec();
    headers.push(("if-none-match", tag));
    get(addr, path, &headers).await;
    app.calls() > before
}

/// GETs `path` and returns its tag, filling the cache.
async fn fill(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let got = get(addr, path, headers).await;
    assert_eq!(got.status, StatusCode::OK, "{path}");
    got.etag().expect("tagged").to_owned()
}

#[tokio::test]
async fn a_matching_revalidation_is_answered_without_the_handler() {
    let cache = cache();
    let (addr, app) = start(cache.clone()).await;
    let tag = fill(addr, "/notes/1", &[]).await;
    assert_eq!(app.calls(), 1);

    let got = get(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(app.calls(), 1, "the handler did not run");
    assert!(got.body.is_empty());
    // RFC 9110 §15.4.5: the fields the 200 carried.
    assert_eq!(got.etag(), Some(tag.as_str()));
    assert_eq!(
        got.header("cache-control"),
        Some("max-age=10, must-revalidate")
    );
    assert_eq!(got.header("content-location"), Some("/notes/canonical"));
    assert_eq!(got.header("expires"), Some("Thu, 01 Dec 2094 16:00:00 GMT"));
    assert_eq!(got.header("vary"), Some("accept-encoding"));
    assert_eq!(got.header("last-modified"), Some(LAST_MODIFIED));
    assert!(got.header("date").is_some());
    assert_eq!(got.header("content-type"), None);
    assert_eq!(cache.stats().hits, 1);

    // Lists over several lines, weak forms: the weak comparison.
    let weak = format!("W/{tag}");
    for lines in [
        vec![
            ("if-none-match", "\"a\", \"b\""),
            ("if-none-match", tag.as_str()),
        ],
        vec![("if-none-match", weak.as_str())],
    ] {
        let got = get(addr, "/notes/1", &lines).await;
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{lines:?}");
    }
    // HEAD shares the entry.
    let got = head(addr, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(app.calls(), 1);
}

#[tokio::test]
async fn the_304_from_the_cache_on_the_wire_has_no_content_length() {
    let (addr, _app) = start(cache()).await;
    let tag = fill(addr, "/notes/1", &[]).await;
    let wire = raw(addr, "GET", "/notes/1", &[("if-none-match", &tag)]).await;
    assert!(wire.starts_with("HTTP/1.1 304"), "{wire}");
    let head = raw_head(&wire);
    assert!(!has_field(&head, "content-length"), "{wire}");
    assert!(!has_field(&head, "transfer-encoding"), "{wire}");
}

#[tokio::test]
async fn everything_else_reaches_the_handler() {
    let (addr, app) = start(cache()).await;
    let tag = fill(addr, "/notes/1", &[]).await;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("if-none-match", "\"other\"")],
        vec![("if-none-match", "*")],
        vec![("if-none-match", &tag), ("if-match", &tag)],
        vec![
            ("if-none-match", &tag),
            ("if-unmodified-since", LAST_MODIFIED),
        ],
        vec![("if-none-match", &tag), ("cache-control", "no-cache")],
        vec![
            ("if-none-match", &tag),
            ("cache-control", "max-age=0, No-Cache"),
        ],
        vec![("if-none-match", &tag), ("pragma", "no-cache")],
        vec![("if-modified-since", LAST_MODIFIED)],
    ];
    for headers in cases {
        let before = app.calls();
        get(addr, "/notes/1", &headers).await;
        assert_eq!(app.calls(), before + 1, "{headers:?}");
    }
    // If-Modified-Since alone is answered by the layer below, as without
    // the cache.
    let got = get(addr, "/notes/1", &[("if-modified-since", LAST_MODIFIED)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    let before = app.calls();
    let got = send(
        addr,
        request("OPTIONS", "/notes/1", &[("if-none-match", &tag)]),
    )
    .await
    .unwrap();
    assert_ne!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(app.calls(), before + 1);
}

#[tokio::test]
async fn the_key_is_authority_path_query_requester_and_varied_fields() {
    let (addr, app) = start(cache()).await;
    let base: &'static [(&str, &str)] = &[("host", "a.example"), ("accept-encoding", "gzip")];
    let tag = fill(addr, "/notes/1?x=1", base).await;
    let hit = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let (app, tag) = (&app, tag.clone());
        async move { !reaches_handler(addr, app, path, &tag, headers).await }
    };
    assert!(hit("/notes/1?x=1", base).await);
    // Vary: accept-encoding, which also covers a field that is absent.
    let other_coding = &[("host", "a.example"), ("accept-encoding", "br")];
    assert!(!hit("/notes/1?x=1", other_coding).await);
    assert!(!hit("/notes/1?x=1", &[("host", "a.example")]).await);
    // A field the response does not vary on does not split the key.
    let with_accept = &[
        ("host", "a.example"),
        ("accept-encoding", "gzip"),
        ("accept", "x/y"),
    ];
    assert!(hit("/notes/1?x=1", with_accept).await);
    // Authority, path, query.
    let other_host = &[("host", "b.example"), ("accept-encoding", "gzip")];
    assert!(!hit("/notes/1?x=1", other_host).await);
    assert!(!hit("/notes/1?x=2", base).await);
    assert!(!hit("/notes/1", base).await);
}

#[tokio::test]
async fn entries_are_per_requester() {
    let (addr, app) = start(cache()).await;
    for (credential, path) in [("authorization", "/notes/2"), ("cookie", "/notes/2b")] {
        let alice = [(credential, "alice")];
        let tag = fill(addr, path, &alice).await;
        for (who, expect_hit) in [("alice", true), ("bob", false)] {
            let runs = reaches_handler(addr, &app, path, &tag, &[(credential, who)]).await;
            assert_eq!(!runs, expect_hit, "{credential}: {who}");
        }
        // Anonymous requests never get the credentialed entry.
        let runs = reaches_handler(addr, &app, path, &tag, &[]).await;
        assert!(runs, "{credential}: anonymous");
    }
}

#[tokio::test]
async fn partition_function_replaces_credentials() {
    let cache = ValidatorCache::builder()
        .partition(|request| {
            let user = request.headers.get("x-user")?.to_str().ok()?;
            Some(user.to_owned())
        })
        .build();
    let (addr, app) = start(cache).await;
    let tag = fill(addr, "/notes/3", &[("x-user", "7"), ("cookie", "a")]).await;
    let before = app.calls();
    // Same user, another cookie: the partition is the user.
    get(
        addr,
        "/notes/3",
        &[("x-user", "7"), ("cookie", "b"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(app.calls(), before);
    get(
        addr,
        "/notes/3",
        &[("x-user", "8"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(app.calls(), before + 1);
    // `None`: not cached at all.
    get(addr, "/notes/3", &[]).await;
    let got = get(addr, "/notes/3", &[("if-none-match", &tag)]).await;
    assert_eq!(
        got.status,
        StatusCode::NOT_MODIFIED,
        "from the handler path"
    );
    assert_eq!(app.calls(), before + 3);
}

#[tokio::test]
async fn responses_that_must_not_be_replayed_are_never_stored() {
    let cache = cache();
    let (addr, app) = start(cache.clone()).await;
    for path in [
        "/private",
        "/no-store",
        "/cookie",
        "/vary-ua",
        "/vary-star",
        "/missing",
    ] {
        let got = get(addr, path, &[]).await;
        let tag = got.etag().unwrap_or("\"none\"").to_owned();
        assert!(reaches_handler(addr, &app, path, &tag, &[]).await, "{path}");
    }
    // A fill from HEAD is not stored.
    let tag = head(addr, "/notes/4", &[]).await.etag().unwrap().to_owned();
    let runs = reaches_handler(addr, &app, "/notes/4", &tag, &[]).await;
    assert!(runs, "HEAD fills nothing");
    assert_eq!(cache.stats().hits, 0);
    // Vary on a configured field is stored; the handler's own tag too.
    for path in ["/vary-accept", "/own-tag"] {
        let tag = fill(addr, path, &[]).await;
        assert!(
            !reaches_handler(addr, &app, path, &tag, &[]).await,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_write_invalidates_every_variant_of_its_target() {
    let (addr, app) = start(cache()).await;
    let gzip = fill(addr, "/notes/5", &[("accept-encoding", "gzip")]).await;
    let plain = fill(addr, "/notes/5", &[]).await;
    let other_host = fill(addr, "/notes/5", &[("host", "b.example")]).await;
    for method in ["PUT", "DELETE", "POST", "PATCH-LIKE"] {
        let method = if method == "PATCH-LIKE" {
            "PURGE"
        } else {
            method
        };
        let got = send(addr, request(method, "/notes/5", &[])).await.unwrap();
        assert!(
            got.status.is_success() || got.status == StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        for (tag, headers) in [
            (&gzip, vec![("accept-encoding", "gzip")]),
            (&plain, vec![]),
            (&other_host, vec![("host", "b.example")]),
        ] {
            let before = app.calls();
            let mut headers = headers.clone();
            headers.push(("if-none-match", tag));
            let got = get(addr, "/notes/5", &headers).await;
            assert_eq!(app.calls(), before + 1, "{method} {headers:?}");
            // The handler answers: 200 with the new content after a PUT.
            if method == "PUT" {
                assert_eq!(got.status, StatusCode::OK);
            }
        }
        // Refill every variant for the next method.
        get(addr, "/notes/5", &[("accept-encoding", "gzip")]).await;
    }
}

#[tokio::test]
async fn a_write_that_claims_to_be_grpc_still_invalidates_its_target() {
    let (addr, app) = start(cache()).await;
    let grpc = ("content-type", "application/grpc");
    // Not a POST: a DELETE or a PUT is a write whatever its content type.
    for method in ["PUT", "DELETE", "POST"] {
        let tag = fill(addr, "/notes/8", &[]).await;
        assert!(!reaches_handler(addr, &app, "/notes/8", &tag, &[]).await);
        let got = send(addr, request(method, "/notes/8", &[grpc]))
            .await
            .unwrap();
        assert!(got.status.is_success(), "{method}");
        // A POST that says gRPC but is answered as no gRPC call is (a
        // handler that ignored its content type) is invalidated after its
        // answer, as RFC 9111 §4.4 asks of every write.
        assert!(
            reaches_handler(addr, &app, "/notes/8", &tag, &[]).await,
            "{method} with {grpc:?} left the old entry"
        );
    }
}

#[tokio::test]
async fn location_targets_are_invalidated_only_after_success_and_on_the_same_authority() {
    let (addr, app) = start(cache()).await;
    let host = [("host", "a.example")];
    // A failed write leaves its Location target alone.
    let tag = fill(addr, "/notes/7", &host).await;
    let got = send(
        addr,
        request(
            "PUT",
            "/notes/6",
            &[("host", "a.example"), ("x-fail", "1"), ("x-location", "7")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(got.status, StatusCode::CONFLICT);
    assert!(!reaches_handler(addr, &app, "/notes/7", &tag, &host).await);
    // Another authority's Location is left alone.
    send(
        addr,
        request(
            "PUT",
            "/notes/6",
            &[
                ("host", "a.example"),
                ("x-location", "http://b.example/notes/7"),
            ],
        ),
    )
    .await
    .unwrap();
    assert!(!reaches_handler(addr, &app, "/notes/7", &tag, &host).await);
    // A relative reference, resolved against /notes/6, after a 2xx.
    send(
        addr,
        request(
            "PUT",
            "/notes/6",
            &[("host", "a.example"), ("x-location", "7")],
        ),
    )
    .await
    .unwrap();
    assert!(reaches_handler(addr, &app, "/notes/7", &tag, &host).await);
    // An absolute one on the same authority.
    let tag = fill(addr, "/notes/7", &host).await;
    send(
        addr,
        request(
            "PUT",
            "/notes/6",
            &[
                ("host", "a.example"),
                ("x-location", "http://a.example/notes/7"),
            ],
        ),
    )
    .await
    .unwrap();
    assert!(reaches_handler(addr, &app, "/notes/7", &tag, &host).await);
}

#[tokio::test]
async fn a_get_that_read_old_data_does_not_store_its_tag_after_a_write() {
    let (addr, app) = start(cache()).await;
    let old_tag = expected_tag(b"note 8 v1");
    // GET starts and reads the old note, then waits.
    let gate = Arc::new(Notify::new());
    *app.gate.lock().unwrap() = Some(gate.clone());
    let slow = tokio::spawn(async move { get(addr, "/gated/8", &[]).await });
    app.read_done.notified().await;
    *app.gate.lock().unwrap() = None;
    // A PUT completes meanwhile.
    let got = send(addr, request("PUT", "/gated/8", &[])).await.unwrap();
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    // The GET finishes with the old tag.
    gate.notify_one();
    let got = slow.await.unwrap();
    assert_eq!(got.etag(), Some(old_tag.as_str()));
    // Its tag was not stored: the next revalidation reaches the handler and
    // gets the new content.
    let before = app.calls();
    let got = get(addr, "/gated/8", &[("if-none-match", &old_tag)]).await;
    assert_eq!(app.calls(), before + 1);
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body[..], b"note v2");
}

#[tokio::test]
async fn entries_expire_and_a_304_from_the_handler_refreshes_them() {
    let cache = ValidatorCache::builder()
        .time_to_live(Duration::from_secs(1))
        .build();
    let (addr, app) = start(cache.clone()).await;
    let tag = fill(addr, "/notes/9", &[]).await;
    let inm = [("if-none-match", tag.as_str())];
    get(addr, "/notes/9", &inm).await;
    assert_eq!(app.calls(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired: the handler runs, and the ETag layer's 304 (made out of its
    // 200) stores the entry again.
    let got = get(addr, "/notes/9", &inm).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(app.calls(), 2);
    let got = get(addr, "/notes/9", &inm).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(app.calls(), 2, "hit again");
    assert_eq!(cache.stats().fills, 2);
}

#[tokio::test]
async fn app_code_invalidates_by_uri_tag_and_all() {
    let cache = cache();
    let (addr, app) = start(cache.clone()).await;
    let host = [("host", "a.example")];

    let tag = fill(addr, "/notes/10", &host).await;
    assert!(!reaches_handler(addr, &app, "/notes/10", &tag, &host).await);
    // A URI without an authority: every authority.
    cache.invalidate(&"/notes/10".parse().unwrap()).await;
    assert!(reaches_handler(addr, &app, "/notes/10", &tag, &host).await);
    cache
        .invalidate(&"http://a.example/notes/10".parse().unwrap())
        .await;
    assert!(reaches_handler(addr, &app, "/notes/10", &tag, &host).await);

    let user1 = fill(addr, "/tagged/1", &host).await;
    let user2 = fill(addr, "/tagged/2", &host).await;
    cache.invalidate_tag("user:1").await;
    assert!(reaches_handler(addr, &app, "/tagged/1", &user1, &host).await);
    assert!(!reaches_handler(addr, &app, "/tagged/2", &user2, &host).await);

    cache.clear().await;
    assert!(reaches_handler(addr, &app, "/tagged/2", &user2, &host).await);
}

#[tokio::test]
async fn hits_are_counted_and_recorded() {
    let cache = ValidatorCache::builder().record_outcome(true).build();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    let app = App::default();
    let router = router(app.clone(), cache.clone()).layer(middleware::map_response(
        move |response: Response| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(response.extensions().get::<Outcome>().copied());
                response
            }
        },
    ));
    let addr = serve_axum(router).await;
    let tag = fill(addr, "/notes/11", &[]).await;
    get(addr, "/notes/11", &[("if-none-match", &tag)]).await;
    send(addr, request("PUT", "/notes/11", &[])).await.unwrap();
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.fills), (1, 1, 1));
    assert_eq!(stats.invalidations, 2, "at arrival and after the 204");
    assert_eq!(
        outcomes.lock().unwrap()[1],
        Some(Outcome::NotModifiedFromCache)
    );
    assert!(format!("{cache:?}").contains("hits: 1"));
}

#[tokio::test]
async fn authentication_outside_the_cache_still_runs_on_a_hit() {
    let cache = cache();
    let app = App::default();
    async fn auth(request: Request, next: Next) -> Response {
        if request.headers().get(header::AUTHORIZATION).is_none() {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        next.run(request).await
    }
    let router = router(app.clone(), cache).layer(middleware::from_fn(auth));
    let addr = serve_axum(router).await;
    let tag = fill(addr, "/notes/12", &[("authorization", "Bearer a")]).await;
    let got = get(
        addr,
        "/notes/12",
        &[("authorization", "Bearer a"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    let got = get(addr, "/notes/12", &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.calls(), 1);
}

#[tokio::test]
async fn a_full_small_cache_always_stores_the_latest_fill() {
    // LRU, not TinyLFU admission: a new key is never refused.
    let cache = ValidatorCache::builder().max_entries(2).build();
    let (addr, app) = start(cache).await;
    for i in 0..20 {
        let path: &'static str = Box::leak(format!("/notes/s{i}").into_boxed_str());
        let tag = fill(addr, path, &[]).await;
        let before = app.calls();
        get(addr, path, &[("if-none-match", &tag)]).await;
        assert_eq!(app.calls(), before, "{path}: the newest entry hits");
    }
}

/// Many clients at once, reading, revalidating with tags old and new, and
/// writing, with handlers that pause between reading the data and
/// answering: no 304 ever confirms a tag whose content was already replaced
/// before the request was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_304_under_concurrent_writes() {
    use std::sync::atomic::AtomicU64;

    use tower::ServiceExt;

    #[derive(Clone, Default)]
    struct Doc(Arc<AtomicU64>);

    async fn read(State(doc): State<Doc>) -> String {
        let version = doc.0.load(Ordering::SeqCst);
        // Let writes overtake this read before it answers.
        for _ in 0..(version % 3) {
            tokio::task::yield_now().await;
        }
        format!("version {version}")
    }
    async fn write(State(doc): State<Doc>) -> StatusCode {
        tokio::task::yield_now().await;
        doc.0.fetch_add(1, Ordering::SeqCst);
        StatusCode::NO_CONTENT
    }

    let doc = Doc::default();
    let cache = ValidatorCache::builder().build();
    let app = Router::new()
        .route("/doc", routing::get(read).put(write))
        .layer(ETagLayer::new())
        .layer(ValidatorCacheLayer::new(cache.clone()))
        .with_state(doc.clone());
    let version_of = |tag: &str| -> u64 {
        (0..10_000)
            .find(|n| expected_tag(format!("version {n}").as_bytes()) == tag)
            .expect("a tag of some version")
    };

    let mut clients = Vec::new();
    for client in 0..8u64 {
        let (app, doc) = (app.clone(), doc.clone());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            let mut checked = 0;
            for step in 0..300u64 {
                let pick = (step * 7 + client * 13) % 10;
                let before = doc.0.load(Ordering::SeqCst);
                let mut request = http::Request::builder().uri("/doc");
                if pick == 0 {
                    request = request.method("PUT");
                } else if pick >= 3 && !seen.is_empty() {
                    // Mostly the newest tag this client saw, sometimes an
                    // older one.
                    let tag = if pick == 9 {
                        &seen[(step as usize * 31) % seen.len()]
                    } else {
                        seen.last().unwrap()
                    };
                    request = request.header("if-none-match", tag.as_str());
                }
                let response = app
                    .clone()
                    .oneshot(request.body(axum::body::Body::empty()).unwrap())
                    .await
                    .unwrap();
                let tag = response
                    .headers()
                    .get("etag")
                    .map(|t| t.to_str().unwrap().to_owned());
                if response.status() == StatusCode::NOT_MODIFIED {
                    checked += 1;
                    let tag = tag.expect("a 304 carries the tag");
                    assert!(
                        version_of(&tag) >= before,
                        "stale 304: {tag} confirmed, but version {before} was current before the request"
                    );
                } else if let Some(tag) = tag {
                    seen.push(tag);
                }
            }
            checked
        }));
    }
    let mut checked = 0;
    for client in clients {
        checked += client.await.unwrap();
    }
    let stats = cache.stats();
    assert!(checked > 200, "{checked} 304s checked");
    assert!(stats.hits > 50, "{stats:?}");
}

#[tokio::test]
async fn a_hit_over_http2_has_no_content_length() {
    let (addr, app) = start(cache()).await;
    let got = send_h2(addr, request("GET", "/notes/13", &[]))
        .await
        .unwrap();
    let tag = got.etag().unwrap().to_owned();
    let got = send_h2(
        addr,
        request("GET", "/notes/13", &[("if-none-match", &tag)]),
    )
    .await
    .unwrap();
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.etag(), Some(tag.as_str()));
    assert_eq!(app.calls(), 1);
}

#[test]
fn public_types_are_send_sync_and_debug() {
    fn send_sync<T: Send + Sync>() {}
    fn debug<T: std::fmt::Debug>() {}
    send_sync::<ValidatorCache>();
    send_sync::<ValidatorCacheLayer>();
    send_sync::<tower_etag::cache::ValidatorCacheService<axum::routing::Route>>();
    send_sync::<tower_etag::cache::ResponseBody<http_body_util::Full<bytes::Bytes>>>();
    // What axum's `Router::layer` needs of the future (axum's request body
    // is not `Sync`; lib.rs asserts `Sync` where the inner types are).
    fn send<T: Send>() {}
    send::<tower_etag::cache::ResponseFuture<axum::routing::Route, axum::body::Body>>();
    debug::<ValidatorCache>();
    debug::<ValidatorCacheLayer>();
    debug::<tower_etag::cache::ValidatorCacheBuilder>();
    debug::<tower_etag::cache::CacheStats>();
    debug::<CacheTags>();
}

#[tokio::test]
async fn a_write_that_never_answers_does_not_block_fills_once_dropped() {
    use tower::ServiceExt;

    let cache = cache();
    let app = App::default();
    let router = router(app.clone(), cache.clone());
    let request = |method: &str, headers: &[(&str, &str)]| {
        let mut request = http::Request::builder().method(method).uri("/hang");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(axum::body::Body::empty()).unwrap()
    };
    // A PUT whose handler never answers; the client gives up.
    let put = router.clone().oneshot(request("PUT", &[]));
    assert!(tokio::time::timeout(Duration::from_millis(50), put)
        .await
        .is_err());
    // Fills of the resource are allowed again: a GET is stored and hits.
    let got = router.clone().oneshot(request("GET", &[])).await.unwrap();
    let tag = got.headers()["etag"].to_str().unwrap().to_owned();
    let before = app.calls();
    let got = router
        .clone()
        .oneshot(request("GET", &[("if-none-match", &tag)]))
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(app.calls(), before, "answered from the cache");
}

#[tokio::test]
async fn vary_on_sets_the_fields_responses_may_vary_on() {
    // By default a response varying on User-Agent is not stored; with
    // User-Agent configured it is, keyed by its value.
    let cache = ValidatorCache::builder()
        .vary_on([header::USER_AGENT])
        .build();
    let (addr, app) = start(cache).await;
    let curl = [("user-agent", "curl/8")];
    let tag = fill(addr, "/vary-ua", &curl).await;
    assert!(!reaches_handler(addr, &app, "/vary-ua", &tag, &curl).await);
    let other = [("user-agent", "wget/1")];
    assert!(reaches_handler(addr, &app, "/vary-ua", &tag, &other).await);
    // Accept-Encoding is no longer one of the fields: /notes/{id} varies on
    // it, so it is not stored.
    let tag = fill(addr, "/notes/20", &[]).await;
    assert!(reaches_handler(addr, &app, "/notes/20", &tag, &[]).await);
}

#[test]
fn the_service_gives_access_to_the_inner_one() {
    let mut service = tower_etag::cache::ValidatorCacheService::new(7_u32, cache());
    assert_eq!(*service.get_ref(), 7);
    *service.get_mut() = 8;
    assert_eq!(service.into_inner(), 8);
}
