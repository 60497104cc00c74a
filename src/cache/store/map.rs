//! The smallest store: one `HashMap` behind a mutex, answering every
//! operation later (on the next poll), as a networked store would. It shows
//! what a store must do, and lets the tests drive the cache's waiting path
//! without a server.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use super::{Answer, Attach, Begin, Fill, FillDone, Later, Lookup, Query, Setup, Store, WriteId};
use crate::cache::{entry::Entry, hashing::Key};

#[derive(Debug, Default)]
struct State {
    /// Generations of resources and tags; a missing one reads as `floor`.
    generations: HashMap<Key, u64>,
    /// What a generation never recorded reads as: raised by a clear, so
    /// that fills in flight for any key, known or not, store nothing.
    floor: u64,
    /// Entries and the generation of their resource at fill time.
    entries: HashMap<Key, (u64, Entry)>,
    /// The writes under way, per resource.
    writing: HashMap<Key, u32>,
    tag_epoch: u64,
    /// Every generation issued so far is at most this.
    next: u64,
}

impl State {
    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn bump(&mut self, key: Key) {
        let fresh = self.fresh();
        self.generations.insert(key, fresh);
    }

    fn generation(&self, key: &Key) -> u64 {
        self.generations.get(key).copied().unwrap_or(self.floor)
    }
}

/// A store in a `HashMap`, for the tests.
#[derive(Debug, Default)]
pub(crate) struct MapStore {
    state: Arc<Mutex<State>>,
}

impl Attach for MapStore {
    fn attach(self: Box<Self>, _settings: &Setup) -> Arc<dyn Store> {
        Arc::new(*self)
    }
}

/// An answer that comes on the second poll.
struct NextPoll<T>(Option<T>, bool);

impl<T: Send + Sync> Later<T> for NextPoll<T> {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        if std::mem::replace(&mut self.1, true) {
            Poll::Ready(self.0.take().expect("polled after the answer"))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn later<T: Send + Sync + 'static>(value: T) -> Answer<T> {
    Answer::Later(Box::new(NextPoll(Some(value), false)))
}

impl MapStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Store for MapStore {
    fn lookup(&self, query: Query) -> Answer<Option<Lookup>> {
        let state = self.state();
        let generation = state.generation(&query.resource);
        let entry = match state.entries.get(&query.entry) {
            Some((filled_at, entry)) if *filled_at == generation => entry.retain(|_, v| {
                v.tags
                    .iter()
                    .all(|(tag, generation)| state.generation(tag) == *generation)
            }),
            _ => None,
        };
        later(Some(Lookup {
            generation,
            tag_epoch: state.tag_epoch,
            entry,
            session: 0,
        }))
    }

    fn fill(&self, fill: Fill, done: FillDone) {
        let stored = {
            let mut state = self.state();
            let fresh = state.generation(&fill.resource) == fill.generation
                && !state.writing.contains_key(&fill.resource)
                && (fill.tags.is_empty() || state.tag_epoch == fill.tag_epoch);
            if fresh {
                let tags = fill
                    .tags
                    .iter()
                    .map(|tag| (*tag, state.generation(tag)))
                    .collect();
                let entry = Entry::with(fill.base.as_ref(), fill.variant.with_tags(tags));
                state.entries.insert(fill.key, (fill.generation, entry));
            }
            fresh
        };
        done(stored);
    }

    fn invalidate(&self, keys: Vec<Key>, tags: bool) -> Answer<bool> {
        let mut state = self.state();
        for key in keys {
            state.bump(key);
        }
        if tags {
            state.tag_epoch += 1;
        }
        later(true)
    }

    fn begin_write(&self, resource: Key) -> (WriteId, Answer<Begin>) {
        let mut state = self.state();
        state.bump(resource);
        *state.writing.entry(resource).or_default() += 1;
        (WriteId(0), later(Begin::Proceed))
    }

    fn end_write(
        &self,
        resource: Key,
        _id: WriteId,
        others: Vec<Key>,
        invalidate: bool,
    ) -> Answer<()> {
        let mut state = self.state();
        if invalidate {
            state.bump(resource);
            for key in others {
                state.bump(key);
            }
        }
        if let Some(count) = state.writing.get_mut(&resource) {
            *count -= 1;
            if *count == 0 {
                state.writing.remove(&resource);
            }
        }
        later(())
    }

    fn clear(&self) -> Answer<bool> {
        let mut state = self.state();
        state.floor = state.fresh();
        state.generations.clear();
        state.entries.clear();
        later(true)
    }

    fn entries(&self) -> u64 {
        self.state().entries.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{header, Method, Request, Response, StatusCode};
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::{
        cache::{ValidatorCache, ValidatorCacheLayer},
        ETagLayer,
    };

    #[tokio::test]
    async fn a_store_that_answers_later_serves_hits_and_sees_writes() {
        let cache = ValidatorCache::builder()
            .store(Box::new(MapStore::default()))
            .build();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let handler = service_fn(move |request: Request<String>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = if request.method() == Method::PUT {
                String::new()
            } else {
                "v1".to_owned()
            };
            async move { Ok::<_, Infallible>(Response::new(body)) }
        });
        let service =
            ValidatorCacheLayer::new(cache.clone()).layer(ETagLayer::new().layer(handler));
        let get = |etag: Option<&http::HeaderValue>| {
            let mut request = Request::get("/a").body(String::new()).unwrap();
            if let Some(etag) = etag {
                request
                    .headers_mut()
                    .insert(header::IF_NONE_MATCH, etag.clone());
            }
            request
        };

        let first = service.clone().oneshot(get(None)).await.unwrap();
        let etag = first.headers()[header::ETAG].clone();
        assert_eq!(cache.stats().fills, 1);
        let hit = service.clone().oneshot(get(Some(&etag))).await.unwrap();
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "answered by the cache"
        );
        assert_eq!(cache.stats().hits, 1);

        let put = Request::put("/a").body(String::new()).unwrap();
        assert_eq!(
            service.clone().oneshot(put).await.unwrap().status(),
            StatusCode::OK
        );
        let after = service.clone().oneshot(get(Some(&etag))).await.unwrap();
        // The write invalidated the entry: the handler answers (with the
        // same bytes, so a 304 made by the ETag layer).
        assert_eq!(after.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        cache.clear().await;
        assert_eq!(cache.stats().entries, 0);
    }
}
