//! One replica of an app deployed as several behind a load balancer: notes
//! in an SQLite database file that every replica opens, and a validator
//! cache shared by all replicas on Redis. `examples/replicas.sh` starts
//! Redis and two replicas and shows a revalidation through one answered
//! from a fill through the other.
//!
//! ```text
//! cargo run --example replica --features redis -- \
//!     127.0.0.1:3001 --redis redis://127.0.0.1:6379/ --db /tmp/notes.db [--strict]
//! ```
//!
//! `--strict`: the shared cache runs with strict writes: a `PUT` whose
//! invalidation Redis does not confirm within the timeout answers 503 with
//! `Retry-After` and writes nothing (see `RedisStoreBuilder::strict_writes`).
//!
//! Redis Cluster: `--cluster`, with `--redis URL` once per seed node (any
//! of the cluster's nodes; the replica reads the slot map from them):
//!
//! ```text
//! cargo run --example replica --features redis -- 127.0.0.1:3001 --cluster \
//!     --redis redis://10.0.0.1:6379/ --redis redis://10.0.0.2:6379/ --db /tmp/notes.db
//! ```
//!
//! TLS (feature `redis-tls`): a `rediss://` URL; `--redis-ca FILE` trusts
//! the PEM certificates in FILE instead of the platform's roots, and
//! `--redis-cert FILE --redis-key FILE` present a client certificate
//! (mutual TLS).
//!
//! Every replica must use the same Redis, key prefix (`notes` here) and
//! secret, and be reached under the same host name.
//!
//! Routes:
//! - `GET /notes/{id}`: the note, after 2 ms of "database" latency, with
//!   `Cache-Control: no-cache` so that clients revalidate every time;
//! - `PUT /notes/{id}`: replaces the note (every replica's cache forgets it);
//!   with `If-Match`, only if the note still has that tag (412 otherwise),
//!   checked in the SQLite transaction that writes; the new note's `ETag` in
//!   the 204;
//! - `GET /content/1k`, `GET /content/1m`: fixed content of that size;
//! - `GET /slow/1k`: 1 KiB after 2 ms of awaited latency;
//! - the same routes under `/memory` with a cache in this process only, and
//!   under `/none` with the ETag layer alone (for `benches/redis_load.sh`);
//! - `GET /stats`: the counters of both caches.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tower_etag::{
    cache::{RedisStore, ValidatorCache, ValidatorCacheLayer},
    conditional::{Current, Preconditions},
    ETagLayer,
};

#[derive(Clone)]
struct Notes {
    db: Arc<Mutex<Connection>>,
    /// The layer the `GET`s go through: its configuration decides the tags.
    etag: ETagLayer,
}

impl Notes {
    fn open(path: &str, etag: ETagLayer) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        // Several processes share the file.
        db.busy_timeout(Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT NOT NULL);
             INSERT OR IGNORE INTO notes VALUES ('1', 'Buy milk'), ('2', 'Call Ada');",
        )?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
            etag,
        })
    }
}

async fn show(State(notes): State<Notes>, Path(id): Path<String>) -> impl IntoResponse {
    // What a database query over the network would cost.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let note: Option<String> = notes
        .db
        .lock()
        .unwrap()
        .query_row("SELECT body FROM notes WHERE id = ?1", [&id], |row| {
            row.get(0)
        })
        .optional()
        .unwrap_or(None);
    match note {
        Some(note) => ([(header::CACHE_CONTROL, "no-cache")], note).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn replace(
    State(notes): State<Notes>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: String,
) -> Response {
    let preconditions = Preconditions::new(&method, &headers);
    let written = write(
        &mut notes.db.lock().unwrap(),
        &notes.etag,
        &id,
        &body,
        &preconditions,
    );
    written.unwrap_or_else(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())
}

/// One write: read the note, check the preconditions against it and write,
/// all in one transaction.
fn write(
    db: &mut Connection,
    etag: &ETagLayer,
    id: &str,
    body: &str,
    preconditions: &Preconditions,
) -> rusqlite::Result<Response> {
    // IMMEDIATE takes the database's write lock before the read, so no
    // replica writes the note between this check and this write (a deferred
    // transaction would instead fail its write with SQLITE_BUSY once another
    // replica had written since its read).
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<String> = tx
        .query_row("SELECT body FROM notes WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    // The tag the note's GET carries: the ETag layer's tag of its bytes.
    let current_tag = stored.map(|note| etag.tag_for(note));
    let current = match &current_tag {
        Some(tag) => Current::tagged(tag),
        None => Current::missing(),
    };
    // A stale If-Match gets 412 with the current tag (and the transaction
    // rolls back); a PUT without preconditions still replaces the note.
    if let Err(rejection) = preconditions.check(current) {
        return Ok(rejection.into_http_response().into_response());
    }
    tx.execute(
        "INSERT INTO notes (id, body) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        params![id, body],
    )?;
    tx.commit()?;
    // RFC 9110 §9.3.4: the note is stored exactly as sent, so this is the
    // tag its next GET carries, which the client can send as its next
    // If-Match.
    let tag = etag.tag_for(body);
    Ok((
        StatusCode::NO_CONTENT,
        [(header::ETAG, tag.to_header_value())],
    )
        .into_response())
}

fn content(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn routes(notes: Notes) -> Router {
    let kib = content(1024);
    let mib = content(1024 * 1024);
    let slow = kib.clone();
    Router::new()
        .route("/notes/{id}", get(show).put(replace))
        .route("/content/1k", get(move || async move { kib }))
        .route("/content/1m", get(move || async move { mib }))
        .route(
            "/slow/1k",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                slow
            }),
        )
        .with_state(notes)
}

fn app(notes: Notes, shared: ValidatorCache, local: ValidatorCache) -> Router {
    let etag = notes.etag.clone();
    let stats = {
        let (shared, local) = (shared.clone(), local.clone());
        move || async move {
            let (s, l) = (shared.stats(), local.stats());
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!(
                    "{{\"redis\":{{\"hits\":{},\"misses\":{},\"fills\":{},\"unavailable\":{}}},\
                     \"memory\":{{\"hits\":{},\"misses\":{},\"fills\":{}}}}}\n",
                    s.hits, s.misses, s.fills, s.unavailable, l.hits, l.misses, l.fills
                ),
            )
        }
    };
    Router::new()
        .merge(
            routes(notes.clone())
                .layer(etag.clone())
                .layer(ValidatorCacheLayer::new(shared)),
        )
        .nest(
            "/memory",
            routes(notes.clone())
                .layer(etag.clone())
                .layer(ValidatorCacheLayer::new(local)),
        )
        .nest("/none", routes(notes).layer(etag))
        .route("/stats", get(stats))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = "127.0.0.1:3000".parse()?;
    let mut redis = Vec::new();
    let mut cluster = false;
    let mut db = "notes.db".to_owned();
    let mut strict = false;
    let mut tls = Tls::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => redis.push(args.next().ok_or("--redis needs a URL")?),
            "--cluster" => cluster = true,
            "--db" => db = args.next().ok_or("--db needs a path")?,
            "--strict" => strict = true,
            "--redis-ca" => tls.ca = Some(args.next().ok_or("--redis-ca needs a file")?),
            "--redis-cert" => tls.cert = Some(args.next().ok_or("--redis-cert needs a file")?),
            "--redis-key" => tls.key = Some(args.next().ok_or("--redis-key needs a file")?),
            other => addr = other.parse()?,
        }
    }
    if redis.is_empty() {
        redis.push("redis://127.0.0.1:6379/".to_owned());
    }
    if redis.len() > 1 && !cluster {
        return Err("several --redis URLs are the seeds of a cluster: add --cluster".into());
    }
    // One thread: the replica's CPU time per request is then one core's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let notes = Notes::open(&db, ETagLayer::new().max_body_size(4 * 1024 * 1024))?;
        let ttl = Duration::from_secs(300);
        let store = if cluster {
            RedisStore::cluster(redis)
        } else {
            RedisStore::builder(redis.remove(0))
        };
        let store = store
            .prefix("notes")
            .secret(std::env::var("CACHE_SECRET").unwrap_or_default())
            .strict_writes(strict);
        let store = tls.apply(store)?.build()?;
        let shared = ValidatorCache::builder()
            .time_to_live(ttl)
            .redis(store)
            .build();
        let local = ValidatorCache::builder().time_to_live(ttl).build();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app(notes, shared, local)).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// The TLS files given on the command line.
#[derive(Default)]
struct Tls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl Tls {
    #[cfg(feature = "redis-tls")]
    fn apply(
        self,
        mut store: tower_etag::cache::RedisStoreBuilder,
    ) -> Result<tower_etag::cache::RedisStoreBuilder, Box<dyn std::error::Error>> {
        if let Some(ca) = self.ca {
            store = store.tls_root_certificates(std::fs::read(ca)?);
        }
        match (self.cert, self.key) {
            (Some(cert), Some(key)) => {
                store = store.tls_client_identity(std::fs::read(cert)?, std::fs::read(key)?);
            }
            (None, None) => {}
            _ => return Err("--redis-cert and --redis-key go together".into()),
        }
        Ok(store)
    }

    #[cfg(not(feature = "redis-tls"))]
    fn apply(
        self,
        store: tower_etag::cache::RedisStoreBuilder,
    ) -> Result<tower_etag::cache::RedisStoreBuilder, Box<dyn std::error::Error>> {
        if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
            return Err("TLS flags need the redis-tls feature: --features redis-tls".into());
        }
        Ok(store)
    }
}
