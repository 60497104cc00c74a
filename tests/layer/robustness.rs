//! Hostile and arbitrary input through the whole layer: arbitrary bytes in
//! the conditional request fields (and in the handler's own validators),
//! arbitrary statuses, bodies cut into arbitrary chunks (empty ones
//! included) around the buffering cap, trailers, and bodies that fail
//! midway.
//!
//! Whatever comes in: no panic, never a 5xx of the layer's making, and every
//! byte the inner service produced reaches the client in order, followed by
//! its trailers or its error, unless the answer is a bodiless 304 or 412.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRunner},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_etag::ETagLayer;

use crate::common::{End, ScriptBody};

/// Small, so that bodies often outgrow it.
const CAP: usize = 48;

/// `len` bytes drawn from `alphabet` by a small PRNG seeded with `seed`.
/// Generating a seed instead of each byte keeps generation fast; proptest
/// still shrinks the seed and the length.
fn bytes_from(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize]
        })
        .collect()
}

/// Bytes a header field value may hold (what `HeaderValue` accepts): HTAB,
/// visible ASCII, space and obs-text; the syntax characters weighted up.
fn field_alphabet() -> Vec<u8> {
    let mut alphabet: Vec<u8> = (0x20u8..=0x7E).chain(0x80..=0xFF).collect();
    alphabet.push(b'\t');
    for _ in 0..8 {
        alphabet.extend_from_slice(b"\",* W/");
    }
    alphabet
}

fn random_field_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = field_alphabet();
    (any::<u64>(), 0usize..24).prop_map(move |(seed, len)| bytes_from(seed, len, &alphabet))
}

/// Pieces that reach deeper into the parsers than random bytes do.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        random_field_bytes(),
        Just(b"\"a\"".to_vec()),
        Just(b"W/\"a\"".to_vec()),
        Just(b", ".to_vec()),
        Just(b"*".to_vec()),
        Just(b"Mon, 01 Jan 2024 00:00:00 GMT".to_vec()),
        Just(b"Monday, 01-Jan-24 00:00:00 GMT".to_vec()),
        Just(b"Mon Jan  1 00:00:00 2024".to_vec()),
        Just(b"Fri, 31 Dec 9999 23:59:59 GMT".to_vec()),
        Just(b"Thu, 01 Jan 1970 00:00:00 GMT".to_vec()),
        Just(format!("\"{}\"", &blake3::hash(b"").to_hex()[..32]).into_bytes()),
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => prop::collection::vec(fragment(), 0..5).prop_map(|f| f.concat()),
        // A long value: 8 KiB of tags, or of anything.
        1 => (fragment(), 1usize..300).prop_map(|(f, n)| {
            let mut out = Vec::new();
            while out.len() < 8 * 1024 {
                out.extend_from_slice(&f);
                out.extend_from_slice(b", ");
                if out.len() > n * 1024 {
                    break;
                }
            }
            out
        }),
    ]
}

/// Zero to three lines of a field.
fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(field_value(), 0..4)
}

#[derive(Clone, Debug)]
enum Ending {
    Done,
    Trailers,
    Fail,
}

#[derive(Clone, Debug)]
struct Case {
    method: Method,
    fields: Vec<(HeaderName, Vec<Vec<u8>>)>,
    status: StatusCode,
    etag: Option<Vec<u8>>,
    last_modified: Option<Vec<u8>>,
    content_length: bool,
    chunks: Vec<Vec<u8>>,
    ending: Ending,
}

fn case() -> impl Strategy<Value = Case> {
    let method = prop_oneof![
        4 => Just(Method::GET),
        2 => Just(Method::HEAD),
        1 => Just(Method::POST),
    ];
    let fields = (lines(), lines(), lines(), lines()).prop_map(|(im, inm, ims, ius)| {
        vec![
            (header::IF_MATCH, im),
            (header::IF_NONE_MATCH, inm),
            (header::IF_MODIFIED_SINCE, ims),
            (header::IF_UNMODIFIED_SINCE, ius),
        ]
    });
    let status = prop_oneof![
        6 => Just(StatusCode::OK),
        1 => Just(StatusCode::CREATED),
        1 => Just(StatusCode::NO_CONTENT),
        1 => Just(StatusCode::PARTIAL_CONTENT),
        1 => Just(StatusCode::NOT_FOUND),
    ];
    let all_bytes: Vec<u8> = (0..=255).collect();
    let chunk = prop_oneof![
        1 => Just(Vec::new()),
        4 => (any::<u64>(), 1usize..40).prop_map(move |(seed, len)| bytes_from(seed, len, &all_bytes)),
    ];
    let ending = prop_oneof![
        4 => Just(Ending::Done),
        1 => Just(Ending::Trailers),
        1 => Just(Ending::Fail),
    ];
    (
        method,
        fields,
        status,
        prop::option::weighted(0.2, field_value()),
        prop::option::weighted(0.2, field_value()),
        any::<bool>(),
        prop::collection::vec(chunk, 0..6),
        ending,
    )
        .prop_map(
            |(method, fields, status, etag, last_modified, content_length, chunks, ending)| Case {
                method,
                fields,
                status,
                etag,
                last_modified,
                content_length,
                chunks,
                ending,
            },
        )
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    trailers
}

/// What a client would read: every data byte in order, then trailers or an
/// error.
#[derive(Debug, Default, PartialEq)]
struct Read {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    failed: bool,
}

fn drain<B: Body<Data = Bytes>>(body: B) -> Read {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut read = Read::default();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(None) => return read,
            Poll::Ready(Some(Err(_))) => {
                read.failed = true;
                return read;
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => read.data.extend_from_slice(&data),
                Err(frame) => read.trailers = frame.into_trailers().ok(),
            },
            Poll::Pending => panic!("every body here is always ready"),
        }
    }
}

fn inner_response(case: &Case) -> Response<ScriptBody> {
    let chunks: Vec<Bytes> = case.chunks.iter().cloned().map(Bytes::from).collect();
    let mut body = ScriptBody::new(chunks);
    match case.ending {
        Ending::Done => {}
        Ending::Trailers => body = body.trailers(trailers()),
        Ending::Fail => body = body.end(End::Fail),
    }
    let mut response = Response::new(body);
    *response.status_mut() = case.status;
    let headers = response.headers_mut();
    if let Some(etag) = &case.etag {
        headers.insert(header::ETAG, HeaderValue::from_bytes(etag).unwrap());
    }
    if let Some(date) = &case.last_modified {
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_bytes(date).unwrap(),
        );
    }
    if case.content_length {
        let len: usize = case.chunks.iter().map(Vec::len).sum();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    response
}

/// Header values generated, counted across all cases.
static VALUES: AtomicU64 = AtomicU64::new(0);

fn check(case: Case) -> Result<(), TestCaseError> {
    let mut request = Request::builder()
        .method(case.method.clone())
        .body(())
        .unwrap();
    for (name, lines) in &case.fields {
        for line in lines {
            VALUES.fetch_add(1, Ordering::Relaxed);
            let value = HeaderValue::from_bytes(line).unwrap();
            request.headers_mut().append(name.clone(), value);
        }
    }
    let inner = case.clone();
    let service = ServiceBuilder::new()
        .layer(ETagLayer::new().max_body_size(CAP))
        .service_fn(move |_: Request<()>| {
            let response = inner_response(&inner);
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
    let response = service
        .oneshot(request)
        .now_or_never()
        .expect("always ready")
        .unwrap();
    let status = response.status();
    let read = drain(response.into_body());

    prop_assert!(!status.is_server_error(), "{status}");
    let short_circuit = [StatusCode::NOT_MODIFIED, StatusCode::PRECONDITION_FAILED];
    prop_assert!(
        status == case.status || (case.status.is_success() && short_circuit.contains(&status)),
        "{} became {}",
        case.status,
        status
    );
    if status != case.status || case.method == Method::HEAD {
        // A 304, a 412 or a HEAD: no content.
        prop_assert_eq!(read, Read::default());
    } else {
        // Nothing lost, nothing reordered, nothing added.
        let sent: Vec<u8> = case.chunks.concat();
        prop_assert_eq!(&read.data, &sent);
        prop_assert_eq!(read.failed, matches!(case.ending, Ending::Fail));
        let expected_trailers = matches!(case.ending, Ending::Trailers).then(trailers);
        prop_assert_eq!(read.trailers, expected_trailers);
    }
    Ok(())
}

#[test]
fn arbitrary_input_never_panics_never_fails_and_never_loses_a_byte() {
    let config = Config {
        cases: 40_000,
        failure_persistence: None,
        // ChaCha, the default, is slow in unoptimised test builds.
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), check);
    if let Err(error) = result {
        panic!("{error}");
    }
    let values = VALUES.load(Ordering::Relaxed);
    eprintln!("{values} generated header field values");
    assert!(values >= 100_000, "only {values} header values generated");
}
