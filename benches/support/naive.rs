//! The baseline a user might write by hand with `axum::middleware::from_fn`:
//! collect the body, hash it, set the header. Shared by the criterion bench
//! and the load server so both measure the same code.

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue},
    middleware::Next,
    response::Response,
};
use http_body_util::BodyExt;

pub(crate) async fn naive_etag(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let (mut parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let tag = format!("\"{}\"", blake3::hash(&bytes).to_hex());
    parts
        .headers
        .insert(header::ETAG, HeaderValue::from_str(&tag).unwrap());
    Response::from_parts(parts, Body::from(bytes))
}
