//! Which responses the [`ETagLayer`](crate::ETagLayer) buffers and tags:
//! the [`Predicate`] trait, its combinators, the building blocks, and the
//! [`DefaultPredicate`] assembled from them.

use http::{header, response::Parts, HeaderValue};

use crate::protocol::directives::has_directive;

/// Decides whether a response may be buffered and tagged.
///
/// The layer asks only about responses it could tag at all: a `200 OK` to a
/// `GET` or `HEAD`, without an `ETag` of its own, without
/// the [`SkipETag`] marker, and whose `Content-Length` and body size hint do
/// not already exceed the buffering cap. Those rules cannot be turned off; a
/// predicate narrows further.
///
/// It is implemented by [`DefaultPredicate`], by the building blocks
/// [`NotForNoStore`], [`NotForContentType`] and [`NotForPartialContent`], by
/// [`And`] and [`Or`], by any `Fn(&http::response::Parts) -> bool + Clone`,
/// and by `Option<P>` (`None` tags everything); predicates combine with
/// [`and`](Predicate::and) and [`or`](Predicate::or), so a closure can extend
/// the default rule:
///
/// ```
/// use tower_etag::{predicate::{DefaultPredicate, Predicate}, ETagLayer};
///
/// // Keep the default rule, and also leave images alone.
/// let not_images = |response: &http::response::Parts| {
///     !response
///         .headers
///         .get(http::header::CONTENT_TYPE)
///         .is_some_and(|v| v.as_bytes().starts_with(b"image/"))
/// };
/// let layer = ETagLayer::new().tag_when(DefaultPredicate::new().and(not_images));
/// # let _ = layer;
/// ```
pub trait Predicate: Clone {
    /// Returns `true` if the response whose head is `response` should be
    /// buffered and tagged.
    fn should_tag(&self, response: &Parts) -> bool;

    /// A predicate that holds when both this one and `other` hold (`other`
    /// is asked only if this one holds).
    fn and<Q: Predicate>(self, other: Q) -> And<Self, Q> {
        And {
            first: self,
            second: other,
        }
    }

    /// A predicate that holds when this one or `other` holds (`other` is
    /// asked only if this one does not).
    fn or<Q: Predicate>(self, other: Q) -> Or<Self, Q> {
        Or {
            first: self,
            second: other,
        }
    }
}

impl<F> Predicate for F
where
    F: Fn(&Parts) -> bool + Clone,
{
    fn should_tag(&self, response: &Parts) -> bool {
        self(response)
    }
}

impl<P: Predicate> Predicate for Option<P> {
    /// `None` tags every response the layer may tag.
    fn should_tag(&self, response: &Parts) -> bool {
        self.as_ref().is_none_or(|inner| inner.should_tag(response))
    }
}

/// Two predicates that must both hold; made by [`Predicate::and`].
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct And<A, B> {
    first: A,
    second: B,
}

impl<A: Predicate, B: Predicate> Predicate for And<A, B> {
    fn should_tag(&self, response: &Parts) -> bool {
        self.first.should_tag(response) && self.second.should_tag(response)
    }
}

/// Two predicates of which one must hold; made by [`Predicate::or`].
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: Predicate, B: Predicate> Predicate for Or<A, B> {
    fn should_tag(&self, response: &Parts) -> bool {
        self.first.should_tag(response) || self.second.should_tag(response)
    }
}

/// The default rule: tag everything except responses that must not be stored
/// or delayed.
///
/// It equals the building blocks of this module assembled as
/// `NotForNoStore.and(NotForContentType::SSE).and(NotForContentType::GRPC).and(NotForPartialContent)`
/// (a test holds it to that), and reads the response's fields in one pass
/// instead of four lookups:
/// - [`NotForNoStore`]: `Cache-Control: no-store` (RFC 9111 §5.2.2.5): nothing
///   will store the representation, so a validator is useless and buffering
///   only adds latency;
/// - [`NotForContentType::SSE`]: server-sent events are an endless stream
///   whose first event must not wait for a buffer;
/// - [`NotForContentType::GRPC`]: gRPC carries its status in trailers and
///   must pass untouched;
/// - [`NotForPartialContent`]: a partial representation is not the
///   representation the tag would name.
///
/// To loosen it, assemble the blocks you want instead (for example without
/// [`NotForNoStore`], to tag `no-store` responses too); to narrow it, add to
/// it with [`and`](Predicate::and).
///
/// ```
/// use http::{header, Response};
/// use tower_etag::predicate::{DefaultPredicate, Predicate};
///
/// let (page, ()) = Response::builder()
///     .header(header::CONTENT_TYPE, "text/html")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let (events, ()) = Response::builder()
///     .header(header::CONTENT_TYPE, "text/event-stream")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert!(DefaultPredicate::new().should_tag(&page));
/// assert!(!DefaultPredicate::new().should_tag(&events));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPredicate {
    _priv: (),
}

impl DefaultPredicate {
    /// The default rule.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Predicate for DefaultPredicate {
    fn should_tag(&self, response: &Parts) -> bool {
        // One pass over the fields rather than a lookup per name.
        let mut content_type_seen = false;
        for (name, value) in &response.headers {
            let declined = match *name {
                header::CACHE_CONTROL => has_directive(value, &["no-store"]),
                // The first Content-Type, as `HeaderMap::get` would give.
                header::CONTENT_TYPE if !content_type_seen => {
                    content_type_seen = true;
                    [NotForContentType::SSE, NotForContentType::GRPC]
                        .iter()
                        .any(|block| starts_with_ignore_case(value, block.prefix.as_bytes()))
                }
                header::CONTENT_RANGE => true,
                _ => false,
            };
            if declined {
                return false;
            }
        }
        true
    }
}

/// Declines responses with `Cache-Control: no-store` on any of its lines
/// (RFC 9111 §5.2.2.5).
#[derive(Clone, Copy, Debug, Default)]
pub struct NotForNoStore;

impl Predicate for NotForNoStore {
    fn should_tag(&self, response: &Parts) -> bool {
        !response
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|value| has_directive(value, &["no-store"]))
    }
}

/// Declines responses whose `Content-Type` starts with a given prefix,
/// compared case-insensitively (the first `Content-Type` line, as
/// `HeaderMap::get` gives it).
///
/// ```
/// use tower_etag::predicate::{DefaultPredicate, NotForContentType, Predicate};
///
/// // The default rule, and no images either.
/// let predicate = DefaultPredicate::new().and(NotForContentType::const_new("image/"));
/// # let _ = predicate;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct NotForContentType {
    prefix: &'static str,
}

impl NotForContentType {
    /// Server-sent events: `text/event-stream`.
    pub const SSE: Self = Self::const_new("text/event-stream");

    /// gRPC (`application/grpc`, `application/grpc+proto`,
    /// `application/grpc-web`, …).
    pub const GRPC: Self = Self::const_new("application/grpc");

    /// Declines content types that start with `prefix`.
    pub const fn const_new(prefix: &'static str) -> Self {
        Self { prefix }
    }
}

impl Predicate for NotForContentType {
    fn should_tag(&self, response: &Parts) -> bool {
        !response
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| starts_with_ignore_case(value, self.prefix.as_bytes()))
    }
}

/// Declines partial content: responses with `Content-Range` (RFC 9110
/// §14.4).
#[derive(Clone, Copy, Debug, Default)]
pub struct NotForPartialContent;

impl Predicate for NotForPartialContent {
    fn should_tag(&self, response: &Parts) -> bool {
        !response.headers.contains_key(header::CONTENT_RANGE)
    }
}

/// A marker that opts a single response out of the layer: insert it into the
/// response's extensions and the response passes through untouched (no tag,
/// no buffering, no precondition evaluation).
///
/// ```
/// use axum::{response::IntoResponse, Extension};
/// use tower_etag::predicate::SkipETag;
///
/// async fn live_scores() -> impl IntoResponse {
///     (Extension(SkipETag), "3 - 1")
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipETag;

/// Whether `headers` say gRPC (`Content-Type: application/grpc…`, as
/// [`NotForContentType::GRPC`] declines).
#[cfg_attr(not(feature = "cache"), allow(dead_code))]
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        starts_with_ignore_case(value, NotForContentType::GRPC.prefix.as_bytes())
    })
}

fn starts_with_ignore_case(value: &HeaderValue, prefix: &[u8]) -> bool {
    let value = value.as_bytes().trim_ascii_start();
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use http::Response;

    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Response::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn tags(headers: &[(&str, &str)]) -> bool {
        DefaultPredicate::new().should_tag(&parts(headers))
    }

    #[test]
    fn predicates_combine() {
        let json = |r: &Parts| {
            r.headers
                .get("content-type")
                .is_some_and(|v| v == "application/json")
        };
        let small = |r: &Parts| r.headers.get("content-length").is_some_and(|v| v == "1");
        let both = DefaultPredicate::new().and(json).and(small);
        let either = json.or(small);
        let cases = [
            (
                &[
                    ("content-type", "application/json"),
                    ("content-length", "1"),
                ][..],
                true,
                true,
            ),
            (&[("content-type", "application/json")][..], false, true),
            (&[("content-length", "1")][..], false, true),
            (&[("content-type", "text/html")][..], false, false),
            (
                &[
                    ("content-type", "application/json"),
                    ("content-length", "1"),
                    ("cache-control", "no-store"),
                ][..],
                false,
                true,
            ),
        ];
        for (headers, and, or) in cases {
            assert_eq!(both.should_tag(&parts(headers)), and, "{headers:?}");
            assert_eq!(either.should_tag(&parts(headers)), or, "{headers:?}");
        }
        assert!(None::<DefaultPredicate>.should_tag(&parts(&[("cache-control", "no-store")])));
        assert!(!Some(DefaultPredicate::new()).should_tag(&parts(&[("cache-control", "no-store")])));
    }

    #[test]
    fn default_tags_ordinary_responses() {
        assert!(tags(&[]));
        assert!(tags(&[("content-type", "text/html; charset=utf-8")]));
        assert!(tags(&[("cache-control", "no-cache, max-age=0")]));
        assert!(tags(&[("cache-control", "private, no-store-please")]));
    }

    #[test]
    fn default_skips_no_store() {
        assert!(!tags(&[("cache-control", "no-store")]));
        assert!(!tags(&[("cache-control", "private, No-Store")]));
        assert!(!tags(&[
            ("cache-control", "max-age=0"),
            ("cache-control", " no-store ")
        ]));
    }

    #[test]
    fn default_skips_event_streams_and_grpc() {
        assert!(!tags(&[("content-type", "text/event-stream")]));
        assert!(!tags(&[(
            "content-type",
            "Text/Event-Stream; charset=utf-8"
        )]));
        assert!(!tags(&[("content-type", "application/grpc")]));
        assert!(!tags(&[("content-type", "application/grpc+proto")]));
        assert!(!tags(&[("content-type", "application/grpc-web")]));
        assert!(tags(&[("content-type", "application/json")]));
    }

    #[test]
    fn default_skips_partial_content() {
        assert!(!tags(&[("content-range", "bytes 0-9/100")]));
    }

    #[test]
    fn the_default_can_be_loosened_from_its_blocks() {
        let without_no_store = NotForContentType::SSE
            .and(NotForContentType::GRPC)
            .and(NotForPartialContent);
        let no_store = parts(&[("cache-control", "no-store")]);
        assert!(!DefaultPredicate::new().should_tag(&no_store));
        assert!(without_no_store.should_tag(&no_store));
        let images = NotForContentType::const_new("image/");
        assert!(!images.should_tag(&parts(&[("content-type", "IMAGE/png")])));
        assert!(images.should_tag(&parts(&[("content-type", "text/html")])));
        assert!(images.should_tag(&parts(&[])));
    }

    proptest::proptest! {
        #[test]
        fn the_default_is_its_building_blocks_assembled(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "cache-control", "content-type", "content-range", "x-other",
                    ]),
                    proptest::sample::select(vec![
                        "no-store", "max-age=0, No-Store", "private", "text/event-stream",
                        " Application/GRPC+proto", "text/html", "bytes 0-1/2", "",
                    ]),
                ),
                0..5,
            )
        ) {
            let response = parts(&fields);
            let assembled = NotForNoStore
                .and(NotForContentType::SSE)
                .and(NotForContentType::GRPC)
                .and(NotForPartialContent);
            proptest::prop_assert_eq!(
                DefaultPredicate::new().should_tag(&response),
                assembled.should_tag(&response),
                "{:?}", fields
            );
        }
    }

    #[test]
    fn closures_are_predicates() {
        let only_json = |p: &Parts| {
            p.headers
                .get("content-type")
                .is_some_and(|v| v == "application/json")
        };
        assert!(only_json.should_tag(&parts(&[("content-type", "application/json")])));
        assert!(!only_json.should_tag(&parts(&[])));
    }
}
