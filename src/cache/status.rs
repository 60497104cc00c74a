//! `Cache-Status` (RFC 9211): what the cache did with a request, on its
//! response, when the app names the cache
//! ([`ValidatorCacheBuilder::cache_status`](super::ValidatorCacheBuilder::cache_status)).
//!
//! The field is a Structured Field List (RFC 8941) with one member per cache
//! the response passed through, the one nearest the origin first (RFC 9211
//! §2): the cache adds its member after any the inner service (or a cache
//! behind it) set, as one more field line, which a recipient reads as the
//! continuation of the list (RFC 9110 §5.3).

use std::{fmt::Write as _, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::entry::NotStored;

/// The field's name.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why the request went forward to the inner service (RFC 9211 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The app keeps the request away from the cache (its partition
    /// function), or the store could not answer.
    Bypass,
    /// Not a `GET` or `HEAD`.
    Method,
    /// Nothing stored for the URI.
    UriMiss,
    /// Something stored for the URI, but not for this request's values of
    /// the fields responses vary on.
    VaryMiss,
    /// A variant for this request is stored, but cannot answer it: the
    /// request is not conditional, or its tags are not the stored one.
    Miss,
    /// The request forbids an answer from the cache (`no-cache`, or
    /// `If-Match` / `If-Unmodified-Since`, evaluated before
    /// `If-None-Match`).
    Request,
}

impl Fwd {
    fn token(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Method => "method",
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Miss => "miss",
            Self::Request => "request",
        }
    }
}

/// What became of a forwarded response, as far as this cache knows when
/// the response goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Nothing to say (not a `GET`, or an error).
    Nothing,
    /// Stored (`stored`).
    Stored,
    /// Given to a shared store, which stores it after the response.
    Storing,
    /// The response confirms the variant already stored.
    Unchanged,
    /// The store refused it (a write or an invalidation since the request
    /// arrived).
    Refused,
    /// A `HEAD`'s response: only a `GET`'s is stored.
    Head,
    /// Not storable, and why.
    NotStored(NotStored),
    /// Kept away from the cache by the app's partition function.
    Partition,
    /// The store could not answer.
    StoreUnavailable,
}

impl Kept {
    fn detail(self) -> Option<&'static str> {
        Some(match self {
            Self::Nothing | Self::Stored => return None,
            Self::Storing => "storing",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::Head => "head",
            Self::NotStored(NotStored::Status) => "status",
            Self::NotStored(NotStored::CacheControl) => "cache-control",
            Self::NotStored(NotStored::SetCookie) => "set-cookie",
            Self::NotStored(NotStored::NoTag) => "no-etag",
            Self::NotStored(NotStored::Vary) => "vary",
            Self::NotStored(NotStored::TooLarge) => "too-large",
            Self::Partition => "partition",
            Self::StoreUnavailable => "store-unavailable",
        })
    }
}

/// The cache's name as a list member's item: a token when it is one,
/// otherwise a string (RFC 8941 §3.3.3 and §3.3.4).
pub(crate) fn serialize_name(name: &str) -> Arc<str> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
    let token = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && name.chars().all(tchar);
    if token {
        return name.into();
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // A string holds printable ASCII only.
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out.into()
}

/// `name; hit`: a 304 from the cache.
pub(crate) fn add_hit(headers: &mut HeaderMap, name: &str) {
    let mut member = String::with_capacity(name.len() + 5);
    member.push_str(name);
    member.push_str("; hit");
    add(headers, member);
}

/// `name; fwd=…; fwd-status=…` and `stored` or `detail=…`: a response of
/// the inner service.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    name: &str,
    fwd: Fwd,
    status: StatusCode,
    kept: Kept,
) {
    let mut member = String::with_capacity(name.len() + 48);
    let _ = write!(
        member,
        "{name}; fwd={}; fwd-status={}",
        fwd.token(),
        status.as_u16()
    );
    if kept == Kept::Stored {
        member.push_str("; stored");
    }
    if let Some(detail) = kept.detail() {
        let _ = write!(member, "; detail={detail}");
    }
    add(headers, member);
}

/// `name; detail=store-unavailable`: a write the cache refused itself
/// (strict writes), which went nowhere.
pub(crate) fn add_refused(headers: &mut HeaderMap, name: &str) {
    add(headers, format!("{name}; detail=store-unavailable"));
}

fn add(headers: &mut HeaderMap, member: String) {
    // Built from tokens, digits and a serialized name: always a valid value.
    if let Ok(value) = HeaderValue::try_from(member) {
        headers.append(CACHE_STATUS, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tokens_when_they_can_be_and_strings_otherwise() {
        assert_eq!(&*serialize_name("ExampleCache"), "ExampleCache");
        assert_eq!(&*serialize_name("tower-etag/1"), "tower-etag/1");
        assert_eq!(&*serialize_name("my cache"), "\"my cache\"");
        assert_eq!(&*serialize_name("1st"), "\"1st\"");
        assert_eq!(&*serialize_name("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(&*serialize_name("café"), "\"caf?\"");
        assert_eq!(&*serialize_name(""), "\"\"");
    }

    #[test]
    fn members_are_appended_as_field_lines() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CACHE_STATUS,
            HeaderValue::from_static("origin; fwd=uri-miss"),
        );
        add_forwarded(
            &mut headers,
            "app",
            Fwd::VaryMiss,
            StatusCode::OK,
            Kept::Stored,
        );
        add_hit(&mut headers, "\"edge cache\"");
        let lines: Vec<_> = headers.get_all(CACHE_STATUS).iter().collect();
        assert_eq!(
            lines,
            [
                "origin; fwd=uri-miss",
                "app; fwd=vary-miss; fwd-status=200; stored",
                "\"edge cache\"; hit"
            ]
        );
    }
}
