//! What the cache reads of a `GET` or `HEAD` request before it is handed on:
//! whether it may be answered from the cache, and the keys it is stored
//! under.

use std::hash::Hasher;

use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Uri};

use super::{
    hashing::{write_item, Domain, Hashing, Key},
    policy::Policy,
};
use crate::protocol::directives::has_directive;

/// A `GET` or `HEAD` request as the cache sees it.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) head: bool,
    /// `If-None-Match` present, and nothing that forbids answering from the
    /// cache (RFC 9110 §13.2.2: If-Match and If-Unmodified-Since are
    /// evaluated first; RFC 9111 §5.2.1.4: request `no-cache`).
    pub(crate) may_hit: bool,
    /// The request forbids an answer from the cache (`no-cache`, or a
    /// precondition evaluated before `If-None-Match`).
    pub(crate) forbidden: bool,
    pub(crate) resource: Key,
    pub(crate) entry: Key,
}

impl Read {
    /// Reads the request in one pass over its fields; `None` when the app's
    /// partition function keeps the request away from the cache.
    pub(crate) fn new(parts: &Parts, policy: &Policy, hashing: &Hashing) -> Option<Self> {
        let partition = match &policy.partition {
            Some(partition) => Some(partition(parts)?),
            None => None,
        };
        let mut if_none_match = false;
        let mut bypass = false;
        let mut host = None;
        // RFC 9111 §3.5 (in spirit): one requester's entry never answers
        // another's, so the credentials join the key (hashed).
        let mut credentials = None;
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
                    let credentials =
                        credentials.get_or_insert_with(|| hashing.start(Domain::Credentials));
                    write_item(credentials, name.as_str().as_bytes());
                    write_item(credentials, value.as_bytes());
                }
                _ => {}
            }
        }
        let authority = authority(&parts.uri, host).unwrap_or_default();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let resource = hashing.resource(path_and_query);
        // `resource ‖ authority ‖ requester`: the fixed-size parts at both
        // ends make the encoding injective (the path is in `resource`).
        let mut entry = hashing.build_hasher();
        entry.write_u64(resource);
        entry.write(authority);
        match &partition {
            Some(partition) => {
                entry.write(partition.as_bytes());
                entry.write_usize(authority.len());
            }
            None => entry.write_u64(credentials.map_or(0, |c| c.finish())),
        }
        Some(Self {
            head: parts.method == http::Method::HEAD,
            may_hit: if_none_match && !bypass,
            forbidden: bypass,
            resource,
            entry: entry.finish(),
        })
    }
}

/// Whether a `Cache-Control` or `Pragma` value holds the `no-cache`
/// directive (RFC 9111 §5.2.1.4, §5.4).
fn has_no_cache(value: &HeaderValue) -> bool {
    has_directive(value, &["no-cache"])
}

/// The authority a request names: its URI's (HTTP/2, absolute form), else
/// its `Host` (RFC 9110 §7.2).
pub(crate) fn authority<'a>(uri: &'a Uri, host: Option<&'a HeaderValue>) -> Option<&'a [u8]> {
    match uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => host.map(HeaderValue::as_bytes),
    }
}

/// The request's values of the fields responses may vary on, with their
/// index in the configured list.
pub(crate) fn varying<'a>(
    headers: &'a HeaderMap,
    fields: &'a [HeaderName],
) -> impl Iterator<Item = (u8, &'a HeaderValue)> + 'a {
    headers.iter().filter_map(|(name, value)| {
        let index = fields.iter().position(|field| field == name)?;
        Some((index as u8, value))
    })
}

/// The lines of configured field `index` among values kept by [`varying`].
pub(crate) fn kept(
    varying: &[(u8, HeaderValue)],
    index: u8,
) -> impl Iterator<Item = &HeaderValue> + '_ {
    varying
        .iter()
        .filter(move |(i, _)| *i == index)
        .map(|(_, v)| v)
}
