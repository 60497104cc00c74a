//! Drives the layer in process with fuzzer-chosen request fields, handler
//! validators, status and body, and checks what must always hold: no panic,
//! no 5xx of the layer's making, and every body byte delivered in order
//! unless the answer is a bodiless 304, 412 or HEAD.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use tower::{ServiceBuilder, ServiceExt};
use tower_etag::ETagLayer;

#[derive(Arbitrary, Debug)]
pub struct Input {
    head: bool,
    post: bool,
    /// (which of the four conditional fields, value)
    fields: Vec<(u8, Vec<u8>)>,
    status: u8,
    etag: Option<Vec<u8>>,
    last_modified: Option<Vec<u8>>,
    content_length: bool,
    pub chunks: Vec<Vec<u8>>,
    ending: u8,
    cap: u16,
}

const CONDITIONAL: [HeaderName; 4] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

const STATUSES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::OK,
    StatusCode::CREATED,
    StatusCode::NO_CONTENT,
    StatusCode::PARTIAL_CONTENT,
    StatusCode::NOT_FOUND,
];

/// A body that plays its frames, then ends, fails, or ends with trailers.
struct Script {
    frames: VecDeque<Frame<Bytes>>,
    fail: bool,
}

impl Body for Script {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if std::mem::take(&mut self.fail) {
            return Poll::Ready(Some(Err("failed on purpose")));
        }
        Poll::Ready(None)
    }
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("1"));
    trailers
}

/// Polls a future that must be ready at once (everything here is).
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("everything here is ready at once"),
    }
}

pub fn run(input: Input) {
    let method = match (input.post, input.head) {
        (true, _) => Method::POST,
        (false, true) => Method::HEAD,
        (false, false) => Method::GET,
    };
    let mut request = Request::builder().method(method.clone()).body(()).unwrap();
    for (which, value) in &input.fields {
        // Bytes no HTTP parser would pass on are not a request.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            let name = CONDITIONAL[usize::from(*which) % 4].clone();
            request.headers_mut().append(name, value);
        }
    }

    let status = STATUSES[usize::from(input.status) % STATUSES.len()];
    let sent: Vec<u8> = input.chunks.concat();
    let (with_trailers, fail) = (input.ending % 3 == 1, input.ending % 3 == 2);
    let mut headers = HeaderMap::new();
    if let Some(Ok(etag)) = input.etag.as_deref().map(HeaderValue::from_bytes) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(Ok(date)) = input.last_modified.as_deref().map(HeaderValue::from_bytes) {
        headers.insert(header::LAST_MODIFIED, date);
    }
    if input.content_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(sent.len()));
    }
    let mut frames: VecDeque<Frame<Bytes>> = input
        .chunks
        .iter()
        .map(|chunk| Frame::data(Bytes::copy_from_slice(chunk)))
        .collect();
    if with_trailers {
        frames.push_back(Frame::trailers(trailers()));
    }
    let mut script = Some(Script { frames, fail });

    let service = ServiceBuilder::new()
        .layer(ETagLayer::new().max_body_size(usize::from(input.cap)))
        .service_fn(move |_: Request<()>| {
            let mut response = Response::new(script.take().expect("one request"));
            *response.status_mut() = status;
            *response.headers_mut() = headers.clone();
            async move { Ok::<_, Infallible>(response) }
        });
    let response = now(service.oneshot(request)).unwrap();
    let got = response.status();
    assert!(!got.is_server_error(), "{got}");
    let short = got == StatusCode::NOT_MODIFIED || got == StatusCode::PRECONDITION_FAILED;
    assert!(
        got == status || (status.is_success() && short),
        "{status} became {got}"
    );

    // Drain the body as a client would.
    let mut body = pin!(response.into_body());
    let mut cx = Context::from_waker(Waker::noop());
    let (mut data, mut read_trailers, mut failed) = (Vec::new(), None, false);
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(_))) => {
                failed = true;
                break;
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => read_trailers = frame.into_trailers().ok(),
            },
            Poll::Pending => panic!("the body is always ready"),
        }
    }
    if got != status || method == Method::HEAD {
        assert!(data.is_empty() && read_trailers.is_none() && !failed);
    } else {
        assert_eq!(data, sent, "every byte, in order");
        assert_eq!(failed, fail);
        assert_eq!(read_trailers, with_trailers.then(trailers));
    }
}
