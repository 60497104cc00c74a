//! The keyed hash behind every key of one cache: resources, entries,
//! surrogate tags and the request fields a response varies on. Key material
//! is hashed, so no request field value is kept in the cache.

use std::hash::{BuildHasher, Hasher};

use http::HeaderValue;

use super::policy::MAX_VARY_FIELDS;

/// A hashed key: of a resource (its generation), of an entry, of a tag, of
/// the fields a response varies on.
pub(crate) type Key = u64;

/// The keyed hash behind every [`Key`] of one cache.
///
/// In memory: SipHash-1-3 (std's `RandomState`) under a random key drawn
/// when the cache is built: a pseudorandom function, so no one without the
/// key can craft a request whose key collides with another requester's, and
/// about twenty times cheaper than BLAKE3 on inputs of a few dozen bytes,
/// which matters on a path that must cost less than the handler it skips.
///
/// In a shared store every replica must compute the same keys, so the key
/// cannot be drawn at random: keyed BLAKE3 under a key derived from the
/// store's namespace and secret. Its extra cost (a few hundred nanoseconds)
/// is small beside the store's round trip. 64 bits: two different keys of
/// 100,000 entries collide with odds of about 3 × 10⁻¹⁰.
#[derive(Clone, Debug)]
pub(crate) enum Hashing {
    Local(std::collections::hash_map::RandomState),
    Shared(Box<blake3::Hasher>),
}

impl Default for Hashing {
    fn default() -> Self {
        Self::Local(Default::default())
    }
}

/// A [`Hasher`] of one [`Hashing`].
pub(crate) enum HashState {
    Local(std::collections::hash_map::DefaultHasher),
    Shared(Box<blake3::Hasher>),
}

impl Hasher for HashState {
    fn finish(&self) -> u64 {
        match self {
            Self::Local(hasher) => hasher.finish(),
            Self::Shared(hasher) => {
                let mut out = [0; 8];
                hasher.finalize_xof().fill(&mut out);
                u64::from_le_bytes(out)
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        match self {
            Self::Local(hasher) => hasher.write(bytes),
            Self::Shared(hasher) => {
                hasher.update(bytes);
            }
        }
    }

    // Integers in one byte order, so that replicas on different machines
    // agree (the default writes them in native order).
    fn write_u16(&mut self, n: u16) {
        self.write(&n.to_le_bytes());
    }

    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Domains, so that equal bytes in different roles hash apart.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Domain {
    Tag = 1,
    Credentials,
    Vary,
}

impl Hashing {
    /// Hashes `items` under a domain, each one length-prefixed so that no two
    /// different sequences hash alike.
    pub(crate) fn hash<'a>(
        &self,
        domain: Domain,
        items: impl IntoIterator<Item = &'a [u8]>,
    ) -> Key {
        let mut hasher = self.start(domain);
        for item in items {
            write_item(&mut hasher, item);
        }
        hasher.finish()
    }

    /// A hasher under this cache's key.
    pub(crate) fn build_hasher(&self) -> HashState {
        match self {
            Self::Local(state) => HashState::Local(state.build_hasher()),
            Self::Shared(keyed) => HashState::Shared(keyed.clone()),
        }
    }

    /// Keyed BLAKE3 for a shared store: the key is derived from `context`
    /// (the store's namespace and secret), so every replica configured alike
    /// computes the same keys.
    pub(crate) fn shared(context: &[u8]) -> Self {
        let key = blake3::Hasher::new_derive_key("tower-etag 2026 validator cache keys")
            .update(context)
            .finalize();
        Self::Shared(Box::new(blake3::Hasher::new_keyed(key.as_bytes())))
    }

    pub(crate) fn start(&self, domain: Domain) -> HashState {
        let mut hasher = self.build_hasher();
        hasher.write_u8(domain as u8);
        hasher
    }

    /// The key of a resource's generation: its path and query. The authority
    /// is left out so that a URI without one (`/notes/1`) invalidates that
    /// path under every authority, in one step.
    pub(crate) fn resource(&self, path_and_query: &str) -> Key {
        // One write: a resource and a tag that hash alike only share a
        // generation slot (a spurious miss), so no domain byte is needed.
        let mut hasher = self.build_hasher();
        hasher.write(path_and_query.as_bytes());
        hasher.finish()
    }

    /// The key of a surrogate tag's generation.
    pub(crate) fn tag(&self, tag: &str) -> Key {
        self.hash(Domain::Tag, [tag.as_bytes()])
    }

    /// The digest of a request's values of the fields a response varies on.
    ///
    /// RFC 9111 §4.1: a stored response answers only a request whose fields
    /// named by its `Vary` match the original request's, an absent field
    /// matching only an absent one; the field's index is hashed with each
    /// value, so an absent field and an empty one differ.
    ///
    /// `values_of(index)` gives the request's lines of the configured field
    /// `index`. Fields are taken in the configured order, so the order in
    /// which a client sends them does not matter.
    pub(crate) fn vary<'a, I>(&self, mask: u16, values_of: impl Fn(u8) -> I) -> Key
    where
        I: Iterator<Item = &'a HeaderValue>,
    {
        let mut hasher = self.start(Domain::Vary);
        hasher.write_u16(mask);
        for index in 0..MAX_VARY_FIELDS as u8 {
            if mask & (1 << index) != 0 {
                for value in values_of(index) {
                    hasher.write_u8(index);
                    write_item(&mut hasher, value.as_bytes());
                }
            }
        }
        hasher.finish()
    }
}

pub(crate) fn write_item(hasher: &mut impl Hasher, item: &[u8]) {
    hasher.write_usize(item.len());
    hasher.write(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::read::kept;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn vary_digest_tells_absent_from_empty_and_ignores_unmasked_fields() {
        let hashing = Hashing::default();
        let vary = |mask, values: &[(u8, HeaderValue)]| hashing.vary(mask, |i| kept(values, i));
        let absent = vary(0b1, &[]);
        let empty = vary(0b1, &[(0, value(""))]);
        assert_ne!(absent, empty);
        let gzip = vary(0b1, &[(0, value("gzip")), (1, value("text/html"))]);
        let gzip_json = vary(0b1, &[(0, value("gzip")), (1, value("application/json"))]);
        assert_eq!(gzip, gzip_json, "field 1 is not in the mask");
        let both = vary(0b11, &[(0, value("gzip")), (1, value("text/html"))]);
        assert_ne!(gzip, both);
        let reordered = vary(0b11, &[(1, value("text/html")), (0, value("gzip"))]);
        assert_eq!(
            both, reordered,
            "the order fields are sent in does not matter"
        );
    }

    #[test]
    fn hash_items_are_length_prefixed_and_domains_apart() {
        let hashing = Hashing::default();
        assert_ne!(
            hashing.hash(Domain::Tag, [&b"ab"[..], b"c"]),
            hashing.hash(Domain::Tag, [&b"a"[..], b"bc"])
        );
        assert_ne!(hashing.resource("/a"), hashing.tag("/a"));
        assert_eq!(hashing.resource("/a"), hashing.clone().resource("/a"));
        assert_ne!(
            hashing.resource("/a"),
            Hashing::default().resource("/a"),
            "keyed"
        );
    }

    #[test]
    fn shared_keys_agree_between_replicas_configured_alike() {
        let a = Hashing::shared(b"app");
        let b = Hashing::shared(b"app");
        assert_eq!(a.resource("/a"), b.resource("/a"));
        assert_eq!(a.tag("user:1"), b.tag("user:1"));
        assert_ne!(a.resource("/a"), a.resource("/b"));
        assert_ne!(a.resource("/a"), Hashing::shared(b"other").resource("/a"));
        assert_ne!(
            a.hash(Domain::Tag, [&b"ab"[..], b"c"]),
            a.hash(Domain::Tag, [&b"a"[..], b"bc"])
        );
        // Pinned: a change here makes replicas of two versions disagree.
        assert_eq!(a.resource("/a"), 0x0085_e503_55bc_7ac7);
    }
}
