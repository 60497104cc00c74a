//! Conditional writes: a request's preconditions as a value that a handler
//! evaluates against the resource's current state **inside the transaction
//! that performs the write** (RFC 9110 §13.1.1, §13.2.2; RFC 6585 §3).
//!
//! [`ETagLayer`](crate::ETagLayer) passes unsafe methods through: only the
//! handler knows the state of the resource at the instant it writes. A
//! check made before the handler runs (in a middleware, or in the handler
//! before its transaction) leaves a window between check and write in which
//! another request can change the resource: both requests pass the check
//! and one update is lost. [`Preconditions::check`] is meant to run after
//! the handler has read the current state *in the transaction*, and before
//! it writes.
//!
//! ```
//! use http::{header, Method, Request, StatusCode};
//! use tower_etag::{conditional::{Current, Preconditions}, ETagLayer};
//!
//! let layer = ETagLayer::new();
//! let stored = br#"{"title":"draft"}"#;
//! let tag = layer.tag_for(stored);
//!
//! // A PUT that carries the tag its client saw on GET.
//! let (parts, ()) = Request::builder()
//!     .method(Method::PUT)
//!     .header(header::IF_MATCH, tag.to_header_value())
//!     .body(())
//!     .unwrap()
//!     .into_parts();
//! let preconditions = Preconditions::from_parts(&parts).require(true);
//!
//! // In the transaction: read the current document, then check.
//! assert!(preconditions.check(Current::tagged(&tag)).is_ok());
//!
//! // Someone else wrote first: 412, with the current tag.
//! let newer = layer.tag_for(br#"{"title":"final"}"#);
//! let rejection = preconditions.check(Current::tagged(&newer)).unwrap_err();
//! assert_eq!(rejection.status(), StatusCode::PRECONDITION_FAILED);
//! let response = rejection.into_http_response();
//! assert_eq!(response.headers()[header::ETAG], newer.to_header_value());
//! ```
//!
//! A successful write may answer `204 No Content` with the `ETag` of the new
//! representation, so that the client can send its next `If-Match` without a
//! `GET` in between; [`ETagLayer`](crate::ETagLayer) leaves 204s untouched.
//! RFC 9110 §9.3.4 allows a validator in a response to `PUT` only when the
//! representation was stored exactly as sent, so that the tag is the one the
//! next `GET` will carry.

use std::{fmt, time::SystemTime};

use http::{header, request::Parts, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::protocol::{
    entity_tag::EntityTag,
    precondition::{Conditions, Validators, Verdict},
};

/// The current state of the resource a request targets, read by the handler
/// in the transaction that writes.
///
/// Built with [`Current::missing`], [`Current::tagged`] or
/// [`Current::untagged`], and [`Current::last_modified`] for a
/// modification date. The enum and its variants are `#[non_exhaustive]`, so
/// that validators can be added later: code outside this crate cannot build
/// the variants itself, and a `match` on them needs a wildcard arm.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_etag::{conditional::Current, EntityTag};
///
/// let tag = EntityTag::strong("v7").unwrap();
/// let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let _row = Current::tagged(&tag).last_modified(modified);
/// let _file = Current::untagged().last_modified(modified);
/// let _absent = Current::missing();
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Current<'a> {
    /// The resource has no current representation: `If-Match` (even `*`)
    /// fails and `If-None-Match: *` holds (create only if absent).
    #[non_exhaustive]
    Missing,
    /// The resource exists, with these validators (either may be unknown).
    #[non_exhaustive]
    Exists {
        /// Its entity tag: from [`ETagLayer::tag_for`](crate::ETagLayer::tag_for)
        /// over the bytes its `GET` returns, or a version of the
        /// application's own.
        etag: Option<&'a EntityTag>,
        /// Its modification date, for `If-Unmodified-Since` and
        /// `If-Modified-Since`.
        last_modified: Option<SystemTime>,
    },
}

impl<'a> Current<'a> {
    /// A resource that does not exist (yet, or any more).
    pub const fn missing() -> Self {
        Current::Missing
    }

    /// An existing resource with this entity tag.
    pub const fn tagged(etag: &'a EntityTag) -> Self {
        Current::Exists {
            etag: Some(etag),
            last_modified: None,
        }
    }

    /// An existing resource without an entity tag: `If-Match: *` holds,
    /// `If-Match` with any tag fails, `If-None-Match: *` fails on writes.
    /// Give it a date with [`Current::last_modified`].
    pub const fn untagged() -> Self {
        Current::Exists {
            etag: None,
            last_modified: None,
        }
    }

    /// Adds the resource's modification date, evaluated by
    /// `If-Unmodified-Since` (and `If-Modified-Since` on `GET` and `HEAD`).
    ///
    /// A resource that does not exist has no validators: on
    /// [`Current::missing`] this changes nothing.
    #[must_use]
    pub const fn last_modified(mut self, at: SystemTime) -> Self {
        if let Current::Exists { last_modified, .. } = &mut self {
            *last_modified = Some(at);
        }
        self
    }

    fn etag(&self) -> Option<&'a EntityTag> {
        match self {
            Current::Missing => None,
            Current::Exists { etag, .. } => *etag,
        }
    }
}

/// A request's preconditions (`If-Match`, `If-None-Match`,
/// `If-Unmodified-Since`, `If-Modified-Since`), read from its head, to be
/// checked against the resource's current state.
///
/// Read it with [`Preconditions::from_parts`] in any tower stack, or, with
/// the `axum` feature, take it as an extractor.
#[derive(Debug)]
pub struct Preconditions {
    method: Method,
    conditions: Conditions,
    required: bool,
}

impl Preconditions {
    /// Reads the preconditions of a request.
    pub fn from_parts(parts: &Parts) -> Self {
        Self::new(&parts.method, &parts.headers)
    }

    /// Reads the preconditions of a request with this method and these
    /// header fields.
    pub fn new(method: &Method, headers: &HeaderMap) -> Self {
        Self {
            method: method.clone(),
            conditions: Conditions::from_headers(headers),
            required: false,
        }
    }

    /// Requires unsafe requests that change an existing resource to be
    /// conditional (default `false`): with it, such a request that carries
    /// neither `If-Match` nor a valid `If-Unmodified-Since` is rejected with
    /// 428 Precondition Required (RFC 6585 §3), so that no client can
    /// overwrite a change it has not seen. Creating a resource that does not
    /// exist needs no precondition.
    #[must_use]
    pub fn require(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Whether the request carries any of the four preconditions (an
    /// `If-Modified-Since` or `If-Unmodified-Since` that is not a valid
    /// HTTP-date counts as absent, as RFC 9110 ignores it).
    pub fn is_conditional(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Evaluates the preconditions against the resource's current state, in
    /// the order of RFC 9110 §13.2.2.
    ///
    /// `Ok(())`: perform the request. Otherwise the response to send instead:
    /// 412 Precondition Failed (with the current `ETag`), 304 Not Modified
    /// (for `GET` and `HEAD`), or 428 Precondition Required.
    ///
    /// Comparisons are RFC 9110's: `If-Match` is strong (a weak tag never
    /// satisfies it), `If-None-Match` weak. Invalid fields are ignored on
    /// `GET` and `HEAD`; on other methods an invalid `If-Match` fails, so
    /// that a client that meant a conditional write never gets a blind one.
    pub fn check(&self, current: Current<'_>) -> Result<(), Rejection> {
        let etag = current.etag();
        let validators = match current {
            Current::Missing => Validators::missing(),
            Current::Exists { last_modified, .. } => {
                Validators::current(etag.map(EntityTag::borrowed), last_modified)
            }
        };
        let current_etag = || etag.map(EntityTag::to_header_value);
        match self.conditions.evaluate(&self.method, &validators) {
            Verdict::PreconditionFailed => {
                return Err(Rejection::new(Kind::PreconditionFailed, current_etag()))
            }
            Verdict::NotModified => return Err(Rejection::new(Kind::NotModified, current_etag())),
            Verdict::Proceed => {}
        }
        // RFC 6585 §3: an origin server may require the request to be
        // conditional; only a change to an existing resource can lose an
        // update.
        let safe = matches!(
            self.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if self.required && validators.exists && !safe && !self.conditions.guards_writes() {
            return Err(Rejection::new(Kind::PreconditionRequired, None));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    NotModified,
    PreconditionFailed,
    PreconditionRequired,
}

/// What to answer instead of performing the request: 304, 412 or 428.
///
/// A plain `http::Response` through [`Rejection::into_http_response`]; with
/// the `axum` feature it is also an `IntoResponse`. It is a
/// [`std::error::Error`] too, whose message names the status, for code that
/// carries it through `?` before turning it into the response.
pub struct Rejection {
    kind: Kind,
    etag: Option<HeaderValue>,
}

impl Rejection {
    fn new(kind: Kind, etag: Option<HeaderValue>) -> Self {
        Self { kind, etag }
    }

    /// 304 Not Modified, 412 Precondition Failed or 428 Precondition
    /// Required.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::NotModified => StatusCode::NOT_MODIFIED,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
        }
    }

    /// The response: a 412 or a 304 carries the resource's current `ETag`
    /// (if it has one) so that the client can fetch it again, and no
    /// content; a 428 says in plain text what the request lacks.
    pub fn into_http_response(self) -> Response<String> {
        let body = match self.kind {
            Kind::PreconditionRequired => String::from(PRECONDITION_REQUIRED_BODY),
            Kind::NotModified | Kind::PreconditionFailed => String::new(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status();
        if let Some(etag) = self.etag {
            response.headers_mut().insert(header::ETAG, etag);
        }
        if self.kind == Kind::PreconditionRequired {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        response
    }
}

/// What a 428 says, for a person reading it in a terminal or a log.
const PRECONDITION_REQUIRED_BODY: &str = "This request must be conditional: send If-Match \
    with the ETag of the representation you are changing (or If-Unmodified-Since with its \
    Last-Modified date).\n";

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One message per status: the 412 does not record which of the
        // fields failed (RFC 9110 §13.2.2 evaluates them in turn).
        f.write_str(match self.kind {
            Kind::NotModified => "not modified: the representation the client has is current",
            Kind::PreconditionFailed => {
                "precondition failed: the resource's current state does not satisfy \
                 If-Match, If-Unmodified-Since or If-None-Match"
            }
            Kind::PreconditionRequired => {
                "precondition required: a change to an existing resource must carry \
                 If-Match or If-Unmodified-Since"
            }
        })
    }
}

impl std::error::Error for Rejection {}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("status", &self.status())
            .field("etag", &self.etag)
            .finish()
    }
}

impl From<Rejection> for Response<String> {
    fn from(rejection: Rejection) -> Self {
        rejection.into_http_response()
    }
}

#[cfg(feature = "axum")]
mod axum_support {
    use std::convert::Infallible;

    use axum_core::{
        extract::FromRequestParts,
        response::{IntoResponse, Response},
    };
    use http::request::Parts;

    use super::{Preconditions, Rejection};

    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl<S: Send + Sync> FromRequestParts<S> for Preconditions {
        type Rejection = Infallible;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
            Ok(Preconditions::from_parts(parts))
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl IntoResponse for Rejection {
        fn into_response(self) -> Response {
            self.into_http_response().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preconditions(method: Method, fields: &[(&str, &str)]) -> Preconditions {
        let mut request = http::Request::builder().method(method);
        for (name, value) in fields {
            request = request.header(*name, *value);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        Preconditions::from_parts(&parts)
    }

    fn status(result: Result<(), Rejection>) -> StatusCode {
        result.map_or_else(|r| r.status(), |()| StatusCode::OK)
    }

    #[test]
    fn public_types_are_send_sync_and_debug() {
        fn check<T: Send + Sync + fmt::Debug>() {}
        check::<Preconditions>();
        check::<Rejection>();
        check::<Current<'static>>();
        check::<EntityTag>();
        check::<crate::protocol::entity_tag::InvalidEntityTag>();
    }

    #[test]
    fn writes_follow_rfc_9110_for_existing_and_missing_resources() {
        let v1 = EntityTag::strong("v1").unwrap();
        let weak = EntityTag::weak("v1").unwrap();
        let ok = StatusCode::OK;
        let failed = StatusCode::PRECONDITION_FAILED;
        for (fields, current, expected) in [
            (vec![("if-match", "\"v1\"")], Current::tagged(&v1), ok),
            (
                vec![("if-match", "\"v0\", \"v1\"")],
                Current::tagged(&v1),
                ok,
            ),
            (vec![("if-match", "\"v0\"")], Current::tagged(&v1), failed),
            // Weak tags never satisfy If-Match.
            (vec![("if-match", "W/\"v1\"")], Current::tagged(&v1), failed),
            (vec![("if-match", "\"v1\"")], Current::tagged(&weak), failed),
            (vec![("if-match", "*")], Current::tagged(&v1), ok),
            (vec![("if-match", "*")], Current::missing(), failed),
            (vec![("if-match", "\"v1\"")], Current::missing(), failed),
            // Create only if absent.
            (vec![("if-none-match", "*")], Current::missing(), ok),
            (vec![("if-none-match", "*")], Current::tagged(&v1), failed),
            // A malformed If-Match fails safe on a write.
            (vec![("if-match", "v1")], Current::tagged(&v1), failed),
            (vec![("if-match", "")], Current::tagged(&v1), failed),
            (vec![], Current::tagged(&v1), ok),
        ] {
            let got = status(preconditions(Method::PUT, &fields).check(current));
            assert_eq!(got, expected, "{fields:?} {current:?}");
        }
    }

    #[test]
    fn reads_get_304_and_ignore_invalid_fields() {
        let v1 = EntityTag::strong("v1").unwrap();
        let check = |fields: &[(&str, &str)]| {
            status(preconditions(Method::GET, fields).check(Current::tagged(&v1)))
        };
        assert_eq!(
            check(&[("if-none-match", "W/\"v1\"")]),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(check(&[("if-match", "v1")]), StatusCode::OK);
    }

    #[test]
    fn a_required_precondition_is_only_required_to_change_what_exists() {
        let v1 = EntityTag::strong("v1").unwrap();
        for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
            let required = preconditions(method.clone(), &[]).require(true);
            assert_eq!(
                status(required.check(Current::tagged(&v1))),
                StatusCode::PRECONDITION_REQUIRED,
                "{method}"
            );
            assert_eq!(
                status(required.check(Current::missing())),
                StatusCode::OK,
                "{method}"
            );
            let optional = preconditions(method.clone(), &[]);
            assert_eq!(
                status(optional.check(Current::tagged(&v1))),
                StatusCode::OK,
                "{method}"
            );
            let guarded = preconditions(method.clone(), &[("if-match", "\"v1\"")]).require(true);
            assert_eq!(
                status(guarded.check(Current::tagged(&v1))),
                StatusCode::OK,
                "{method}"
            );
        }
        let get = preconditions(Method::GET, &[]).require(true);
        assert_eq!(status(get.check(Current::tagged(&v1))), StatusCode::OK);
        assert!(!get.is_conditional());
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(preconditions(Method::GET, &[("if-modified-since", date)]).is_conditional());
        assert!(preconditions(Method::PUT, &[("if-match", "x")]).is_conditional());
        // RFC 9110 ignores an invalid date: as if absent.
        assert!(!preconditions(Method::GET, &[("if-modified-since", "x")]).is_conditional());
    }

    #[test]
    fn dates_are_checked_only_where_the_resource_has_one() {
        let v1 = EntityTag::strong("v1").unwrap();
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        let before = "Sat, 05 Nov 1994 08:49:37 GMT";
        let at = "Sun, 06 Nov 1994 08:49:37 GMT";
        let put = |fields: &[(&str, &str)], current| {
            status(preconditions(Method::PUT, fields).check(current))
        };
        let failed = StatusCode::PRECONDITION_FAILED;
        let unmodified_since = |date| [("if-unmodified-since", date)];
        assert_eq!(
            put(
                &unmodified_since(before),
                Current::tagged(&v1).last_modified(modified)
            ),
            failed
        );
        assert_eq!(
            put(
                &unmodified_since(at),
                Current::tagged(&v1).last_modified(modified)
            ),
            StatusCode::OK
        );
        assert_eq!(
            put(
                &unmodified_since(before),
                Current::untagged().last_modified(modified)
            ),
            failed
        );
        // RFC 9110 §13.1.4: no modification date, nothing to compare.
        assert_eq!(
            put(&unmodified_since(before), Current::tagged(&v1)),
            StatusCode::OK
        );
        assert_eq!(
            put(&unmodified_since(before), Current::untagged()),
            StatusCode::OK
        );
        // A missing resource has no date to give.
        assert!(matches!(
            Current::missing().last_modified(modified),
            Current::Missing
        ));
        let get = |fields: &[(&str, &str)], current| {
            status(preconditions(Method::GET, fields).check(current))
        };
        assert_eq!(
            get(
                &[("if-modified-since", at)],
                Current::untagged().last_modified(modified)
            ),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get(
                &[("if-modified-since", before)],
                Current::untagged().last_modified(modified)
            ),
            StatusCode::OK
        );
    }

    #[test]
    fn an_untagged_resource_exists_without_matching_any_tag() {
        let put = |fields: &[(&str, &str)]| {
            status(preconditions(Method::PUT, fields).check(Current::untagged()))
        };
        assert_eq!(put(&[("if-match", "*")]), StatusCode::OK);
        assert_eq!(
            put(&[("if-match", "\"v1\"")]),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            put(&[("if-none-match", "*")]),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(put(&[("if-none-match", "\"v1\"")]), StatusCode::OK);
        assert_eq!(put(&[]), StatusCode::OK);
    }

    #[test]
    fn rejections_carry_the_current_tag_and_no_content_or_say_what_is_missing() {
        let v2 = EntityTag::strong("v2").unwrap();
        let modified = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        let before = "Sat, 05 Nov 1994 08:49:37 GMT";
        // Every way to a 412 on a write, and a 304 on a read: the current
        // tag if there is one, and no content at all.
        for (method, fields, current, expected, etag) in [
            (
                Method::PUT,
                vec![("if-match", "\"v1\"")],
                Current::tagged(&v2),
                StatusCode::PRECONDITION_FAILED,
                Some("\"v2\""),
            ),
            (
                Method::DELETE,
                vec![("if-match", "*")],
                Current::missing(),
                StatusCode::PRECONDITION_FAILED,
                None,
            ),
            (
                Method::PUT,
                vec![("if-none-match", "*")],
                Current::tagged(&v2),
                StatusCode::PRECONDITION_FAILED,
                Some("\"v2\""),
            ),
            (
                Method::PATCH,
                vec![("if-unmodified-since", before)],
                Current::tagged(&v2).last_modified(modified),
                StatusCode::PRECONDITION_FAILED,
                Some("\"v2\""),
            ),
            (
                Method::PUT,
                vec![("if-unmodified-since", before)],
                Current::untagged().last_modified(modified),
                StatusCode::PRECONDITION_FAILED,
                None,
            ),
            (
                Method::GET,
                vec![("if-none-match", "\"v2\"")],
                Current::tagged(&v2),
                StatusCode::NOT_MODIFIED,
                Some("\"v2\""),
            ),
        ] {
            let rejection = preconditions(method.clone(), &fields)
                .check(current)
                .unwrap_err();
            let response = rejection.into_http_response();
            let context = format!("{method} {fields:?} {current:?}");
            assert_eq!(response.status(), expected, "{context}");
            assert_eq!(response.body(), "", "{context}");
            let headers: Vec<_> = response.headers().iter().collect();
            match etag {
                Some(etag) => assert_eq!(
                    headers,
                    [(&header::ETAG, &HeaderValue::from_static(etag))],
                    "{context}"
                ),
                None => assert!(headers.is_empty(), "{context}: {headers:?}"),
            }
        }

        let required = preconditions(Method::DELETE, &[]).require(true);
        let response = required
            .check(Current::tagged(&v2))
            .unwrap_err()
            .into_http_response();
        assert_eq!(response.status(), StatusCode::PRECONDITION_REQUIRED);
        // On one line, without continuations: the text as a client reads it.
        assert_eq!(
            response.body(),
            "This request must be conditional: send If-Match with the ETag of the representation you are changing (or If-Unmodified-Since with its Last-Modified date).\n"
        );
        let headers: Vec<_> = response.headers().iter().collect();
        assert_eq!(
            headers,
            [(
                &header::CONTENT_TYPE,
                &HeaderValue::from_static("text/plain; charset=utf-8")
            )]
        );
    }

    #[test]
    fn rejections_are_errors_with_a_message_per_status() {
        let v2 = EntityTag::strong("v2").unwrap();
        let rejection = |method: Method, fields: &[(&str, &str)]| {
            preconditions(method, fields)
                .require(true)
                .check(Current::tagged(&v2))
                .unwrap_err()
        };
        let failed = rejection(Method::PUT, &[("if-match", "\"v1\"")]);
        assert_eq!(
            failed.to_string(),
            "precondition failed: the resource's current state does not satisfy \
             If-Match, If-Unmodified-Since or If-None-Match"
        );
        let not_modified = rejection(Method::GET, &[("if-none-match", "\"v2\"")]);
        assert_eq!(
            not_modified.to_string(),
            "not modified: the representation the client has is current"
        );
        let required = rejection(Method::PUT, &[]);
        assert_eq!(
            required.to_string(),
            "precondition required: a change to an existing resource must carry \
             If-Match or If-Unmodified-Since"
        );
        assert_eq!(
            format!("{required:?}"),
            "Rejection { status: 428, etag: None }"
        );
        let error: Box<dyn std::error::Error + Send + Sync> = Box::new(failed);
        assert!(error.source().is_none());
        assert!(error.to_string().starts_with("precondition failed: "));
    }
}
