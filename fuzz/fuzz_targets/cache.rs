//! The validator cache in front of the ETag layer: fuzzer-chosen sequences
//! of requests (method, path, arbitrary bytes in the fields the cache reads)
//! and handler responses (status, arbitrary bytes in the fields it remembers
//! or obeys). Checks: no panic, a 304 always carries an `ETag`, and a 304
//! answered without the handler confirms only a tag the handler gave for
//! that path since it was last written.
#![no_main]

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    pin::pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use tower::{ServiceBuilder, ServiceExt};
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

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

#[derive(Default)]
struct World {
    versions: HashMap<String, u64>,
    given: HashSet<(String, u64, Vec<u8>)>,
    newest: HashMap<String, Vec<u8>>,
    plan: (u16, Vec<(HeaderName, HeaderValue)>),
    calls: u64,
}

#[derive(Clone)]
struct Served(String, u64);

fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("everything here is ready at once"),
    }
}

libfuzzer_sys::fuzz_target!(|steps: Vec<Step>| {
    let world = Arc::new(Mutex::new(World::default()));
    let handler_world = world.clone();
    let recorder = world.clone();
    let service = ServiceBuilder::new()
        .layer(ValidatorCacheLayer::new(
            ValidatorCache::builder().max_entries(16).build(),
        ))
        .map_response(move |response: Response<_>| {
            if let (Some(tag), Some(Served(path, version))) = (
                response.headers().get("etag"),
                response.extensions().get::<Served>(),
            ) {
                let mut world = recorder.lock().unwrap();
                world
                    .given
                    .insert((path.clone(), *version, tag.as_bytes().to_vec()));
                world.newest.insert(path.clone(), tag.as_bytes().to_vec());
            }
            response
        })
        .layer(ETagLayer::new())
        .service_fn(move |request: Request<()>| {
            let mut world = handler_world.lock().unwrap();
            world.calls += 1;
            let path = request.uri().to_string();
            let version = world.versions.entry(path.clone()).or_default();
            if request.method() != Method::GET {
                *version += 1;
            }
            let version = *version;
            let (status, fields) = world.plan.clone();
            let body = once_body::body(format!("{path} v{version}"));
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in fields {
                response.headers_mut().append(name, value);
            }
            response.extensions_mut().insert(Served(path, version));
            async { Ok::<_, Infallible>(response) }
        });

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
                if let Some(tag) = world.newest.get(path) {
                    if let Ok(value) = HeaderValue::from_bytes(tag) {
                        request.headers_mut().insert("if-none-match", value);
                    }
                }
            }
            let mut fields = Vec::new();
            for (which, value) in &step.response {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    let name = RESPONSE_FIELDS[usize::from(*which) % RESPONSE_FIELDS.len()];
                    fields.push((HeaderName::from_static(name), value));
                }
            }
            world.plan = (STATUSES[usize::from(step.status) % STATUSES.len()], fields);
            world.calls
        };
        let response = now(service.clone().oneshot(request)).unwrap();
        let world = world.lock().unwrap();
        if response.status() == StatusCode::NOT_MODIFIED && world.calls == calls_before {
            let tag = response
                .headers()
                .get("etag")
                .expect("a 304 carries the tag");
            let version = world.versions.get(path).copied().unwrap_or(0);
            assert!(
                world
                    .given
                    .contains(&(path.to_owned(), version, tag.as_bytes().to_vec())),
                "{path} v{version}: {tag:?} answered from the cache, never given for this version"
            );
        }
    }
});

/// A one-chunk body, without a dependency on http-body-util for it.
mod once_body {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use http_body::{Body, Frame};

    pub struct Once(Option<Bytes>);

    pub fn body(text: String) -> Once {
        Once(Some(Bytes::from(text)))
    }

    impl Body for Once {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }
    }
}
