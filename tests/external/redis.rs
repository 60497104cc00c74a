//! The validator cache shared by two replicas on a real `redis-server`:
//! each replica is an axum server with its own layer stack and handler-call
//! counter, both read the same data (a database, here a map), and both point
//! at one Redis. Faults are real: the server is killed, restarted, paused
//! with SIGSTOP, its keys overwritten by hand, and one replica's link to it
//! cut. Ignored, with the reason, where redis-server is missing (see
//! `harness`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing, Extension, Router,
};
use tokio::sync::Notify;
use tower_etag::{
    cache::{CacheTags, RedisStore, ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

use crate::{
    common::*,
    harness::{add, Suite, REDIS_SERVER},
    redis_server::{Link, RedisServer},
};

/// The tests of this module, for the harness.
pub(crate) fn add_to(suite: &mut Suite) {
    add!(suite, Some(&REDIS_SERVER), async [
        a_fill_on_one_replica_is_a_hit_on_the_other_until_a_write_on_either,
        a_get_that_read_old_data_on_one_replica_stores_nothing_after_a_write_on_the_other,
        a_get_during_a_write_on_the_other_replica_stores_nothing,
        a_tagged_get_that_read_old_data_stores_nothing_after_its_tag_is_invalidated,
        invalidations_from_app_code_reach_every_replica,
        a_tag_that_a_fill_created_lets_the_next_fill_with_it_store,
        requests_go_to_the_handlers_while_redis_is_down_and_hits_resume_after_a_restart,
        a_paused_redis_costs_each_request_at_most_the_timeout,
        garbage_and_lost_records_in_redis_are_misses,
        an_invalidation_cut_off_from_redis_is_retried_and_its_replica_answers_from_handlers,
        a_redis_restarted_from_an_older_snapshot_never_confirms_a_tag_a_write_replaced,
        a_failover_to_a_replica_that_missed_a_write_never_confirms_the_old_tag,
        a_get_that_read_before_a_rollback_stores_nothing_after_it,
        a_generation_at_2_53_is_replaced_so_that_writes_still_invalidate,
        entries_that_live_for_ever_are_stored_and_invalidated,
    ]);
    // These two need no server.
    add!(
        suite,
        None,
        [a_store_is_refused_for_a_bad_url_or_prefix_or_outside_a_runtime]
    );
    add!(suite, None, async [the_store_counts_what_redis_did_not_answer]);
}

/// What both replicas read and write: a version per note.
#[derive(Clone, Default)]
pub(crate) struct Data {
    pub(crate) versions: Arc<Mutex<HashMap<String, u64>>>,
    /// When set, `GET /gated/..` reads its note and then waits here.
    gate: Arc<Mutex<Option<Arc<Notify>>>>,
    read_done: Arc<Notify>,
    pub(crate) held: Held,
}

/// The steps of `PUT /held/..`: it says it started, waits for `commit`,
/// commits, says so, and waits for `respond`.
#[derive(Clone, Default)]
pub(crate) struct Held {
    pub(crate) started: Arc<Notify>,
    pub(crate) commit: Arc<Notify>,
    pub(crate) committed: Arc<Notify>,
    pub(crate) respond: Arc<Notify>,
}

impl Data {
    pub(crate) fn version(&self, id: &str) -> u64 {
        *self.versions.lock().unwrap().get(id).unwrap_or(&1)
    }
}

#[derive(Clone)]
pub(crate) struct Replica {
    pub(crate) addr: SocketAddr,
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) cache: ValidatorCache,
}

impl Replica {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Whether a revalidation of `path` with `tag` reaches the handler, and
    /// what it got.
    pub(crate) async fn revalidate(&self, path: &str, tag: &str) -> (bool, Received) {
        let before = self.calls();
        let got = fetch(self, path, &[("if-none-match", tag)]).await;
        (self.calls() > before, got)
    }
}

/// The name clients use for the app, whichever replica answers (as behind
/// a load balancer): entries are keyed by authority.
pub(crate) const HOST: &str = "notes.example";

pub(crate) async fn fetch(replica: &Replica, path: &str, headers: &[(&str, &str)]) -> Received {
    let mut headers = headers.to_vec();
    headers.push(("host", HOST));
    get(replica.addr, path, &headers).await
}

pub(crate) async fn put(replica: &Replica, path: &str) -> Result<Received, BoxError> {
    send(replica.addr, request("PUT", path, &[("host", HOST)])).await
}

async fn count(State(calls): State<Arc<AtomicUsize>>, request: Request, next: Next) -> Response {
    calls.fetch_add(1, Ordering::SeqCst);
    next.run(request).await
}

async fn show(State(data): State<Data>, Path(id): Path<String>) -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "max-age=0, must-revalidate"),
            (header::VARY, "accept-encoding"),
        ],
        format!("note {id} v{}", data.version(&id)),
    )
}

async fn update(State(data): State<Data>, Path(id): Path<String>) -> StatusCode {
    *data.versions.lock().unwrap().entry(id).or_insert(1) += 1;
    StatusCode::NO_CONTENT
}

/// A write that says which version it wrote (`x-version`), so that a
/// checker knows which tags the write replaced once it is answered.
async fn versioned_update(State(data): State<Data>, Path(id): Path<String>) -> impl IntoResponse {
    let mut versions = data.versions.lock().unwrap();
    let version = versions.entry(id).or_insert(1);
    *version += 1;
    (StatusCode::NO_CONTENT, [("x-version", version.to_string())])
}

async fn held_update(State(data): State<Data>, Path(id): Path<String>) -> StatusCode {
    let held = data.held.clone();
    held.started.notify_one();
    held.commit.notified().await;
    let status = update(State(data), Path(id)).await;
    held.committed.notify_one();
    held.respond.notified().await;
    status
}

async fn gated(State(data): State<Data>, Path(id): Path<String>) -> String {
    let body = format!("note {id} v{}", data.version(&id));
    let gate = data.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        data.read_done.notify_one();
        gate.notified().await;
    }
    body
}

async fn gated_tagged(data: State<Data>, id: Path<String>) -> impl IntoResponse {
    let tags = CacheTags::new([format!("user:{}", id.0)]);
    (Extension(tags), gated(data, id).await)
}

async fn tagged(State(data): State<Data>, Path(id): Path<String>) -> impl IntoResponse {
    (
        Extension(CacheTags::new([format!("user:{id}")])),
        format!("user {id} v{}", data.version(&id)),
    )
}

pub(crate) const PREFIX: &str = "test";

pub(crate) fn store(url: &str, timeout: Duration) -> RedisStore {
    RedisStore::builder(url)
        .prefix(PREFIX)
        .secret("replicas' shared secret")
        .timeout(timeout)
        .build()
        .unwrap()
}

pub(crate) async fn replica(url: &str, data: &Data, timeout: Duration) -> Replica {
    replica_living(url, data, timeout, Duration::from_secs(60)).await
}

/// A replica whose entries live `time_to_live`.
pub(crate) async fn replica_living(
    url: &str,
    data: &Data,
    timeout: Duration,
    time_to_live: Duration,
) -> Replica {
    replica_with(store(url, timeout), data, time_to_live).await
}

/// A replica on `store`, whose entries live `time_to_live`.
pub(crate) async fn replica_with(
    store: RedisStore,
    data: &Data,
    time_to_live: Duration,
) -> Replica {
    let cache = ValidatorCache::builder()
        .time_to_live(time_to_live)
        .redis(store)
        .build();
    replica_on(cache, data).await
}

/// A replica with `cache`.
pub(crate) async fn replica_on(cache: ValidatorCache, data: &Data) -> Replica {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route("/notes/{id}", routing::get(show).put(update))
        .route("/gated/{id}", routing::get(gated).put(update))
        .route("/tagged/{id}", routing::get(tagged).put(update))
        .route("/held/{id}", routing::get(show).put(held_update))
        .route("/gated-tagged/{id}", routing::get(gated_tagged))
        .route("/v/{id}", routing::get(show).put(versioned_update))
        .layer(middleware::from_fn_with_state(calls.clone(), count))
        .layer(ETagLayer::new())
        .layer(ValidatorCacheLayer::new(cache.clone()))
        .with_state(data.clone());
    let addr = serve_axum(router).await;
    Replica { addr, calls, cache }
}

/// Two replicas of one app on the same data and the same Redis.
pub(crate) async fn two_replicas(redis: &RedisServer) -> (Data, Replica, Replica) {
    let data = Data::default();
    let a = replica(&redis.url(), &data, PATIENT).await;
    let b = replica(&redis.url(), &data, PATIENT).await;
    (data, a, b)
}

/// Starts a `GET` of a gated route through `replica` and returns once its
/// handler has read the data: it then waits until the returned gate is
/// notified.
pub(crate) async fn gated_get(
    data: &Data,
    replica: &Replica,
    path: &'static str,
) -> (Arc<Notify>, tokio::task::JoinHandle<Received>) {
    let gate = Arc::new(Notify::new());
    *data.gate.lock().unwrap() = Some(gate.clone());
    let read = data.read_done.notified();
    let slow = tokio::spawn({
        let replica = replica.clone();
        async move { fetch(&replica, path, &[]).await }
    });
    read.await;
    *data.gate.lock().unwrap() = None;
    (gate, slow)
}

/// Lets a GET started by [`gated_get`] finish: checks that it answered
/// `body` (what it read before it waited), gives its fill time to land,
/// and returns its tag.
pub(crate) async fn finish_gated_get(
    gate: Arc<Notify>,
    slow: tokio::task::JoinHandle<Received>,
    body: &str,
) -> String {
    gate.notify_one();
    let old = slow.await.unwrap();
    assert_eq!(old.body, body);
    // Give its fill every chance to land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    old.etag().unwrap().to_owned()
}

/// Generous for functional tests on a busy machine: a timeout here would
/// turn an expected hit into a miss.
pub(crate) const PATIENT: Duration = Duration::from_millis(500);

/// Waits until `done` holds (fills are stored in the background).
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// GETs `path` through `replica` and waits until its fill is stored.
/// GETs `path` through `replica` until its fill is stored (fills are stored
/// in the background; on a busy machine one may miss a short timeout, and a
/// GET that arrives while a write is still ending stores nothing).
pub(crate) async fn fill(replica: &Replica, path: &str) -> String {
    let fills = replica.cache.stats().fills;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = fetch(replica, path, &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        let waited = Instant::now() + Duration::from_millis(500);
        while Instant::now() < waited {
            if replica.cache.stats().fills > fills {
                return got.etag().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the fill of {path}: {:?}",
            replica.cache.stats()
        );
    }
}

async fn a_fill_on_one_replica_is_a_hit_on_the_other_until_a_write_on_either() {
    let redis = RedisServer::start();
    let (_, a, b) = two_replicas(&redis).await;

    let tag = fill(&a, "/notes/1").await;
    assert_eq!(a.calls(), 1);

    // B has never served /notes/1, yet answers from the shared entry.
    let (reached, got) = b.revalidate("/notes/1", &tag).await;
    assert!(!reached, "B's handler is not called");
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    assert_eq!(got.etag(), Some(tag.as_str()));
    assert_eq!(got.header("vary"), Some("accept-encoding"));
    assert_eq!(
        got.header("cache-control"),
        Some("max-age=0, must-revalidate")
    );
    assert!(got.header("date").is_some());
    assert_eq!(b.calls(), 0);
    assert_eq!(b.cache.stats().hits, 1);

    // A write through B invalidates for A too.
    let put = put(&b, "/notes/1").await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let (reached, got) = a.revalidate("/notes/1", &tag).await;
    assert!(reached, "A's handler runs after B's write");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "note 1 v2");
    let new_tag = got.etag().unwrap().to_owned();
    assert_ne!(new_tag, tag);

    // The new tag is shared again once stored. (A GET that arrives before
    // the write has ended in Redis stores nothing: this one may be such.)
    let deadline = Instant::now() + TIMEOUT;
    while a.cache.stats().fills < 2 {
        assert!(Instant::now() < deadline, "no refill");
        let _ = fetch(&a, "/notes/1", &[]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (reached, got) = b.revalidate("/notes/1", &new_tag).await;
    assert!(!reached);
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    // The old tag stays a miss everywhere.
    assert!(b.revalidate("/notes/1", &tag).await.0);
    assert_eq!(a.cache.stats().unavailable, 0);
    assert_eq!(b.cache.stats().unavailable, 0);
}

async fn a_get_that_read_old_data_on_one_replica_stores_nothing_after_a_write_on_the_other() {
    let redis = RedisServer::start();
    let (data, a, b) = two_replicas(&redis).await;

    // A's GET reads version 1, then waits.
    let (gate, slow) = gated_get(&data, &a, "/gated/7").await;

    // Meanwhile B writes version 2 and answers.
    let put = put(&b, "/gated/7").await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    // A's GET finishes with the old data and its tag.
    let old_tag = finish_gated_get(gate, slow, "note 7 v1").await;
    assert_eq!(a.cache.stats().fills, 0, "the fill was refused");

    for replica in [&a, &b] {
        let (reached, got) = replica.revalidate("/gated/7", &old_tag).await;
        assert!(reached, "no replica confirms the old tag");
        assert_eq!(got.body, "note 7 v2");
    }
}

async fn a_get_during_a_write_on_the_other_replica_stores_nothing() {
    let redis = RedisServer::start();
    let (data, a, b) = two_replicas(&redis).await;
    let tag = fill(&a, "/held/8").await;

    // B's write has begun (its arrival invalidated the entry) and holds
    // before it commits.
    let started = data.held.started.notified();
    let write = tokio::spawn({
        let b = b.clone();
        async move { put(&b, "/held/8").await }
    });
    started.await;
    // A GET through A reads the old data meanwhile: it must store nothing...
    let during = fetch(&a, "/held/8", &[]).await;
    assert_eq!(during.etag(), Some(tag.as_str()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...for once the write commits, an entry stored now would confirm the
    // old tag until the write's response ends it.
    let committed = data.held.committed.notified();
    data.held.commit.notify_one();
    committed.await;
    for replica in [&a, &b] {
        let (reached, got) = replica.revalidate("/held/8", &tag).await;
        assert!(reached, "the old tag is not confirmed after the commit");
        assert_eq!(got.body, "note 8 v2");
    }
    data.held.respond.notify_one();
    assert_eq!(write.await.unwrap().unwrap().status, StatusCode::NO_CONTENT);
}

async fn a_tagged_get_that_read_old_data_stores_nothing_after_its_tag_is_invalidated() {
    let redis = RedisServer::start();
    let (data, a, b) = two_replicas(&redis).await;

    // A's GET reads version 1, then waits.
    let (gate, slow) = gated_get(&data, &a, "/gated-tagged/9").await;
    // App code changes the data behind the layer and invalidates its tag
    // through B: the resource's own generation does not move.
    *data.versions.lock().unwrap().entry("9".into()).or_insert(1) += 1;
    b.cache.invalidate_tag("user:9").await;
    let old_tag = finish_gated_get(gate, slow, "note 9 v1").await;
    assert_eq!(a.cache.stats().fills, 0, "the fill was refused");
    let (reached, got) = b.revalidate("/gated-tagged/9", &old_tag).await;
    assert!(reached, "the old tag is not confirmed");
    assert_eq!(got.body, "note 9 v2");
}

async fn a_tag_that_a_fill_created_lets_the_next_fill_with_it_store() {
    let redis = RedisServer::start();
    let (_, a, b) = two_replicas(&redis).await;
    until_shared(&a, &[&b], "/notes/1").await;
    // Two resources with the tag `user:5`, filled one right after the
    // other: the first creates the tag, which refuses no fill (only an
    // invalidation after a request arrived does).
    let first = fill(&a, "/tagged/5").await;
    let fills = a.cache.stats().fills;
    let second = fetch(&a, "/tagged/5?page=2", &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.cache.stats().fills,
        fills + 1,
        "the second fill was refused"
    );
    let second = second.etag().unwrap().to_owned();
    assert!(!b.revalidate("/tagged/5", &first).await.0);
    assert!(!b.revalidate("/tagged/5?page=2", &second).await.0);
}

async fn invalidations_from_app_code_reach_every_replica() {
    let redis = RedisServer::start();
    let (_, a, b) = two_replicas(&redis).await;

    // Surrogate tags.
    let tag = fill(&a, "/tagged/3").await;
    assert!(!b.revalidate("/tagged/3", &tag).await.0);
    b.cache.invalidate_tag("user:3").await;
    assert!(a.revalidate("/tagged/3", &tag).await.0);
    // For a second after a tag's invalidation (the margin for two Redis
    // servers' clocks), responses with it are not stored: one may have
    // been made before the invalidation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.cache.stats().fills,
        1,
        "stored right after the invalidation"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(a.revalidate("/tagged/3", &tag).await.0);
    // A fill of a tagged response is shared, and another tag leaves it be.
    eventually("the refill", || a.cache.stats().fills >= 2).await;
    b.cache.invalidate_tag("user:4").await;
    assert!(!b.revalidate("/tagged/3", &tag).await.0);

    // A URI.
    let tag = fill(&a, "/notes/5").await;
    assert!(!b.revalidate("/notes/5", &tag).await.0);
    b.cache.invalidate(&"/notes/5".parse().unwrap()).await;
    assert!(a.revalidate("/notes/5", &tag).await.0);

    // Everything.
    let tag = fill(&a, "/notes/6").await;
    assert!(!b.revalidate("/notes/6", &tag).await.0);
    b.cache.clear().await;
    assert!(a.revalidate("/notes/6", &tag).await.0);
}

/// Sends `n` revalidations of `path` with `tag` one after another; checks
/// each is a correct answer (304 for the current tag, never a 5xx) within
/// `bound`; returns how many were hits.
async fn run(replica: &Replica, path: &str, tag: &str, n: usize, bound: Duration) -> usize {
    let mut hits = 0;
    for _ in 0..n {
        let started = Instant::now();
        let before = replica.calls();
        let got = fetch(replica, path, &[("if-none-match", tag)]).await;
        let took = started.elapsed();
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "the tag is current");
        assert!(took < bound, "answered in {took:?}, bound {bound:?}");
        if replica.calls() == before {
            hits += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    hits
}

/// The store's timeout in the fault tests, and what a request may take at
/// most: the timeout, the handler and the client on a busy machine.
pub(crate) const TIMEOUT_FAULTS: Duration = Duration::from_millis(25);
const BOUND: Duration = Duration::from_millis(1000);

async fn requests_go_to_the_handlers_while_redis_is_down_and_hits_resume_after_a_restart() {
    let mut redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let tag = fill(&a, "/notes/1").await;
    assert!(run(&a, "/notes/1", &tag, 5, BOUND).await > 0);

    // Killed in the middle of a run of requests.
    let requests = tokio::spawn({
        let a = a.clone();
        let tag = tag.clone();
        async move { run(&a, "/notes/1", &tag, 100, BOUND).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    redis.stop();
    requests.await.unwrap();
    let calls = a.calls();
    let down = run(&a, "/notes/1", &tag, 20, BOUND).await;
    assert_eq!(down, 0, "no hits without Redis");
    assert_eq!(a.calls(), calls + 20, "every request reached the handler");
    assert!(a.cache.stats().unavailable >= 20);

    // A write while Redis is down is remembered.
    let put = put(&a, "/notes/1").await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    // Restarted (empty): the store reconnects by itself, fills and hits
    // resume.
    redis.restart();
    let new_tag = fetch(&a, "/notes/1", &[]).await.etag().unwrap().to_owned();
    assert_ne!(new_tag, tag);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let _ = fetch(&a, "/notes/1", &[]).await;
        if run(&a, "/notes/1", &new_tag, 1, BOUND).await == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "hits never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_redis_restarted_from_an_older_snapshot_never_confirms_a_tag_a_write_replaced() {
    let mut redis = RedisServer::start();
    let (data, a, b) = two_replicas(&redis).await;
    let tag = fill(&a, "/notes/1").await;
    let (reached, got) = b.revalidate("/notes/1", &tag).await;
    assert!(!reached);
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    // A snapshot with the entry and the generation it was stored under.
    redis.command(&["SAVE"]).unwrap();
    // A write invalidates it, acknowledged by Redis.
    write_replaces(&a, &b, "/notes/1", &tag).await;
    // Redis crashes and starts again from the snapshot: the entry and its
    // generation are back, the invalidation is lost.
    redis.restart();
    assert!(
        redis.keys(PREFIX).iter().any(|key| key.contains(":e:")),
        "the snapshot brought the entry back"
    );
    // A replica that starts now has never seen this dataset before.
    let c = replica(&redis.url(), &data, PATIENT).await;
    until_shared(&a, &[&b, &c], "/notes/2").await;
    assert_none_confirms(&[("A", &a), ("B", &b), ("C", &c)], "/notes/1", &tag).await;
}

/// Waits until an entry `writer` stores for `path` is a hit on every one of
/// `readers`: they all reach Redis, and entries stored now are trusted.
pub(crate) async fn until_shared(writer: &Replica, readers: &[&Replica], path: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stored = fetch(writer, path, &[]).await.etag().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut hits = 0;
        for reader in readers {
            if !reader.revalidate(path, &stored).await.0 {
                hits += 1;
            }
        }
        if hits == readers.len() {
            return stored;
        }
        assert!(Instant::now() < deadline, "Redis not reached again");
    }
}

/// A `PUT` of `path` through `writer`, after which `reader` no longer
/// confirms `tag`: its handler answers, with a 200.
pub(crate) async fn write_replaces(writer: &Replica, reader: &Replica, path: &str, tag: &str) {
    assert_eq!(
        put(writer, path).await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    let (reached, got) = reader.revalidate(path, tag).await;
    assert!(reached, "a miss after the write");
    assert_eq!(got.status, StatusCode::OK);
}

/// Asserts that none of `replicas` confirms `tag` for `path`.
pub(crate) async fn assert_none_confirms(replicas: &[(&str, &Replica)], path: &str, tag: &str) {
    for (name, replica) in replicas {
        let (reached, got) = replica.revalidate(path, tag).await;
        assert_eq!(got.status, StatusCode::OK, "{name}: a stale 304");
        assert!(reached);
    }
}

async fn a_get_that_read_before_a_rollback_stores_nothing_after_it() {
    let mut redis = RedisServer::start();
    let (data, a, b) = two_replicas(&redis).await;
    until_shared(&a, &[&b], "/notes/2").await;
    // A's GET looks up its generation and reads version 1, then waits.
    let (gate, slow) = gated_get(&data, &a, "/gated/7").await;
    // A snapshot with that generation; then B writes version 2, which
    // moves it on.
    redis.command(&["SAVE"]).unwrap();
    assert_eq!(
        put(&b, "/gated/7").await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    // Redis restarts from the snapshot: the generation A read is current
    // again. Both replicas reach it again, past the rollback's margin.
    redis.restart();
    until_shared(&a, &[&b], "/notes/3").await;
    // A's GET ends with version 1; its fill must not store it.
    let old_tag = finish_gated_get(gate, slow, "note 7 v1").await;
    assert_none_confirms(&[("A", &a), ("B", &b)], "/gated/7", &old_tag).await;
}

async fn a_failover_to_a_replica_that_missed_a_write_never_confirms_the_old_tag() {
    let master = RedisServer::start();
    let mut replica_server = RedisServer::start();
    // Replication goes through a link the test can cut.
    let replication = Link::start(master.addr()).await;
    replica_server
        .command(&[
            "REPLICAOF",
            "127.0.0.1",
            &replication.addr.port().to_string(),
        ])
        .unwrap();
    // The replicas reach Redis through one address, as behind a managed
    // endpoint or a proxy that follows the failover.
    let link = Link::start(master.addr()).await;
    let data = Data::default();
    let a = replica(&link.url(), &data, PATIENT).await;
    let b = replica(&link.url(), &data, PATIENT).await;
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    // The Redis replica has the entry and its generation.
    let deadline = Instant::now() + TIMEOUT;
    while !replica_server
        .keys(PREFIX)
        .iter()
        .any(|key| key.contains(":e:"))
    {
        assert!(Instant::now() < deadline, "the entry did not replicate");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generation_key = replica_server
        .keys(PREFIX)
        .into_iter()
        .find(|key| key.ends_with(":g"))
        .unwrap();
    let generation = |server: &RedisServer| server.command(&["GET", &generation_key]).unwrap();
    let before = generation(&replica_server);
    // Replication is cut while the write's invalidation is acknowledged by
    // the master, which then dies.
    replication.cut();
    write_replaces(&a, &b, "/notes/1", &tag).await;
    drop(master);
    replica_server.command(&["REPLICAOF", "NO", "ONE"]).unwrap();
    assert_eq!(
        generation(&replica_server),
        before,
        "the promoted server missed the write's invalidation"
    );
    link.switch_to(replica_server.addr());
    // The promoted server has the entry of note 1 and the generation the
    // write had moved on; no replica confirms the old tag once both reach it.
    until_shared(&a, &[&b], "/notes/2").await;
    assert_none_confirms(&[("A", &a), ("B", &b)], "/notes/1", &tag).await;
    replica_server.stop();
}

async fn a_generation_at_2_53_is_replaced_so_that_writes_still_invalidate() {
    let redis = RedisServer::start();
    let (_, a, b) = two_replicas(&redis).await;
    fill(&a, "/notes/1").await;
    // A generation at 2^53, where Lua's doubles make g + 1 == g.
    let generations: Vec<String> = redis
        .keys(PREFIX)
        .into_iter()
        .filter(|key| key.ends_with(":g"))
        .collect();
    assert_eq!(generations.len(), 1);
    redis
        .command(&["SET", &generations[0], "9007199254740992"])
        .unwrap();
    let tag = fill(&a, "/notes/1").await;
    assert!(
        !b.revalidate("/notes/1", &tag).await.0,
        "a hit before the write"
    );
    write_replaces(&a, &b, "/notes/1", &tag).await;
}

async fn entries_that_live_for_ever_are_stored_and_invalidated() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica_living(&redis.url(), &data, PATIENT, Duration::MAX).await;
    let b = replica_living(&redis.url(), &data, PATIENT, Duration::MAX).await;
    let tag = fill(&a, "/notes/1").await;
    assert!(!b.revalidate("/notes/1", &tag).await.0, "a hit");
    write_replaces(&a, &b, "/notes/1", &tag).await;
    assert_eq!(a.cache.stats().unavailable, 0);
    assert_eq!(b.cache.stats().unavailable, 0);
}

async fn a_paused_redis_costs_each_request_at_most_the_timeout() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let tag = fill(&a, "/notes/1").await;

    redis.pause();
    let calls = a.calls();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let got = fetch(&a, "/notes/1", &[("if-none-match", &tag)]).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    }
    assert_eq!(
        a.calls(),
        calls + 20,
        "every request fell back to the handler"
    );
    assert!(slowest >= TIMEOUT_FAULTS, "each waited for Redis first");
    assert!(slowest < BOUND, "slowest {slowest:?}");
    // A write while paused.
    let put = put(&a, "/notes/1").await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let got = fetch(&a, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::OK);
    let new_tag = got.etag().unwrap().to_owned();
    eprintln!("paused Redis: slowest request {slowest:?} (timeout {TIMEOUT_FAULTS:?})");

    redis.resume();
    // The old tag is never confirmed again; the new one is, once stored.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (reached, got) = a.revalidate("/notes/1", &tag).await;
        assert!(reached && got.status == StatusCode::OK, "stale 304");
        let (reached, _) = a.revalidate("/notes/1", &new_tag).await;
        if !reached {
            break;
        }
        assert!(Instant::now() < deadline, "hits never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn garbage_and_lost_records_in_redis_are_misses() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, PATIENT).await;
    let tag = fill(&a, "/notes/1").await;
    assert!(!a.revalidate("/notes/1", &tag).await.0);

    let keys = redis.keys(PREFIX);
    let entry = keys.iter().find(|k| k.contains(":e:")).unwrap().clone();
    let generation = keys.iter().find(|k| k.ends_with(":g")).unwrap().clone();
    // The keys of one URI share a hash slot (Redis Cluster), the entry
    // expires at the time-to-live (60 s here), and no key names the URI.
    let slot = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_owned();
    assert_eq!(slot(&entry), slot(&generation));
    let pttl = redis.command(&["PTTL", &entry]).unwrap();
    assert!(
        matches!(pttl, redis::Value::Int(ms) if ms > 50_000 && ms <= 60_000),
        "{pttl:?}"
    );
    assert!(keys.iter().all(|k| !k.contains("notes")), "{keys:?}");

    // Scripts flushed from Redis are loaded again (NOSCRIPT): still a hit.
    redis.command(&["SCRIPT", "FLUSH"]).unwrap();
    assert!(!a.revalidate("/notes/1", &tag).await.0);
    assert_eq!(a.cache.stats().unavailable, 0);

    // A generation lost (evicted, or Redis restarted without it) while its
    // entry survives: a miss, and the refill works.
    redis.command(&["DEL", &generation]).unwrap();
    assert!(a.revalidate("/notes/1", &tag).await.0, "a miss");
    let fills = a.cache.stats().fills;
    let _ = fetch(&a, "/notes/1", &[]).await;
    eventually("the refill", || a.cache.stats().fills > fills).await;
    assert!(!a.revalidate("/notes/1", &tag).await.0);

    // Garbage written by hand, in several shapes.
    let garbage: [&[&[&str]]; 8] = [
        &[&["SET", &entry, "garbage"]],
        // The stored-at prefix, then another format's version byte.
        &[&[
            "SET",
            &entry,
            "123:\u{1}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{9}",
        ]],
        // This format's version byte, then a truncated entry.
        &[&[
            "SET",
            &entry,
            "123:\u{2}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{9}",
        ]],
        // No stored-at prefix.
        &[&[
            "SET",
            &entry,
            "\u{2}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{9}",
        ]],
        &[&["SET", &generation, "not a number"]],
        &[&["SET", &generation, "-1"], &["DEL", &entry]],
        &[&["SET", &generation, "1e3"]],
        &[&["DEL", &entry], &["RPUSH", &entry, "a list"]],
    ];
    for commands in garbage {
        for command in commands {
            redis.command(command).unwrap();
        }
        let (reached, got) = a.revalidate("/notes/1", &tag).await;
        assert!(reached, "{commands:?}: a miss");
        assert_eq!(got.status, StatusCode::NOT_MODIFIED, "{commands:?}");
    }
    // Every key of another type.
    for key in redis.keys(PREFIX) {
        redis.command(&["DEL", &key]).unwrap();
        redis.command(&["HSET", &key, "f", "v"]).unwrap();
    }
    let (reached, got) = a.revalidate("/notes/1", &tag).await;
    assert!(reached);
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    let put = put(&a, "/notes/1").await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    // And once the keys are fixed by a fill, hits resume.
    for key in redis.keys(PREFIX) {
        redis.command(&["DEL", &key]).unwrap();
    }
    let tag = fill(&a, "/notes/1").await;
    assert!(!a.revalidate("/notes/1", &tag).await.0);
}

async fn an_invalidation_cut_off_from_redis_is_retried_and_its_replica_answers_from_handlers() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    // B reaches Redis through a link the test can cut.
    let link = Link::start(redis.addr()).await;
    let b = replica(&link.url(), &data, TIMEOUT_FAULTS).await;
    // B has connected (its first connection, verified, may take longer
    // than this test's short timeout).
    until_shared(&a, &[&b], "/notes/2").await;
    let tag = fill(&a, "/notes/1").await;
    assert!(!b.revalidate("/notes/1", &tag).await.0);

    // B is cut off from Redis and takes a write.
    link.cut();
    let put = put(&b, "/notes/1").await.unwrap();
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let written = Instant::now();

    // B itself never confirms the old tag.
    for _ in 0..5 {
        let (reached, got) = b.revalidate("/notes/1", &tag).await;
        assert!(reached);
        assert_eq!(got.body, "note 1 v2");
    }
    // A cannot know: it still answers from the old entry (the staleness a
    // partition allows, bounded by the time-to-live).
    let (reached, got) = a.revalidate("/notes/1", &tag).await;
    assert!(!reached && got.status == StatusCode::NOT_MODIFIED);

    // The link comes back: B's retry lands by itself, with no request to B.
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.restore();
    let restored = Instant::now();
    let deadline = restored + TIMEOUT;
    loop {
        let (reached, got) = a.revalidate("/notes/1", &tag).await;
        if reached {
            assert_eq!(got.body, "note 1 v2");
            break;
        }
        assert!(Instant::now() < deadline, "the retry never landed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "stale 304s on the other replica: for {:?} after the write, {:?} after the link returned",
        written.elapsed(),
        restored.elapsed()
    );
    // B answers from the cache again once the retry landed. (A's
    // revalidation above may already have stored the new tag; a GET through
    // A stores it otherwise.)
    let tag = fetch(&a, "/notes/1", &[]).await.etag().unwrap().to_owned();
    let deadline = Instant::now() + TIMEOUT;
    while b.revalidate("/notes/1", &tag).await.0 {
        assert!(Instant::now() < deadline, "B never hit again");
        let _ = fetch(&a, "/notes/1", &[]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn a_store_is_refused_for_a_bad_url_or_prefix_or_outside_a_runtime() {
    let build = |url: &str, prefix: &str| {
        RedisStore::builder(url)
            .prefix(prefix)
            .secret("s3cret")
            .build()
    };
    // No Tokio runtime here.
    let error = build("redis://127.0.0.1:1/", "app").unwrap_err();
    assert!(error.to_string().contains("Tokio runtime"), "{error}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    assert!(build("not a url", "app").is_err());
    let error = build("redis://127.0.0.1:1/", "a{b}").unwrap_err();
    assert!(error.to_string().contains("prefix"), "{error}");
    // TLS needs its feature; without it, the error says which.
    let tls = build("rediss://127.0.0.1:1/", "app");
    if cfg!(feature = "redis-tls") {
        assert!(tls.is_ok(), "{tls:?}");
    } else {
        let error = tls.unwrap_err();
        assert!(error.to_string().contains("redis-tls"), "{error}");
    }
    // Lazy: a store for a Redis that is not there builds, and answers
    // nothing yet. Its Debug shows neither the URL's password nor the secret.
    let store = build("redis://user:hunter2@127.0.0.1:1/", "app").unwrap();
    assert_eq!(store.unavailable(), 0);
    let shown = format!(
        "{store:?} {:?}",
        RedisStore::builder("redis://user:hunter2@h/").secret("s3cret")
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
}

async fn the_store_counts_what_redis_did_not_answer() {
    // Nothing listens on this port: every lookup fails within the timeout.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = Data::default();
    let store = store(&format!("redis://127.0.0.1:{port}/"), TIMEOUT_FAULTS);
    let cache = ValidatorCache::builder().redis(store.clone()).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route("/notes/{id}", routing::get(show))
        .layer(middleware::from_fn_with_state(calls.clone(), count))
        .layer(ETagLayer::new())
        .layer(ValidatorCacheLayer::new(cache.clone()))
        .with_state(data);
    let a = Replica {
        addr: serve_axum(router).await,
        calls,
        cache,
    };
    for _ in 0..3 {
        assert_eq!(fetch(&a, "/notes/1", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(a.calls(), 3);
    assert!(store.unavailable() >= 3, "{}", store.unavailable());
    assert_eq!(store.unavailable(), a.cache.stats().unavailable);
}
