//! The validator cache in front of the ETag layer: fuzzer-chosen sequences
//! of requests (method, path, arbitrary bytes in the fields the cache reads)
//! and handler responses (status, arbitrary bytes in the fields it remembers
//! or obeys), in the model world of `tests/cache_world`. Checks: no panic,
//! and an answer without the handler is a 304 that carries a tag the handler
//! gave for that path since it was last written.
#![no_main]

#[path = "../../tests/cache_world/mod.rs"]
mod cache_world;

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use tower::ServiceExt;
use tower_etag::cache::ValidatorCache;

#[derive(Arbitrary, Debug)]
struct Step {
    method: u8,
    path: u8,
    /// (which request field, value)
    request: Vec<(u8, Vec<u8>)>,
    status: u8,
    /// (which response field, value)
    response: Vec<(u8, Vec<u8>)>,
    /// Present the newest tag the handler gave for this path.
    echo: bool,
}

const REQUEST_FIELDS: [&str; 8] = [
    "if-none-match",
    "if-match",
    "if-unmodified-since",
    "host",
    "cookie",
    "accept-encoding",
    "cache-control",
    "pragma",
];
const RESPONSE_FIELDS: [&str; 7] = [
    "etag",
    "vary",
    "cache-control",
    "set-cookie",
    "location",
    "content-location",
    "last-modified",
];
const PATHS: [&str; 4] = ["/a", "/a?x", "/b/c", "/"];
const STATUSES: [u16; 8] = [200, 200, 200, 201, 204, 304, 404, 500];

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("everything here is ready at once"),
    }
}

libfuzzer_sys::fuzz_target!(|steps: Vec<Step>| {
    let (world, service) = cache_world::service(ValidatorCache::builder().max_entries(16).build());
    for step in steps.iter().take(64) {
        let path = PATHS[usize::from(step.path) % PATHS.len()];
        let method = match step.method % 6 {
            0 => Method::PUT,
            1 => Method::POST,
            2 => Method::HEAD,
            _ => Method::GET,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        for (which, value) in &step.request {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                let name = REQUEST_FIELDS[usize::from(*which) % REQUEST_FIELDS.len()];
                request
                    .headers_mut()
                    .append(HeaderName::from_static(name), value);
            }
        }
        let calls_before = {
            let mut world = world.lock().unwrap();
            if step.echo {
                if let Some(Ok(tag)) = world.newest(path).map(HeaderValue::from_bytes) {
                    request.headers_mut().insert("if-none-match", tag);
                }
            }
            let mut fields = Vec::new();
            for (which, value) in &step.response {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    let name = RESPONSE_FIELDS[usize::from(*which) % RESPONSE_FIELDS.len()];
                    fields.push((HeaderName::from_static(name), value));
                }
            }
            world.plan(STATUSES[usize::from(step.status) % STATUSES.len()], fields)
        };
        let response = now(service.clone().oneshot(request)).unwrap();
        world.lock().unwrap().check(path, calls_before, &response);
    }
});
