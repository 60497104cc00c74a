//! Entity tags on the wire (RFC 9110 §8.8.3): parsing, the strong and weak
//! comparison functions (§8.8.3.2) and matching a received `If-Match` /
//! `If-None-Match` list against the current tag.
//!
//! Everything here works on borrowed bytes and never allocates, so a hostile
//! list of thousands of tags costs one linear pass.

use std::ops::Range;

use http::HeaderValue;

/// One parsed entity tag, borrowing its opaque part (without the quotes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TagRef<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Which comparison function a precondition uses (RFC 9110 §8.8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// Both tags strong and the opaque parts equal (`If-Match`, §13.1.1).
    Strong,
    /// Opaque parts equal, the weak indicator ignored (`If-None-Match`, §13.1.2).
    Weak,
}

impl<'a> TagRef<'a> {
    /// A tag from its parts; `opaque` excludes the quotes.
    pub(crate) fn new(weak: bool, opaque: &'a [u8]) -> Self {
        Self { weak, opaque }
    }

    /// Parses a field value holding exactly one entity tag, such as a response's
    /// `ETag`. Surrounding whitespace is tolerated; anything else is `None`.
    pub(crate) fn parse(value: &'a [u8]) -> Option<Self> {
        let (tag, rest) = parse_one(trim_ows(value))?;
        rest.is_empty().then_some(tag)
    }

    /// Parses a field value holding exactly one entity tag, as
    /// [`parse`](Self::parse) does, and tells where its opaque part lies in
    /// `value`.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn locate(value: &'a [u8]) -> Option<(Self, Range<usize>)> {
        let tag = Self::parse(value)?;
        let leading = value.iter().take_while(|&&b| is_ows(b)).count();
        // After the whitespace: `W/"` or `"`, then the opaque part.
        let start = leading + if tag.weak { 3 } else { 1 };
        Some((tag, start..start + tag.opaque.len()))
    }

    /// Whether this tag is weak (`W/"…"`).
    pub(crate) fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque part, without the quotes.
    pub(crate) fn opaque(&self) -> &'a [u8] {
        self.opaque
    }

    /// Compares two tags with the given function (RFC 9110 §8.8.3.2).
    pub(crate) fn matches(&self, other: &TagRef<'_>, comparison: Comparison) -> bool {
        let weak_ok = match comparison {
            Comparison::Strong => !self.weak && !other.weak,
            Comparison::Weak => true,
        };
        weak_ok && self.opaque == other.opaque
    }
}

/// RFC 9110 §8.8.3: `etagc = %x21 / %x23-7E / obs-text`. Note that this admits
/// the comma, so a list cannot simply be split on commas.
pub(crate) fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_ows(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_ows(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// Parses one `entity-tag` at the start of `input`; returns it and what follows.
fn parse_one(input: &[u8]) -> Option<(TagRef<'_>, &[u8])> {
    // RFC 9110 §8.8.3: `weak = %s"W/"` is case-sensitive; `w/"x"` is invalid.
    let (weak, rest) = match input {
        [b'W', b'/', rest @ ..] => (true, rest),
        _ => (false, input),
    };
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| !is_etagc(b))?;
    if rest[end] != b'"' {
        return None;
    }
    Some((TagRef::new(weak, &rest[..end]), &rest[end + 1..]))
}

/// Matches a received `If-Match` or `If-None-Match` field (all its lines)
/// against the current entity tag.
///
/// Returns `None` when the field is absent or invalid, which RFC 9110 tells a
/// recipient to treat as absent; `Some(true)` when `*` was sent (the
/// representation exists, since this is only asked of 2xx responses) or any
/// listed tag matches `current`; `Some(false)` otherwise. A resource without a
/// usable current tag matches only `*`.
pub(crate) fn list_matches<'a>(
    lines: impl IntoIterator<Item = &'a HeaderValue>,
    current: Option<TagRef<'_>>,
    comparison: Comparison,
) -> Option<bool> {
    let mut matched = false;
    let mut elements = 0usize;
    let mut star = false;
    for (i, line) in lines.into_iter().enumerate() {
        // RFC 9110 §13.1.1/§13.1.2: `"*" / #entity-tag`. `*` stands alone:
        // several field lines combine into one list (§5.3), and `*, "a"` is
        // not the grammar, so `*` is valid only as the one and only line.
        if star {
            return None;
        }
        let mut rest = line.as_bytes();
        if trim_ows(rest) == b"*" {
            if i > 0 {
                return None;
            }
            star = true;
            continue;
        }
        loop {
            // RFC 9110 §5.6.1.2: recipients accept empty list elements (`a, , b`).
            while let [first, tail @ ..] = rest {
                if is_ows(*first) || *first == b',' {
                    rest = tail;
                } else {
                    break;
                }
            }
            if rest.is_empty() {
                break;
            }
            let (tag, after) = parse_one(rest)?;
            elements += 1;
            if let Some(current) = &current {
                // Keep parsing after a match: an invalid element anywhere makes
                // the whole field invalid, and the pass stays linear.
                matched |= tag.matches(current, comparison);
            }
            rest = trim_ows(after);
            match rest {
                [] => break,
                [b',', tail @ ..] => rest = tail,
                _ => return None,
            }
        }
    }
    if star {
        return Some(true);
    }
    // A field with no elements at all (`If-Match: ,` or an empty value) is
    // treated as invalid rather than as a list matching nothing, so that an
    // empty `If-Match` cannot turn a GET into a 412.
    (elements > 0).then_some(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<(bool, &[u8])> {
        TagRef::parse(s.as_bytes()).map(|t| (t.is_weak(), t.opaque()))
    }

    fn lines(values: &[&[u8]]) -> Vec<HeaderValue> {
        values
            .iter()
            .map(|v| HeaderValue::from_bytes(v).unwrap())
            .collect()
    }

    fn tag(s: &str) -> TagRef<'_> {
        TagRef::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_strong_and_weak_tags() {
        assert_eq!(parse(r#""xyzzy""#), Some((false, &b"xyzzy"[..])));
        assert_eq!(parse(r#"W/"xyzzy""#), Some((true, &b"xyzzy"[..])));
        assert_eq!(parse(r#""""#), Some((false, &b""[..])));
        assert_eq!(parse(r#"  "a"  "#), Some((false, &b"a"[..])));
    }

    #[test]
    fn locate_finds_the_opaque_part_in_the_value() {
        for value in [&b"\"abc\""[..], b" W/\"abc\"\t", b"\t\"abc\""] {
            let (tag, range) = TagRef::locate(value).unwrap();
            assert_eq!(&value[range], b"abc");
            assert_eq!(tag.opaque(), b"abc");
        }
        assert!(TagRef::locate(b"abc").is_none());
    }

    #[test]
    fn accepts_commas_and_obs_text_inside_quotes() {
        assert_eq!(parse(r#""a,b""#), Some((false, &b"a,b"[..])));
        assert_eq!(
            TagRef::parse(b"\"\x80\xff\"").map(|t| t.opaque()),
            Some(&b"\x80\xff"[..])
        );
    }

    #[test]
    fn rejects_invalid_tags() {
        for bad in [
            "xyzzy",         // unquoted
            r#"w/"xyzzy""#,  // lowercase weak indicator
            r#"W/xyzzy"#,    // weak without quotes
            r#""xyz"#,       // unterminated
            r#""x y""#,      // space is not etagc
            r#""a" "b""#,    // two tags
            r#""a"b"#,       // trailing junk
            r#"W/ "a""#,     // space after W/
            "",              // empty
            "*",             // star is not a tag
            "\"a\u{7f}\"",   // DEL is not etagc
            r#"W/"a"W/"b""#, // two tags without a comma
        ] {
            assert_eq!(parse(bad), None, "{bad:?} should be invalid");
        }
    }

    // RFC 9110 §8.8.3.2, the example table.
    #[test]
    fn comparison_table_from_rfc_9110_section_8_8_3_2() {
        let cases = [
            (r#"W/"1""#, r#"W/"1""#, false, true),
            (r#"W/"1""#, r#"W/"2""#, false, false),
            (r#"W/"1""#, r#""1""#, false, true),
            (r#""1""#, r#""1""#, true, true),
        ];
        for (a, b, strong, weak) in cases {
            let (a, b) = (tag(a), tag(b));
            assert_eq!(a.matches(&b, Comparison::Strong), strong, "{a:?} {b:?}");
            assert_eq!(b.matches(&a, Comparison::Strong), strong, "{b:?} {a:?}");
            assert_eq!(a.matches(&b, Comparison::Weak), weak, "{a:?} {b:?}");
            assert_eq!(b.matches(&a, Comparison::Weak), weak, "{b:?} {a:?}");
        }
    }

    #[test]
    fn list_matches_any_member() {
        let current = Some(tag(r#""b""#));
        let list = lines(&[br#""a", "b", "c""#]);
        assert_eq!(list_matches(&list, current, Comparison::Weak), Some(true));
        let list = lines(&[br#""a", "c""#]);
        assert_eq!(list_matches(&list, current, Comparison::Weak), Some(false));
    }

    #[test]
    fn list_spans_field_lines() {
        let current = Some(tag(r#""c""#));
        let list = lines(&[br#""a""#, br#""b", "c""#]);
        assert_eq!(list_matches(&list, current, Comparison::Strong), Some(true));
    }

    #[test]
    fn list_tolerates_empty_elements_and_whitespace() {
        let current = Some(tag(r#""b""#));
        let list = lines(&[b" , \"a\" ,,\t\"b\" , "]);
        assert_eq!(list_matches(&list, current, Comparison::Weak), Some(true));
    }

    #[test]
    fn comma_inside_quotes_is_part_of_the_tag() {
        let current = Some(tag(r#""a,b""#));
        let list = lines(&[br#""a,b""#]);
        assert_eq!(list_matches(&list, current, Comparison::Strong), Some(true));
        let list = lines(&[br#""a", "b""#]);
        assert_eq!(
            list_matches(&list, current, Comparison::Strong),
            Some(false)
        );
    }

    #[test]
    fn weak_list_member_fails_strong_comparison() {
        let current = Some(tag(r#""a""#));
        let list = lines(&[br#"W/"a""#]);
        assert_eq!(
            list_matches(&list, current, Comparison::Strong),
            Some(false)
        );
        assert_eq!(list_matches(&list, current, Comparison::Weak), Some(true));
    }

    #[test]
    fn star_matches_any_current_representation() {
        let star = lines(&[b"*"]);
        assert_eq!(list_matches(&star, None, Comparison::Strong), Some(true));
        let star = lines(&[b"  *  "]);
        assert_eq!(
            list_matches(&star, Some(tag(r#"W/"x""#)), Comparison::Weak),
            Some(true)
        );
    }

    #[test]
    fn invalid_lists_are_ignored() {
        let current = Some(tag(r#""a""#));
        for bad in [
            &[&br#""a", b"#[..]][..],    // one invalid member
            &[br#""a" "b""#],            // missing comma
            &[br#"*, "a""#],             // star mixed with tags
            &[b"*", br#""a""#],          // star on one of several lines
            &[br#""a"#],                 // unterminated quote
            &[b""],                      // empty value
            &[b" , ,"],                  // only empty elements
            &[br#""a""#, b"junk"],       // an invalid second line
            &[br#"w/"a""#],              // lowercase weak indicator
            &[b"\"a\", \"unterminated"], // unterminated last member
        ] {
            let list = lines(bad);
            assert_eq!(
                list_matches(&list, current, Comparison::Weak),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_current_tag_matches_nothing_but_star() {
        let list = lines(&[br#""a""#]);
        assert_eq!(list_matches(&list, None, Comparison::Weak), Some(false));
        assert_eq!(list_matches(&[], None, Comparison::Weak), None);
    }

    #[test]
    fn long_list_is_parsed_fully() {
        let mut value = String::new();
        for i in 0..10_000 {
            value.push_str(&format!("\"tag-{i}\", "));
        }
        let list = [HeaderValue::from_str(&value).unwrap()];
        let current = Some(tag(r#""tag-9999""#));
        assert_eq!(list_matches(&list, current, Comparison::Weak), Some(true));
        value.push_str("broken");
        let list = [HeaderValue::from_str(&value).unwrap()];
        assert_eq!(list_matches(&list, current, Comparison::Weak), None);
    }

    /// `list_matches` against a reference recognizer built from the ABNF of
    /// RFC 9110 as a regular expression, over short strings of the bytes
    /// that matter (quotes, `W/`, commas, whitespace, `*`, obs-text, …).
    mod reference {
        use std::sync::LazyLock;

        use proptest::prelude::*;
        use regex::bytes::Regex;

        use super::*;

        /// `entity-tag = [ weak ] opaque-tag` (§8.8.3).
        const ETAG: &str = r#"(?:W/)?"[\x21\x23-\x7E\x80-\xFF]*""#;

        /// What the grammar makes of a field.
        #[derive(Debug)]
        enum Field {
            /// Not `"*" / #entity-tag` with at least one element.
            Invalid,
            Star,
            /// (weak, opaque) of each element.
            Tags(Vec<(bool, Vec<u8>)>),
        }

        /// What `lines`, combined into one field value (§5.3), are.
        fn reference(lines: &[Vec<u8>]) -> Field {
            // §5.6.1.2, a recipient's list: [ element ] *( OWS "," OWS [ element ] ).
            static LINE: LazyLock<Regex> = LazyLock::new(|| {
                Regex::new(&format!(
                    r"(?-u)^[ \t]*(?:{ETAG})?(?:[ \t]*,[ \t]*(?:{ETAG})?)*[ \t]*$"
                ))
                .unwrap()
            });
            static ELEMENT: LazyLock<Regex> =
                LazyLock::new(|| Regex::new(&format!("(?-u){ETAG}")).unwrap());
            static STAR: LazyLock<Regex> =
                LazyLock::new(|| Regex::new(r"(?-u)^[ \t]*\*[ \t]*$").unwrap());
            let (line, element, star) = (&*LINE, &*ELEMENT, &*STAR);
            if let [only] = lines {
                if star.is_match(only) {
                    return Field::Star;
                }
            }
            let mut tags = Vec::new();
            for value in lines {
                if !line.is_match(value) {
                    return Field::Invalid;
                }
                // Between elements there are only commas and whitespace, and
                // etagc excludes the quote, so each match is one element.
                for found in element.find_iter(value) {
                    let text = found.as_bytes();
                    let weak = text.starts_with(b"W/");
                    let quoted = if weak { &text[2..] } else { text };
                    tags.push((weak, quoted[1..quoted.len() - 1].to_vec()));
                }
            }
            if tags.is_empty() {
                Field::Invalid
            } else {
                Field::Tags(tags)
            }
        }

        fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![
                Just(b'"'),
                Just(b'"'),
                Just(b'W'),
                Just(b'w'),
                Just(b'/'),
                Just(b','),
                Just(b' '),
                Just(b'\t'),
                Just(b'*'),
                Just(b'a'),
                Just(b'b'),
                Just(0xE9u8),
            ];
            prop::collection::vec(byte, 0..12)
        }

        proptest! {
            // XorShift: ChaCha, the default, is slow in unoptimised test builds.
            #![proptest_config(ProptestConfig {
                cases: 50_000,
                failure_persistence: None,
                rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
                ..ProptestConfig::default()
            })]

            #[test]
            fn list_matches_agrees_with_the_grammar(
                lines in prop::collection::vec(field_bytes(), 1..3),
                current_weak in any::<bool>(),
                current_opaque in prop_oneof![Just(&b"a"[..]), Just(&b""[..]), Just(&b"a,b"[..]), Just(&b"\xE9"[..])],
            ) {
                let values: Vec<HeaderValue> = lines
                    .iter()
                    .map(|l| HeaderValue::from_bytes(l).unwrap())
                    .collect();
                let current = TagRef::new(current_weak, current_opaque);
                let expected = reference(&lines);
                for comparison in [Comparison::Strong, Comparison::Weak] {
                    let got = list_matches(&values, Some(current), comparison);
                    let want = match &expected {
                        Field::Invalid => None,
                        Field::Star => Some(true),
                        Field::Tags(tags) => Some(tags.iter().any(|(weak, opaque)| {
                            let same = opaque[..] == current_opaque[..];
                            match comparison {
                                Comparison::Strong => same && !weak && !current_weak,
                                Comparison::Weak => same,
                            }
                        })),
                    };
                    prop_assert_eq!(got, want, "{:?} {:?}", lines, comparison);
                }
                // A field holding exactly one tag parses as that tag alone.
                if let (Field::Tags(tags), [only]) = (&expected, &lines[..]) {
                    if tags.len() == 1 && !only.contains(&b',') {
                        let parsed = TagRef::parse(only).map(|t| (t.is_weak(), t.opaque().to_vec()));
                        prop_assert_eq!(parsed, Some(tags[0].clone()));
                    }
                }
            }
        }
    }
}
