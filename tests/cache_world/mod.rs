//! A model world for the validator cache, shared by
//! `tests/cache_robustness.rs` and the `cache` fuzz target: a handler whose
//! data per path has a version (a write bumps it), answering with a planned
//! status and fields; a record, between the cache and the ETag layer, of the
//! tags the handler path gave for each path and version; and the check that
//! a 304 answered without the handler confirms only such a tag for the
//! current version.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Service, ServiceBuilder};
use tower_etag::{
    cache::{ValidatorCache, ValidatorCacheLayer},
    ETagLayer,
};

/// Marks the handler's response with the path and the version of its data.
#[derive(Clone)]
struct Served(String, u64);

#[derive(Default)]
pub struct World {
    /// The version of each path's data; a write bumps its own path.
    versions: HashMap<String, u64>,
    /// Tags the handler path gave: (path, version, tag).
    given: HashSet<(String, u64, Vec<u8>)>,
    /// The newest tag the handler path gave for each path.
    newest: HashMap<String, Vec<u8>>,
    /// The handler's status and extra fields for the next request.
    plan: (u16, Vec<(HeaderName, HeaderValue)>),
    calls: u64,
}

pub type Shared = Arc<Mutex<World>>;

/// The world, and the cache and ETag layers around its handler.
pub fn service(
    cache: ValidatorCache,
) -> (
    Shared,
    impl Service<Request<()>, Response = Response<impl Sized>, Error = Infallible> + Clone,
) {
    let world = Shared::default();
    let (handler_world, recorder) = (world.clone(), world.clone());
    let service = ServiceBuilder::new()
        .layer(ValidatorCacheLayer::new(cache))
        .map_response(move |response: Response<_>| {
            if let (Some(tag), Some(Served(path, version))) = (
                response.headers().get("etag"),
                response.extensions().get::<Served>(),
            ) {
                let mut world = recorder.lock().unwrap();
                let tag = tag.as_bytes().to_vec();
                world.given.insert((path.clone(), *version, tag.clone()));
                world.newest.insert(path.clone(), tag);
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
            let mut response = Response::new(format!("{path} v{version}"));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in fields {
                response.headers_mut().append(name, value);
            }
            response.extensions_mut().insert(Served(path, version));
            async { Ok::<_, Infallible>(response) }
        });
    (world, service)
}

impl World {
    /// Plans the handler's next answer; returns the handler calls so far.
    pub fn plan(&mut self, status: u16, fields: Vec<(HeaderName, HeaderValue)>) -> u64 {
        self.plan = (status, fields);
        self.calls
    }

    pub fn planned_status(&self) -> u16 {
        self.plan.0
    }

    /// The newest tag the handler path gave for `path`.
    pub fn newest(&self, path: &str) -> Option<&[u8]> {
        self.newest.get(path).map(Vec::as_slice)
    }

    /// The tags the handler path gave for `path`: for its current data, or
    /// for any version; sorted.
    pub fn given(&self, path: &str, any_version: bool) -> Vec<&[u8]> {
        let version = self.version(path);
        let mut tags: Vec<&[u8]> = (self.given.iter())
            .filter(|(p, v, _)| p == path && (any_version || *v == version))
            .map(|(_, _, tag)| tag.as_slice())
            .collect();
        tags.sort();
        tags
    }

    fn version(&self, path: &str) -> u64 {
        self.versions.get(path).copied().unwrap_or(0)
    }

    /// Checks a response to a request for `path` sent when the handler had
    /// been called `calls_before` times; returns whether the cache answered
    /// it. A 304 from the cache must carry a tag the handler path gave for
    /// the path's current data.
    pub fn check<B>(&self, path: &str, calls_before: u64, response: &Response<B>) -> bool {
        if self.calls != calls_before {
            return false;
        }
        assert_eq!(
            response.status(),
            StatusCode::NOT_MODIFIED,
            "only a 304 comes from the cache"
        );
        let tag = response
            .headers()
            .get("etag")
            .expect("a 304 carries the tag");
        let version = self.version(path);
        assert!(
            self.given
                .contains(&(path.to_owned(), version, tag.as_bytes().to_vec())),
            "{path} v{version}: {tag:?} answered from the cache, never given for this version"
        );
        true
    }
}
