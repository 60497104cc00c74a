//! The connection to Redis, and from when its entries may be trusted.
//!
//! A restarted Redis may have loaded an older snapshot (or an AOF that lost
//! its last second), a promoted replica may lack the last writes it was
//! sent, and another node may answer behind the same address: in each case
//! the dataset has rolled back, and invalidations that Redis acknowledged
//! are gone, so an entry they had made stale could answer a 304 again. A
//! connection is therefore used only once it is *verified*: its server's
//! identity (run id, which changes with every start, and replication id,
//! which changes with every failover) is compared, in one script
//! (`scripts/verify.lua`), with the identity that last vouched for the
//! dataset, kept in the dataset itself. If they differ, or that record is
//! missing, the dataset's *barrier* moves to the server's clock (plus
//! [`MARGIN`] when another server had vouched, for the two servers'
//! clocks), and no replica trusts an entry stored before the barrier (each
//! verifies its own connection, so every replica reaches that conclusion,
//! also one that starts after the event). A fill runs only on the
//! connection its lookup ran on, so a request that read a generation before
//! the event stores nothing after it. The price is misses for the resources
//! concerned until they are stored again. What this does not cover: a
//! rollback that keeps both identities (a restored VM or container
//! snapshot of the server process), clocks more than [`MARGIN`] apart
//! across a failover, and up to [`CHECK_INTERVAL`] during which a server
//! behind a connection that stays open (an L7 proxy, a DNS endpoint that
//! switched) is not yet known to have changed.
//!
//! A connection is dropped and a new one made and verified when an
//! operation fails with a connection error or `READONLY` (a server turned
//! replica), and when the check every [`CHECK_INTERVAL`] finds another
//! identity, fails, or gets no answer. Only a master is used. This is why
//! the store manages its connection itself instead of using redis-rs'
//! `ConnectionManager`: that one reconnects in the background and sends
//! the next command on the new connection before anything could verify it.
//! Redis must allow the store's user `INFO`, `SCRIPT LOAD`, `EVALSHA`,
//! `MGET`, `GET` and `TIME` (and `SCAN` and `UNLINK` for a clear, and
//! `CLUSTER SLOTS` on a cluster).
//!
//! The same step loads every script, so the first operation after Redis
//! started does not pay a `NOSCRIPT` round trip (and a slow `SCRIPT LOAD`
//! cannot outlast a write's end).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
    time::{Duration, Instant},
};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, Client, ErrorKind, RedisError,
    ServerErrorKind,
};
use tokio::{runtime::Handle, sync::watch};

use super::scripts::Scripts;

/// Added to the server's clock when the barrier moves: entries stored up to
/// this long after a rollback was noticed are not trusted either. It covers
/// the difference between the clocks of a failed master and the replica
/// that replaced it, whose clock then stamps entries.
pub(super) const MARGIN: Duration = Duration::from_secs(1);

/// How often the identity of the server behind a connection is checked,
/// for a change that broke no connection.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Bounds the TCP connection, and the whole of making a connection and
/// verifying it (six round trips).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest and longest waits between attempts to connect. The wait
/// starts again from the shortest only after a connection lasted a check.
/// The longest bounds how long after Redis is back a replica's pending
/// invalidations can wait to land (four attempts a second per replica).
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// A verified connection.
#[derive(Clone)]
pub(super) struct Verified {
    pub(super) connection: MultiplexedConnection,
    /// Entries stored before this time (µs, on the server's clock) are not
    /// to be trusted.
    pub(super) barrier: u64,
    /// Tells this connection from the ones before and after it: a fill
    /// runs only on the connection its lookup ran on.
    pub(super) serial: u64,
    /// The server's clock, as read when the connection was made and at each
    /// check since.
    pub(super) clock: Arc<ServerClock>,
    /// The link that made it, told of errors on it.
    pub(super) link: Weak<Link>,
}

/// The server's clock seen from this process: the difference between the
/// server's `TIME` and this process's monotonic clock, in microseconds, set
/// from a `TIME` reply. A lookup reads the server's time from it instead of
/// asking the server, so that a hit needs no script (entries' ages are
/// counted on the server's clock; an error of a round trip, or of the drift
/// between two checks a second apart, is nothing against a time-to-live).
#[derive(Debug)]
pub(super) struct ServerClock {
    origin: Instant,
    /// Server time less local time, from when `TIME` was sent: the server
    /// read its clock later, so this runs ahead (an upper bound).
    offset: AtomicI64,
    /// The same from when the answer came: a lower bound.
    lower: AtomicI64,
    /// When the reading in use was answered (local µs), `i64::MIN` before
    /// the first.
    set_at: AtomicI64,
}

impl ServerClock {
    fn new(reading: Reading) -> Self {
        let clock = Self {
            origin: reading.asked,
            offset: AtomicI64::new(0),
            lower: AtomicI64::new(0),
            set_at: AtomicI64::new(i64::MIN),
        };
        clock.set(reading);
        clock
    }

    fn local_us(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.origin);
        i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
    }

    /// Takes a reading, unless its round trip was too long to say when the
    /// server read its clock and the reading in use is recent (a server
    /// always slower to answer than that still has its clock read every
    /// [`MAX_CLOCK_AGE`]). Each bound comes from one reading.
    fn set(&self, reading: Reading) {
        let answered = self.local_us(reading.answered);
        let set_at = self.set_at.load(Ordering::Relaxed);
        let recent = set_at != i64::MIN
            && answered.saturating_sub(set_at) < MAX_CLOCK_AGE.as_micros() as i64;
        if reading.answered.duration_since(reading.asked) > MAX_CLOCK_ROUND_TRIP && recent {
            return;
        }
        let server = i64::try_from(reading.server_us).unwrap_or(i64::MAX);
        let asked = self.local_us(reading.asked);
        self.offset
            .store(server.saturating_sub(asked), Ordering::Relaxed);
        self.lower
            .store(server.saturating_sub(answered), Ordering::Relaxed);
        self.set_at.store(answered, Ordering::Relaxed);
    }

    /// The server's time now (µs since the Unix epoch), estimated from
    /// above: ahead of the server by at most the reading's round trip, so
    /// entries look older, never younger, than they are.
    pub(super) fn now(&self) -> u64 {
        self.at(&self.offset)
    }

    /// The server's time now, estimated from below: behind the server by
    /// at most the reading's round trip. A request's arrival, against which
    /// a tag's invalidation is compared, must not be placed later than it
    /// was.
    pub(super) fn now_lower(&self) -> u64 {
        self.at(&self.lower)
    }

    fn at(&self, offset: &AtomicI64) -> u64 {
        let now = self
            .local_us(Instant::now())
            .saturating_add(offset.load(Ordering::Relaxed));
        u64::try_from(now).unwrap_or(0)
    }
}

/// A reading of the server's clock: when `TIME` was sent and answered here,
/// and what it said.
struct Reading {
    asked: Instant,
    answered: Instant,
    server_us: u64,
}

/// The longest round trip of a `TIME` reading that replaces a recent one.
const MAX_CLOCK_ROUND_TRIP: Duration = Duration::from_millis(50);

/// How long a reading is kept when later ones are all slower than
/// [`MAX_CLOCK_ROUND_TRIP`].
const MAX_CLOCK_AGE: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum State {
    /// No verified connection: operations wait for one (within their
    /// timeout).
    Down,
    Up(Verified),
}

/// The store's connection: made, verified and replaced in the background.
pub(super) struct Link {
    client: Client,
    runtime: Handle,
    scripts: Arc<Scripts>,
    /// The keys of the dataset's incarnation and barrier on this server
    /// (see [`KeyNames::dataset`](super::names::KeyNames::dataset)); on a cluster they change when the
    /// primary's slots do.
    dataset: Mutex<(String, String)>,
    state: watch::Sender<State>,
    started: AtomicBool,
    /// Serials of connections, unique across every link of the store.
    serials: Arc<AtomicU64>,
    /// Requests to move the barrier at the next verification whatever the
    /// record says, and how many a verification has honoured.
    force: AtomicU64,
    forced: AtomicU64,
}

impl Link {
    pub(super) fn new(
        client: Client,
        runtime: Handle,
        scripts: Arc<Scripts>,
        dataset: (String, String),
        serials: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            runtime,
            scripts,
            dataset: Mutex::new(dataset),
            state: watch::Sender::new(State::Down),
            started: AtomicBool::new(false),
            serials,
            force: AtomicU64::new(0),
            forced: AtomicU64::new(0),
        })
    }

    /// Has the barrier moved before this server is used again, whatever
    /// its record says: a cluster primary that took over slots, whose keys
    /// came from another server (which may have rolled back) and were
    /// stamped by its clock. Drops the connection now.
    pub(super) fn move_barrier(&self) {
        self.force.fetch_add(1, Ordering::AcqRel);
        self.state.send_if_modified(|state| {
            let up = matches!(state, State::Up(_));
            *state = State::Down;
            up
        });
    }

    /// Moves the dataset's keys (a cluster primary whose first slot
    /// changed): the connection is verified again with them.
    pub(super) fn set_dataset(&self, dataset: (String, String)) {
        let mut current = self.dataset.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == dataset {
            return;
        }
        *current = dataset;
        drop(current);
        self.state.send_if_modified(|state| {
            let up = matches!(state, State::Up(_));
            *state = State::Down;
            up
        });
    }

    /// The verified connection, once there is one: callers bound the wait.
    pub(super) async fn get(self: &Arc<Self>) -> Verified {
        if let State::Up(verified) = &*self.state.borrow() {
            return verified.clone();
        }
        let mut state = self.state.subscribe();
        loop {
            if let State::Up(verified) = &*state.borrow_and_update() {
                return verified.clone();
            }
            self.start();
            // The sender lives as long as `self`: never an error.
            let _ = state.changed().await;
        }
    }

    /// Reports an operation's error: a connection error drops the
    /// connection it happened on (if it is still the current one), and a
    /// new one is made and verified.
    pub(super) fn failed(&self, on: &Verified, error: &RedisError) {
        // A server that became a replica answers writes with READONLY: its
        // dataset is being replaced by another's.
        let read_only = error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if error.is_io_error() || error.is_connection_dropped() || read_only {
            self.drop_connection(on.serial);
        }
    }

    fn drop_connection(&self, serial: u64) {
        self.state.send_if_modified(|state| match state {
            State::Up(verified) if verified.serial == serial => {
                *state = State::Down;
                true
            }
            _ => false,
        });
    }

    /// Starts the task that keeps the link connected, once.
    pub(super) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = Arc::downgrade(self);
        self.runtime.spawn(async move {
            // If the task ends otherwise than with the store (a panic, its
            // runtime shutting down), the next operation starts another.
            let _restart = Restart(link.clone());
            keep_connected(link).await;
        });
    }

    /// Makes a connection and verifies it.
    async fn open(self: &Arc<Self>) -> Result<(Verified, String), RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let identity = identity(&mut connection).await?;
        self.scripts
            .load()
            .query_async::<()>(&mut connection)
            .await?;
        let margin = u64::try_from(MARGIN.as_micros()).unwrap_or(u64::MAX);
        let (incarnation, barrier) = self
            .dataset
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let force = self.force.load(Ordering::Acquire);
        let forced = force > self.forced.load(Ordering::Acquire);
        let mut invocation = self.scripts.verify.prepare_invoke();
        invocation
            .key(incarnation)
            .key(barrier)
            .arg(&identity)
            .arg(margin)
            .arg(if forced { "1" } else { "0" });
        let barrier: u64 = invocation.invoke_async(&mut connection).await?;
        self.forced.fetch_max(force, Ordering::AcqRel);
        let clock = Arc::new(ServerClock::new(server_time(&mut connection).await?));
        let serial = self.serials.fetch_add(1, Ordering::Relaxed) + 1;
        let verified = Verified {
            connection,
            barrier,
            serial,
            clock,
            link: Arc::downgrade(self),
        };
        Ok((verified, identity))
    }
}

/// Marks the link's task as ended, and its connection as gone.
struct Restart(Weak<Link>);

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(link) = self.0.upgrade() {
            link.state.send_replace(State::Down);
            link.started.store(false, Ordering::Release);
        }
    }
}

/// Connects, verifies and publishes the connection; then checks it every
/// [`CHECK_INTERVAL`] until it is dropped or its server's identity
/// changes, and starts again. Ends once the store is gone.
async fn keep_connected(link: Weak<Link>) {
    let mut backoff = MIN_BACKOFF;
    // Whether the last attempt to connect failed (for the logs).
    #[cfg(feature = "tracing")]
    let mut failing = false;
    loop {
        let Some(this) = link.upgrade() else { return };
        let opened = match tokio::time::timeout(OPEN_TIMEOUT, this.open()).await {
            Ok(opened) => opened,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "connecting and verifying timed out",
            ))),
        };
        let (verified, identity) = match opened {
            Ok(opened) => opened,
            Err(_error) => {
                // Once per outage at `warn`: why the store cannot connect
                // (an ACL without INFO, a replica, a refused connection).
                #[cfg(feature = "tracing")]
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(target: "tower_etag::cache", error = %_error, "tower-etag cache: cannot connect to Redis; retrying");
                } else {
                    tracing::debug!(target: "tower_etag::cache", error = %_error, "tower-etag cache: cannot connect to Redis");
                }
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        #[cfg(feature = "tracing")]
        {
            failing = false;
        }
        let serial = verified.serial;
        let clock = Arc::clone(&verified.clock);
        let mut connection = verified.connection.clone();
        this.state.send_replace(State::Up(verified));
        let mut state = this.state.subscribe();
        drop(this);
        let mut checks = 0;
        loop {
            let down = state.wait_for(|state| !matches!(state, State::Up(v) if v.serial == serial));
            if tokio::time::timeout(CHECK_INTERVAL, down).await.is_ok() {
                break;
            }
            let check = async {
                let identity = self::identity(&mut connection).await?;
                clock.set(server_time(&mut connection).await?);
                Ok::<_, RedisError>(identity)
            };
            let checked = tokio::time::timeout(CONNECT_TIMEOUT, check).await;
            let Some(this) = link.upgrade() else { return };
            // Another identity, an error, or no answer (a server gone
            // without closing the connection; a paused one is reconnected
            // to once it answers, and verified again): a new connection.
            if !matches!(&checked, Ok(Ok(now)) if *now == identity) {
                this.drop_connection(serial);
                break;
            }
            checks += 1;
        }
        // A connection that failed before its first check is not a reason
        // to reconnect at once.
        backoff = if checks > 0 {
            MIN_BACKOFF
        } else {
            tokio::time::sleep(backoff).await;
            (backoff * 2).min(MAX_BACKOFF)
        };
    }
}

/// The server's clock (`TIME`, in microseconds since the Unix epoch), and
/// when it was asked and answered here.
async fn server_time(connection: &mut MultiplexedConnection) -> Result<Reading, RedisError> {
    let asked = Instant::now();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await?;
    Ok(Reading {
        asked,
        answered: Instant::now(),
        server_us: seconds.saturating_mul(1_000_000).saturating_add(micros),
    })
}

/// The identity of the server behind `connection`: its run id and its
/// replication id.
async fn identity(connection: &mut MultiplexedConnection) -> Result<String, RedisError> {
    let (server, replication): (String, String) = redis::pipe()
        .cmd("INFO")
        .arg("server")
        .cmd("INFO")
        .arg("replication")
        .query_async(connection)
        .await?;
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    };
    match (
        field(&server, "run_id"),
        field(&replication, "master_replid"),
    ) {
        (Some(run), Some(replication)) => Ok(format!("{run}:{replication}")),
        _ => Err(RedisError::from((
            redis::ErrorKind::Parse,
            "INFO lacks run_id or master_replid",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_from_a_reading_and_ignores_slow_ones() {
        let asked = Instant::now();
        let reading = |asked: Instant, round_trip_ms: u64, server_us: u64| Reading {
            asked,
            answered: asked + Duration::from_millis(round_trip_ms),
            server_us,
        };
        let clock = ServerClock::new(reading(asked, 1, 5_000_000_000));
        let elapsed = u64::try_from(asked.elapsed().as_micros()).unwrap();
        let now = clock.now();
        // Tied to when TIME was sent: the estimate is the reading plus the
        // time since.
        assert!(now >= 5_000_000_000 + elapsed, "{now}");
        assert!(now <= 5_000_000_000 + elapsed + 1_000_000, "{now}");
        // A reading with a long round trip does not replace it.
        clock.set(reading(Instant::now(), 200, 9_000_000_000));
        assert!(clock.now() < 6_000_000_000);
        // A prompt one does (a server clock stepped forward).
        clock.set(reading(Instant::now(), 1, 9_000_000_000));
        assert!(clock.now() >= 9_000_000_000);
        // The lower estimate is behind the upper one by the round trip.
        let (lower, upper) = (clock.now_lower(), clock.now());
        assert!(
            lower + 900 <= upper && upper <= lower + 1_000 + 100_000,
            "{lower} {upper}"
        );
        // A slow reading replaces one older than the longest age.
        let later = Instant::now() + MAX_CLOCK_AGE + Duration::from_secs(1);
        clock.set(reading(later, 200, 20_000_000_000));
        assert!(clock.now() > 19_000_000_000);
        assert!(clock.now_lower() + 200_000 <= clock.now());
    }
}
