//! Entity tags (RFC 9110 §8.8.3): the public, owned [`EntityTag`] for
//! application code (built from a version, parsed from a field, or minted
//! from bytes exactly as [`ETagLayer`](crate::ETagLayer) mints it), and, in
//! [`parse`], the borrowed [`TagRef`] with the comparison functions and the
//! `If-Match` / `If-None-Match` list matching the layers use.

mod parse;

pub(crate) use parse::{list_matches, Comparison, TagRef};

use std::{fmt, str::FromStr};

use http::HeaderValue;

/// An entity tag (RFC 9110 §8.8.3): an opaque string in quotes, strong or
/// weak (`W/"…"`).
///
/// Made by [`ETagLayer::tag_for`](crate::ETagLayer::tag_for) for a
/// representation's bytes (the tag the layer gives them), by
/// [`EntityTag::strong`] / [`EntityTag::weak`] from a version the
/// application keeps (a row version, a revision), or parsed from a field.
///
/// ```
/// use tower_etag::EntityTag;
///
/// let v7 = EntityTag::strong("v7").unwrap();
/// assert_eq!(v7.to_string(), r#""v7""#);
/// let weak: EntityTag = r#"W/"v7""#.parse().unwrap();
/// // RFC 9110 §8.8.3.2: the weak comparison ignores W/, the strong one does not.
/// assert!(v7.weak_eq(&weak));
/// assert!(!v7.strong_eq(&weak));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EntityTag {
    /// The whole field value: `W/` if weak, then the quoted opaque part.
    value: HeaderValue,
    weak: bool,
}

/// The error for text that is not an entity tag, or not a valid opaque part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidEntityTag {
    _priv: (),
}

impl fmt::Display for InvalidEntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid entity tag (RFC 9110 §8.8.3)")
    }
}

impl std::error::Error for InvalidEntityTag {}

impl EntityTag {
    /// A strong tag with this opaque part (without quotes), such as a
    /// version number. It may hold `!` and `#` to `~` except `"`, and
    /// non-ASCII text.
    pub fn strong(opaque: impl AsRef<str>) -> Result<Self, InvalidEntityTag> {
        Self::from_parts(false, opaque.as_ref().as_bytes())
    }

    /// A weak tag (`W/"…"`) with this opaque part.
    pub fn weak(opaque: impl AsRef<str>) -> Result<Self, InvalidEntityTag> {
        Self::from_parts(true, opaque.as_ref().as_bytes())
    }

    /// Parses one entity tag, as an `ETag` field value holds it (surrounding
    /// whitespace allowed).
    pub fn parse(value: impl AsRef<[u8]>) -> Result<Self, InvalidEntityTag> {
        let tag = TagRef::parse(value.as_ref()).ok_or(InvalidEntityTag { _priv: () })?;
        Self::from_parts(tag.is_weak(), tag.opaque())
    }

    fn from_parts(weak: bool, opaque: &[u8]) -> Result<Self, InvalidEntityTag> {
        if !opaque.iter().all(|&b| parse::is_etagc(b)) {
            return Err(InvalidEntityTag { _priv: () });
        }
        let mut value = Vec::with_capacity(opaque.len() + 4);
        if weak {
            value.extend_from_slice(b"W/");
        }
        value.push(b'"');
        value.extend_from_slice(opaque);
        value.push(b'"');
        let value = HeaderValue::from_bytes(&value).map_err(|_| InvalidEntityTag { _priv: () })?;
        Ok(Self { value, weak })
    }

    pub(crate) fn from_header_value(value: HeaderValue, weak: bool) -> Self {
        Self { value, weak }
    }

    /// Whether the tag is weak (`W/"…"`).
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque part, without `W/` and quotes.
    pub fn opaque(&self) -> &[u8] {
        let bytes = self.value.as_bytes();
        let start = if self.weak { 3 } else { 1 };
        &bytes[start..bytes.len() - 1]
    }

    /// The strong comparison (RFC 9110 §8.8.3.2): both strong, same opaque
    /// part. `If-Match` uses it.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        self.borrowed()
            .matches(&other.borrowed(), Comparison::Strong)
    }

    /// The weak comparison (RFC 9110 §8.8.3.2): the same opaque part, `W/`
    /// ignored. `If-None-Match` uses it.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.borrowed().matches(&other.borrowed(), Comparison::Weak)
    }

    /// The `ETag` field value.
    pub fn to_header_value(&self) -> HeaderValue {
        self.value.clone()
    }

    pub(crate) fn borrowed(&self) -> TagRef<'_> {
        TagRef::new(self.weak, self.opaque())
    }
}

impl fmt::Display for EntityTag {
    /// The field value form: `"…"` or `W/"…"` (non-ASCII bytes lossily).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.value.as_bytes()))
    }
}

impl fmt::Debug for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityTag({self})")
    }
}

impl FromStr for EntityTag {
    type Err = InvalidEntityTag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&HeaderValue> for EntityTag {
    type Error = InvalidEntityTag;

    fn try_from(value: &HeaderValue) -> Result<Self, Self::Error> {
        Self::parse(value.as_bytes())
    }
}

impl From<EntityTag> for HeaderValue {
    fn from(tag: EntityTag) -> Self {
        tag.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_parses_and_formats() {
        let strong = EntityTag::strong("v1").unwrap();
        assert_eq!(strong.to_header_value(), "\"v1\"");
        assert!(!strong.is_weak());
        assert_eq!(strong.opaque(), b"v1");
        let weak = EntityTag::weak("v1").unwrap();
        assert_eq!(weak.to_string(), "W/\"v1\"");
        assert_eq!(EntityTag::parse(" W/\"v1\" ").unwrap(), weak);
        assert_eq!("\"a,b\"".parse::<EntityTag>().unwrap().opaque(), b"a,b");
        assert_eq!(EntityTag::strong("é").unwrap().opaque(), "é".as_bytes());
    }

    #[test]
    fn rejects_what_is_not_an_entity_tag() {
        for bad in ["v1", "w/\"v1\"", "\"v1", "\"a\" \"b\"", ""] {
            assert!(EntityTag::parse(bad).is_err(), "{bad}");
        }
        for bad in ["a\"b", "a b", "tab\t"] {
            assert!(EntityTag::strong(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn comparison_table_from_rfc_9110_section_8_8_3_2() {
        let t = |s: &str| s.parse::<EntityTag>().unwrap();
        // ETag 1, ETag 2, strong, weak.
        for (a, b, strong, weak) in [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ] {
            assert_eq!(t(a).strong_eq(&t(b)), strong, "{a} {b}");
            assert_eq!(t(a).weak_eq(&t(b)), weak, "{a} {b}");
        }
    }
}
