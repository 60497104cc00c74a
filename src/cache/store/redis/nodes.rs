//! Which Redis server answers for a key: the one server, or on a Redis
//! Cluster the primary that serves the key's hash slot.
//!
//! # Why not the client's cluster connection
//!
//! redis-rs has a cluster client (`cluster-async`), and it routes, follows
//! `MOVED` and `ASK` redirects and reconnects by itself. That is what this
//! store must not let happen unseen: after a failover the promoted replica
//! may lack the last invalidations it was sent, so every connection is
//! verified before use (see [`link`](super::link)), per primary, and a fill
//! runs only on the connection its lookup ran on. The cluster client would
//! send the next command to the new primary, or follow a redirect to it,
//! before anything verified it. So the store keeps one verified [`Link`]
//! per primary, as it does for a single server, and routes by slot itself:
//! the slot map comes from `CLUSTER SLOTS`, read when the store starts,
//! every second after, and at once after a redirect or a broken connection.
//!
//! # Redirects and failovers
//!
//! A command answered `MOVED` or `ASK` (a slot migrating or moved, a
//! primary demoted) or `CLUSTERDOWN`/`TRYAGAIN` is not followed: the
//! operation fails like any other fault (a lookup goes to the handler, an
//! invalidation waits in the backlog), and the slot map is read again. The
//! retry then reaches the primary that serves the slot, once verified.
//! Slots whose primary is unknown or down fail the same way; the other
//! shards go on answering.

use std::{
    fmt,
    sync::{atomic::AtomicU64, Arc, PoisonError, RwLock, Weak},
    time::Duration,
};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo,
    ErrorKind, RedisError, ServerErrorKind, Value,
};
use tokio::{
    runtime::Handle,
    sync::{watch, Notify},
};

use super::{
    link::{Link, Verified},
    names::{self, KeyNames, SLOTS},
    scripts::Scripts,
};
use crate::cache::hashing::Key;

/// How often the slot map is read when nothing asked for it.
const MAP_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest time between two readings of the slot map: many requests
/// failing at once ask for one reading.
const MAP_MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Bounds one reading of the slot map (connecting included).
const MAP_TIMEOUT: Duration = Duration::from_secs(3);

/// Bounds connecting to one node and its answer, while reading the map.
const ASK_TIMEOUT: Duration = Duration::from_millis(250);

/// Marks a slot no primary is known for.
const NONE: u16 = u16::MAX;

/// The servers of a store.
pub(super) enum Nodes {
    /// One server holds every key.
    Single(Arc<Link>),
    Cluster(Arc<Cluster>),
}

impl fmt::Debug for Nodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Single"),
            Self::Cluster(cluster) => f
                .debug_struct("Cluster")
                .field("primaries", &cluster.map().primaries.len())
                .finish_non_exhaustive(),
        }
    }
}

impl Nodes {
    /// Starts connecting (and on a cluster, reading the slot map).
    pub(super) fn start(&self) {
        match self {
            Self::Single(link) => link.start(),
            Self::Cluster(cluster) => cluster.start(),
        }
    }

    /// The verified connection of the server that holds the keys named
    /// after `key` (a resource or a tag), once there is one: callers bound
    /// the wait.
    pub(super) async fn get(&self, key: Key) -> Verified {
        match self {
            Self::Single(link) => link.get().await,
            Self::Cluster(cluster) => cluster.get(names::slot(key)).await,
        }
    }

    /// Every primary: the one server, or each primary of the cluster as
    /// last mapped; `None` while a slot has no known primary (the map is
    /// not read yet, or the cluster lost a shard).
    pub(super) fn primaries(&self) -> Option<Vec<Arc<Link>>> {
        match self {
            Self::Single(link) => Some(vec![Arc::clone(link)]),
            Self::Cluster(cluster) => {
                let map = cluster.map();
                let complete = !map.slots.contains(&NONE);
                complete.then(|| map.primaries.clone())
            }
        }
    }

    /// Reports an operation that ran past the timeout: on a cluster, its
    /// primary may be gone (a failover under way), so the slot map is read
    /// again.
    pub(super) fn timed_out(&self) {
        if let Self::Cluster(cluster) = self {
            cluster.remap.notify_one();
        }
    }

    /// Reports an operation's error on `on`: the link drops a broken
    /// connection; on a cluster, a redirect, a cluster error or a broken
    /// connection has the slot map read again.
    pub(super) fn failed(&self, on: &Verified, error: &RedisError) {
        if let Some(link) = on.link.upgrade() {
            link.failed(on, error);
        }
        if let Self::Cluster(cluster) = self {
            let moved = matches!(
                error.kind(),
                ErrorKind::Server(
                    ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
            );
            if moved || error.is_io_error() || error.is_connection_dropped() {
                cluster.remap.notify_one();
            }
        }
    }
}

/// What a cluster's nodes need to make a link to a primary.
pub(super) struct Cluster {
    runtime: Handle,
    scripts: Arc<Scripts>,
    keys: KeyNames,
    /// The first seed's connection settings (credentials, database, TLS):
    /// each node's are these with its address.
    template: ConnectionInfo,
    /// Where the slot map is first asked for.
    seeds: Vec<(String, u16)>,
    map: RwLock<Arc<SlotMap>>,
    /// Counts the maps published, for those waiting for a slot's primary.
    published: watch::Sender<u64>,
    /// Asks for the slot map to be read again.
    remap: Notify,
    serials: Arc<AtomicU64>,
    started: std::sync::atomic::AtomicBool,
}

/// Which primary serves each slot.
struct SlotMap {
    /// The index in `primaries` of each slot's primary, or [`NONE`].
    slots: Box<[u16]>,
    primaries: Vec<Arc<Link>>,
    /// Each primary's address, as the cluster names it.
    addresses: Vec<(String, u16)>,
    /// The first slot each primary serves (where its dataset keys are).
    first_slots: Vec<u16>,
}

impl SlotMap {
    fn empty() -> Self {
        Self {
            slots: vec![NONE; SLOTS].into_boxed_slice(),
            primaries: Vec::new(),
            addresses: Vec::new(),
            first_slots: Vec::new(),
        }
    }
}

/// Why a cluster store could not be made from its seeds.
#[derive(Debug)]
pub(super) enum SeedError {
    /// A seed is a Unix socket: a cluster's nodes are named by address.
    NotTcp,
}

impl Cluster {
    pub(super) fn new(
        seeds: &[Client],
        runtime: Handle,
        scripts: Arc<Scripts>,
        keys: KeyNames,
        serials: Arc<AtomicU64>,
    ) -> Result<Arc<Self>, SeedError> {
        let mut addresses = Vec::with_capacity(seeds.len());
        for seed in seeds {
            match seed.get_connection_info().addr() {
                ConnectionAddr::Tcp(host, port) => addresses.push((host.clone(), *port)),
                ConnectionAddr::TcpTls { host, port, .. } => addresses.push((host.clone(), *port)),
                _ => return Err(SeedError::NotTcp),
            }
        }
        let template = seeds
            .first()
            .expect("at least one seed")
            .get_connection_info()
            .clone();
        Ok(Arc::new(Self {
            runtime,
            scripts,
            keys,
            template,
            seeds: addresses,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            published: watch::Sender::new(0),
            remap: Notify::new(),
            serials,
            started: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn map(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts the task that keeps the slot map, once.
    fn start(self: &Arc<Self>) {
        if self.started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let cluster = Arc::downgrade(self);
        self.runtime.spawn(async move {
            let _restart = Restart(cluster.clone());
            keep_mapped(cluster).await;
        });
    }

    async fn get(self: &Arc<Self>, slot: u16) -> Verified {
        let mut published = self.published.subscribe();
        loop {
            let link = {
                let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
                match map.slots[usize::from(slot)] {
                    NONE => None,
                    index => Some(Arc::clone(&map.primaries[usize::from(index)])),
                }
            };
            if let Some(link) = link {
                return link.get().await;
            }
            self.start();
            self.remap.notify_one();
            // The sender lives as long as `self`: never an error.
            let _ = published.changed().await;
        }
    }

    /// A connection to `address` with the seeds' settings.
    fn client(&self, (host, port): &(String, u16)) -> Result<Client, RedisError> {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.clone(), *port),
        };
        Client::open(self.template.clone().set_addr(addr))
    }

    /// Publishes the slot map read from `CLUSTER SLOTS`: links are kept for
    /// the primaries that stay, made for new ones, and dropped for the ones
    /// that left (their connections close once no operation holds them).
    fn publish(&self, ranges: Vec<Range>) {
        let old = self.map();
        let mut map = SlotMap::empty();
        for range in &ranges {
            let index = match map.addresses.iter().position(|a| *a == range.primary) {
                Some(index) => index,
                None => {
                    map.addresses.push(range.primary.clone());
                    map.first_slots.push(range.start);
                    map.addresses.len() - 1
                }
            };
            let first = &mut map.first_slots[index];
            *first = (*first).min(range.start);
            for slot in &mut map.slots[usize::from(range.start)..=usize::from(range.end)] {
                *slot = index as u16;
            }
        }
        if map.slots == old.slots && map.addresses == old.addresses {
            return;
        }
        for (index, (address, first)) in map.addresses.iter().zip(&map.first_slots).enumerate() {
            let kept = old.addresses.iter().position(|a| a == address);
            let link = match kept {
                Some(i) => {
                    let link = Arc::clone(&old.primaries[i]);
                    // Slots it did not serve before (migrated to it, or
                    // served by none): their keys come with another
                    // server's history, so its barrier moves before it is
                    // used again.
                    let gained = map
                        .slots
                        .iter()
                        .zip(old.slots.iter())
                        .any(|(new, was)| usize::from(*new) == index && usize::from(*was) != i);
                    if gained {
                        link.move_barrier();
                    }
                    // Each primary's dataset keys sit in the first slot it
                    // serves (a failover keeps the slots, so the promoted
                    // replica finds the record its primary kept, and moves
                    // the barrier).
                    if old.first_slots[i] != *first {
                        link.set_dataset(self.keys.dataset_in_slot(*first));
                    }
                    link
                }
                None => match self.client(address) {
                    Ok(client) => Link::new(
                        client,
                        self.runtime.clone(),
                        Arc::clone(&self.scripts),
                        self.keys.dataset_in_slot(*first),
                        Arc::clone(&self.serials),
                    ),
                    // Not an address the client accepts (it accepted the
                    // seeds with the same settings): the old map stays.
                    Err(_) => return,
                },
            };
            link.start();
            map.primaries.push(link);
        }
        *self.map.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        self.published.send_modify(|n| *n += 1);
    }
}

/// One range of slots and the address of the primary that serves it.
struct Range {
    start: u16,
    end: u16,
    primary: (String, u16),
}

/// Marks the map's task as ended, so the next operation starts another.
struct Restart(Weak<Cluster>);

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(cluster) = self.0.upgrade() {
            cluster
                .started
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Reads the slot map now, then every [`MAP_INTERVAL`] or when asked, until
/// the store is gone.
async fn keep_mapped(cluster: Weak<Cluster>) {
    // The connection the map is read on, and the node it goes to.
    let mut asking: Option<((String, u16), MultiplexedConnection)> = None;
    let mut turn = 0usize;
    #[cfg(feature = "tracing")]
    let mut failing = false;
    loop {
        let Some(this) = cluster.upgrade() else {
            return;
        };
        turn = turn.wrapping_add(1);
        let read = tokio::time::timeout(MAP_TIMEOUT, read_map(&this, &mut asking, turn)).await;
        match read {
            Ok(Ok(ranges)) => {
                #[cfg(feature = "tracing")]
                {
                    failing = false;
                }
                this.publish(ranges);
            }
            _ => {
                asking = None;
                #[cfg(feature = "tracing")]
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(target: "tower_etag::cache", "tower-etag cache: cannot read the Redis Cluster's slot map; retrying");
                }
            }
        }
        let remap = async {
            this.remap.notified().await;
        };
        let _ = tokio::time::timeout(MAP_INTERVAL, remap).await;
        drop(this);
        tokio::time::sleep(MAP_MIN_INTERVAL).await;
    }
}

/// `CLUSTER SLOTS` from the node asked last, else from the primaries and
/// the seeds, starting from a different one each time (`turn`), each
/// given [`ASK_TIMEOUT`] (a node that does not answer at all costs no more).
/// A map that leaves slots unserved (a node just reset, or on the wrong
/// side of a partition) is taken only if no node gives a whole one.
async fn read_map(
    cluster: &Cluster,
    asking: &mut Option<((String, u16), MultiplexedConnection)>,
    turn: usize,
) -> Result<Vec<Range>, RedisError> {
    let mut best: Option<(usize, Vec<Range>)> = None;
    if let Some((address, connection)) = asking {
        match cluster_slots(connection, &address.0).await {
            Ok((ranges, slots)) if slots == SLOTS => return Ok(ranges),
            Ok((ranges, slots)) => {
                best = Some((slots, ranges));
                *asking = None;
            }
            Err(_) => *asking = None,
        }
    }
    let mut candidates = cluster.map().addresses.clone();
    for seed in &cluster.seeds {
        if !candidates.contains(seed) {
            candidates.push(seed.clone());
        }
    }
    if !candidates.is_empty() {
        let start = turn % candidates.len();
        candidates.rotate_left(start);
    }
    let mut last = RedisError::from((ErrorKind::Io, "no Redis Cluster node to ask"));
    for address in candidates {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ASK_TIMEOUT))
            .set_response_timeout(Some(ASK_TIMEOUT));
        let connected = match cluster.client(&address) {
            Ok(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            Err(error) => Err(error),
        };
        let mut connection = match connected {
            Ok(connection) => connection,
            Err(error) => {
                last = error;
                continue;
            }
        };
        match cluster_slots(&mut connection, &address.0).await {
            Ok((ranges, slots)) if slots == SLOTS => {
                *asking = Some((address, connection));
                return Ok(ranges);
            }
            Ok((ranges, slots)) => {
                if best.as_ref().is_none_or(|(most, _)| slots > *most) {
                    best = Some((slots, ranges));
                }
            }
            Err(error) => last = error,
        }
    }
    match best {
        Some((slots, ranges)) if slots > 0 => Ok(ranges),
        _ => Err(last),
    }
}

/// How many slots `ranges` serve.
fn covered(ranges: &[Range]) -> usize {
    let mut slots = vec![false; SLOTS];
    for range in ranges {
        slots[usize::from(range.start)..=usize::from(range.end)].fill(true);
    }
    slots.iter().filter(|served| **served).count()
}

/// The slot ranges and their primaries, from `CLUSTER SLOTS` (each item:
/// start, end, then the primary's host, port and id, then its replicas),
/// and how many slots they serve. An empty host names the node asked
/// (`asked_host`).
async fn cluster_slots(
    connection: &mut MultiplexedConnection,
    asked_host: &str,
) -> Result<(Vec<Range>, usize), RedisError> {
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(connection)
        .await?;
    let ranges = parse_slots(reply, asked_host)
        .ok_or_else(|| RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply")))?;
    let slots = covered(&ranges);
    Ok((ranges, slots))
}

fn parse_slots(reply: Value, asked_host: &str) -> Option<Vec<Range>> {
    let int = |value: &Value| match value {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let Value::Array(items) = reply else {
        return None;
    };
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(fields) = item else {
            return None;
        };
        let start = int(fields.first()?)?;
        let end = int(fields.get(1)?)?;
        let Value::Array(primary) = fields.get(2)? else {
            return None;
        };
        let host = match primary.first()? {
            Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
            Value::SimpleString(host) => host.clone(),
            // NULL (or an empty string, before Redis 7): the node asked.
            Value::Nil => String::new(),
            _ => return None,
        };
        let port = int(primary.get(1)?)?;
        if start > end || usize::from(end) >= SLOTS {
            return None;
        }
        // `?`: an endpoint the node does not know; its slots stay unserved
        // (their operations fail open) until a map names it.
        if host == "?" {
            continue;
        }
        let host = if host.is_empty() {
            asked_host.to_owned()
        } else {
            host
        };
        ranges.push(Range {
            start,
            end,
            primary: (host, port),
        });
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots_replies_are_read_with_empty_hosts_as_the_node_asked() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let node =
            |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(9000), node("", 7001)]),
            Value::Array(vec![
                Value::Int(9001),
                Value::Int(10000),
                Value::Array(vec![Value::Nil, Value::Int(7002), bulk("id")]),
            ]),
            Value::Array(vec![Value::Int(10001), Value::Int(16383), node("?", 7003)]),
        ]);
        let ranges = parse_slots(reply, "127.0.0.1").unwrap();
        assert_eq!(ranges.len(), 3);
        assert_eq!((ranges[0].start, ranges[0].end), (0, 5460));
        assert_eq!(ranges[0].primary, ("10.0.0.1".to_owned(), 7000));
        assert_eq!(ranges[1].primary, ("127.0.0.1".to_owned(), 7001));
        assert_eq!(ranges[2].primary, ("127.0.0.1".to_owned(), 7002));
        // The `?` range is left out: its slots are not served.
        assert_eq!(covered(&ranges), 10001);
        // Out of range, reversed or of another shape: refused.
        for bad in [
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(16384),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(9),
                Value::Int(3),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Int(1)]),
            Value::Nil,
        ] {
            assert!(parse_slots(bad, "h").is_none());
        }
    }
}
