//! An entry as Redis keeps it: the server's clock when it was stored (in
//! microseconds, decimal, followed by `:`; written by the fill script, so
//! that no replica's clock is involved), then the format version, the
//! resource's generation at fill time, and each variant: its request-field
//! digest, its age when the entry was encoded (microseconds), surrogate tags
//! with their generations, and remembered field lines (name index, length,
//! value). Integers are little-endian.
//!
//! A variant's age at a lookup is its age at encoding (on the encoding
//! replica's monotonic clock) plus the time since the entry was stored, on
//! Redis's clock, which is the server's wall clock, as the looking-up
//! replica's connection last read it (`link::ServerClock`: a `TIME` reading
//! carried forward by its monotonic clock, ahead of the server by at most a
//! round trip): a step back of the server's clock makes variants look
//! younger by as much, as it delays Redis's own expiry of the entry. No
//! replica's wall clock is involved.
//!
//! Reading is defensive: anything malformed is `None` (a miss), and every
//! variant read back is checked again as a fresh response would be before
//! it can answer.

use std::time::Duration;

use bytes::BufMut;
use http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::entry::{
    remember, remembered_name, Entry, Variant, MAX_LINES, MAX_TAGS, MAX_VARIANTS,
};

/// The version of the format; an entry in another is a miss. 3: surrogate
/// tags' generations are in slots of their own (those version 2 recorded,
/// from one `{tags}` slot, are not comparable), so replicas of two versions
/// sharing a prefix never answer from each other's entries.
const FORMAT: u8 = 3;

/// Encodes `entry`, filled at `generation` (the fill script prefixes the
/// server's clock).
pub(super) fn encode(entry: &Entry, generation: u64) -> Vec<u8> {
    let variants = entry.variants();
    let mut out = Vec::with_capacity(
        10 + variants
            .iter()
            .map(|v| 18 + 16 * v.tags.len() + v.lines().map(|(_, l)| 3 + l.len()).sum::<usize>())
            .sum::<usize>(),
    );
    out.put_u8(FORMAT);
    out.put_u64_le(generation);
    out.put_u8(variants.len() as u8);
    for variant in variants {
        let age = u64::try_from(variant.age().as_micros()).unwrap_or(u64::MAX);
        out.put_u64_le(variant.fields);
        out.put_u64_le(age);
        out.put_u8(variant.tags.len() as u8);
        for (tag, generation) in variant.tags.iter() {
            out.put_u64_le(*tag);
            out.put_u64_le(*generation);
        }
        out.put_u8(variant.lines().count() as u8);
        for (name, value) in variant.lines() {
            out.put_u8(name);
            out.put_u16_le(value.len() as u16);
            out.put_slice(value);
        }
    }
    out
}

/// When an entry was stored and the generation it was filled at, read
/// without its variants: a lookup decodes the variants only of an entry it
/// can use (current generation, stored after the barrier). `None`: not an
/// entry of this format.
pub(super) fn peek(value: &[u8]) -> Option<(u64, u64)> {
    header(value).map(|(stored_at, generation, _)| (stored_at, generation))
}

/// The header (the server's clock at the fill, the format, the generation)
/// and the rest.
fn header(value: &[u8]) -> Option<(u64, u64, &[u8])> {
    let colon = value.iter().position(|&b| b == b':')?;
    let stored_at: u64 = std::str::from_utf8(&value[..colon]).ok()?.parse().ok()?;
    let input = &mut &value[colon + 1..];
    if u8_(input)? != FORMAT {
        return None;
    }
    let generation = u64_(input)?;
    Some((stored_at, generation, input))
}

/// Reads the variants the fill script stored that are younger than
/// `time_to_live` at `now` (microseconds on the server's clock): `None`
/// when the value is unreadable, `Some(None)` when no variant is young
/// enough.
pub(super) fn decode(
    value: &[u8],
    vary: &[HeaderName],
    now: u64,
    time_to_live: Duration,
) -> Option<Option<Entry>> {
    let (stored_at, _, mut input) = header(value)?;
    let input = &mut input;
    // A clock behind the store counts as no time passed.
    let since = now.saturating_sub(stored_at);
    let count = usize::from(u8_(input)?);
    if count > MAX_VARIANTS {
        return None;
    }
    let ttl = u64::try_from(time_to_live.as_micros()).unwrap_or(u64::MAX);
    let mut variants = Vec::with_capacity(count);
    for _ in 0..count {
        let stored = decode_variant(input)?;
        let age = stored.age.saturating_add(since);
        // Past its time-to-live: left out, unread.
        if age < ttl {
            let variant = stored.remember(vary)?;
            variants.push(variant.aged(Duration::from_micros(age)));
        }
    }
    if !input.is_empty() {
        return None;
    }
    Some(Entry::from_variants(variants))
}

/// One variant as stored.
struct Stored {
    fields: u64,
    /// Its age when encoded, in microseconds.
    age: u64,
    tags: Vec<(u64, u64)>,
    headers: HeaderMap,
}

fn decode_variant(input: &mut &[u8]) -> Option<Stored> {
    let fields = u64_(input)?;
    let age = u64_(input)?;
    let tag_count = usize::from(u8_(input)?);
    if tag_count > MAX_TAGS {
        return None;
    }
    let mut tags = Vec::with_capacity(tag_count);
    for _ in 0..tag_count {
        tags.push((u64_(input)?, u64_(input)?));
    }
    let line_count = usize::from(u8_(input)?);
    if line_count > MAX_LINES {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(line_count);
    for _ in 0..line_count {
        let name = remembered_name(u8_(input)?)?;
        let len = usize::from(u16_(input)?);
        let value = HeaderValue::from_bytes(take(input, len)?).ok()?;
        headers.append(name.clone(), value);
    }
    Some(Stored {
        fields,
        age,
        tags,
        headers,
    })
}

impl Stored {
    /// The variant, checked as a fresh response would be.
    fn remember(self, vary: &[HeaderName]) -> Option<Variant> {
        let extensions = Extensions::new();
        let remembered = remember(StatusCode::OK, &self.headers, &extensions, vary).ok()?;
        Some(
            remembered
                .to_variant(self.fields)
                .with_tags(self.tags.into()),
        )
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(n)?;
    *bytes = rest;
    Some(head)
}

fn u8_(bytes: &mut &[u8]) -> Option<u8> {
    Some(take(bytes, 1)?[0])
}

fn u16_(bytes: &mut &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(take(bytes, 2)?.try_into().ok()?))
}

fn u64_(bytes: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{entry::test_variant as variant, policy::default_vary};

    /// The value as the fill script stores it at `now`.
    fn stored_at(now: u64, encoded: &[u8]) -> Vec<u8> {
        let mut value = format!("{now}:").into_bytes();
        value.extend_from_slice(encoded);
        value
    }

    #[test]
    fn an_encoded_entry_reads_back_and_damage_is_a_miss() {
        let ttl = Duration::from_secs(60);
        let vary = default_vary();
        let old =
            variant(&[("etag", "\"old\""), ("vary", "accept")], 1).aged(Duration::from_secs(49));
        let new = variant(
            &[
                ("etag", "W/\"new\""),
                ("cache-control", "max-age=60"),
                ("vary", "accept-encoding"),
            ],
            2,
        )
        .with_tags(Box::new([(7, 8)]));
        let entry = Entry::with(Some(&Entry::with(None, old)), new);
        // Stored at 50 s on the server's clock: the old variant was filled
        // at about 1 s, the new one at about 50 s.
        let bytes = stored_at(50_000_000, &encode(&entry, 42));
        assert_eq!(peek(&bytes), Some((50_000_000, 42)));
        let read = decode(&bytes, &vary, 55_000_000, ttl).unwrap().unwrap();
        assert_eq!(read.variants().len(), 2);
        for (a, b) in read.variants().iter().zip(entry.variants()) {
            assert!(a.lines().eq(b.lines()));
            assert_eq!((a.mask, a.fields), (b.mask, b.fields));
            assert_eq!(a.tags, b.tags);
            assert_eq!(a.etag_value(), b.etag_value());
        }
        let ages: Vec<u64> = read.variants().iter().map(|v| v.age().as_secs()).collect();
        assert!((4..=6).contains(&ages[0]), "{ages:?}");
        assert!((53..=55).contains(&ages[1]), "{ages:?}");
        // 62 s: the old variant is past its time.
        let read = decode(&bytes, &vary, 62_000_000, ttl).unwrap();
        assert_eq!(read.unwrap().variants().len(), 1);
        let read = decode(&bytes, &vary, 200_000_000, ttl).unwrap();
        assert!(read.is_none());
        // Every truncation, and every single-byte change that leaves the
        // value unreadable, is a miss rather than a panic.
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], &vary, 55_000_000, ttl).is_none());
        }
        for i in 0..bytes.len() {
            for byte in [0, 0x7f, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] = byte;
                let _ = decode(&damaged, &vary, 55_000_000, ttl);
            }
        }
        assert!(decode(b"garbage", &vary, 0, ttl).is_none());
        // The header alone.
        assert_eq!(peek(b"garbage"), None);
        for len in 0..bytes.len() {
            if let Some(header) = peek(&bytes[..len]) {
                assert_eq!(header, (50_000_000, 42), "a prefix of {len} bytes");
            }
        }
    }

    #[test]
    fn an_expired_variant_is_left_out_unread() {
        let ttl = Duration::from_secs(60);
        let old =
            variant(&[("etag", "\"old\""), ("vary", "accept")], 1).aged(Duration::from_secs(59));
        let new = variant(&[("etag", "\"new\"")], 2);
        let entry = Entry::with(Some(&Entry::with(None, old)), new);
        let bytes = stored_at(0, &encode(&entry, 1));
        // A replica that no longer varies on Accept reads the live variant
        // once the one that names Accept has expired.
        let narrower = [http::header::ACCEPT_ENCODING];
        assert!(decode(&bytes, &narrower, 0, ttl).is_none());
        let read = decode(&bytes, &narrower, 2_000_000, ttl).unwrap();
        assert_eq!(read.unwrap().variants().len(), 1);
    }

    #[test]
    fn a_variant_that_would_not_be_stored_now_is_a_miss() {
        let vary = default_vary();
        let entry = Entry::with(None, variant(&[("etag", "\"a\""), ("vary", "accept")], 1));
        let bytes = stored_at(1_000_000, &encode(&entry, 1));
        // Read by a replica that no longer varies on Accept.
        let narrower = [http::header::ACCEPT_ENCODING];
        assert!(decode(&bytes, &narrower, 1_000_000, Duration::from_secs(60)).is_none());
        assert!(decode(&bytes, &vary, 1_000_000, Duration::from_secs(60))
            .unwrap()
            .is_some());
    }
}
