//! Which responses are buffered and tagged.

use http::{header, response::Parts, HeaderValue};

use crate::directives::has_directive;

/// Decides whether a response may be buffered and tagged.
///
/// The layer asks only about responses it could tag at all: a `200 OK` to a
/// `GET` or `HEAD`, without an `ETag` of its own, without
/// the [`SkipETag`] marker, and whose `Content-Length` and body size hint do
/// not already exceed the buffering cap. Those rules cannot be turned off; a
/// predicate narrows further.
///
/// It is implemented by [`DefaultPredicate`], by any
/// `Fn(&http::response::Parts) -> bool + Clone`, and by `Option<P>` (`None`
/// tags everything), and predicates combine with [`and`](Predicate::and) and
/// [`or`](Predicate::or), so a closure can extend the default rule:
///
/// ```
/// use tower_etag::{DefaultPredicate, ETagLayer, Predicate};
///
/// // Keep the default rule, and also leave images alone.
/// let not_images = |response: &http::response::Parts| {
///     !response
///         .headers
///         .get(http::header::CONTENT_TYPE)
///         .is_some_and(|v| v.as_bytes().starts_with(b"image/"))
/// };
/// let layer = ETagLayer::new().predicate(DefaultPredicate::new().and(not_images));
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
/// It declines
/// - `Cache-Control: no-store` (RFC 9111 §5.2.2.5): nothing will store the
///   representation, so a validator is useless and buffering only adds latency;
/// - `Content-Type: text/event-stream`: server-sent events are an endless
///   stream whose first event must not wait for a buffer;
/// - `Content-Type: application/grpc…`: gRPC carries its status in trailers
///   and must pass untouched;
/// - responses with `Content-Range`: a partial representation is not the
///   representation the tag would name.
///
/// ```
/// use http::{header, Response};
/// use tower_etag::{DefaultPredicate, Predicate};
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
                header::CACHE_CONTROL => has_no_store(value),
                // The first Content-Type, as `HeaderMap::get` would give.
                header::CONTENT_TYPE if !content_type_seen => {
                    content_type_seen = true;
                    starts_with_ignore_case(value, b"text/event-stream")
                        || starts_with_ignore_case(value, b"application/grpc")
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

/// A marker that opts a single response out of the layer: insert it into the
/// response's extensions and the response passes through untouched (no tag,
/// no buffering, no precondition evaluation).
///
/// ```
/// use axum::{response::IntoResponse, Extension};
/// use tower_etag::SkipETag;
///
/// async fn live_scores() -> impl IntoResponse {
///     (Extension(SkipETag), "3 - 1")
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipETag;

fn has_no_store(value: &HeaderValue) -> bool {
    has_directive(value, &["no-store"])
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
