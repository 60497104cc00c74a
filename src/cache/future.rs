//! The response future of [`ValidatorCacheService`](super::ValidatorCacheService):
//! a 304 ready at once, or the inner service's response followed by a fill
//! (after a `GET`) or an invalidation (after a write), after waiting for
//! the store's answer when it comes later.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use sync_wrapper::SyncWrapper;
use tower_service::Service;

use super::{
    body::ResponseBody,
    entry::{Entry, Variant},
    handle::{Counters, Shared, ValidatorCache},
    hashing::Key,
    metrics::{Cause, MissReason},
    miss::Miss,
    read::{varying, Read},
    status::{self, Fwd, Kept},
    store::{Answer, Begin, Later, Lookup},
    write::Write,
};
use crate::{
    outcome::{record, Outcome},
    predicate::is_grpc,
    protocol::entity_tag::{list_matches, Comparison},
};

pin_project! {
    /// The response future of [`ValidatorCacheService`](super::ValidatorCacheService).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // A 304 answered from the cache, or a write refused (strict writes).
        Ready { response: Option<Response<()>> },
        // Waiting for the store's answer; then the request goes on with
        // `next`. (Boxed: the request and service would otherwise make every
        // future of a store that answers at once larger.)
        Waiting { next: Option<Box<Next<S, ReqBody>>> },
        // Waiting for the inner service; then what to do with its response,
        // and the `Cache-Status` member to add to it, if asked for.
        Inner { #[pin] future: S::Future, after: Option<After>, status: Option<Box<Forwarded>> },
        // A write's response, held until the store has its end (wrapped:
        // only ever reached through `&mut`, so the future's `Sync` does not
        // depend on the response's).
        Ending { response: SyncWrapper<Option<S::Response>>, later: Box<dyn Later<()>> },
    }
}

/// What to do once the inner service has answered.
enum After {
    Nothing,
    Fill(Miss, ValidatorCache),
    Write(Write),
    /// A gRPC call: its target is invalidated only if the answer is not
    /// gRPC after all.
    Grpc(ValidatorCache, Key),
}

/// What a forwarded response's `Cache-Status` member says: why it was
/// forwarded, and what became of it unless a fill tells more.
struct Forwarded {
    name: Arc<str>,
    fwd: Fwd,
    kept: Kept,
}

/// The `Cache-Status` member of a forwarded response, when the app asked
/// for the field.
fn forwarded(shared: &Shared, fwd: Fwd, kept: Kept) -> Option<Box<Forwarded>> {
    let name = shared.policy.cache_status.as_ref()?;
    Some(Box::new(Forwarded {
        name: Arc::clone(name),
        fwd,
        kept,
    }))
}

/// The request, and the service that takes it once the store has answered.
struct Next<S, ReqBody> {
    service: S,
    request: Request<ReqBody>,
    cache: ValidatorCache,
    then: Then,
}

/// The store's answer being waited for, and what it is for.
enum Then {
    Lookup(Read, Box<dyn Later<Option<Lookup>>>),
    Write(Write, Box<dyn Later<Begin>>),
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn ready(response: Response<()>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    fn inner(future: S::Future, after: After, status: Option<Box<Forwarded>>) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                after: Some(after),
                status,
            },
        }
    }

    /// A request the cache leaves alone: the inner service's response,
    /// nothing stored or invalidated; `fwd` and `kept` for `Cache-Status`.
    pub(crate) fn passthrough(
        service: &mut S,
        request: Request<ReqBody>,
        cache: &ValidatorCache,
        fwd: Fwd,
        kept: Kept,
    ) -> Self {
        let status = forwarded(&cache.shared, fwd, kept);
        Self::inner(service.call(request), After::Nothing, status)
    }

    /// A gRPC call (a `POST` whose `Content-Type` is gRPC): no store work
    /// before it; after it only if its answer is not gRPC.
    pub(crate) fn grpc(service: &mut S, request: Request<ReqBody>, cache: &ValidatorCache) -> Self {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let resource = cache.shared.hashing.resource(path);
        let status = forwarded(&cache.shared, Fwd::Method, Kept::Nothing);
        Self::inner(
            service.call(request),
            After::Grpc(cache.clone(), resource),
            status,
        )
    }

    /// A `GET` or `HEAD` once the store has been looked up: a 304 from the
    /// cache, or the inner service's response (stored after a `GET`).
    /// `None`: the store could not answer; the request goes on as without a
    /// cache.
    pub(crate) fn looked_up(
        cache: &ValidatorCache,
        read: Read,
        lookup: Option<Lookup>,
        request: Request<ReqBody>,
        service: &mut S,
    ) -> Self {
        let shared = &*cache.shared;
        let Some(lookup) = lookup else {
            Counters::add(&shared.counters.misses, 1);
            shared.metrics.miss(MissReason::StoreUnavailable);
            return Self::passthrough(service, request, cache, Fwd::Bypass, Kept::StoreUnavailable);
        };
        // Why a request that cannot hit missed is worked out only for
        // `Cache-Status`.
        let found = match &lookup.entry {
            _ if !read.may_hit && shared.policy.cache_status.is_none() => Err(Fwd::Miss),
            Some(entry) => answer(entry, &request, shared, read.may_hit),
            None => Err(Fwd::UriMiss),
        };
        match found {
            Ok(variant) => {
                Counters::add(&shared.counters.hits, 1);
                shared.metrics.hit();
                let mut response = variant.not_modified(());
                record(
                    response.status(),
                    response.extensions_mut(),
                    Outcome::NotModifiedFromCache,
                    shared.policy.record_outcome,
                );
                if let Some(name) = &shared.policy.cache_status {
                    status::add_hit(response.headers_mut(), name);
                }
                Self::ready(response)
            }
            Err(fwd) => {
                Counters::add(&shared.counters.misses, 1);
                shared.metrics.miss(match fwd {
                    _ if read.forbidden => MissReason::Request,
                    _ if !read.may_hit => MissReason::NoCondition,
                    Fwd::UriMiss => MissReason::NotStored,
                    Fwd::VaryMiss => MissReason::VaryMismatch,
                    _ => MissReason::TagMismatch,
                });
                // RFC 9211 §2.2: `request` when a stored response could
                // have answered but the request did not allow it.
                let fwd = if read.forbidden && fwd == Fwd::Miss {
                    Fwd::Request
                } else {
                    fwd
                };
                // A HEAD response carries the GET's validators, but is not
                // stored: only a GET's response is the representation a 304
                // stands for.
                if read.head {
                    shared.metrics.kept(Kept::Head);
                    return Self::passthrough(service, request, cache, fwd, Kept::Head);
                }
                let varying = varying(request.headers(), &shared.policy.vary)
                    .map(|(index, value)| (index, value.clone()))
                    .collect();
                let miss = Miss::new(read, lookup, varying);
                let status = forwarded(shared, fwd, Kept::Nothing);
                Self::inner(
                    service.call(request),
                    After::Fill(miss, cache.clone()),
                    status,
                )
            }
        }
    }

    /// A write whose arrival has been announced to the store: the inner
    /// service's response, then the write's end; or, when the store refused
    /// it (strict writes), a 503 without calling the inner service.
    pub(crate) fn written(
        write: Write,
        begin: Begin,
        request: Request<ReqBody>,
        service: &mut S,
        cache: &ValidatorCache,
    ) -> Self {
        match begin {
            Begin::Proceed => {
                let status = forwarded(&cache.shared, Fwd::Method, Kept::Nothing);
                Self::inner(service.call(request), After::Write(write), status)
            }
            Begin::Refuse => {
                write.refused();
                let mut response = refusal();
                if let Some(name) = &cache.shared.policy.cache_status {
                    status::add_refused(response.headers_mut(), name);
                }
                Self::ready(response)
            }
        }
    }

    /// Waits for a lookup's answer, then goes on as
    /// [`looked_up`](Self::looked_up).
    pub(crate) fn lookup(
        answer: Answer<Option<Lookup>>,
        cache: &ValidatorCache,
        read: Read,
        request: Request<ReqBody>,
        service: &mut S,
    ) -> Self
    where
        S: Clone,
    {
        match answer {
            Answer::Now(lookup) => Self::looked_up(cache, read, lookup, request, service),
            Answer::Later(later) => {
                Self::waiting(service, request, cache, Then::Lookup(read, later))
            }
        }
    }

    /// Waits for a write's arrival to be announced, then goes on as
    /// [`written`](Self::written).
    pub(crate) fn write(
        answer: Answer<Begin>,
        write: Write,
        cache: &ValidatorCache,
        request: Request<ReqBody>,
        service: &mut S,
    ) -> Self
    where
        S: Clone,
    {
        match answer {
            Answer::Now(begin) => Self::written(write, begin, request, service, cache),
            Answer::Later(later) => {
                Self::waiting(service, request, cache, Then::Write(write, later))
            }
        }
    }

    /// A future that waits for the store, then calls the service made ready
    /// for this request: the future takes it and leaves a clone in its place
    /// (tower's clone-and-replace).
    fn waiting(
        service: &mut S,
        request: Request<ReqBody>,
        cache: &ValidatorCache,
        then: Then,
    ) -> Self
    where
        S: Clone,
    {
        let clone = service.clone();
        let service = std::mem::replace(service, clone);
        let next = Next {
            service,
            request,
            cache: cache.clone(),
            then,
        };
        Self {
            kind: Kind::Waiting {
                next: Some(Box::new(next)),
            },
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Ready { .. } => "Ready",
            Kind::Waiting { .. } => "Waiting",
            Kind::Inner { .. } => "Inner",
            Kind::Ending { .. } => "Ending",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().kind.project() {
                KindProj::Ready { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let status = response.status();
                    return Poll::Ready(Ok(response.map(|()| ResponseBody::blank(status))));
                }
                KindProj::Waiting { next } => {
                    let waiting = next
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    let answered = match &mut waiting.then {
                        Then::Lookup(_, later) => later.poll_answer(cx).map(Answered::Lookup),
                        Then::Write(_, later) => later.poll_answer(cx).map(Answered::Begin),
                    };
                    let Poll::Ready(answered) = answered else {
                        return Poll::Pending;
                    };
                    let Next {
                        mut service,
                        request,
                        cache,
                        then,
                    } = *next.take().expect("taken once");
                    let next = match (then, answered) {
                        (Then::Lookup(read, _), Answered::Lookup(lookup)) => {
                            Self::looked_up(&cache, read, lookup, request, &mut service)
                        }
                        (Then::Write(write, _), Answered::Begin(begin)) => {
                            Self::written(write, begin, request, &mut service, &cache)
                        }
                        _ => unreachable!("each wait is answered in its own kind"),
                    };
                    self.set(next);
                }
                KindProj::Inner {
                    future,
                    after,
                    status,
                } => {
                    let mut result = match future.poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => return Poll::Pending,
                    };
                    // What became of a GET's response, and what a write's
                    // response waits for.
                    let mut kept = None;
                    let mut ending: Option<Box<dyn Later<()>>> = None;
                    match (after.take(), &result) {
                        (Some(After::Fill(miss, cache)), Ok(response)) => {
                            kept = Some(miss.complete(response, &cache));
                        }
                        (Some(After::Write(write)), Ok(response)) => {
                            if let Answer::Later(later) = write.complete(response) {
                                ending = Some(later);
                            }
                        }
                        (Some(After::Grpc(cache, resource)), Ok(response)) => {
                            if let Some(Answer::Later(later)) =
                                not_grpc_after_all(response, &cache, resource)
                            {
                                ending = Some(Box::new(Landed(later)));
                            }
                        }
                        // An error: nothing to store, and a write's outcome is
                        // unknown; its guard, dropped here, ends it.
                        _ => {}
                    }
                    if let (Some(forwarded), Ok(response)) = (status.take(), &mut result) {
                        let status = response.status();
                        let kept = kept.unwrap_or(forwarded.kept);
                        status::add_forwarded(
                            response.headers_mut(),
                            &forwarded.name,
                            forwarded.fwd,
                            status,
                            kept,
                        );
                    }
                    if let Some(later) = ending {
                        let response = SyncWrapper::new(result.ok());
                        self.set(Self {
                            kind: Kind::Ending { response, later },
                        });
                        continue;
                    }
                    return Poll::Ready(result.map(|response| response.map(ResponseBody::inner)));
                }
                KindProj::Ending { response, later } => {
                    let response = response.get_mut();
                    assert!(response.is_some(), "ResponseFuture polled after completion");
                    // Bounded by the store's timeout; an end that does not
                    // land is kept by the store for a retry.
                    if later.poll_answer(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let response = response.take().expect("checked above");
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
            }
        }
    }
}

/// RFC 9111 §4.4 for a `POST` that claimed to be gRPC but was not answered
/// as gRPC call is (a handler that ignored the request's content type):
/// after a non-error answer, its target is invalidated, as any write's.
fn not_grpc_after_all<B>(
    response: &Response<B>,
    cache: &ValidatorCache,
    resource: Key,
) -> Option<Answer<bool>> {
    let status = response.status();
    if is_grpc(response.headers()) || !(status.is_success() || status.is_redirection()) {
        return None;
    }
    let shared = &cache.shared;
    Counters::add(&shared.counters.invalidations, 1);
    shared.metrics.invalidated(Cause::Write, 1);
    Some(shared.store.invalidate(vec![resource], false))
}

/// Waits for an invalidation, whatever it answers (one kept for a retry is
/// the store's to finish).
struct Landed(Box<dyn Later<bool>>);

impl Later<()> for Landed {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_answer(cx).map(drop)
    }
}

/// What a wait for the store ended with.
enum Answered {
    Lookup(Option<Lookup>),
    Begin(Begin),
}

/// The answer to a write the store refused (strict writes): RFC 9110
/// §15.6.4, 503 with `Retry-After` (§10.2.3) in seconds, nothing written.
fn refusal() -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The stored variant that answers this request with a 304, or why none
/// does (for `Cache-Status`): no variant for the request's `Vary` fields,
/// or one that cannot answer it (`may_hit`: the request may be answered
/// from the cache at all).
fn answer<'a, B>(
    entry: &'a Entry,
    req: &Request<B>,
    shared: &Shared,
    may_hit: bool,
) -> Result<&'a Variant, Fwd> {
    // RFC 9111 §4.1: only the variant stored for this request's values of
    // the fields it varies on.
    let fields = &shared.policy.vary;
    let variant = entry.variants().iter().find(|v| {
        let digest = shared.hashing.vary(v.mask, |index| {
            req.headers().get_all(&fields[usize::from(index)]).iter()
        });
        v.fields == digest
    });
    let variant = match variant {
        Some(variant) if may_hit => variant,
        Some(_) => return Err(Fwd::Miss),
        None => return Err(Fwd::VaryMiss),
    };
    matching(variant, req).ok_or(Fwd::Miss)
}

/// `variant` if the request's `If-None-Match` matches its tag.
fn matching<'a, B>(variant: &'a Variant, req: &Request<B>) -> Option<&'a Variant> {
    let lines = req.headers().get_all(header::IF_NONE_MATCH);
    // The common case first: the client echoes the tag it was given.
    let mut iter = lines.iter();
    if let (Some(only), None) = (iter.next(), iter.next()) {
        if only.as_bytes() == variant.etag_value() {
            return Some(variant);
        }
    }
    // RFC 9110 §13.1.2: the weak comparison, over a list that may span
    // several lines. `*` is left to the handler: it matches any current
    // representation, and only the handler knows whether one still exists.
    let star = lines.iter().any(|l| l.as_bytes().trim_ascii() == b"*");
    let matches = list_matches(lines, Some(variant.etag()), Comparison::Weak) == Some(true);
    (!star && matches).then_some(variant)
}
