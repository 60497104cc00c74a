//! The tag the layer mints for a body: the first 128 bits of its BLAKE3
//! hash (keyed, if the layer has a key), in lowercase hex, quoted, and
//! `W/`-prefixed when weak. A pure function of the bytes, so every process
//! and replica mints the same tag for the same content.

use std::sync::Arc;

use http::HeaderValue;

use crate::protocol::entity_tag::{EntityTag, TagRef};

/// How many bytes of the BLAKE3 digest the tag carries: 128 bits.
const TAG_BYTES: usize = 16;

/// A BLAKE3 key: tags are then `blake3::keyed_hash(key, body)`. Shared
/// rather than copied into every request: a pointer costs the unkeyed
/// common case less than 33 bytes carried through every future.
pub(crate) type TagKey = Arc<[u8; 32]>;

/// A streaming hasher under `key`, if any.
pub(crate) fn hasher(key: Option<&[u8; 32]>) -> blake3::Hasher {
    key.map_or_else(blake3::Hasher::new, blake3::Hasher::new_keyed)
}

/// The hash of `bytes` in one call (what [`hasher`] gives for the same bytes
/// however they are split).
pub(crate) fn hash(bytes: &[u8], key: Option<&[u8; 32]>) -> blake3::Hash {
    match key {
        None => blake3::hash(bytes),
        Some(key) => blake3::keyed_hash(key, bytes),
    }
}

/// The tag the layer gives `bytes` (the whole body), as
/// [`Buffer::tag`](super::buffer::Buffer::tag) does however the body
/// arrives.
pub(crate) fn tag_of(bytes: &[u8], key: Option<&[u8; 32]>, weak: bool) -> MintedTag {
    MintedTag::new(&hash(bytes, key), weak)
}

/// A minted entity tag, formatted on the stack.
///
/// The hex encoding is hand-written: the tag is 36 bytes at most, and a hex
/// crate would add a dependency for one loop.
pub(crate) struct MintedTag {
    bytes: [u8; 4 + TAG_BYTES * 2],
    weak: bool,
}

impl MintedTag {
    /// The tag of a body whose hash is `hash`.
    pub(crate) fn new(hash: &blake3::Hash, weak: bool) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = &hash.as_bytes()[..TAG_BYTES];
        let mut bytes = [0u8; 4 + TAG_BYTES * 2];
        let start = if weak {
            bytes[..2].copy_from_slice(b"W/");
            2
        } else {
            0
        };
        bytes[start] = b'"';
        let hex = &mut bytes[start + 1..start + 1 + TAG_BYTES * 2];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        bytes[start + 1 + TAG_BYTES * 2] = b'"';
        Self { bytes, weak }
    }

    /// The formatted tag: `W/` if weak, then the quoted hex digits.
    fn as_bytes(&self) -> &[u8] {
        let len = 2 + TAG_BYTES * 2 + if self.weak { 2 } else { 0 };
        &self.bytes[..len]
    }

    /// The tag, for comparison with the request's preconditions.
    pub(crate) fn tag_ref(&self) -> TagRef<'_> {
        let bytes = self.as_bytes();
        let start = if self.weak { 3 } else { 1 };
        TagRef::new(self.weak, &bytes[start..bytes.len() - 1])
    }

    /// The `ETag` field value.
    pub(crate) fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes())
            .expect("hex digits and quotes are valid header bytes")
    }

    /// The tag as the public type.
    pub(crate) fn to_public(&self) -> EntityTag {
        EntityTag::from_header_value(self.to_header_value(), self.weak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_quoted_lowercase_hex_of_128_bits() {
        let tag = tag_of(b"hello", None, false);
        let expected = format!("\"{}\"", &blake3::hash(b"hello").to_hex()[..32]);
        assert_eq!(tag.to_header_value(), expected.as_str());
        let value = tag.to_header_value();
        let parsed = TagRef::parse(value.as_bytes()).unwrap();
        assert_eq!(parsed, tag.tag_ref());
        assert!(!parsed.is_weak());
        assert_eq!(parsed.opaque().len(), 32);
    }

    #[test]
    fn weak_tag_has_the_weak_indicator() {
        let tag = tag_of(b"hello", None, true);
        assert!(tag.to_header_value().as_bytes().starts_with(b"W/\""));
        let value = tag.to_header_value();
        let parsed = TagRef::parse(value.as_bytes()).unwrap();
        assert_eq!(parsed, tag.tag_ref());
        assert!(parsed.is_weak());
        assert_eq!(tag.to_public().to_string(), value.to_str().unwrap());
    }

    #[test]
    fn tag_of_known_input_is_stable() {
        // BLAKE3("") from the reference test vectors.
        assert_eq!(
            tag_of(b"", None, false).to_header_value(),
            "\"af1349b9f5f9a1a6a0404dea36dcc949\""
        );
        let key = [0x5a; 32];
        assert_eq!(
            tag_of(b"x", Some(&key), false).to_header_value(),
            MintedTag::new(&blake3::keyed_hash(&key, b"x"), false).to_header_value()
        );
    }
}
