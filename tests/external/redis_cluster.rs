//! The shared cache on a Redis Cluster of six real `redis-server`s (three
//! primaries, a replica each), formed by the tests: hits and invalidations
//! across replicas for resources on every shard, a graceful failover and a
//! killed primary under concurrent reads and writes, and a failover to a
//! replica that missed writes on one shard.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use tower_etag::cache::RedisStore;

use crate::{
    common::TIMEOUT,
    harness::{add, Suite, REDIS_SERVER},
    redis::*,
    redis_server::RedisCluster,
    redis_writes::{Report, Workload},
};

/// The tests of this module, for the harness.
pub(crate) fn add_to(suite: &mut Suite) {
    add!(suite, Some(&REDIS_SERVER), async [
        replicas_share_hits_and_invalidations_for_resources_on_every_shard,
        a_graceful_failover_under_patient_strict_writes_refuses_nothing_and_confirms_no_replaced_tag,
        a_graceful_failover_under_reads_and_default_writes_fails_no_request,
        a_killed_primary_under_patient_strict_writes_refuses_nothing_and_confirms_no_replaced_tag,
        a_killed_primary_under_reads_and_default_writes_fails_no_request,
        a_failover_to_a_replica_that_missed_writes_never_confirms_their_old_tags,
        pending_invalidations_land_on_the_shards_that_answer_while_one_is_away,
        a_slot_migrated_to_another_primary_is_served_there_and_writes_reach_it,
    ]);
}

/// A cluster, two replicas of the app on it (every node a seed) that wait
/// `timeout` for Redis, and the tags of [`RESOURCES`] notes stored through
/// A that are hits through B.
struct Notes {
    cluster: RedisCluster,
    a: Replica,
    b: Replica,
    tags: Vec<String>,
}

async fn notes_on_a_cluster(timeout: Duration) -> Notes {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let data = Data::default();
    let a = cluster_replica_with(cluster.urls(), &data, timeout, false).await;
    let b = cluster_replica_with(cluster.urls(), &data, timeout, false).await;
    let mut tags = Vec::new();
    for id in 0..RESOURCES {
        tags.push(until_shared(&a, &[&b], &format!("/notes/{id}")).await);
    }
    Notes {
        cluster,
        a,
        b,
        tags,
    }
}

/// A replica on the cluster whose nodes are at `urls`, waiting `timeout`
/// for Redis; with strict writes that wait up to `patience` for Redis if
/// `strict`.
async fn cluster_replica_with(
    urls: Vec<String>,
    data: &Data,
    timeout: Duration,
    strict: bool,
) -> Replica {
    let patience = if strict { PATIENCE } else { Duration::ZERO };
    let store = RedisStore::cluster(urls)
        .prefix(PREFIX)
        .secret("replicas' shared secret")
        .timeout(timeout)
        .strict_writes(strict)
        .write_patience(patience)
        .build()
        .unwrap();
    replica_with(store, data, Duration::from_secs(60)).await
}

/// How many resources the tests spread over the three shards.
const RESOURCES: usize = 30;

/// Every primary holds entries: the resources did spread.
fn assert_spread(cluster: &RedisCluster) {
    for node in &cluster.nodes {
        if node.is_running() && node.info_text("role").as_deref() == Some("master") {
            let keys = node.keys(PREFIX);
            assert!(
                keys.iter().any(|key| key.ends_with(":g")),
                "primary {} holds no resource: {keys:?}",
                node.port
            );
        }
    }
}

async fn replicas_share_hits_and_invalidations_for_resources_on_every_shard() {
    let Notes {
        cluster,
        a,
        b,
        tags,
    } = notes_on_a_cluster(PATIENT).await;
    assert_spread(&cluster);

    // Writes through B to every other resource: A answers those from its
    // handler, the others from the cache.
    for id in (0..RESOURCES).step_by(2) {
        let got = put(&b, &format!("/notes/{id}")).await.unwrap();
        assert_eq!(got.status, StatusCode::NO_CONTENT);
    }
    for (id, tag) in tags.iter().enumerate() {
        let (reached, got) = a.revalidate(&format!("/notes/{id}"), tag).await;
        assert_eq!(reached, id % 2 == 0, "/notes/{id}: {}", got.status);
    }

    // Surrogate tags, each in a slot of its own: one invalidated through B
    // ends A's hits on it and no other.
    let mut tagged = Vec::new();
    for id in 0..6 {
        tagged.push(until_shared(&a, &[&b], &format!("/tagged/{id}")).await);
    }
    b.cache.invalidate_tag("user:4").await;
    for (id, tag) in tagged.iter().enumerate() {
        let (reached, _) = a.revalidate(&format!("/tagged/{id}"), tag).await;
        assert_eq!(reached, id == 4, "/tagged/{id}");
    }

    // A clear through A reaches every primary.
    let tag = until_shared(&a, &[&b], "/notes/1").await;
    assert!(a.cache.clear().await, "the clear landed");
    for node in &cluster.nodes {
        if node.info_text("role").as_deref() == Some("master") {
            let left: Vec<String> = node
                .keys(PREFIX)
                .into_iter()
                .filter(|key| key.contains(":e:"))
                .collect();
            assert!(left.is_empty(), "node {}: {left:?}", node.port);
        }
    }
    let (reached, _) = b.revalidate("/notes/1", &tag).await;
    assert!(reached, "an entry outlived the clear");
}

/// Reads and writes on two replicas (with patient strict writes if `strict`)
/// while `disturb` runs on the cluster; checks what every cluster run must
/// hold: no read fails, hits during the run and on every resource after it.
/// The callers check the stale 304s and refused writes their mode allows.
async fn under_load(strict: bool, disturb: fn(&mut RedisCluster) -> (Instant, Instant)) -> Report {
    let cluster = Arc::new(Mutex::new(
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .unwrap(),
    ));
    let data = Data::default();
    let urls = cluster.lock().unwrap().urls();
    let a = cluster_replica_with(urls.clone(), &data, LOAD_TIMEOUT, strict).await;
    let b = cluster_replica_with(urls, &data, LOAD_TIMEOUT, strict).await;
    for id in 0..RESOURCES {
        until_shared(&a, &[&b], &format!("/v/{id}")).await;
    }
    let disturbed = Arc::clone(&cluster);
    let report = Workload {
        replicas: vec![a.clone(), b.clone()],
        ids: RESOURCES,
        duration: Duration::from_secs(10),
        disturb: Some(Box::new(move |deadline, _| {
            std::thread::sleep(Duration::from_secs(2));
            let outage = disturb(&mut disturbed.lock().unwrap());
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            vec![outage]
        })),
    }
    .run()
    .await;
    eprintln!(
        "cluster, {} writes: {report}",
        if strict { "strict" } else { "default" }
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.hits > 0, "no hit at all: {report}");
    // Hits resume on every shard, the new primary's included.
    for id in 0..RESOURCES {
        until_shared(&a, &[&b], &format!("/v/{id}")).await;
    }
    assert_spread(&cluster.lock().unwrap());
    if strict {
        // Strict writes that wait out the failover: no stale 304, and no
        // write refused either.
        assert!(report.stale.is_empty(), "stale 304s: {:?}", report.stale);
        assert_eq!(report.refused, 0, "{report}");
    } else {
        assert_eq!(report.refused, 0, "default writes are never refused");
        // The bound the README states for default writes: a write whose
        // invalidation did not land (its shard was away) may be confirmed
        // by other replicas until its retry lands, at most a second after
        // the shard answers again.
        for stale in &report.stale {
            assert!(stale.after_outage <= Duration::from_secs(1), "{stale:?}");
        }
    }
    report
}

/// The load runs' timeout: a shard that is away costs each request this.
const LOAD_TIMEOUT: Duration = Duration::from_millis(50);

/// How long strict writes wait for Redis: longer than a failover.
const PATIENCE: Duration = Duration::from_secs(10);

fn graceful_failover(cluster: &mut RedisCluster) -> (Instant, Instant) {
    let replica = cluster.replica_of(cluster.primary_of(0));
    let from = Instant::now();
    cluster.failover(replica);
    (from, Instant::now())
}

fn killed_primary(cluster: &mut RedisCluster) -> (Instant, Instant) {
    let primary = cluster.primary_of(0);
    let from = Instant::now();
    cluster.kill_and_wait_for_promotion(primary);
    (from, Instant::now())
}

async fn a_graceful_failover_under_patient_strict_writes_refuses_nothing_and_confirms_no_replaced_tag(
) {
    under_load(true, graceful_failover).await;
}

async fn a_graceful_failover_under_reads_and_default_writes_fails_no_request() {
    under_load(false, graceful_failover).await;
}

async fn a_killed_primary_under_patient_strict_writes_refuses_nothing_and_confirms_no_replaced_tag()
{
    under_load(true, killed_primary).await;
}

async fn a_killed_primary_under_reads_and_default_writes_fails_no_request() {
    under_load(false, killed_primary).await;
}

async fn a_failover_to_a_replica_that_missed_writes_never_confirms_their_old_tags() {
    let Notes {
        mut cluster,
        a,
        b,
        tags,
    } = notes_on_a_cluster(PATIENT).await;
    let primary = cluster.primary_of(0);
    let replica = cluster.replica_of(primary);
    assert!(
        cluster.nodes[primary]
            .keys(PREFIX)
            .iter()
            .any(|key| key.contains(":e:")),
        "the shard holds no entry: the test would prove nothing"
    );
    // The replica has every entry; then it stops (SIGSTOP), 32 MiB clog the
    // replication stream, and B's writes move every resource's generation
    // on: on this shard they wait in the primary's buffer for the replica.
    cluster.wait_replicated(primary, replica);
    cluster.nodes[replica].pause();
    cluster.clog_replication(primary);
    for id in 0..RESOURCES {
        let got = put(&b, &format!("/notes/{id}")).await.unwrap();
        assert_eq!(got.status, StatusCode::NO_CONTENT);
    }
    // The primary dies; the replica comes back and is promoted with the
    // old generations and the entries stored under them.
    cluster.nodes[primary].stop();
    cluster.nodes[replica].resume();
    let promoted = tokio::task::spawn_blocking(move || {
        cluster.wait_for_role(replica, "master");
        cluster
    })
    .await
    .unwrap();
    for (id, tag) in tags.iter().enumerate() {
        assert_none_confirms(&[("A", &a), ("B", &b)], &format!("/notes/{id}"), tag).await;
    }
    // And the shard caches again.
    for id in 0..RESOURCES {
        until_shared(&a, &[&b], &format!("/notes/{id}")).await;
    }
    drop(promoted);
}

async fn pending_invalidations_land_on_the_shards_that_answer_while_one_is_away() {
    let Notes {
        cluster,
        a,
        b,
        tags,
    } = notes_on_a_cluster(TIMEOUT_FAULTS).await;
    // A shard without a primary leaves the others answering (the default,
    // `yes`, stops the whole cluster).
    for node in &cluster.nodes {
        node.command(&["CONFIG", "SET", "cluster-require-full-coverage", "no"])
            .unwrap();
    }
    let primaries: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| cluster.nodes[i].info_text("role").as_deref() == Some("master"))
        .collect();
    assert_eq!(primaries.len(), 3);
    // The third shard stays away (its replica too: no failover), the other
    // two only while B's invalidations are sent, which all wait for a retry.
    let away = primaries[2];
    let away_replica = cluster.replica_of(away);
    cluster.nodes[away_replica].pause();
    for &primary in &primaries {
        cluster.nodes[primary].pause();
    }
    let invalidations = (0..RESOURCES).map(|id| {
        let uri: axum::http::Uri = format!("/notes/{id}").parse().unwrap();
        let b = b.clone();
        async move { b.cache.invalidate(&uri).await }
    });
    let landed = futures_util::future::join_all(invalidations).await;
    assert!(landed.iter().all(|landed| !landed), "{landed:?}");
    assert_eq!(b.cache.stats().pending, RESOURCES as u64);
    for &primary in &primaries[..2] {
        cluster.nodes[primary].resume();
    }
    // The retries land where a primary answers; the third shard's wait.
    let left = |b: &Replica| b.cache.stats().pending;
    let deadline = Instant::now() + TIMEOUT;
    while left(&b) == RESOURCES as u64 {
        assert!(Instant::now() < deadline, "no retry landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = left(&b);
    assert!(
        0 < waiting && waiting < RESOURCES as u64,
        "{waiting} pending: every resource on one shard, or none on the third"
    );
    // So A confirms no old tag: on the two shards the invalidations
    // landed, and the third does not answer (A's handler does).
    for (id, tag) in tags.iter().enumerate() {
        let (reached, got) = a.revalidate(&format!("/notes/{id}"), tag).await;
        assert!(reached, "/notes/{id}: {} (a stale 304)", got.status);
    }
    cluster.nodes[away].resume();
    cluster.nodes[away_replica].resume();
    eventually("the third shard's invalidations", || left(&b) == 0).await;
}

async fn a_slot_migrated_to_another_primary_is_served_there_and_writes_reach_it() {
    let Notes {
        cluster,
        a,
        b,
        tags,
    } = notes_on_a_cluster(PATIENT).await;
    // A slot that holds a resource moves to another primary.
    let from = cluster.primary_of(0);
    let key = cluster.nodes[from]
        .keys(PREFIX)
        .into_iter()
        .find(|key| key.ends_with(":g"))
        .expect("a resource on the first shard");
    let slot: u16 = cluster.nodes[from]
        .command(&["CLUSTER", "KEYSLOT", &key])
        .ok()
        .and_then(|slot| redis::from_redis_value(slot).ok())
        .unwrap();
    let to = cluster.primary_of(16_383);
    assert_ne!(from, to);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(slot, from, to);
        cluster
    })
    .await
    .unwrap();
    assert!(
        cluster.nodes[to].keys(PREFIX).contains(&key),
        "{key} did not move"
    );
    // Writes to every resource, the moved one's included (its first try
    // may meet the redirect, and is retried): no old tag is confirmed...
    for id in 0..RESOURCES {
        let got = put(&b, &format!("/notes/{id}")).await.unwrap();
        assert_eq!(got.status, StatusCode::NO_CONTENT);
    }
    eventually("B's pending invalidations", || b.cache.stats().pending == 0).await;
    for (id, tag) in tags.iter().enumerate() {
        assert_none_confirms(&[("A", &a), ("B", &b)], &format!("/notes/{id}"), tag).await;
    }
    // ...and every resource is a hit again, the moved one on its new
    // primary.
    for id in 0..RESOURCES {
        until_shared(&a, &[&b], &format!("/notes/{id}")).await;
    }
}
