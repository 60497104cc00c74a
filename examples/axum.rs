//! An axum app with tower-etag.
//!
//! ```text
//! cargo run --example axum                    # listens on 127.0.0.1:3000
//! cargo run --example axum -- 127.0.0.1:0     # any free port
//! ```
//!
//! It prints the curl commands that show a tagged 200 and then a 304.

use std::net::SocketAddr;

use axum::{
    http::{header, HeaderValue},
    response::{Html, IntoResponse},
    routing::get,
    Router,
};
use tower::ServiceExt;
use tower_etag::ETagLayer;
use tower_http::set_header::SetResponseHeaderLayer;

async fn index() -> Html<&'static str> {
    Html("<!doctype html><title>tower-etag</title><h1>Hello from tower-etag</h1>\n")
}

async fn stats() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"requests":42,"status":"ok"}"#,
    )
}

fn app() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/stats.json", get(stats))
        // Clients and shared caches may keep a copy for 10 s, then revalidate.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=10"),
        ))
        // Outermost, so it sees the final bytes and headers.
        .layer(ETagLayer::new())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = app();

    // Ask the app itself for the tag, to print a request that revalidates.
    let response = app
        .clone()
        .oneshot(axum::extract::Request::new(axum::body::Body::empty()))
        .await?;
    let etag = response.headers()[header::ETAG].to_str()?.to_owned();

    println!("tower-etag demo listening on http://{addr}");
    println!();
    println!("A 200 with an ETag:");
    println!("  curl -i http://{addr}/");
    println!("The same request presenting that tag gets a 304 Not Modified:");
    println!("  curl -i -H 'If-None-Match: {etag}' http://{addr}/");
    println!("curl can keep the tag for you:");
    println!("  curl --etag-save etag.txt http://{addr}/ && curl -i --etag-compare etag.txt http://{addr}/");
    println!("HEAD gets the same ETag and Content-Length:");
    println!("  curl -I http://{addr}/");

    axum::serve(listener, app).await?;
    Ok(())
}
