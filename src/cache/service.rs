//! The [`ValidatorCacheService`]: reads each request, answers hits, and
//! hands everything else to the inner service.

use std::{
    fmt,
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use tower_service::Service;

use super::{
    body::ResponseBody,
    future::ResponseFuture,
    handle::ValidatorCache,
    metrics::MissReason,
    read::Read,
    status::{Fwd, Kept},
    store::Query,
    write::Write,
};
use crate::predicate::is_grpc;

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

/// `S: Clone`: when the store answers later (a shared store), the request
/// waits for the answer before the inner service is called, so the future
/// takes the service that was made ready and leaves a clone in its place
/// (tower's clone-and-replace). The in-memory store answers at once and the
/// inner service is called directly.
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
                shared.metrics.miss(MissReason::Method);
                return ResponseFuture::passthrough(
                    &mut self.inner,
                    req,
                    &self.cache,
                    Fwd::Method,
                    Kept::Nothing,
                );
            }
            // A gRPC call: a POST to a method's path, which no GET
            // revalidates; not invalidated at its arrival unless the app
            // asked. Its answer is checked: one that is not gRPC (a handler
            // that ignored the request's content type) invalidates as any
            // write's answer does.
            Method::POST if !shared.policy.grpc_invalidates && is_grpc(req.headers()) => {
                shared.metrics.miss(MissReason::Method);
                return ResponseFuture::grpc(&mut self.inner, req, &self.cache);
            }
            // RFC 9111 §4.4: any other method (unsafe, or of unknown safety)
            // invalidates the target: now, before the write runs, so that
            // nothing is answered from the old entry meanwhile, and again
            // after a non-error response. Nothing is stored for the target
            // in between (`Write`).
            _ => {
                shared.metrics.miss(MissReason::Method);
                let (write, answer) = Write::begin(&req, self.cache.clone());
                return ResponseFuture::write(answer, write, &self.cache, req, &mut self.inner);
            }
        }

        let (parts, body) = req.into_parts();
        let read = Read::new(&parts, &shared.policy, &shared.hashing);
        let req = Request::from_parts(parts, body);
        let Some(read) = read else {
            // The app's partition function keeps this request away.
            shared.metrics.miss(MissReason::Partition);
            return ResponseFuture::passthrough(
                &mut self.inner,
                req,
                &self.cache,
                Fwd::Bypass,
                Kept::Partition,
            );
        };
        let answer = shared.store.lookup(Query {
            resource: read.resource,
            entry: read.entry,
            // Only a GET's response is stored.
            may_fill: !read.head,
            may_hit: read.may_hit,
        });
        ResponseFuture::lookup(answer, &self.cache, read, req, &mut self.inner)
    }
}
