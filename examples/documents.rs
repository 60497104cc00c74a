//! JSON documents in SQLite, with conditional writes: `If-Match` checked
//! inside the transaction that writes, 412 with the current tag when someone
//! else wrote first, and, with `REQUIRE_PRECONDITION=1`, 428 for changes that
//! carry no precondition.
//!
//! ```text
//! cargo run --example documents                   # listens on 127.0.0.1:3000
//! cargo run --example documents -- 127.0.0.1:0    # any free port
//! REQUIRE_PRECONDITION=1 cargo run --example documents
//! ```
//!
//! - `GET /documents/{id}`: the document exactly as stored, tagged by the
//!   ETag layer; revalidations are answered by a validator cache.
//! - `PUT /documents/{id}` with a JSON object: stores it as sent; 201 when
//!   created, 204 with the new `ETag` when replaced.
//! - `PATCH /documents/{id}` with a JSON object: merges it (RFC 7396: `null`
//!   removes a member); 204 with the new `ETag`.
//! - `DELETE /documents/{id}`: 204.
//!
//! Every write evaluates the request's preconditions against the document
//! read in the same SQLite transaction, so two writers that saw the same
//! version cannot both succeed. (With the crate's `axum` feature a handler
//! can take `Preconditions` itself as an extractor; this example reads it
//! from the method and header fields so that it runs without features.)

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    conditional::{Current, Preconditions},
    ETagLayer,
};

#[derive(Clone)]
pub(crate) struct Documents {
    db: Arc<Mutex<Connection>>,
    /// The layer the `GET`s go through: its configuration decides the tags.
    etag: ETagLayer,
    require_precondition: bool,
}

impl Documents {
    /// Documents in an SQLite database in memory.
    pub(crate) fn in_memory(require_precondition: bool) -> rusqlite::Result<Self> {
        let db = Connection::open_in_memory()?;
        db.execute(
            "CREATE TABLE documents (id TEXT PRIMARY KEY, body BLOB NOT NULL)",
            [],
        )?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
            etag: ETagLayer::new(),
            require_precondition,
        })
    }
}

/// What a write does to the stored document, given the current one.
enum Edit {
    Replace(Bytes),
    Merge(Map<String, Value>),
    Delete,
}

async fn show(State(docs): State<Documents>, Path(id): Path<String>) -> Response {
    let found = blocking(move || {
        let db = docs.db.lock().unwrap();
        db.query_row("SELECT body FROM documents WHERE id = ?1", [&id], |row| {
            row.get::<_, Vec<u8>>(0)
        })
        .optional()
    })
    .await;
    match found {
        Ok(Some(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => internal(error),
    }
}

/// `PUT`, `PATCH` and `DELETE`.
async fn change(
    State(docs): State<Documents>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let edit = match method {
        Method::DELETE => Edit::Delete,
        Method::PATCH => match json_object(&body) {
            Some(patch) => Edit::Merge(patch),
            None => return bad_request(),
        },
        _ if json_object(&body).is_some() => Edit::Replace(body),
        _ => return bad_request(),
    };
    let preconditions = Preconditions::new(&method, &headers);
    write(docs, id, preconditions, edit).await
}

/// One write: read the current document, check the preconditions against
/// it and write, all in one transaction.
async fn write(docs: Documents, id: String, preconditions: Preconditions, edit: Edit) -> Response {
    let preconditions = preconditions.require(docs.require_precondition);
    blocking(move || {
        let mut db = docs.db.lock().unwrap();
        let tx = db.transaction()?;
        let stored: Option<Vec<u8>> = tx
            .query_row("SELECT body FROM documents WHERE id = ?1", [&id], |row| {
                row.get(0)
            })
            .optional()?;
        // The tag the document's GET carries: the layer's tag of its bytes.
        let current_tag = stored.as_ref().map(|body| docs.etag.tag_for(body));
        let current = match &current_tag {
            Some(tag) => Current::tagged(tag),
            None => Current::missing(),
        };
        if let Err(rejection) = preconditions.check(current) {
            return Ok(rejection.into_http_response().into_response());
        }
        let new_body = match edit {
            Edit::Delete if stored.is_none() => return Ok(StatusCode::NOT_FOUND.into_response()),
            Edit::Delete => {
                tx.execute("DELETE FROM documents WHERE id = ?1", [&id])?;
                tx.commit()?;
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Edit::Merge(_) if stored.is_none() => return Ok(StatusCode::NOT_FOUND.into_response()),
            Edit::Merge(patch) => {
                let mut document = stored.as_deref().and_then(json_object).unwrap_or_default();
                merge_patch(&mut document, patch);
                serde_json::to_vec(&document).expect("a JSON object serializes")
            }
            Edit::Replace(body) => body.to_vec(),
        };
        tx.execute(
            "INSERT INTO documents (id, body) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            params![id, new_body],
        )?;
        tx.commit()?;
        if stored.is_none() {
            return Ok(StatusCode::CREATED.into_response());
        }
        // RFC 9110 §9.3.4: the document is stored exactly as this response's
        // tag describes, so the next GET will carry the same tag and the
        // client can chain its next If-Match without a GET.
        let tag = docs.etag.tag_for(&new_body);
        Ok((
            StatusCode::NO_CONTENT,
            [(header::ETAG, tag.to_header_value())],
        )
            .into_response())
    })
    .await
    .unwrap_or_else(internal)
}

/// RFC 7396 for the top level: `null` removes a member, anything else
/// replaces it.
fn merge_patch(document: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        if value.is_null() {
            document.remove(&key);
        } else {
            document.insert(key, value);
        }
    }
}

fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice(body).ok()
}

fn bad_request() -> Response {
    (StatusCode::BAD_REQUEST, "the body must be a JSON object\n").into_response()
}

fn internal(error: rusqlite::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response()
}

/// Runs SQLite off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> rusqlite::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the SQLite task does not panic")
}

pub(crate) fn app(docs: Documents, cache: ValidatorCache) -> Router {
    let etag = docs.etag.clone();
    Router::new()
        .route(
            "/documents/{id}",
            get(show).put(change).patch(change).delete(change),
        )
        .layer(etag)
        .layer(ValidatorCacheLayer::new(cache))
        .with_state(docs)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()?;
    let require = std::env::var("REQUIRE_PRECONDITION").is_ok_and(|v| v == "1");
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = app(
        Documents::in_memory(require)?,
        ValidatorCache::builder().build(),
    );
    println!("listening on http://{addr}");
    println!();
    println!("  curl -i -X PUT --data '{{\"title\":\"draft\"}}' http://{addr}/documents/1");
    println!("  curl -i http://{addr}/documents/1");
    println!("  curl -i -X PUT -H 'If-Match: <the tag>' --data '{{\"title\":\"final\"}}' http://{addr}/documents/1");
    if require {
        println!("Unconditional changes to existing documents get 428.");
    }
    axum::serve(listener, app).await?;
    Ok(())
}
