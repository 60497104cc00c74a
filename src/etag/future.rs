//! The response future of [`ETag`](super::ETag): waits for the inner
//! response, decides what to do with it, buffers and hashes its body when it
//! is to be tagged, and builds the final response.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::SystemTime,
};

use bytes::Bytes;
use http::{header, response::Parts, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{
    body::ResponseBody,
    buffer::{Buffer, Filled, Purpose},
    config::{Config, Settings},
    metrics::ETagMetrics,
};
use crate::{
    outcome::{record, Outcome, SkipReason},
    predicate::{Predicate, SkipETag},
    protocol::{
        entity_tag::TagRef,
        not_modified::{not_modified, precondition_failed, FromOk},
        precondition::{parse_date, Conditions, Validators, Verdict},
    },
};

/// What the future keeps of a `GET` or `HEAD` request.
pub(crate) struct RequestInfo<P> {
    /// The client sent `HEAD` (the inner service was asked for `GET`).
    head: bool,
    conditions: Conditions,
    config: Config<P>,
}

impl<P> RequestInfo<P> {
    pub(crate) fn new(head: bool, conditions: Conditions, config: Config<P>) -> Self {
        Self {
            head,
            conditions,
            config,
        }
    }

    fn method(&self) -> Method {
        if self.head {
            Method::HEAD
        } else {
            Method::GET
        }
    }

    /// RFC 9110 §13.2.2: the request's preconditions against the current
    /// representation's validators.
    fn evaluate(&self, etag: Option<TagRef<'_>>, last_modified: Option<SystemTime>) -> Verdict {
        let validators = Validators::current(etag, last_modified);
        self.conditions.evaluate(&self.method(), &validators)
    }

    /// Where the layer does not tag a response, the handler's own
    /// `Last-Modified`, if any, still answers the request with a 304 or 412
    /// (RFC 9110 §8.8.1 asks for both validators in a 200, so a date alone
    /// does not stop the layer from tagging; but when it cannot tag, the
    /// date is a validator of the handler's own). `None`: the response is
    /// sent on.
    fn answer_by_date<B: Body>(&self, parts: &mut Parts) -> Option<ResponseBody<B>> {
        let last_modified = parts.headers.get(header::LAST_MODIFIED)?;
        let verdict = self.evaluate(None, parse_date(last_modified));
        short_circuit(verdict, parts, &self.config.settings)
    }
}

pin_project! {
    /// The response future of [`ETag`](crate::ETag).
    pub struct ResponseFuture<F, B: Body, P> {
        #[pin]
        state: State<F, B>,
        // `None` for requests the layer passes through (neither GET nor HEAD).
        request: Option<RequestInfo<P>>,
        // Whether to insert the `Outcome` into the response's extensions.
        record_outcome: bool,
        // Where a passed-through response is counted (the others are
        // counted through `request`).
        metrics: Option<ETagMetrics>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B: Body> {
        // Waiting for the inner service.
        Inner { #[pin] future: F },
        // Reading and hashing the body. The buffer is boxed and pinned so that
        // it can become the response body without moving the inner body.
        Buffering {
            buffer: Option<Pin<Box<Buffer<B>>>>,
            parts: Option<Parts>,
        },
        Done,
    }
}

impl<F, B: Body, P> ResponseFuture<F, B, P> {
    pub(crate) fn passthrough(future: F, settings: &Settings) -> Self {
        Self {
            state: State::Inner { future },
            request: None,
            record_outcome: settings.record_outcome,
            metrics: Some(settings.metrics.clone()),
        }
    }

    pub(crate) fn new(future: F, request: RequestInfo<P>) -> Self {
        Self {
            state: State::Inner { future },
            record_outcome: request.config.settings.record_outcome,
            metrics: None,
            request: Some(request),
        }
    }
}

impl<F, B: Body, P> fmt::Debug for ResponseFuture<F, B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Buffering { .. } => "Buffering",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E, P> Future for ResponseFuture<F, B, P>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    P: Predicate,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx));
                    let response = match (response, this.request.as_ref()) {
                        (Err(error), _) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        (Ok(mut response), None) => {
                            this.state.set(State::Done);
                            let outcome = Outcome::Skipped(SkipReason::Method);
                            if let Some(metrics) = this.metrics {
                                metrics.outcome(outcome);
                            }
                            record(
                                response.status(),
                                response.extensions_mut(),
                                outcome,
                                *this.record_outcome,
                            );
                            return Poll::Ready(Ok(response.map(ResponseBody::passthrough)));
                        }
                        (Ok(response), Some(request)) => on_response(response, request),
                    };
                    match response {
                        Next::Respond(response) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Next::Buffer(parts, body) => {
                            let key = this
                                .request
                                .as_ref()
                                .and_then(|r| r.config.settings.key.clone());
                            let announced =
                                content_length(parts.headers.get(header::CONTENT_LENGTH));
                            // A body only hashed (HEAD) or most likely so
                            // (a 304 to come) is not coalesced for sending.
                            let purpose = match this.request.as_ref() {
                                Some(r) if r.head || r.conditions.has_if_none_match() => {
                                    Purpose::Hash
                                }
                                _ => Purpose::Send,
                            };
                            this.state.set(State::Buffering {
                                buffer: Some(Box::pin(Buffer::new(body, key, announced, purpose))),
                                parts: Some(parts),
                            })
                        }
                    }
                }
                StateProj::Buffering { buffer, parts } => {
                    let request = this.request.as_ref().expect("only GET and HEAD buffer");
                    let filling = buffer.as_mut().expect("taken only when done");
                    let filled = ready!(filling
                        .as_mut()
                        .poll_fill(cx, request.config.settings.max_body_size));
                    let buffer = buffer.take().expect("taken only when done");
                    let parts = parts.take().expect("taken only when done");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(on_filled(parts, buffer, filled, request)));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

enum Next<B: Body> {
    Respond(Response<ResponseBody<B>>),
    Buffer(Parts, B),
}

/// Decides what to do with the inner service's response to a GET or HEAD.
fn on_response<B, P>(response: Response<B>, request: &RequestInfo<P>) -> Next<B>
where
    B: Body<Data = Bytes>,
    P: Predicate,
{
    let (parts, body) = response.into_parts();
    let config = &request.config;

    // RFC 9110 §13.2.1: preconditions are ignored when the response would not
    // be 2xx; a 404 stays a 404. The marker opts a response out entirely.
    let skip = if !parts.status.is_success() {
        Some(SkipReason::Status)
    } else if parts.extensions.get::<SkipETag>().is_some() {
        Some(SkipReason::OptedOut)
    } else {
        None
    };
    if let Some(reason) = skip {
        return Next::Respond(skipped(parts, body, reason, request));
    }

    // An entity tag set by the handler is honoured as it is: no hashing.
    let head = Head::scan(&parts.headers);
    if let Some(etag) = head.etag {
        // An unparsable handler tag is kept on the response but matches
        // nothing (only `*`).
        let etag = TagRef::parse(etag.as_bytes());
        let verdict = request.evaluate(etag, head.last_modified.and_then(parse_date));
        return Next::Respond(own_validators(parts, body, verdict, request));
    }

    let own_date = head.last_modified.is_some();
    let skip = if parts.status != StatusCode::OK {
        SkipReason::Status
    } else if exceeds(head.content_length, &body, config.settings.max_body_size) {
        SkipReason::TooLarge
    } else if !config.predicate.should_tag(&parts) {
        SkipReason::Predicate
    } else {
        return Next::Buffer(parts, body);
    };
    let mut parts = parts;
    if let Some(empty) = request.answer_by_date(&mut parts) {
        // The inner body is dropped unread: a 304 or 412 has no content.
        return Next::Respond(Response::from_parts(parts, empty));
    }
    let reason = if own_date {
        SkipReason::OwnValidator
    } else {
        skip
    };
    Next::Respond(skipped(parts, body, reason, request))
}

/// Given the verdict against the validators the handler set itself, answers
/// 304 / 412 or sends the response on untagged.
fn own_validators<B, P>(
    mut parts: Parts,
    body: B,
    verdict: Verdict,
    request: &RequestInfo<P>,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes>,
{
    match short_circuit(verdict, &mut parts, &request.config.settings) {
        // The inner body is dropped unread: a 304 or 412 has no content.
        Some(empty) => Response::from_parts(parts, empty),
        None => skipped(parts, body, SkipReason::OwnValidator, request),
    }
}

/// Builds the response once the body has been read.
fn on_filled<B, P>(
    mut parts: Parts,
    buffer: Pin<Box<Buffer<B>>>,
    filled: Filled,
    request: &RequestInfo<P>,
) -> Response<ResponseBody<B>>
where
    B: Body<Data = Bytes>,
{
    let settings = &request.config.settings;
    let skip = match filled {
        Filled::Complete => None,
        Filled::Overflowed => Some(SkipReason::TooLarge),
        Filled::Failed => Some(SkipReason::BodyError),
    };
    if let Some(reason) = skip {
        if let Some(empty) = request.answer_by_date(&mut parts) {
            return Response::from_parts(parts, empty);
        }
        // Over the cap, or failed: send everything read and then the rest
        // (or the error), untagged and with the inner service's headers.
        settings.metrics.held(buffer.len());
        record_parts(&mut parts, Outcome::Skipped(reason), settings);
        let body = if request.head {
            ResponseBody::bodiless()
        } else {
            ResponseBody::buffered(buffer)
        };
        return Response::from_parts(parts, body);
    }

    // The handler's own Last-Modified, if any, is evaluated beside the tag.
    let last_modified = parts
        .headers
        .get(header::LAST_MODIFIED)
        .and_then(parse_date);
    let tag = buffer.tag(settings.weak);
    settings.metrics.hashed(buffer.len());
    let verdict = request.evaluate(Some(tag.tag_ref()), last_modified);
    parts.headers.insert(header::ETAG, tag.to_header_value());
    if !buffer.has_trailers() {
        // The layer now knows the exact length and frames the response itself.
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(buffer.len()));
    }
    let body = match short_circuit(verdict, &mut parts, settings) {
        Some(empty) => return Response::from_parts(parts, empty),
        None if request.head => ResponseBody::bodiless(),
        None => ResponseBody::buffered(buffer),
    };
    record_parts(&mut parts, Outcome::Tagged, settings);
    Response::from_parts(parts, body)
}

/// For a 304 or 412, rewrites the head and returns the empty body that goes
/// with it; `None` when the response is to be sent as it is.
fn short_circuit<B: Body>(
    verdict: Verdict,
    parts: &mut Parts,
    settings: &Settings,
) -> Option<ResponseBody<B>> {
    let (outcome, body) = match verdict {
        Verdict::Proceed => return None,
        Verdict::NotModified => {
            // A 304 made out of a 200 whose tag the handler has just
            // confirmed: the validator cache may remember it (RFC 9111
            // §4.3.4, freshening).
            if parts.status == StatusCode::OK {
                parts.extensions.insert(FromOk);
            }
            not_modified(parts);
            (Outcome::NotModified, ResponseBody::bodiless())
        }
        Verdict::PreconditionFailed => {
            precondition_failed(parts);
            (Outcome::PreconditionFailed, ResponseBody::empty())
        }
    };
    record_parts(parts, outcome, settings);
    Some(body)
}

/// Sends a response on untagged, recording why.
fn skipped<B: Body, P>(
    mut parts: Parts,
    body: B,
    reason: SkipReason,
    request: &RequestInfo<P>,
) -> Response<ResponseBody<B>> {
    record_parts(
        &mut parts,
        Outcome::Skipped(reason),
        &request.config.settings,
    );
    passthrough(parts, body, request.head)
}

/// Counts the outcome, logs it, and records it when asked.
fn record_parts(parts: &mut Parts, outcome: Outcome, settings: &Settings) {
    settings.metrics.outcome(outcome);
    record(
        parts.status,
        &mut parts.extensions,
        outcome,
        settings.record_outcome,
    );
}

/// Sends a response on unchanged; for `HEAD`, without its content but with
/// the `Content-Length` the `GET` would have had.
fn passthrough<B: Body>(mut parts: Parts, body: B, head: bool) -> Response<ResponseBody<B>> {
    if !head {
        return Response::from_parts(parts, ResponseBody::passthrough(body));
    }
    // RFC 9110 §9.3.2, §8.6: a HEAD response may carry the Content-Length the
    // GET would have; never on 1xx, 204 or 304.
    let status = parts.status;
    let may_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    if may_have_length && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = body.size_hint().exact() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    Response::from_parts(parts, ResponseBody::bodiless())
}

/// Whether the response announces more than `cap` bytes before any is read.
fn exceeds<B: Body>(content_length: Option<&HeaderValue>, body: &B, cap: usize) -> bool {
    let cap = cap as u64;
    body.size_hint().lower() > cap
        || self::content_length(content_length).is_some_and(|len| len > cap)
}

/// The length a `Content-Length` field value announces, if it is a number.
fn content_length(value: Option<&HeaderValue>) -> Option<u64> {
    value?.to_str().ok()?.trim().parse().ok()
}

/// The response header fields the layer reads, found in one pass: by the
/// time a response gets here it has few fields, and one pass over them costs
/// less than a hashed lookup per name.
#[derive(Default)]
struct Head<'a> {
    etag: Option<&'a HeaderValue>,
    last_modified: Option<&'a HeaderValue>,
    content_length: Option<&'a HeaderValue>,
}

impl<'a> Head<'a> {
    fn scan(headers: &'a HeaderMap) -> Self {
        let mut head = Self::default();
        for (name, value) in headers {
            let slot = match *name {
                header::ETAG => &mut head.etag,
                header::LAST_MODIFIED => &mut head.last_modified,
                header::CONTENT_LENGTH => &mut head.content_length,
                _ => continue,
            };
            // The first line of each, as `HeaderMap::get` would give.
            slot.get_or_insert(value);
        }
        head
    }
}
