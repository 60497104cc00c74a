//! Writes on the shared cache when Redis misbehaves, on a real
//! `redis-server`: the write's end waited for before its response, strict
//! writes refused when Redis does not confirm them, write ends and long
//! backlogs of invalidations retried until they land, `FLUSHALL`, eviction
//! under `maxmemory`, and chaos runs (Redis paused, killed and restarted
//! empty or from a snapshot, at random, while two replicas read and write).
//!
//! What every test checks is the cache's promise as a client sees it: a
//! `GET` that starts after a write's response never gets a 304 for a tag the
//! write replaced (strict writes: never; default writes: only until the
//! writer's retry lands, at most about a second after Redis answers again).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use tower_etag::cache::RedisStore;

use crate::{
    common::*,
    harness::{add, Suite, REDIS_SERVER},
    redis::*,
    redis_server::{Link, RedisServer},
};

/// The tests of this module, for the harness.
pub(crate) fn add_to(suite: &mut Suite) {
    add!(suite, Some(&REDIS_SERVER), async [
        a_writes_response_waits_until_its_end_has_landed,
        a_write_slower_than_the_time_to_live_leaves_no_stale_tag,
        a_strict_write_that_redis_does_not_confirm_is_refused_and_writes_nothing,
        a_patient_write_waits_out_a_short_outage_in_both_modes,
        cache_status_tells_a_fill_handed_to_redis_and_a_redis_that_does_not_answer,
        a_write_end_that_did_not_land_is_retried_and_fills_resume,
        a_write_end_slowed_by_a_script_load_is_retried_and_fills_resume,
        thousands_of_pending_invalidations_land_once_redis_answers,
        past_the_bound_pending_invalidations_become_one_clear,
        flushall_leaves_no_old_tag_confirmed,
        commands_sent_per_hit_miss_fill_and_write,
        a_uri_looked_up_and_never_stored_leaves_a_short_lived_key,
        under_maxmemory_with_allkeys_lru_no_read_confirms_a_replaced_tag,
        grpc_calls_succeed_while_redis_is_away_in_both_write_modes,
        chaos_with_strict_writes_no_read_confirms_a_replaced_tag,
        chaos_with_default_writes_a_replaced_tag_is_confirmed_only_until_the_retry,
    ]);
    #[cfg(feature = "metrics")]
    add!(suite, Some(&REDIS_SERVER), async [
        redis_that_stops_answering_shows_in_the_availability_gauge_and_the_counters,
    ]);
}

/// A store like `redis::store`'s, with strict writes.
fn strict_store(url: &str, timeout: Duration) -> RedisStore {
    RedisStore::builder(url)
        .prefix(PREFIX)
        .secret("replicas' shared secret")
        .timeout(timeout)
        .strict_writes(true)
        .build()
        .unwrap()
}

const LIVE: Duration = Duration::from_secs(60);

/// Asserts that `tag` is not confirmed from the cache by any of
/// `replicas`: each revalidation reaches the handler (which may answer 304
/// itself, the data being unchanged).
async fn assert_all_miss(replicas: &[(&str, &Replica)], path: &str, tag: &str) {
    for (name, replica) in replicas {
        let (reached, _) = replica.revalidate(path, tag).await;
        assert!(reached, "{name}: answered from the cache");
    }
}

/// Redis, a link to it the test controls, and two replicas: `a` through the
/// link, `b` directly; both reach Redis when it returns.
struct Linked {
    redis: RedisServer,
    link: Link,
    data: Data,
    a: Replica,
    b: Replica,
}

async fn linked(timeout: Duration, time_to_live: Duration) -> Linked {
    let redis = RedisServer::start();
    let link = Link::start(redis.addr()).await;
    let data = Data::default();
    let a = replica_living(&link.url(), &data, timeout, time_to_live).await;
    let b = replica_living(&redis.url(), &data, timeout, time_to_live).await;
    until_shared(&a, &[&b], "/notes/0").await;
    Linked {
        redis,
        link,
        data,
        a,
        b,
    }
}

/// Starts a `PUT` of a `/held/..` path through `replica` and returns once
/// its handler runs (the write has begun in Redis); the handler then waits
/// for `held.commit` and `held.respond`.
async fn held_put(
    held: &Held,
    replica: &Replica,
    path: &'static str,
) -> tokio::task::JoinHandle<Received> {
    let replica = replica.clone();
    let write = tokio::spawn(async move { put(&replica, path).await.unwrap() });
    held.started.notified().await;
    write
}

/// The keys of the writes under way.
fn writes_under_way(redis: &RedisServer) -> Vec<String> {
    let mut keys = redis.keys(PREFIX);
    keys.retain(|key| key.ends_with(":w"));
    keys
}

/// How the record of a write under way is lost while the write runs.
#[derive(Clone, Copy, Debug)]
enum Lost {
    /// Deleted (as eviction or a `clear` would).
    Deleted,
    /// Expired: the write outlived the time-to-live.
    Expired,
}

async fn a_writes_response_waits_until_its_end_has_landed() {
    response_waits_for_the_end(Lost::Deleted).await;
}

async fn a_write_slower_than_the_time_to_live_leaves_no_stale_tag() {
    response_waits_for_the_end(Lost::Expired).await;
}

async fn response_waits_for_the_end(lost: Lost) {
    let time_to_live = match lost {
        Lost::Deleted => LIVE,
        Lost::Expired => Duration::from_secs(1),
    };
    // The writer reaches Redis through a link the test slows down.
    let Linked {
        redis,
        link,
        data,
        a,
        b,
    } = linked(PATIENT, time_to_live).await;
    // A PUT through A has begun in Redis; its handler waits.
    let held = data.held.clone();
    let write = held_put(&held, &a, "/held/1").await;
    // The record of the write under way is lost.
    let writes = writes_under_way(&redis);
    assert_eq!(writes.len(), 1, "the write is under way in Redis");
    match lost {
        Lost::Deleted => {
            redis.command(&["DEL", &writes[0]]).unwrap();
        }
        Lost::Expired => {
            let deadline = Instant::now() + TIMEOUT;
            while !writes_under_way(&redis).is_empty() {
                assert!(Instant::now() < deadline, "the record did not expire");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // So B's GET, which reads the old note, stores it.
    let old = fill(&b, "/held/1").await;
    // The write commits and answers while A's link to Redis is slow: its
    // end lands 100 ms after the handler's response.
    held.commit.notify_one();
    held.committed.notified().await;
    link.slow_down(Duration::from_millis(100));
    held.respond.notify_one();
    assert_eq!(write.await.unwrap().status, StatusCode::NO_CONTENT);
    // The PUT has been answered: no replica confirms the tag it replaced.
    let (reached, got) = b.revalidate("/held/1", &old).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "a stale 304 right after the write's response"
    );
    assert!(reached);
    link.slow_down(Duration::ZERO);
    assert_none_confirms(&[("A", &a), ("B", &b)], "/held/1", &old).await;
}

async fn a_patient_write_waits_out_a_short_outage_in_both_modes() {
    let redis = Arc::new(RedisServer::start());
    let data = Data::default();
    let patient = |strict: bool| {
        RedisStore::builder(redis.url())
            .prefix(PREFIX)
            .secret("replicas' shared secret")
            .timeout(TIMEOUT_FAULTS)
            .strict_writes(strict)
            .write_patience(Duration::from_secs(3))
            .build()
            .unwrap()
    };
    let reader = replica(&redis.url(), &data, PATIENT).await;
    for (strict, path) in [(true, "/v/1"), (false, "/v/2")] {
        let writer = replica_with(patient(strict), &data, LIVE).await;
        let tag = until_shared(&writer, &[&reader], path).await;
        // Redis stops answering for 400 ms while the write arrives.
        redis.pause();
        let resumed = tokio::task::spawn_blocking({
            let redis = Arc::clone(&redis);
            move || {
                std::thread::sleep(Duration::from_millis(400));
                redis.resume();
            }
        });
        let started = Instant::now();
        let got = put(&writer, path).await.unwrap();
        let waited = started.elapsed();
        resumed.await.unwrap();
        // Neither refused nor gone on without Redis: it waited, and its
        // arrival landed before its handler ran.
        assert_eq!(got.status, StatusCode::NO_CONTENT, "strict: {strict}");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert_eq!(writer.cache.stats().pending, 0, "nothing left to retry");
        eprintln!("strict: {strict}: the write waited {waited:?} for Redis");
        // So no replica confirms the replaced tag, from the response on.
        assert_none_confirms(&[("writer", &writer), ("reader", &reader)], path, &tag).await;
    }
}

async fn cache_status_tells_a_fill_handed_to_redis_and_a_redis_that_does_not_answer() {
    let redis = RedisServer::start();
    let data = Data::default();
    let cache = tower_etag::cache::ValidatorCache::builder()
        .cache_status("notes-cache")
        .redis(strict_store(&redis.url(), TIMEOUT_FAULTS))
        .build();
    let replica = replica_on(cache, &data).await;
    let status = |got: &Received| got.header("cache-status").unwrap_or_default().to_owned();
    // Redis stores a fill after the response: the member says so.
    let deadline = Instant::now() + TIMEOUT;
    let tag = loop {
        let got = fetch(&replica, "/notes/1", &[]).await;
        if status(&got) == "notes-cache; fwd=uri-miss; fwd-status=200; detail=storing" {
            break got.etag().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "{:?}", status(&got));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eventually("the fill", || replica.cache.stats().fills > 0).await;
    let hit = fetch(&replica, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(status(&hit), "notes-cache; hit");
    // Redis does not answer: a bypass; a strict write is refused by the
    // cache itself, forwarded nowhere.
    redis.pause();
    let got = fetch(&replica, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(
        status(&got),
        "notes-cache; fwd=bypass; fwd-status=304; detail=store-unavailable"
    );
    let refused = put(&replica, "/notes/1").await.unwrap();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&refused), "notes-cache; detail=store-unavailable");
    redis.resume();
}

#[cfg(feature = "metrics")]
async fn redis_that_stops_answering_shows_in_the_availability_gauge_and_the_counters() {
    let redis = RedisServer::start();
    let data = Data::default();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = metrics::with_local_recorder(&recorder, || {
        let store = RedisStore::builder(redis.url())
            .prefix(PREFIX)
            .secret("replicas' shared secret")
            .timeout(TIMEOUT_FAULTS)
            .metrics_label("store", "notes")
            .build()
            .unwrap();
        tower_etag::cache::ValidatorCache::builder()
            .time_to_live(LIVE)
            .redis(store)
            .build()
    });
    let replica = replica_on(cache, &data).await;
    let value = |values: &std::collections::BTreeMap<String, f64>, name: &str| {
        values
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {values:#?}"))
    };
    let tag = fill(&replica, "/notes/1").await;
    let values = metric_values(&snapshotter);
    assert_eq!(
        value(&values, "tower_etag_redis_available{store=notes}"),
        1.0
    );
    assert!(
        value(
            &values,
            "tower_etag_redis_operation_duration_seconds_count{operation=lookup,store=notes}"
        ) >= 1.0
    );
    assert!(
        value(
            &values,
            "tower_etag_redis_operation_duration_seconds_count{operation=fill,store=notes}"
        ) >= 1.0
    );

    // Redis stops answering: a lookup times out, a write's invalidation
    // waits for a retry.
    redis.pause();
    let got = fetch(&replica, "/notes/1", &[("if-none-match", &tag)]).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED, "from the handler");
    assert_eq!(
        put(&replica, "/notes/1").await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    let values = metric_values(&snapshotter);
    assert_eq!(
        value(&values, "tower_etag_redis_available{store=notes}"),
        0.0
    );
    assert!(
        value(
            &values,
            "tower_etag_redis_timeouts_total{operation=lookup,store=notes}"
        ) >= 1.0
    );
    assert!(
        value(
            &values,
            "tower_etag_redis_timeouts_total{operation=begin_write,store=notes}"
        ) >= 1.0
    );
    assert!(value(&values, "tower_etag_redis_pending{store=notes}") >= 1.0);
    assert_eq!(
        value(
            &values,
            "tower_etag_redis_errors_total{operation=lookup,store=notes}"
        ),
        0.0
    );
    // The cache sees the same: the lookup's store did not answer.
    assert!(
        value(
            &values,
            "tower_etag_cache_misses_total{reason=store_unavailable}"
        ) >= 1.0
    );

    // Back: the retries land, and after a second without a failure Redis
    // counts as answering again.
    redis.resume();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let values = metric_values(&snapshotter);
        let pending = value(&values, "tower_etag_redis_pending{store=notes}");
        let available = value(&values, "tower_etag_redis_available{store=notes}");
        if pending == 0.0 && available == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pending {pending}, available {available}"
        );
        // Operations succeed (the availability changes on one after a
        // quiet second).
        fetch(&replica, "/notes/2", &[]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Killed: the request on the open connection fails (an error), and the
    // next ones wait for a connection until the timeout. (The debugging
    // recorder's snapshots hand out counters' increments since the last
    // one.)
    let mut redis = redis;
    redis.stop();
    let _ = metric_values(&snapshotter);
    for _ in 0..2 {
        let got = fetch(&replica, "/notes/1", &[]).await;
        assert_eq!(got.status, StatusCode::OK, "from the handler");
    }
    let values = metric_values(&snapshotter);
    assert_eq!(
        value(&values, "tower_etag_redis_available{store=notes}"),
        0.0
    );
    let failed = value(
        &values,
        "tower_etag_redis_timeouts_total{operation=lookup,store=notes}",
    ) + value(
        &values,
        "tower_etag_redis_errors_total{operation=lookup,store=notes}",
    );
    assert_eq!(failed, 2.0, "{values:#?}");
    assert!(
        value(
            &values,
            "tower_etag_redis_timeouts_total{operation=lookup,store=notes}"
        ) >= 1.0
    );
}

async fn a_strict_write_that_redis_does_not_confirm_is_refused_and_writes_nothing() {
    let redis = RedisServer::start();
    let data = Data::default();
    // Patient: on a busy machine a short timeout could refuse the first,
    // confirmed write too.
    let strict = replica_with(strict_store(&redis.url(), PATIENT), &data, LIVE).await;
    let lenient = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let tag = fill(&strict, "/v/1").await;
    // Redis answers: the write goes through and replaces the tag.
    let got = put(&strict, "/v/1").await.unwrap();
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(data.version("1"), 2);
    assert_none_confirms(&[("strict", &strict), ("lenient", &lenient)], "/v/1", &tag).await;

    redis.pause();
    let calls = strict.calls();
    let started = Instant::now();
    let got = put(&strict, "/v/1").await.unwrap();
    let waited = started.elapsed();
    // RFC 9110 §15.6.4 and §10.2.3.
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.header("retry-after"), Some("1"));
    assert_eq!(got.header("content-length"), Some("0"));
    assert_eq!(strict.calls(), calls, "the handler did not run");
    assert_eq!(data.version("1"), 2, "nothing was written");
    eprintln!("strict write refused after {waited:?} (timeout {PATIENT:?})");
    // Reads still go to the handler.
    let got = fetch(&strict, "/v/1", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "note 1 v2");
    // Writes in the default mode go on.
    let got = put(&lenient, "/v/1").await.unwrap();
    assert_eq!(got.status, StatusCode::NO_CONTENT);
    assert_eq!(data.version("1"), 3);
    redis.resume();

    // Strict writes are accepted again once Redis answers.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = put(&strict, "/v/1").await.unwrap();
        if got.status == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "strict writes never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And what the lenient write left pending has landed: the refused
    // write's id too, so the resource is filled and shared again.
    until_shared(&strict, &[&lenient], "/v/1").await;
    assert!(writes_under_way(&redis).is_empty());
}

async fn a_write_end_that_did_not_land_is_retried_and_fills_resume() {
    let Linked {
        redis,
        link,
        data,
        a,
        b,
    } = linked(TIMEOUT_FAULTS, LIVE).await;
    // A's PUT begins in Redis; A is cut off from Redis before it ends.
    let held = data.held.clone();
    let write = held_put(&held, &a, "/held/2").await;
    held.commit.notify_one();
    held.committed.notified().await;
    link.cut();
    held.respond.notify_one();
    assert_eq!(write.await.unwrap().status, StatusCode::NO_CONTENT);
    assert!(a.cache.stats().pending >= 1, "{:?}", a.cache.stats());
    assert_eq!(
        writes_under_way(&redis).len(),
        1,
        "the write looks under way"
    );
    // A reaches Redis again: its write's end is retried and lands, and the
    // resource is filled and shared again (not after the write's record
    // expires, a time-to-live later).
    link.restore();
    let restored = Instant::now();
    eventually("the write's end", || a.cache.stats().pending == 0).await;
    eprintln!(
        "write end landed {:?} after the link came back",
        restored.elapsed()
    );
    assert!(writes_under_way(&redis).is_empty());
    until_shared(&b, &[&a], "/held/2").await;
}

async fn a_write_end_slowed_by_a_script_load_is_retried_and_fills_resume() {
    let delay = Duration::from_millis(40);
    let Linked {
        redis,
        link,
        data,
        a,
        b,
    } = linked(Duration::from_millis(60), LIVE).await;
    let held = data.held.clone();
    let write = held_put(&held, &a, "/held/3").await;
    held.commit.notify_one();
    held.committed.notified().await;
    // Redis forgets its scripts (as after a restart the connection did not
    // notice), and what A sends takes 40 ms to arrive: the end's EVALSHA
    // gets NOSCRIPT at 40 ms, SCRIPT LOAD arrives at 80 ms, past the 60 ms
    // timeout, so the client never sends the EVALSHA after it. The script
    // is loaded, the end did not run.
    redis.command(&["SCRIPT", "FLUSH"]).unwrap();
    link.slow_down(delay);
    let unavailable = a.cache.stats().unavailable;
    held.respond.notify_one();
    assert_eq!(write.await.unwrap().status, StatusCode::NO_CONTENT);
    assert!(
        a.cache.stats().unavailable > unavailable,
        "the end did not time out: the test proves nothing"
    );
    // The end is retried (the script is loaded now) and lands: the
    // resource is filled and shared again well before the write's record
    // would expire (a minute here).
    eventually("the write's end", || a.cache.stats().pending == 0).await;
    assert!(writes_under_way(&redis).is_empty());
    link.slow_down(Duration::ZERO);
    until_shared(&b, &[&a], "/held/3").await;
}

async fn thousands_of_pending_invalidations_land_once_redis_answers() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let b = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    redis.pause();
    let n = 3_000;
    let landed = futures_util::future::join_all((0..n).map(|i| {
        let cache = a.cache.clone();
        async move {
            let uri = format!("/notes/{i}").parse().unwrap();
            cache.invalidate(&uri).await
        }
    }))
    .await;
    assert!(landed.iter().all(|landed| !landed), "none could land");
    assert_eq!(a.cache.stats().pending, n);
    redis.resume();
    let resumed = Instant::now();
    eventually("the pending invalidations", || a.cache.stats().pending == 0).await;
    let took = resumed.elapsed();
    eprintln!("{n} pending invalidations landed {took:?} after Redis answered again");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_all_miss(&[("B", &b)], "/notes/1", &tag).await;
}

async fn past_the_bound_pending_invalidations_become_one_clear() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let b = replica(&redis.url(), &data, TIMEOUT_FAULTS).await;
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    redis.pause();
    futures_util::future::join_all((0..10_001).map(|i| {
        let cache = a.cache.clone();
        async move {
            let uri = format!("/other/{i}").parse().unwrap();
            cache.invalidate(&uri).await
        }
    }))
    .await;
    assert_eq!(a.cache.stats().pending, 1, "one clear instead");
    // Until it lands, A bypasses the cache for everything.
    let (reached, _) = a.revalidate("/notes/1", &tag).await;
    assert!(reached);
    redis.resume();
    eventually("the clear", || a.cache.stats().pending == 0).await;
    let left = redis.keys(PREFIX);
    assert!(
        left.iter().all(|key| key.contains("{dataset}")),
        "everything but the dataset's identity was cleared: {left:?}"
    );
    assert_all_miss(&[("B", &b)], "/notes/1", &tag).await;
    until_shared(&a, &[&b], "/notes/1").await;
}

async fn flushall_leaves_no_old_tag_confirmed() {
    let redis = RedisServer::start();
    let (data, a, b) = two_replicas(&redis).await;
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    // A GET through A has read note 7 (and its generation) and waits.
    let (gate, slow) = gated_get(&data, &a, "/gated/7").await;
    redis.command(&["FLUSHALL"]).unwrap();
    // (One replica: its miss stores the note again, legitimately.)
    assert_all_miss(&[("B", &b)], "/notes/1", &tag).await;
    // A write through B on the flushed dataset; then A's GET ends with
    // the old note, which it must not store.
    assert_eq!(
        put(&b, "/gated/7").await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    let old_tag = finish_gated_get(gate, slow, "note 7 v1").await;
    assert_none_confirms(&[("A", &a), ("B", &b)], "/gated/7", &old_tag).await;
    // The cache works again on the flushed dataset.
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    write_replaces(&a, &b, "/notes/1", &tag).await;
}

/// The commands replica `a` sent through `link` since the last call, but
/// the connection's own checks (`INFO`, `TIME`), sorted.
fn sent(link: &Link) -> Vec<String> {
    let mut commands = link.take_commands();
    commands.retain(|name| name != "INFO" && name != "TIME");
    commands.sort();
    commands
}

async fn commands_sent_per_hit_miss_fill_and_write() {
    let redis = RedisServer::start();
    let link = Link::start(redis.addr()).await;
    let data = Data::default();
    let a = replica(&link.url(), &data, PATIENT).await;
    let b = replica(&redis.url(), &data, PATIENT).await;
    let tag = until_shared(&b, &[&a], "/notes/1").await;
    let fills = |replica: &Replica| replica.cache.stats().fills;
    let _ = sent(&link);
    // A hit: one MGET (generation and entry), nothing else.
    let (reached, _) = a.revalidate("/notes/1", &tag).await;
    assert!(!reached);
    assert_eq!(sent(&link), ["MGET"]);
    // A revalidation that misses (another tag) on a stored entry: the
    // MGET; the response confirms the stored entry, which is not stored
    // again (nothing after the response).
    let (reached, _) = a.revalidate("/notes/1", "\"other\"").await;
    assert!(reached);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(&link), ["MGET"]);
    // A GET that cannot hit: the MGET alone before the handler (the
    // request's arrival, for surrogate tags, is the server's time as the
    // connection reads it).
    let got = fetch(&a, "/notes/1", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sent(&link), ["MGET"]);
    // The first GET of a resource: the MGET finds no generation, so the
    // lookup script creates it; the fill's script after the response.
    let before = fills(&a);
    fetch(&a, "/notes/2", &[]).await;
    eventually("the fill", || fills(&a) > before).await;
    assert_eq!(sent(&link), ["EVALSHA", "EVALSHA", "MGET"]);
    // A write: its arrival and its end, one script each.
    assert_eq!(
        put(&a, "/notes/1").await.unwrap().status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(sent(&link), ["EVALSHA", "EVALSHA"]);
    // A tagged hit: the entry and its tag's generation read together, in
    // one round trip (the fill told this replica the resource's tags). A
    // tag has a hash slot of its own: a second MGET, sent with the first.
    let tagged = fill(&a, "/tagged/3").await;
    let _ = link.take_rounds();
    let (reached, _) = a.revalidate("/tagged/3", &tagged).await;
    assert!(!reached);
    assert_eq!(rounds(&link), [["MGET", "MGET"]]);
}

/// The commands replica `a` sent through `link` since the last call, by
/// round trip, but the connection's own checks.
fn rounds(link: &Link) -> Vec<Vec<String>> {
    let mut rounds = link.take_rounds();
    for round in &mut rounds {
        round.retain(|name| name != "INFO" && name != "TIME");
        round.sort();
    }
    rounds.retain(|round| !round.is_empty());
    rounds
}

async fn a_uri_looked_up_and_never_stored_leaves_a_short_lived_key() {
    let redis = RedisServer::start();
    let data = Data::default();
    // Entries live 10 minutes: generations, twice that after a fill.
    let a = replica_living(&redis.url(), &data, PATIENT, Duration::from_secs(600)).await;
    let pttl = |redis: &RedisServer| {
        let keys: Vec<String> = (redis.keys(PREFIX).into_iter())
            .filter(|key| key.ends_with(":g"))
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        match redis.command(&["PTTL", &keys[0]]).unwrap() {
            redis::Value::Int(ms) => ms,
            other => panic!("{other:?}"),
        }
    };
    // A scanner's request: looked up, answered 404, not stored.
    let got = fetch(&a, "/no/such/page", &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let ms = pttl(&redis);
    assert!(0 < ms && ms <= 60_000, "{ms} ms");
    redis.command(&["FLUSHALL"]).unwrap();
    // A stored response's generation outlives its entry.
    fill(&a, "/notes/1").await;
    let ms = pttl(&redis);
    assert!(ms > 1_100_000, "{ms} ms");
}

async fn under_maxmemory_with_allkeys_lru_no_read_confirms_a_replaced_tag() {
    let redis = RedisServer::start();
    let data = Data::default();
    let a = replica(&redis.url(), &data, PATIENT).await;
    let b = replica(&redis.url(), &data, PATIENT).await;
    until_shared(&a, &[&b], "/notes/0").await;
    // Room for a few hundred of the two thousand resources' keys.
    let used = redis.info("used_memory");
    let limit = (used + 96 * 1024).to_string();
    redis
        .command(&["CONFIG", "SET", "maxmemory", &limit])
        .unwrap();
    redis
        .command(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])
        .unwrap();
    let report = Workload {
        replicas: vec![a.clone(), b.clone()],
        ids: 2_000,
        duration: Duration::from_secs(5),
        disturb: None,
    }
    .run()
    .await;
    let evicted = redis.info("evicted_keys");
    eprintln!("maxmemory {limit} B, allkeys-lru: {report}, {evicted} keys evicted");
    assert!(evicted > 0, "the run evicted nothing: it proves nothing");
    assert!(report.stale.is_empty(), "stale 304s: {:?}", report.stale);
    assert!(report.hits > 0, "no hit at all: {report}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

async fn grpc_calls_succeed_while_redis_is_away_in_both_write_modes() {
    use tonic::transport::{server::TcpIncoming, Channel, Server};
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tower_etag::cache::{ValidatorCache, ValidatorCacheLayer};

    let redis = RedisServer::start();
    let serve = |store: RedisStore, grpc_invalidates: bool| async move {
        let cache = ValidatorCache::builder()
            .grpc_invalidates(grpc_invalidates)
            .redis(store)
            .build();
        let stats = cache.clone();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("notes", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .layer(ValidatorCacheLayer::new(cache))
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (HealthClient::new(channel), stats, reporter)
    };
    let check = || HealthCheckRequest {
        service: "notes".to_owned(),
    };
    let (mut strict, strict_cache, _s) =
        serve(strict_store(&redis.url(), TIMEOUT_FAULTS), false).await;
    let (mut lenient, lenient_cache, _l) = serve(store(&redis.url(), TIMEOUT_FAULTS), false).await;
    let (mut by_the_rfc, _, _r) = serve(strict_store(&redis.url(), TIMEOUT_FAULTS), true).await;
    assert!(by_the_rfc.check(check()).await.is_ok(), "Redis answers");
    redis.pause();
    for (client, cache) in [(&mut strict, &strict_cache), (&mut lenient, &lenient_cache)] {
        for _ in 0..5 {
            client.check(check()).await.unwrap();
        }
        // The calls never asked Redis anything.
        let stats = cache.stats();
        assert_eq!(
            (stats.unavailable, stats.invalidations),
            (0, 0),
            "{stats:?}"
        );
    }
    // With RFC 9111 §4.4 behaviour restored, a strict cache refuses the
    // call while Redis is away (503, which gRPC reads as UNAVAILABLE).
    let refused = by_the_rfc.check(check()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    redis.resume();
}

/// How long each chaos run lasts: `TOWER_ETAG_CHAOS_SECS`, default 30.
fn chaos_duration() -> Duration {
    let secs = std::env::var("TOWER_ETAG_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// The timeout of the chaos runs' stores.
const CHAOS_TIMEOUT: Duration = Duration::from_millis(50);

async fn chaos(strict: bool) -> Report {
    let redis = RedisServer::start();
    let data = Data::default();
    let store = |url: &str| {
        if strict {
            strict_store(url, CHAOS_TIMEOUT)
        } else {
            store(url, CHAOS_TIMEOUT)
        }
    };
    let a = replica_with(store(&redis.url()), &data, LIVE).await;
    let b = replica_with(store(&redis.url()), &data, LIVE).await;
    until_shared(&a, &[&b], "/notes/0").await;
    let report = Workload {
        replicas: vec![a, b],
        ids: 20,
        duration: chaos_duration(),
        disturb: Some(Box::new(move |deadline, seed| {
            disturb(redis, deadline, seed)
        })),
    }
    .run()
    .await;
    eprintln!(
        "chaos, {} writes: {report}",
        if strict { "strict" } else { "default" }
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.hits > 0, "no hit at all: {report}");
    assert!(report.outages.len() >= 3, "too little chaos: {report}");
    // Reads wait for Redis at most the timeout, then for the handler.
    assert!(
        report.slowest_read < CHAOS_TIMEOUT * 4 + Duration::from_millis(500),
        "{report}"
    );
    report
}

async fn chaos_with_strict_writes_no_read_confirms_a_replaced_tag() {
    let report = chaos(true).await;
    assert!(report.stale.is_empty(), "stale 304s: {:?}", report.stale);
    assert!(
        report.accepted >= report.refused,
        "at least half the writes accepted: {report}"
    );
}

async fn chaos_with_default_writes_a_replaced_tag_is_confirmed_only_until_the_retry() {
    let report = chaos(false).await;
    assert_eq!(report.refused, 0, "default writes are never refused");
    let worst = report.stale.iter().map(|s| s.after_outage).max();
    eprintln!(
        "default writes: {} stale 304s, the latest {worst:?} after Redis answered again",
        report.stale.len()
    );
    // The bound the README states: until the writer's retry lands, at most
    // a second after Redis answers again (its reconnection backoff, 250 ms,
    // plus a retry, 100 ms, plus the timeout, with room for a busy machine).
    for stale in &report.stale {
        assert!(stale.after_outage <= Duration::from_secs(1), "{stale:?}");
    }
}

/// Readers and writers on replicas for a while, with Redis disturbed by
/// `disturb` if given.
pub(crate) struct Workload {
    pub(crate) replicas: Vec<Replica>,
    pub(crate) ids: usize,
    pub(crate) duration: Duration,
    pub(crate) disturb: Option<Disturb>,
}

/// Disturbs Redis until the deadline, at random from the seed, in a
/// thread of its own; returns when Redis was away (from, to).
pub(crate) type Disturb = Box<dyn FnOnce(Instant, u64) -> Vec<(Instant, Instant)> + Send>;

/// What a workload saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) reads: usize,
    pub(crate) hits: usize,
    pub(crate) accepted: usize,
    pub(crate) refused: usize,
    /// 304s for a tag that a write answered before the read started had
    /// replaced.
    pub(crate) stale: Vec<Stale>,
    /// Anything else: 5xx on reads, unexpected statuses, transport errors.
    pub(crate) errors: Vec<String>,
    pub(crate) slowest_read: Duration,
    /// When Redis was disturbed: (from, to).
    pub(crate) outages: Vec<(Instant, Instant)>,
}

#[derive(Debug)]
pub(crate) struct Stale {
    id: usize,
    confirmed: u64,
    // Read in failure messages (`Debug`).
    #[allow(dead_code)]
    acknowledged: u64,
    started: Instant,
    /// How long after the end of the latest outage (or after the replacing
    /// write's response, if later) the read started.
    pub(crate) after_outage: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reads ({} hits, {} stale), writes {} accepted / {} refused, {} errors, slowest read {:?}, {} outages",
            self.reads,
            self.hits,
            self.stale.len(),
            self.accepted,
            self.refused,
            self.errors.len(),
            self.slowest_read,
            self.outages.len()
        )
    }
}

/// What readers and writers share: per note, the newest version a write's
/// response acknowledged (and when), and the tags seen per version.
#[derive(Default)]
struct Ledger {
    acknowledged: HashMap<usize, (u64, Instant)>,
    answered: HashMap<(usize, u64), Instant>,
    tags: HashMap<(usize, u64), String>,
}

/// A small xorshift generator: the workload needs spread, not quality.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

impl Workload {
    pub(crate) async fn run(self) -> Report {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let report = Arc::new(Mutex::new(Report::default()));
        let deadline = Instant::now() + self.duration;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("workload seed {seed}");
        let mut tasks = Vec::new();
        for n in 0..6u64 {
            let reader = n < 4;
            let (replicas, ledger, report) =
                (self.replicas.clone(), ledger.clone(), report.clone());
            let ids = self.ids;
            let mut dice = Dice::new(seed.wrapping_add(n * 7919));
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let replica = &replicas[dice.below(replicas.len())];
                    let id = dice.below(ids);
                    if reader {
                        read(replica, id, &mut dice, &ledger, &report).await;
                    } else {
                        write(replica, id, &ledger, &report).await;
                        tokio::time::sleep(Duration::from_millis(dice.below(20) as u64)).await;
                    }
                }
            }));
        }
        let outages = match self.disturb {
            Some(disturb) => {
                let seed = seed.wrapping_mul(31);
                tokio::task::spawn_blocking(move || disturb(deadline, seed))
                    .await
                    .unwrap()
            }
            None => Vec::new(),
        };
        for task in tasks {
            task.await.unwrap();
        }
        let mut report = std::mem::take(&mut *report.lock().unwrap());
        // Each stale read's distance from the latest outage before it.
        for stale in &mut report.stale {
            let started = stale.started;
            let back = outages
                .iter()
                .map(|(_, to)| *to)
                .filter(|to| *to <= started)
                .max();
            let answered = ledger
                .lock()
                .unwrap()
                .answered
                .get(&(stale.id, stale.confirmed + 1))
                .copied();
            let since = back.into_iter().chain(answered).max();
            stale.after_outage = since.map_or(Duration::MAX, |since| started - since);
        }
        report.outages = outages;
        report
    }
}

/// One GET: with the tag of the version before the acknowledged one (a 304
/// would be stale), or of the newest version seen (a 304 is a hit).
async fn read(
    replica: &Replica,
    id: usize,
    dice: &mut Dice,
    ledger: &Mutex<Ledger>,
    report: &Mutex<Report>,
) {
    let (acknowledged, asked) = {
        let ledger = ledger.lock().unwrap();
        let acknowledged = ledger.acknowledged.get(&id).map_or(1, |(v, _)| *v);
        let newest = (1..=acknowledged + 2)
            .rev()
            .find_map(|v| Some((v, ledger.tags.get(&(id, v))?.clone())));
        let older = (acknowledged > 1)
            .then(|| {
                Some((
                    acknowledged - 1,
                    ledger.tags.get(&(id, acknowledged - 1))?.clone(),
                ))
            })
            .flatten();
        let asked = if dice.below(2) == 0 {
            older.or(newest)
        } else {
            newest
        };
        (acknowledged, asked)
    };
    let path = format!("/v/{id}");
    let started = Instant::now();
    let got = match &asked {
        Some((_, tag)) => fetch(replica, &path, &[("if-none-match", tag)]).await,
        None => fetch(replica, &path, &[]).await,
    };
    let took = started.elapsed();
    let mut report = report.lock().unwrap();
    report.reads += 1;
    report.slowest_read = report.slowest_read.max(took);
    match got.status {
        StatusCode::NOT_MODIFIED => {
            report.hits += 1;
            let (version, _) = asked.expect("a 304 needs a tag");
            if version < acknowledged {
                report.stale.push(Stale {
                    id,
                    confirmed: version,
                    acknowledged,
                    started,
                    // Measured once the run is over.
                    after_outage: Duration::ZERO,
                });
            }
        }
        StatusCode::OK => {
            let body = std::str::from_utf8(&got.body).unwrap();
            let version: u64 = body.rsplit_once(" v").unwrap().1.parse().unwrap();
            let tag = got.etag().unwrap().to_owned();
            drop(report);
            ledger.lock().unwrap().tags.insert((id, version), tag);
        }
        status => report.errors.push(format!("GET {path}: {status}")),
    }
}

/// One PUT; a 2xx acknowledges the version it wrote.
async fn write(replica: &Replica, id: usize, ledger: &Mutex<Ledger>, report: &Mutex<Report>) {
    let path = format!("/v/{id}");
    let got = put(replica, &path).await;
    let now = Instant::now();
    let mut report = report.lock().unwrap();
    match got {
        Ok(got) if got.status == StatusCode::NO_CONTENT => {
            report.accepted += 1;
            let version: u64 = got.header("x-version").unwrap().parse().unwrap();
            let mut ledger = ledger.lock().unwrap();
            ledger.answered.insert((id, version), now);
            let entry = ledger.acknowledged.entry(id).or_insert((1, now));
            if version > entry.0 {
                *entry = (version, now);
            }
        }
        Ok(got) if got.status == StatusCode::SERVICE_UNAVAILABLE => report.refused += 1,
        Ok(got) => report.errors.push(format!("PUT {path}: {}", got.status)),
        Err(error) => report.errors.push(format!("PUT {path}: {error}")),
    }
}

/// Disturbs Redis at random until `deadline`: pauses (SIGSTOP), kills with
/// a restart empty, and snapshots followed by a kill and a restart from the
/// snapshot (a rollback). Returns when Redis was away.
fn disturb(mut redis: RedisServer, deadline: Instant, seed: u64) -> Vec<(Instant, Instant)> {
    let mut dice = Dice::new(seed);
    let mut outages = Vec::new();
    let ms = |n: usize| Duration::from_millis(n as u64);
    while Instant::now() + ms(1_500) < deadline {
        std::thread::sleep(ms(300 + dice.below(900)));
        let from = Instant::now();
        match dice.below(3) {
            0 => {
                redis.pause();
                std::thread::sleep(ms(100 + dice.below(700)));
                redis.resume();
            }
            1 => redis.restart_empty(),
            _ => {
                redis.command(&["SAVE"]).unwrap();
                // Writes land after the snapshot, then are lost.
                std::thread::sleep(ms(100 + dice.below(400)));
                let from = Instant::now();
                redis.restart();
                outages.push((from, Instant::now()));
                continue;
            }
        }
        outages.push((from, Instant::now()));
    }
    // Redis stays up until the end: the last writes' retries land.
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    outages
}
