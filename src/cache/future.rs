//! The response future of [`ValidatorCacheService`](super::ValidatorCacheService):
//! a 304 ready at once, or the inner service's response followed by a fill
//! (after a `GET`) or an invalidation (after a write).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{header, uri::PathAndQuery, Request, Response};
use pin_project_lite::pin_project;

use super::{
    body::ResponseBody,
    entry::{remember, Entry},
    handle::Counters,
    invalidation::same_authority_path,
    key::{authority, Key, Read},
    store::{self, Lookup},
    ValidatorCache,
};

pin_project! {
    /// The response future of [`ValidatorCacheService`](super::ValidatorCacheService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        // A 304 answered from the cache.
        Ready { response: Option<Response<ResponseBody<B>>> },
        // Waiting for the inner service; then what to do with its response.
        Inner { #[pin] future: F, after: Option<After> },
    }
}

/// What to do once the inner service has answered.
pub(crate) enum After {
    Nothing,
    Fill(Fill, ValidatorCache),
    Write(Write),
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    pub(crate) fn inner(future: F, after: After) -> Self {
        Self {
            kind: Kind::Inner {
                future,
                after: Some(after),
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Ready { .. } => "Ready",
            Kind::Inner { .. } => "Inner",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Inner { future, after } => {
                let result = ready!(future.poll(cx));
                match (after.take(), &result) {
                    (Some(After::Fill(fill, cache)), Ok(response)) => {
                        fill.complete(response, &cache)
                    }
                    (Some(After::Write(write)), Ok(response)) => write.complete(response),
                    // An error: nothing to store, and a write's outcome is
                    // unknown; its guard, dropped here, ends it.
                    _ => {}
                }
                Poll::Ready(result.map(|response| response.map(ResponseBody::inner)))
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
        let stored = shared.store.fill(store::Fill {
            resource: self.resource,
            key: self.key,
            generation: self.generation,
            tag_epoch: self.tag_epoch,
            variant,
            base: self.base,
            tags,
        });
        if stored {
            Counters::add(&shared.counters.fills, 1);
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(target: "tower_etag::cache", stored, "tower-etag cache fill");
    }
}

/// A write under way: what it keeps until its response, to invalidate what
/// it changed, and to end the write in the store however the request ends.
pub(crate) struct Write {
    cache: ValidatorCache,
    resource: Key,
    path: PathAndQuery,
    authority: Option<Bytes>,
    ended: bool,
}

impl Write {
    /// Begins a write to the request's target: RFC 9111 §4.4 invalidates
    /// it now, before the write runs, and no fill of it is stored until the
    /// write has ended.
    pub(crate) fn begin<B>(request: &Request<B>, cache: ValidatorCache) -> Self {
        let uri = request.uri();
        let authority =
            authority(uri, request.headers().get(header::HOST)).map(Bytes::copy_from_slice);
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let shared = &*cache.shared;
        let resource = shared.hashing.resource(path.as_str());
        shared.store.begin_write(&resource);
        Counters::add(&shared.counters.invalidations, 1);
        Self {
            cache,
            resource,
            path,
            authority,
            ended: false,
        }
    }

    fn complete<B>(mut self, response: &Response<B>) {
        self.ended = true;
        let shared = &*self.cache.shared;
        // RFC 9111 §4.4: only a non-error status (2xx, 3xx) invalidates; the
        // arrival's invalidation stands either way.
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            shared.store.end_write(&self.resource, &[], false);
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
        shared.store.end_write(&self.resource, &others, true);
        Counters::add(&shared.counters.invalidations, 1 + others.len() as u64);
        super::handle::trace_invalidation(path);
    }
}

impl Drop for Write {
    /// The request ended without a response (the inner service failed, or
    /// the client left): whether it wrote is unknown, so invalidate.
    fn drop(&mut self) {
        if !self.ended {
            self.cache.shared.store.end_write(&self.resource, &[], true);
        }
    }
}
