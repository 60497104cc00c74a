//! A write under way: RFC 9111 §4.4 invalidation of its target when it
//! arrives and when it is answered, with the same-authority `Location` and
//! `Content-Location`, and the end of the write in the store however the
//! request ends.

use bytes::Bytes;
use http::{header, uri::PathAndQuery, Request, Response};

use super::{
    handle::{trace_invalidation, Counters, ValidatorCache},
    hashing::Key,
    invalidation::same_authority_path,
    metrics::Cause,
    read::authority,
    store::{Answer, Begin, WriteId},
};

/// What a write keeps until its response, to invalidate what it changed,
/// and to end the write in the store however the request ends.
pub(crate) struct Write {
    cache: ValidatorCache,
    resource: Key,
    path: PathAndQuery,
    authority: Option<Bytes>,
    id: WriteId,
    ended: bool,
}

impl Write {
    /// Begins a write to the request's target: RFC 9111 §4.4 invalidates
    /// it now, before the write runs, and no fill of it is stored until the
    /// write has ended. The request goes on once the answer is in, unless
    /// the store refuses it (strict writes).
    pub(crate) fn begin<B>(request: &Request<B>, cache: ValidatorCache) -> (Self, Answer<Begin>) {
        let uri = request.uri();
        let authority =
            authority(uri, request.headers().get(header::HOST)).map(Bytes::copy_from_slice);
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let shared = &*cache.shared;
        let resource = shared.hashing.resource(path.as_str());
        let (id, answer) = shared.store.begin_write(resource);
        Counters::add(&shared.counters.invalidations, 1);
        shared.metrics.invalidated(Cause::Write, 1);
        let write = Self {
            cache,
            resource,
            path,
            authority,
            id,
            ended: false,
        };
        (write, answer)
    }

    fn end(&mut self, others: Vec<Key>, invalidate: bool) -> Answer<()> {
        self.ended = true;
        let store = &self.cache.shared.store;
        store.end_write(self.resource, self.id, others, invalidate)
    }

    /// The store refused the write (strict writes): it never ran, so it
    /// ends without invalidating anything.
    pub(crate) fn refused(mut self) {
        // Not waited for: nothing was written, and the end is retried by
        // the store until it lands.
        drop(self.end(Vec::new(), false));
    }

    /// The write was answered with `response`. The response is to be held
    /// until the answer is in: the end invalidates the target (and the
    /// resources `Location` and `Content-Location` name) once more, and a
    /// request that follows the response must find that done.
    pub(crate) fn complete<B>(mut self, response: &Response<B>) -> Answer<()> {
        // RFC 9111 §4.4: only a non-error status (2xx, 3xx) invalidates; the
        // arrival's invalidation stands either way.
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return self.end(Vec::new(), false);
        }
        let others = self.others(response);
        let shared = &self.cache.shared;
        Counters::add(&shared.counters.invalidations, 1 + others.len() as u64);
        shared.metrics.invalidated(Cause::Write, 1);
        shared
            .metrics
            .invalidated(Cause::Location, others.len() as u64);
        let answer = self.end(others, true);
        trace_invalidation(self.path.as_str());
        answer
    }

    /// RFC 9111 §4.4: the resources named by `Location` and
    /// `Content-Location` when they have the target's origin, relative
    /// references resolved against the target.
    fn others<B>(&self, response: &Response<B>) -> Vec<Key> {
        let hashing = &self.cache.shared.hashing;
        let path = self.path.as_str();
        [header::LOCATION, header::CONTENT_LOCATION]
            .into_iter()
            .flat_map(|name| response.headers().get_all(name))
            .filter_map(|value| {
                same_authority_path(value.as_bytes(), path, self.authority.as_deref())
            })
            .map(|other| hashing.resource(&other))
            .collect()
    }
}

impl Drop for Write {
    /// The request ended without a response (the inner service failed, or
    /// the client left): whether it wrote is unknown, so invalidate.
    fn drop(&mut self) {
        if !self.ended {
            // Nobody waits for the response: the end is not waited for
            // either (the store retries it until it lands).
            drop(self.end(Vec::new(), true));
        }
    }
}
