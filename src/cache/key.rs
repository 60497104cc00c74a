//! What the cache reads of a `GET` or `HEAD` request before it is handed on:
//! whether it may be answered from the cache, and the keys it is stored
//! under. Key material is hashed (BLAKE3, truncated to 128 bits) so that no
//! request field value is kept in the cache.

use http::{header, request::Parts, HeaderName, HeaderValue};

use super::handle::Config;

/// A hashed key: of a resource (its generation), of an entry, of a tag.
pub(crate) type Key = [u8; 16];

/// Hashes `items` under a domain, each one length-prefixed so that no two
/// different sequences hash alike.
pub(crate) fn hash<'a>(domain: &str, items: impl IntoIterator<Item = &'a [u8]>) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain.as_bytes());
    for item in items {
        hasher.update(&(item.len() as u64).to_le_bytes());
        hasher.update(item);
    }
    truncate(&hasher.finalize())
}

fn truncate(hash: &blake3::Hash) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// The key of a resource's generation: its path and query. The authority is
/// left out so that a URI without one (`/notes/1`) invalidates that path
/// under every authority, in one step.
pub(crate) fn resource_key(path_and_query: &str) -> Key {
    hash("tower-etag resource", [path_and_query.as_bytes()])
}

/// The key of a surrogate tag's generation.
pub(crate) fn tag_key(tag: &str) -> Key {
    hash("tower-etag tag", [tag.as_bytes()])
}

/// The digest of a request's values of the fields a response varies on.
///
/// RFC 9111 §4.1: a stored response answers only a request whose fields
/// named by its `Vary` match the original request's, an absent field
/// matching only an absent one; the field's index is hashed with each value,
/// so an absent field and an empty one differ.
pub(crate) fn vary_digest(mask: u16, varying: &[(u8, HeaderValue)]) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tower-etag vary");
    hasher.update(&mask.to_le_bytes());
    for (index, value) in varying {
        if mask & (1 << index) != 0 {
            hasher.update(&[*index]);
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
    }
    truncate(&hasher.finalize())
}

/// A `GET` or `HEAD` request as the cache sees it.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) head: bool,
    /// `If-None-Match` present, and nothing that forbids answering from the
    /// cache (RFC 9110 §13.2.2: If-Match and If-Unmodified-Since are
    /// evaluated first; RFC 9111 §5.2.1.4: request `no-cache`).
    pub(crate) may_hit: bool,
    pub(crate) resource: Key,
    pub(crate) entry: Key,
    /// The request's values of the fields responses may vary on, by their
    /// index in the configured list. These are reference-counted copies of
    /// the request's own values, not kept past the response.
    pub(crate) varying: Vec<(u8, HeaderValue)>,
}

impl Read {
    /// Reads the request in one pass over its fields; `None` when the app's
    /// partition function keeps the request away from the cache.
    pub(crate) fn new(parts: &Parts, config: &Config) -> Option<Self> {
        let partition = match &config.partition {
            Some(partition) => Some(partition(parts)?),
            None => None,
        };
        let mut if_none_match = false;
        let mut bypass = false;
        let mut host = None;
        // RFC 9111 §3.5 (in spirit): one requester's entry never answers
        // another's, so the credentials join the key (hashed).
        let mut credentials = blake3::Hasher::new();
        let mut has_credentials = false;
        let mut varying = Vec::new();
        for (name, value) in &parts.headers {
            match *name {
                header::IF_NONE_MATCH => if_none_match = true,
                // RFC 9110 §13.2.2 steps 1 and 2 come before If-None-Match:
                // leave them to the layers below.
                header::IF_MATCH | header::IF_UNMODIFIED_SINCE => bypass = true,
                header::CACHE_CONTROL | header::PRAGMA => bypass |= has_no_cache(value),
                header::HOST => {
                    host.get_or_insert(value);
                }
                header::AUTHORIZATION | header::COOKIE if partition.is_none() => {
                    has_credentials = true;
                    credentials.update(name.as_str().as_bytes());
                    credentials.update(&(value.len() as u64).to_le_bytes());
                    credentials.update(value.as_bytes());
                }
                _ => {}
            }
            if let Some(index) = config.vary.iter().position(|field| field == name) {
                varying.push((index as u8, value.clone()));
            }
        }
        let authority = match parts.uri.authority() {
            Some(authority) => authority.as_str().as_bytes(),
            None => host.map_or(&b""[..], HeaderValue::as_bytes),
        };
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let credentials: Key = if has_credentials {
            truncate(&credentials.finalize())
        } else {
            [0; 16]
        };
        let entry = hash(
            "tower-etag entry",
            [
                authority,
                path_and_query.as_bytes(),
                match &partition {
                    Some(partition) => partition.as_bytes(),
                    None => &credentials[..],
                },
            ],
        );
        Some(Self {
            head: parts.method == http::Method::HEAD,
            may_hit: if_none_match && !bypass,
            resource: resource_key(path_and_query),
            entry,
            varying,
        })
    }
}

/// Whether a `Cache-Control` or `Pragma` value holds the `no-cache`
/// directive (RFC 9111 §5.2.1.4, §5.4), names compared case-insensitively.
pub(crate) fn has_no_cache(value: &HeaderValue) -> bool {
    has_directive(value, |name| name.eq_ignore_ascii_case(b"no-cache"))
}

/// Whether a list-valued field holds a directive whose name (before any
/// `=`) satisfies `is`.
pub(crate) fn has_directive(value: &HeaderValue, is: impl Fn(&[u8]) -> bool) -> bool {
    value.as_bytes().split(|&b| b == b',').any(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or_default();
        is(name.trim_ascii())
    })
}

/// The default fields responses may vary on: the proactive-negotiation
/// fields and CORS's `Origin`.
pub(crate) fn default_vary() -> Vec<HeaderName> {
    vec![
        header::ACCEPT_ENCODING,
        header::ACCEPT,
        header::ACCEPT_LANGUAGE,
        header::ORIGIN,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn no_cache_is_found_in_lists_and_any_case() {
        assert!(has_no_cache(&value("no-cache")));
        assert!(has_no_cache(&value("max-age=0, No-Cache")));
        assert!(has_no_cache(&value("no-cache=\"set-cookie\"")));
        assert!(!has_no_cache(&value("no-store")));
        assert!(!has_no_cache(&value("max-age=0")));
        assert!(!has_no_cache(&value("no-cache-please")));
    }

    #[test]
    fn vary_digest_tells_absent_from_empty_and_ignores_unmasked_fields() {
        let absent = vary_digest(0b1, &[]);
        let empty = vary_digest(0b1, &[(0, value(""))]);
        assert_ne!(absent, empty);
        let gzip = vary_digest(0b1, &[(0, value("gzip")), (1, value("text/html"))]);
        let gzip_json = vary_digest(0b1, &[(0, value("gzip")), (1, value("application/json"))]);
        assert_eq!(gzip, gzip_json, "field 1 is not in the mask");
        assert_ne!(
            gzip,
            vary_digest(0b11, &[(0, value("gzip")), (1, value("text/html"))])
        );
    }

    #[test]
    fn hash_items_are_length_prefixed() {
        assert_ne!(hash("d", [&b"ab"[..], b"c"]), hash("d", [&b"a"[..], b"bc"]));
    }
}
