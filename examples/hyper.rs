//! tower-etag in a hyper server without axum: a `service_fn` behind
//! `ServiceBuilder`, served with hyper-util (HTTP/1.1 and HTTP/2).
//!
//! ```text
//! cargo run --example hyper                   # listens on 127.0.0.1:3000
//! cargo run --example hyper -- 127.0.0.1:0    # any free port
//! curl -i http://127.0.0.1:3000/              # 200 with an ETag
//! curl -I http://127.0.0.1:3000/              # HEAD: the same ETag and Content-Length
//! ```

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_etag::ETagLayer;

/// The page served at `/`.
pub(crate) const PAGE: &str = "Hello from hyper and tower-etag\n";

const VERSION: &str = concat!(r#"{"version":""#, env!("CARGO_PKG_VERSION"), r#""}"#);

/// The application: a plain function from request to response. It answers
/// `GET` only; the layer turns a `HEAD` into a `GET` for it and drops the
/// content afterwards, so `HEAD` works too.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (StatusCode::OK, "text/plain; charset=utf-8", PAGE),
        (&Method::GET, "/version") => (StatusCode::OK, "application/json", VERSION),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    };
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        // Caches may store the page but must revalidate it before each use;
        // with the tag, revalidating costs them a 304 and no body.
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::from(body))
        .expect("a valid response");
    Ok(response)
}

/// Accepts connections on `listener` and serves each with the layered
/// service until the task is dropped.
pub(crate) async fn serve(listener: TcpListener) {
    let service = ServiceBuilder::new()
        .layer(ETagLayer::new())
        .service_fn(handle);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // HTTP/1.1, or HTTP/2 with prior knowledge.
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {error}");
            }
        });
    }
}

#[tokio::main]
#[allow(dead_code)] // The tests include this file for `serve` and do not call `main`.
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3000")
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!(
        "tower-etag hyper example listening on http://{}",
        listener.local_addr()?
    );
    serve(listener).await;
    Ok(())
}
