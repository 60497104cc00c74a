//! Arbitrary fields through the validator cache and the ETag layer: the
//! request fields the cache reads (`If-None-Match`, `Host`, `Cookie`,
//! `Authorization`, `Accept-Encoding`, `Cache-Control`, `Pragma`,
//! `If-Match`) and the response fields it remembers or obeys (`Vary`,
//! `Cache-Control`, `ETag`, `Content-Location`, `Location`, `Set-Cookie`),
//! drawn from syntax fragments and random bytes, for `GET`, `HEAD` and
//! writes, with statuses of every class.
//!
//! Whatever comes in: no panic; the handler's status, or a 304 carrying an
//! `ETag`; and a 304 answered without the handler only with a tag the handler
//! path gave for that path since it was last written.

use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use tower::ServiceExt;
use tower_etag::cache::ValidatorCache;

use crate::cache_world;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A fragment of the field's syntax, or random bytes a field value may
    /// hold.
    fn value(&mut self, fragments: &[&str]) -> HeaderValue {
        if self.below(5) > 0 {
            return HeaderValue::from_str(fragments[self.below(fragments.len())]).unwrap();
        }
        let bytes: Vec<u8> = (0..self.below(40))
            .map(|_| match (self.next() % 256) as u8 {
                b if b == 0x7F || (b < 0x20 && b != b'\t') => b'"',
                b => b,
            })
            .collect();
        HeaderValue::from_bytes(&bytes).unwrap()
    }
}

type Fields = &'static [(&'static str, &'static [&'static str])];

const REQUEST_FIELDS: Fields = &[
    (
        "if-none-match",
        &[
            "\"a\"",
            "W/\"a\"",
            "*",
            "\"a\", \"b\"",
            "",
            ",",
            "\"",
            "w/\"a\"",
        ],
    ),
    (
        "host",
        &["a.example", "b.example", "A.EXAMPLE", "", "a.example:8080"],
    ),
    ("cookie", &["s=1", "s=2", ""]),
    ("authorization", &["Bearer x", "Bearer y"]),
    ("accept-encoding", &["gzip", "br", "", "gzip, br"]),
    (
        "cache-control",
        &["no-cache", "max-age=0", "No-Cache, x", "no-cache=\"a\""],
    ),
    ("pragma", &["no-cache", "x"]),
    ("if-match", &["*", "\"a\""]),
];

const RESPONSE_FIELDS: Fields = &[
    (
        "vary",
        &[
            "accept-encoding",
            "*",
            "user-agent",
            "Accept-Encoding, Origin",
            "",
            ",",
        ],
    ),
    (
        "cache-control",
        &["no-store", "private", "max-age=60", "no-cache", "public"],
    ),
    ("etag", &["\"a\"", "W/\"a\"", "unquoted", "\"a\" \"b\""]),
    (
        "content-location",
        &["/notes/1", "//b.example/y", "http://a.example/", "../2"],
    ),
    (
        "location",
        &[
            "/notes/1",
            "http://a.example/notes/2?x=1",
            "mailto:x",
            "//a.example",
        ],
    ),
    ("set-cookie", &["s=1"]),
];

const PATHS: [&str; 4] = ["/notes/1", "/notes/2?x=1", "/", "/notes/../notes/1"];
const STATUSES: [u16; 9] = [200, 200, 200, 200, 201, 204, 304, 404, 500];

#[test]
fn arbitrary_fields_never_break_the_cache() {
    let (world, service) = cache_world::service(ValidatorCache::builder().max_entries(64).build());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut hits = 0;
    for _ in 0..20_000 {
        let path = PATHS[rng.below(PATHS.len())];
        let method = match rng.below(10) {
            0 => Method::PUT,
            1 => Method::POST,
            2 => Method::HEAD,
            _ => Method::GET,
        };
        let mut request = Request::builder().method(method).uri(path);
        for (name, fragments) in REQUEST_FIELDS {
            if rng.below(5) == 0 {
                request = request.header(*name, rng.value(fragments));
            }
        }
        // Often a tag the handler path gave for this path: for its current
        // data, or for any earlier version.
        if rng.below(2) == 0 {
            let world = world.lock().unwrap();
            let tags = world.given(path, rng.below(3) == 0);
            if !tags.is_empty() {
                let tag = tags[rng.below(tags.len())];
                request = request.header("if-none-match", HeaderValue::from_bytes(tag).unwrap());
            }
        }
        let status = STATUSES[rng.below(STATUSES.len())];
        let mut fields = Vec::new();
        for (name, fragments) in RESPONSE_FIELDS {
            if rng.below(6) == 0 {
                fields.push((HeaderName::from_static(name), rng.value(fragments)));
            }
        }
        let calls_before = world.lock().unwrap().plan(status, fields);
        let response = service
            .clone()
            .oneshot(request.body(()).unwrap())
            .now_or_never()
            .expect("ready")
            .unwrap();
        let world = world.lock().unwrap();
        let status = response.status();
        assert!(
            status.as_u16() == world.planned_status()
                || status == StatusCode::NOT_MODIFIED
                || status == StatusCode::PRECONDITION_FAILED,
            "{status}"
        );
        if world.check(path, calls_before, &response) {
            hits += 1;
        }
    }
    assert!(hits > 300, "{hits} hits");
}
