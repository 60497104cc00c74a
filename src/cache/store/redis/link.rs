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
//! missing, the dataset's *barrier* moves to the server's clock plus
//! [`MARGIN`], and no replica trusts an entry stored before the barrier
//! (each verifies its own connection, so every replica reaches that
//! conclusion, also one that starts after the event). The price is misses
//! for the resources concerned until they are stored again; a stale 304 is
//! not possible.
//!
//! A connection is dropped and a new one made and verified when an
//! operation fails with a connection error (a restart or a failover always
//! breaks connections) and when the periodic check ([`CHECK_INTERVAL`])
//! finds another identity behind the same connection. This is why the
//! store manages its connection itself instead of using redis-rs'
//! `ConnectionManager`: that one reconnects in the background and sends
//! the next command on the new connection before anything could verify it.
//!
//! The same step loads every script, so the first operation after Redis
//! started does not pay a `NOSCRIPT` round trip (and a slow `SCRIPT LOAD`
//! cannot outlast a write's end).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Client, RedisError};
use tokio::{runtime::Handle, sync::watch};

use super::{names::KeyNames, scripts::Scripts};

/// Added to the server's clock when the barrier moves: entries stored up to
/// this long after a rollback was noticed are not trusted either. It covers
/// the difference between the clocks of a failed master and the replica
/// that replaced it, whose clock then stamps entries.
pub(super) const MARGIN: Duration = Duration::from_secs(1);

/// How often the identity of the server behind a connection is checked,
/// for a change that broke no connection.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Bounds making a connection and verifying it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest and longest waits between attempts to connect.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A verified connection.
#[derive(Clone)]
pub(super) struct Verified {
    pub(super) connection: MultiplexedConnection,
    /// Entries stored before this time (µs, on the server's clock) are not
    /// to be trusted.
    pub(super) barrier: u64,
    /// Tells this connection from the ones before and after it.
    serial: u64,
}

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
    incarnation: String,
    barrier: String,
    state: watch::Sender<State>,
    started: AtomicBool,
    serial: AtomicU64,
}

impl Link {
    pub(super) fn new(
        client: Client,
        runtime: Handle,
        scripts: Arc<Scripts>,
        keys: &KeyNames,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            runtime,
            scripts,
            incarnation: keys.incarnation(),
            barrier: keys.barrier(),
            state: watch::Sender::new(State::Down),
            started: AtomicBool::new(false),
            serial: AtomicU64::new(0),
        })
    }

    /// The verified connection, once there is one: callers bound the wait.
    pub(super) async fn get(self: &Arc<Self>) -> Verified {
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
        if error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error() {
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
        self.runtime.spawn(keep_connected(link));
    }

    /// Makes a connection and verifies it.
    async fn open(&self) -> Result<(Verified, String), RedisError> {
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
        let mut invocation = self.scripts.verify.prepare_invoke();
        invocation
            .key(&self.incarnation)
            .key(&self.barrier)
            .arg(&identity)
            .arg(margin);
        let barrier: u64 = invocation.invoke_async(&mut connection).await?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        let verified = Verified {
            connection,
            barrier,
            serial,
        };
        Ok((verified, identity))
    }
}

/// Connects, verifies and publishes the connection; then checks it every
/// [`CHECK_INTERVAL`] until it is dropped or its server's identity
/// changes, and starts again. Ends once the store is gone.
async fn keep_connected(link: Weak<Link>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(this) = link.upgrade() else { return };
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, this.open()).await;
        let Ok(Ok((verified, identity))) = opened else {
            drop(this);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = MIN_BACKOFF;
        let serial = verified.serial;
        let mut connection = verified.connection.clone();
        this.state.send_replace(State::Up(verified));
        let mut state = this.state.subscribe();
        drop(this);
        loop {
            let down = state.wait_for(|state| !matches!(state, State::Up(v) if v.serial == serial));
            if tokio::time::timeout(CHECK_INTERVAL, down).await.is_ok() {
                break;
            }
            let checked =
                tokio::time::timeout(CONNECT_TIMEOUT, self::identity(&mut connection)).await;
            let same = matches!(&checked, Ok(Ok(now)) if *now == identity);
            let Some(this) = link.upgrade() else { return };
            // A check that timed out is not a change: Redis may be busy or
            // paused, which rolls nothing back. An error or another identity
            // is.
            if checked.is_ok() && !same {
                this.drop_connection(serial);
                break;
            }
        }
    }
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
