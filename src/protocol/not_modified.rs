//! Turning the head of a 200 into the head of a 304 Not Modified or a
//! 412 Precondition Failed: which header fields each keeps.

use http::{header, response::Parts, HeaderName, HeaderValue, StatusCode};

const REPRESENTATION_METADATA_COUNT: usize = 6;

/// Representation metadata describing content a bodiless response does not
/// have. RFC 9110 §15.4.5: a 304 "SHOULD NOT generate representation
/// metadata other than the above listed fields" (Cache-Control,
/// Content-Location, Date, ETag, Expires, Vary), and Last-Modified may be
/// sent as well. Everything else the 200 carried (Set-Cookie, CORS, custom
/// fields) is response metadata and is kept.
const REPRESENTATION_METADATA: [HeaderName; REPRESENTATION_METADATA_COUNT] = [
    header::CONTENT_TYPE,
    // RFC 9110 §8.6: a 304 may carry Content-Length only if it equals the
    // 200's; dropping it is always correct, and a cache cannot mistake it for
    // the length of the stored content.
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
];

/// Marks a 304 that the [`ETag`](crate::ETag) layer made out of a 200 after
/// the inner service ran: its validators are current, so the validator cache
/// may store them as it would the 200's. Private, so that no handler can
/// claim it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FromOk;

/// Rewrites the head of the response that would have been sent into a 304
/// Not Modified (RFC 9110 §15.4.5). The caller sends it without content.
pub(crate) fn not_modified(parts: &mut Parts) {
    parts.status = StatusCode::NOT_MODIFIED;
    // Find the ones present in one pass; a removal is a hashed lookup, and a
    // response usually has two or three of the six.
    let mut present = [false; REPRESENTATION_METADATA_COUNT];
    for name in parts.headers.keys() {
        if let Some(i) = REPRESENTATION_METADATA.iter().position(|m| m == name) {
            present[i] = true;
        }
    }
    for (name, present) in REPRESENTATION_METADATA.iter().zip(present) {
        if present {
            parts.headers.remove(name);
        }
    }
}

/// Rewrites the head of the response that would have been sent into a 412
/// Precondition Failed (RFC 9110 §15.5.13), with empty content.
///
/// It keeps what a 304 keeps (the ETag and Last-Modified tell the client what
/// the current representation is; Vary, CORS and cookies still apply) except
/// the freshness fields: Cache-Control and Expires describe the 200, and must
/// not make an error response storable.
pub(crate) fn precondition_failed(parts: &mut Parts) {
    not_modified(parts);
    parts.status = StatusCode::PRECONDITION_FAILED;
    parts.headers.remove(header::CACHE_CONTROL);
    parts.headers.remove(header::EXPIRES);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
}

#[cfg(test)]
mod tests {
    use http::Response;

    use super::*;

    fn ok_parts() -> Parts {
        let (parts, ()) = Response::builder()
            .header("cache-control", "max-age=60")
            .header("content-location", "/a.json")
            .header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("etag", "\"abc\"")
            .header("expires", "Sun, 06 Nov 1994 08:50:37 GMT")
            .header("vary", "accept-encoding")
            .header("vary", "origin")
            .header("last-modified", "Sun, 06 Nov 1994 08:00:00 GMT")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("access-control-allow-origin", "*")
            .header("x-request-id", "42")
            .header("content-type", "application/json")
            .header("content-length", "1234")
            .header("content-encoding", "gzip")
            .header("content-language", "en")
            .header("content-range", "bytes 0-9/1234")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    const KEPT_BY_BOTH: [&str; 8] = [
        "content-location",
        "date",
        "etag",
        "vary",
        "last-modified",
        "set-cookie",
        "access-control-allow-origin",
        "x-request-id",
    ];

    const DROPPED_BY_BOTH: [&str; 5] = [
        "content-type",
        "content-encoding",
        "content-language",
        "content-range",
        "transfer-encoding",
    ];

    #[test]
    fn not_modified_keeps_the_fields_rfc_9110_requires() {
        let before = ok_parts();
        let mut parts = ok_parts();
        not_modified(&mut parts);
        assert_eq!(parts.status, StatusCode::NOT_MODIFIED);
        for name in KEPT_BY_BOTH.iter().chain(&["cache-control", "expires"]) {
            let kept: Vec<_> = parts.headers.get_all(*name).iter().collect();
            let had: Vec<_> = before.headers.get_all(*name).iter().collect();
            assert_eq!(kept, had, "{name}");
        }
    }

    #[test]
    fn not_modified_drops_representation_metadata() {
        let mut parts = ok_parts();
        not_modified(&mut parts);
        for name in DROPPED_BY_BOTH.iter().chain(&["content-length"]) {
            assert!(!parts.headers.contains_key(*name), "{name}");
        }
    }

    #[test]
    fn precondition_failed_keeps_etag_and_drops_freshness() {
        let mut parts = ok_parts();
        precondition_failed(&mut parts);
        assert_eq!(parts.status, StatusCode::PRECONDITION_FAILED);
        for name in KEPT_BY_BOTH {
            assert!(parts.headers.contains_key(name), "{name}");
        }
        for name in DROPPED_BY_BOTH.iter().chain(&["cache-control", "expires"]) {
            assert!(!parts.headers.contains_key(*name), "{name}");
        }
        assert_eq!(parts.headers["content-length"], "0");
    }
}
