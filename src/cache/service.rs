//! The [`ValidatorCacheService`]: reads each request, answers hits, and
//! hands everything else to the inner service.

use std::{
    fmt,
    task::{Context, Poll},
};

use http::{header, Method, Request, Response};
use tower_service::Service;

use super::{
    body::ResponseBody,
    entry::{Entry, Variant},
    future::{After, Fill, Next, Pending, ResponseFuture, Then, Write},
    handle::{Counters, Shared},
    key::{varying, Read},
    store::{Backend, Lookup, Store},
    ValidatorCache,
};
use crate::{
    entity_tag::{list_matches, Comparison},
    outcome::{record, Outcome},
};

/// Answers revalidations from a [`ValidatorCache`]; built by
/// [`ValidatorCacheLayer`](super::ValidatorCacheLayer).
#[derive(Clone)]
pub struct ValidatorCacheService<S> {
    inner: S,
    cache: ValidatorCache,
}

impl<S> ValidatorCacheService<S> {
    /// Wraps `inner`, answering from `cache`.
    pub fn new(inner: S, cache: ValidatorCache) -> Self {
        Self { inner, cache }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for ValidatorCacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorCacheService")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .finish()
    }
}

/// `S: Clone`: with a shared store, the request waits for the store's
/// answer before the inner service is called, so the future takes the
/// service that was made ready and leaves a clone in its place (tower's
/// clone-and-replace). The in-memory store answers at once and the inner
/// service is called directly.
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ValidatorCacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.cache.shared;
        match *req.method() {
            Method::GET | Method::HEAD => {}
            // RFC 9110 §9.2.1: safe methods invalidate nothing.
            Method::OPTIONS | Method::TRACE => {
                return ResponseFuture::inner(self.inner.call(req), After::Nothing)
            }
            // RFC 9111 §4.4: any other method (unsafe, or of unknown safety)
            // invalidates the target: now, before the write runs, so that
            // nothing is answered from the old entry meanwhile, and again
            // after a non-error response. Nothing is stored for the target
            // in between (`Write`).
            _ => {
                let (write, pending) = Write::begin(&req, self.cache.clone());
                return match pending {
                    None => ResponseFuture::inner(self.inner.call(req), After::Write(write)),
                    Some(pending) => self.wait(pending, req, Then::Write(write)),
                };
            }
        }

        let (parts, body) = req.into_parts();
        let read = Read::new(&parts, &shared.config, &shared.hashing);
        let req = Request::from_parts(parts, body);
        let Some(read) = read else {
            // The app's partition function keeps this request away.
            return ResponseFuture::inner(self.inner.call(req), After::Nothing);
        };
        match &shared.store {
            Backend::Memory(store) => {
                let lookup = store.lookup(&read.resource, &read.entry);
                decide(&self.cache, read, Some(lookup), req, &mut self.inner)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(store) => {
                // An invalidation of this resource has not reached the store
                // yet: answer from the handler, store nothing.
                if store.is_pending(&read.resource) {
                    return decide(&self.cache, read, None, req, &mut self.inner);
                }
                // Only a GET's response is stored.
                let handle = store.lookup(read.resource, read.entry, !read.head, read.may_hit);
                self.wait(Pending::Lookup(handle), req, Then::Lookup(read))
            }
        }
    }
}

impl<S: Clone> ValidatorCacheService<S> {
    /// A future that waits for the store, then calls the service made ready
    /// for this request.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn wait<ReqBody>(
        &mut self,
        pending: Pending,
        request: Request<ReqBody>,
        then: Then,
    ) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let next = Next {
            service,
            request,
            cache: self.cache.clone(),
            then,
        };
        ResponseFuture::waiting(pending, next)
    }
}

/// What a `GET` or `HEAD` gets once the store has been read: a 304 from the
/// cache, or the inner service's response (stored after a `GET`). `None`:
/// the store could not be read; the request goes on as without a cache.
pub(crate) fn decide<S, ReqBody>(
    cache: &ValidatorCache,
    read: Read,
    lookup: Option<Lookup>,
    req: Request<ReqBody>,
    service: &mut S,
) -> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    let shared = &*cache.shared;
    let Some(lookup) = lookup else {
        Counters::add(&shared.counters.misses, 1);
        return ResponseFuture::inner(service.call(req), After::Nothing);
    };
    if read.may_hit {
        let hit = lookup
            .entry
            .as_ref()
            .and_then(|entry| answer(entry, &req, shared));
        if let Some(variant) = hit {
            Counters::add(&shared.counters.hits, 1);
            let mut response = variant.not_modified(());
            record(
                response.status(),
                response.extensions_mut(),
                Outcome::NotModifiedFromCache,
                shared.config.record_outcome,
            );
            return ResponseFuture::ready(response);
        }
    }
    Counters::add(&shared.counters.misses, 1);
    // A HEAD response carries the GET's validators, but is not stored:
    // only a GET's response is the representation a 304 stands for.
    if read.head {
        return ResponseFuture::inner(service.call(req), After::Nothing);
    }
    let varying = varying(req.headers(), &shared.config.vary)
        .map(|(index, value)| (index, value.clone()))
        .collect();
    let fill = Fill::new(read, lookup, varying);
    ResponseFuture::inner(service.call(req), After::Fill(fill, cache.clone()))
}

/// The stored variant that answers this request with a 304, if any.
fn answer<'a, B>(entry: &'a Entry, req: &Request<B>, shared: &Shared) -> Option<&'a Variant> {
    // RFC 9111 §4.1: only the variant stored for this request's values of
    // the fields it varies on.
    let fields = &shared.config.vary;
    let variant = entry.variants().iter().find(|v| {
        let digest = shared.hashing.vary(v.mask, |index| {
            req.headers().get_all(&fields[usize::from(index)]).iter()
        });
        v.fields == digest
    })?;
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
