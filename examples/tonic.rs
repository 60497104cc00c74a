//! tower-etag on a tonic server: the gRPC health service and a plain HTTP
//! `GET` route on one port, the layer around both.
//!
//! gRPC calls are `POST`s, so they pass through the layer untouched (body,
//! trailers and `grpc-status` included); the `GET` route is tagged and
//! answers revalidations with 304.
//!
//! ```text
//! cargo run --example tonic                   # listens on 127.0.0.1:50051
//! cargo run --example tonic -- 127.0.0.1:0    # any free port
//! curl -i http://127.0.0.1:50051/             # 200 with an ETag
//! grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check   # if you have grpcurl
//! ```

use std::net::SocketAddr;

use axum::{response::Html, routing::get};
use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{server::TcpIncoming, Server},
};
use tonic_health::{server::health_reporter, ServingStatus};
use tower_etag::ETagLayer;

/// The page served at `/`.
pub(crate) const PAGE: &str =
    "<!doctype html><title>status</title><p>grpc.health.v1.Health is served here too.\n";

/// The name under which the example reports itself to the health service.
pub(crate) const SERVICE: &str = "tower_etag.example.Status";

/// The gRPC health service and the `GET /` route, without the layer.
pub(crate) async fn routes() -> Routes {
    let (reporter, health) = health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let router = Routes::new(health)
        .into_axum_router()
        .route("/", get(|| async { Html(PAGE) }));
    Routes::from(router)
}

/// Serves [`routes`] behind the layer on `listener`.
pub(crate) async fn serve(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    Server::builder()
        // gRPC needs HTTP/2; browsers and curl ask for `/` over HTTP/1.1.
        .accept_http1(true)
        // Around every route; gRPC calls pass through it untouched.
        .layer(ETagLayer::new())
        .add_routes(routes().await)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

#[tokio::main]
#[allow(dead_code)] // The tests include this file for `serve` and do not call `main`.
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:50051")
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!(
        "tower-etag tonic example listening on http://{}",
        listener.local_addr()?
    );
    serve(listener).await?;
    Ok(())
}
