//! The response future of [`ValidatorCacheService`](super::ValidatorCacheService):
//! a 304 ready at once, or the inner service's response followed by a fill
//! (after a `GET`) or an invalidation (after a write).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, uri::PathAndQuery, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    body::ResponseBody,
    entry::{remember, Entry},
    handle::Counters,
    invalidation::same_authority_path,
    key::{authority, Key, Read},
    store::{self, Backend, Lookup, Store},
    ValidatorCache,
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
        // A 304 answered from the cache.
        Ready { response: Option<Response<()>> },
        // Waiting for a shared store; then the request goes on with `next`.
        // (Boxed: the request and service would otherwise make every
        // future of the in-memory cache larger.)
        Waiting { pending: Pending, next: Option<Box<Next<S, ReqBody>>> },
        // Waiting for the inner service; then what to do with its response.
        Inner { #[pin] future: S::Future, after: Option<After> },
    }
}

/// What to do once the inner service has answered.
pub(crate) enum After {
    Nothing,
    Fill(Fill, ValidatorCache),
    Write(Write),
}

/// A shared store's answer being awaited.
#[cfg(feature = "redis")]
pub(crate) enum Pending {
    Lookup(tokio::task::JoinHandle<Option<Lookup>>),
    Write(tokio::task::JoinHandle<()>),
}

/// Without a shared store, nothing is ever awaited.
#[cfg(not(feature = "redis"))]
pub(crate) enum Pending {}

impl Pending {
    /// The lookup's result (`None`: the store did not answer), or `None`
    /// once a write has begun.
    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Lookup>> {
        match *self {
            #[cfg(feature = "redis")]
            Self::Lookup(ref mut handle) => Pin::new(handle)
                .poll(_cx)
                .map(|joined| joined.ok().flatten()),
            #[cfg(feature = "redis")]
            Self::Write(ref mut handle) => Pin::new(handle).poll(_cx).map(|_| None),
        }
    }
}

/// The request, and the service that takes it once the store has answered.
pub(crate) struct Next<S, ReqBody> {
    pub(crate) service: S,
    pub(crate) request: Request<ReqBody>,
    pub(crate) cache: ValidatorCache,
    pub(crate) then: Then,
}

/// What the store's answer is for.
pub(crate) enum Then {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Lookup(Read),
    Write(Write),
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn ready(response: Response<()>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(future: S::Future, after: After) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                after: Some(after),
            },
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn waiting(pending: Pending, next: Next<S, ReqBody>) -> Self {
        Self {
            kind: Kind::Waiting {
                pending,
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
                    return Poll::Ready(Ok(response.map(|()| ResponseBody::not_modified())));
                }
                KindProj::Waiting { pending, next } => {
                    let lookup = match pending.poll(cx) {
                        Poll::Ready(lookup) => lookup,
                        Poll::Pending => return Poll::Pending,
                    };
                    let Next {
                        mut service,
                        request,
                        cache,
                        then,
                    } = *next.take().expect("ResponseFuture polled after completion");
                    let next = match then {
                        Then::Lookup(read) => {
                            super::service::decide(&cache, read, lookup, request, &mut service)
                        }
                        Then::Write(write) => {
                            Self::inner(service.call(request), After::Write(write))
                        }
                    };
                    self.set(next);
                }
                KindProj::Inner { future, after } => {
                    let result = match future.poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => return Poll::Pending,
                    };
                    match (after.take(), &result) {
                        (Some(After::Fill(fill, cache)), Ok(response)) => {
                            fill.complete(response, &cache)
                        }
                        (Some(After::Write(write)), Ok(response)) => write.complete(response),
                        // An error: nothing to store, and a write's outcome is
                        // unknown; its guard, dropped here, ends it.
                        _ => {}
                    }
                    return Poll::Ready(result.map(|response| response.map(ResponseBody::inner)));
                }
            }
        }
    }
}

/// What a `GET` that missed keeps until its response, to store it.
pub(crate) struct Fill {
    resource: Key,
    key: Key,
    generation: u64,
    tag_epoch: u64,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    clock: u64,
    base: Option<Entry>,
    varying: Vec<(u8, http::HeaderValue)>,
}

impl Fill {
    /// `varying`: the request's values of the fields responses may vary on
    /// (reference-counted copies, kept until the response).
    pub(crate) fn new(read: Read, lookup: Lookup, varying: Vec<(u8, http::HeaderValue)>) -> Self {
        Self {
            resource: read.resource,
            key: read.entry,
            generation: lookup.generation,
            tag_epoch: lookup.tag_epoch,
            clock: lookup.clock,
            base: lookup.entry,
            varying,
        }
    }

    fn complete<B>(self, response: &Response<B>, cache: &ValidatorCache) {
        let shared = &*cache.shared;
        let remembered = match remember(
            response.status(),
            response.headers(),
            response.extensions(),
            &shared.config.vary,
        ) {
            Ok(remembered) => remembered,
            Err(_reason) => {
                #[cfg(feature = "tracing")]
                tracing::trace!(target: "tower_etag::cache", not_stored = ?_reason, "tower-etag cache");
                return;
            }
        };
        let fields = remembered.fields(&self.varying, &shared.hashing);
        let tags = remembered.tag_keys(&shared.hashing);
        // The response confirms what is stored, and the entry is young:
        // storing it again would only reset its age. Skipping keeps a steady
        // stream of unconditional GETs from writing to the store on every
        // request; the entry is refreshed once it is half its time-to-live
        // old.
        let unchanged = self.base.as_ref().is_some_and(|base| {
            base.variants().iter().any(|stored| {
                remembered.replayed_by(stored, fields, &tags)
                    && stored.filled.elapsed() < shared.config.time_to_live / 2
            })
        });
        if unchanged {
            return;
        }
        let variant = remembered.to_variant(fields);
        let fill = store::Fill {
            resource: self.resource,
            key: self.key,
            generation: self.generation,
            tag_epoch: self.tag_epoch,
            variant,
            base: self.base,
            tags,
        };
        match &shared.store {
            Backend::Memory(store) => filled(cache, store.fill(fill)),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => {
                let cache = cache.clone();
                store.fill(fill, self.clock, move |stored| filled(&cache, stored));
            }
        }
    }
}

/// Counts and traces a fill.
fn filled(cache: &ValidatorCache, stored: bool) {
    if stored {
        Counters::add(&cache.shared.counters.fills, 1);
    }
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "tower_etag::cache", stored, "tower-etag cache fill");
}

/// A write under way: what it keeps until its response, to invalidate what
/// it changed, and to end the write in the store however the request ends.
pub(crate) struct Write {
    cache: ValidatorCache,
    resource: Key,
    path: PathAndQuery,
    authority: Option<Bytes>,
    /// The write's id in a shared store (0 in memory).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    id: u64,
    ended: bool,
}

impl Write {
    /// Begins a write to the request's target: RFC 9111 §4.4 invalidates
    /// it now, before the write runs, and no fill of it is stored until the
    /// write has ended. With a shared store, the request waits for `Pending`
    /// before it goes on.
    pub(crate) fn begin<B>(request: &Request<B>, cache: ValidatorCache) -> (Self, Option<Pending>) {
        let uri = request.uri();
        let authority =
            authority(uri, request.headers().get(header::HOST)).map(Bytes::copy_from_slice);
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let shared = &*cache.shared;
        let resource = shared.hashing.resource(path.as_str());
        let (id, pending) = match &shared.store {
            Backend::Memory(store) => {
                store.begin_write(&resource);
                (0, None)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(store) => {
                let (id, handle) = store.begin_write(resource);
                (id, Some(Pending::Write(handle)))
            }
        };
        Counters::add(&shared.counters.invalidations, 1);
        let write = Self {
            cache,
            resource,
            path,
            authority,
            id,
            ended: false,
        };
        (write, pending)
    }

    fn end(&self, others: Vec<Key>, invalidate: bool) {
        match &self.cache.shared.store {
            Backend::Memory(store) => store.end_write(&self.resource, &others, invalidate),
            #[cfg(feature = "redis")]
            Backend::Redis(store) => store.end_write(self.resource, self.id, others, invalidate),
        }
    }

    fn complete<B>(mut self, response: &Response<B>) {
        self.ended = true;
        let shared = &*self.cache.shared;
        // RFC 9111 §4.4: only a non-error status (2xx, 3xx) invalidates; the
        // arrival's invalidation stands either way.
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            self.end(Vec::new(), false);
            return;
        }
        // RFC 9111 §4.4: Location and Content-Location too, when they name
        // the same origin, relative references resolved against the target.
        let path = self.path.as_str();
        let mut others = Vec::new();
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            for value in response.headers().get_all(name) {
                if let Some(other) =
                    same_authority_path(value.as_bytes(), path, self.authority.as_deref())
                {
                    others.push(shared.hashing.resource(&other));
                }
            }
        }
        Counters::add(&shared.counters.invalidations, 1 + others.len() as u64);
        self.end(others, true);
        super::handle::trace_invalidation(path);
    }
}

impl Drop for Write {
    /// The request ended without a response (the inner service failed, or
    /// the client left): whether it wrote is unknown, so invalidate.
    fn drop(&mut self) {
        if !self.ended {
            self.end(Vec::new(), true);
        }
    }
}
