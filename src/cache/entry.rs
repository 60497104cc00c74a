//! What the cache remembers of a response, which responses it may remember,
//! and the 304 it builds from them.

use std::{
    fmt,
    sync::Arc,
    time::{Instant, SystemTime},
};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, Extensions, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::{
    hashing::{Hashing, Key},
    read::kept,
};
use crate::protocol::{directives::has_directive, entity_tag::TagRef, not_modified::FromOk};

/// The fields a 304 must carry if the 200 had them (RFC 9110 §15.4.5:
/// Cache-Control, Content-Location, Date, ETag, Expires, Vary), and
/// Last-Modified, which it may. Date is generated anew for each 304.
const REMEMBERED: [HeaderName; 6] = [
    header::ETAG,
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::VARY,
];

/// The most header bytes remembered for one response; a response with more
/// is not stored (it bounds memory per entry).
pub(crate) const MAX_HEADER_BYTES: usize = 4096;

/// The most variants (`Vary`) kept for one entry; the oldest goes first.
pub(crate) const MAX_VARIANTS: usize = 8;

/// The most surrogate tags remembered for one response; a response with
/// more is not stored.
pub(crate) const MAX_TAGS: usize = 16;

/// Surrogate tags for a response, set by a handler in the response's
/// extensions, so that app code can later invalidate every response that
/// carries a tag with [`ValidatorCache::invalidate_tag`](super::ValidatorCache::invalidate_tag),
/// as CDNs' surrogate keys work.
///
/// ```
/// use axum::{response::IntoResponse, Extension};
/// use tower_etag::cache::CacheTags;
///
/// async fn profile() -> impl IntoResponse {
///     (Extension(CacheTags::new(["user:42"])), "Ada Lovelace")
/// }
/// # let _ = profile;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheTags(Vec<String>);

impl CacheTags {
    /// Tags from any list of strings.
    pub fn new<T: Into<String>>(tags: impl IntoIterator<Item = T>) -> Self {
        Self(tags.into_iter().map(Into::into).collect())
    }

    /// The tags.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// One stored response: the fields its 304 replays, and what it was stored
/// for.
#[derive(Clone)]
pub(crate) struct Variant {
    /// Which of the configured fields the response varies on.
    pub(crate) mask: u16,
    /// The digest of the request's values of those fields.
    pub(crate) fields: Key,
    /// The remembered field lines in one allocation: their count, then for
    /// each its name (an index into `REMEMBERED`) and where its value ends
    /// (little-endian `u16`, relative to the values), then the values back
    /// to back.
    block: Bytes,
    /// The first `ETag` line's place in `block`, and its opaque part's, so
    /// that a hit compares without parsing.
    etag: Etag,
    /// When its age was last known (its fill, or when a store read it
    /// back), on the monotonic clock.
    filled: Instant,
    /// Its age at `filled`: zero when filled here, the stored age when a
    /// store read it back (so that an age is never lost to an `Instant`
    /// that cannot go back that far).
    age_then: std::time::Duration,
    /// Surrogate tags and their generations at fill time.
    pub(crate) tags: Box<[(Key, u64)]>,
}

impl fmt::Debug for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variant")
            .field("mask", &self.mask)
            .field("header_bytes", &self.block.len())
            .field("age", &self.age())
            .field("tags", &self.tags.len())
            .finish()
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Etag {
    weak: bool,
    value: (u16, u16),
    opaque: (u16, u16),
}

impl Variant {
    /// Each remembered line: its name (an index into the remembered names,
    /// see [`remembered_name`]) and its value.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        self.ranges()
            .map(|(name, start, end)| (name, &self.block[start..end]))
    }

    /// Each remembered line: its name's index and its value's range in
    /// `block`.
    fn ranges(&self) -> impl Iterator<Item = (u8, usize, usize)> + '_ {
        let count = usize::from(self.block[0]);
        let base = 1 + 3 * count;
        let mut start = base;
        self.block[1..base].chunks_exact(3).map(move |entry| {
            let end = base + usize::from(u16::from_le_bytes([entry[1], entry[2]]));
            let line = (entry[0], start, end);
            start = end;
            line
        })
    }

    /// The remembered entity tag (the first `ETag` line).
    pub(crate) fn etag(&self) -> TagRef<'_> {
        let (start, end) = self.etag.opaque;
        TagRef::new(
            self.etag.weak,
            &self.block[usize::from(start)..usize::from(end)],
        )
    }

    /// The remembered `ETag` field value, as sent.
    pub(crate) fn etag_value(&self) -> &[u8] {
        let (start, end) = self.etag.value;
        &self.block[usize::from(start)..usize::from(end)]
    }

    /// The 304 Not Modified this variant answers with: no content, the
    /// remembered fields, and a `Date` generated now (RFC 9110 §15.4.5,
    /// §6.6.1).
    pub(crate) fn not_modified<B>(&self, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        headers.reserve(usize::from(self.block[0]) + 1);
        for (name, start, end) in self.ranges() {
            let value = self.block.slice(start..end);
            // The bytes were a valid field value when stored; `Bytes` makes
            // this a reference count, not a copy.
            if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                headers.append(REMEMBERED[usize::from(name)].clone(), value);
            }
        }
        headers.insert(header::DATE, date_now());
        response
    }
}

/// The current time as an HTTP-date (RFC 9110 §5.6.7), formatted once a
/// second per thread: formatting it costs more than the rest of a 304.
fn date_now() -> HeaderValue {
    thread_local! {
        static DATE: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        match &*cached {
            Some((at, value)) if *at == second => value.clone(),
            _ => {
                let value = HeaderValue::try_from(httpdate::fmt_http_date(now))
                    .expect("an HTTP-date is a valid field value");
                *cached = Some((second, value.clone()));
                value
            }
        }
    })
}

/// Every variant stored for one entry key (RFC 9111 §4.1: one per
/// combination of the fields the response varies on).
#[derive(Clone, Debug, Default)]
pub(crate) struct Entry(Arc<[Variant]>);

impl Entry {
    pub(crate) fn variants(&self) -> &[Variant] {
        &self.0
    }

    /// This entry with `variant` replacing the one stored for the same
    /// request fields; at most [`MAX_VARIANTS`], the oldest dropped first.
    pub(crate) fn with(base: Option<&Entry>, variant: Variant) -> Self {
        let others = base.map_or(&[][..], Entry::variants);
        let (mask, fields) = (variant.mask, variant.fields);
        let kept = others
            .iter()
            .filter(|v| v.mask != mask || v.fields != fields)
            .take(MAX_VARIANTS - 1)
            .cloned();
        Self(std::iter::once(variant).chain(kept).collect())
    }

    /// This entry without the variants that `keep` (given each one's
    /// position, newest first) refuses; `None` if none is left.
    pub(crate) fn retain(&self, keep: impl Fn(usize, &Variant) -> bool) -> Option<Self> {
        if self.0.iter().enumerate().all(|(i, v)| keep(i, v)) {
            return Some(self.clone());
        }
        let kept: Arc<[Variant]> = (self.0.iter().enumerate())
            .filter(|(i, v)| keep(*i, v))
            .map(|(_, v)| v.clone())
            .collect();
        (!kept.is_empty()).then_some(Self(kept))
    }

    /// How many responses this entry holds, for the cache's bound.
    pub(crate) fn weight(&self) -> u32 {
        self.0.len() as u32
    }

    /// An entry of `variants` (newest first, at most [`MAX_VARIANTS`]), as a
    /// store that keeps entries outside this process read them back; `None`
    /// if there are none.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_variants(variants: Vec<Variant>) -> Option<Self> {
        debug_assert!(variants.len() <= MAX_VARIANTS);
        (!variants.is_empty()).then(|| Self(variants.into()))
    }
}

/// The name of remembered line `index`, as [`Variant::lines`] gives it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn remembered_name(index: u8) -> Option<&'static HeaderName> {
    REMEMBERED.get(usize::from(index))
}

/// Why a response is not remembered, for the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// Not a 200, nor a 304 the ETag layer made out of one.
    Status,
    /// `Cache-Control: no-store` or `private`.
    CacheControl,
    /// `Set-Cookie`: a replayed 304 would not set it.
    SetCookie,
    /// No valid `ETag`.
    NoTag,
    /// `Vary: *`, or a field outside the configured list.
    Vary,
    /// More than [`MAX_HEADER_BYTES`] or [`MAX_TAGS`].
    TooLarge,
}

/// The most remembered field lines of one response; a response with more
/// is not stored.
pub(crate) const MAX_LINES: usize = 16;

/// A response the cache may store, read without allocating: the remembered
/// field lines borrowed from the response.
pub(crate) struct Remembered<'a> {
    mask: u16,
    lines: [(u8, Option<&'a HeaderValue>); MAX_LINES],
    count: usize,
    bytes: usize,
    etag: Option<EtagLine>,
    tags: Option<&'a CacheTags>,
}

/// Where the first `ETag` line is among the remembered lines, and its
/// opaque part within that line's value.
#[derive(Clone)]
struct EtagLine {
    line: usize,
    weak: bool,
    opaque: std::ops::Range<usize>,
}

/// Reads what the cache would remember of a response to a `GET`, or why it
/// must not store it.
pub(crate) fn remember<'a>(
    status: StatusCode,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
    vary_fields: &[HeaderName],
) -> Result<Remembered<'a>, NotStored> {
    // RFC 9111 §4.3.4: a 304 that the ETag layer made out of a 200 after the
    // handler ran carries current validators, as the 200 would.
    let confirmed = status == StatusCode::OK
        || (status == StatusCode::NOT_MODIFIED && extensions.get::<FromOk>().is_some());
    if !confirmed {
        return Err(NotStored::Status);
    }
    let mut remembered = Remembered {
        mask: 0,
        lines: [(0, None); MAX_LINES],
        count: 0,
        bytes: 0,
        etag: None,
        tags: None,
    };
    for (name, value) in headers {
        match *name {
            // RFC 9111 §5.2.2.5, §5.2.2.7: a shared store must not keep
            // these; this one answers on the origin's behalf, so neither.
            header::CACHE_CONTROL if has_directive(value, &["no-store", "private"]) => {
                return Err(NotStored::CacheControl)
            }
            header::SET_COOKIE => return Err(NotStored::SetCookie),
            header::VARY => remembered.mask |= vary_mask(value, vary_fields)?,
            _ => {}
        }
        remembered.keep(name, value)?;
    }
    if remembered.etag.is_none() {
        return Err(NotStored::NoTag);
    }
    remembered.tags = extensions.get::<CacheTags>();
    if remembered.tags.is_some_and(|tags| tags.0.len() > MAX_TAGS) {
        return Err(NotStored::TooLarge);
    }
    Ok(remembered)
}

/// The configured fields a `Vary` line names, as a mask of their indexes;
/// RFC 9111 §4.1: `Vary: *`, or a field outside the list, never matches.
fn vary_mask(value: &HeaderValue, vary_fields: &[HeaderName]) -> Result<u16, NotStored> {
    let mut mask = 0;
    for field in value.as_bytes().split(|&b| b == b',') {
        let field = field.trim_ascii();
        if field.is_empty() {
            continue;
        }
        let index = vary_fields
            .iter()
            .position(|known| known.as_str().as_bytes().eq_ignore_ascii_case(field))
            .ok_or(NotStored::Vary)?;
        mask |= 1 << index;
    }
    Ok(mask)
}

impl<'a> Remembered<'a> {
    /// Keeps a line if its field is one a 304 replays.
    fn keep(&mut self, name: &HeaderName, value: &'a HeaderValue) -> Result<(), NotStored> {
        let Some(index) = REMEMBERED.iter().position(|r| r == name) else {
            return Ok(());
        };
        if name == header::ETAG {
            // The first ETag line is the tag; later ones are not replayed.
            if self.etag.is_some() {
                return Ok(());
            }
            let (tag, opaque) = TagRef::locate(value.as_bytes()).ok_or(NotStored::NoTag)?;
            self.etag = Some(EtagLine {
                line: self.count,
                weak: tag.is_weak(),
                opaque,
            });
        }
        self.bytes += value.len();
        if self.bytes > MAX_HEADER_BYTES || self.count == MAX_LINES {
            return Err(NotStored::TooLarge);
        }
        self.lines[self.count] = (index as u8, Some(value));
        self.count += 1;
        Ok(())
    }
}

impl Remembered<'_> {
    fn lines(&self) -> impl Iterator<Item = (u8, &HeaderValue)> {
        self.lines[..self.count]
            .iter()
            .filter_map(|&(index, value)| Some((index, value?)))
    }

    /// The digest of the request fields this response varies on.
    pub(crate) fn fields(&self, varying: &[(u8, HeaderValue)], hashing: &Hashing) -> Key {
        hashing.vary(self.mask, |index| kept(varying, index))
    }

    /// The keys of the response's surrogate tags.
    pub(crate) fn tag_keys(&self, hashing: &Hashing) -> Vec<Key> {
        self.tags
            .map(|tags| tags.iter().map(|tag| hashing.tag(tag)).collect())
            .unwrap_or_default()
    }

    /// Whether `stored` replays the same 304 as this response (with
    /// request-field digest `fields` and surrogate tags `tags`) would:
    /// storing this one would change nothing but the fill time.
    pub(crate) fn replayed_by(&self, stored: &Variant, fields: Key, tags: &[Key]) -> bool {
        if stored.mask != self.mask
            || stored.fields != fields
            || usize::from(stored.block[0]) != self.count
            || !stored.tags.iter().map(|(tag, _)| tag).eq(tags)
        {
            return false;
        }
        stored
            .lines()
            .zip(self.lines())
            .all(|((name, stored), (index, value))| name == index && stored == value.as_bytes())
    }

    /// The variant to store.
    pub(crate) fn to_variant(&self, fields: Key) -> Variant {
        let table = 1 + 3 * self.count;
        let values: usize = self.lines().map(|(_, v)| v.len()).sum();
        let mut block = BytesMut::with_capacity(table + values);
        block.put_u8(self.count as u8);
        let mut end = 0;
        for (index, value) in self.lines() {
            end += value.len();
            block.put_u8(index);
            block.put_u16_le(end as u16);
        }
        let mut etag = Etag::default();
        for (i, (_, value)) in self.lines().enumerate() {
            let start = block.len();
            if let Some(line) = self.etag.as_ref().filter(|line| line.line == i) {
                let at = |offset: usize| (start + offset) as u16;
                etag = Etag {
                    weak: line.weak,
                    value: (at(0), at(value.len())),
                    opaque: (at(line.opaque.start), at(line.opaque.end)),
                };
            }
            block.put_slice(value.as_bytes());
        }
        Variant {
            mask: self.mask,
            fields,
            block: block.freeze(),
            etag,
            filled: Instant::now(),
            age_then: std::time::Duration::ZERO,
            tags: Box::new([]),
        }
    }
}

impl Variant {
    /// The variant with its surrogate tags' generations.
    pub(crate) fn with_tags(mut self, tags: Box<[(Key, u64)]>) -> Self {
        self.tags = tags;
        self
    }

    /// The variant as stored `age` ago (a store that reads it back).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn aged(mut self, age: std::time::Duration) -> Self {
        self.filled = Instant::now();
        self.age_then = age;
        self
    }

    /// How long ago it was stored.
    pub(crate) fn age(&self) -> std::time::Duration {
        self.age_then.saturating_add(self.filled.elapsed())
    }
}

/// A variant of a 200 with these fields, for the stores' tests.
#[cfg(test)]
pub(crate) fn test_variant(fields: &[(&str, &str)], digest: Key) -> Variant {
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let vary = super::policy::default_vary();
    remember(StatusCode::OK, &headers, &Extensions::new(), &vary)
        .unwrap()
        .to_variant(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::default_vary;

    fn response(fields: &[(&str, &str)]) -> (StatusCode, HeaderMap, Extensions) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        (StatusCode::OK, headers, Extensions::new())
    }

    fn try_remember(fields: &[(&str, &str)]) -> Result<Variant, NotStored> {
        let (status, headers, extensions) = response(fields);
        remember(status, &headers, &extensions, &default_vary()).map(|r| r.to_variant(0))
    }

    #[test]
    fn the_304_replays_the_fields_rfc_9110_lists_and_a_new_date() {
        let variant = try_remember(&[
            ("etag", "\"abc\""),
            ("cache-control", "max-age=60"),
            ("content-location", "/a.json"),
            ("expires", "Thu, 01 Dec 2094 16:00:00 GMT"),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("vary", "accept-encoding"),
            ("vary", "Origin"),
            ("content-type", "application/json"),
            ("x-custom", "1"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ])
        .unwrap();
        let response = variant.not_modified(());
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let h = response.headers();
        assert_eq!(h["etag"], "\"abc\"");
        assert_eq!(h["cache-control"], "max-age=60");
        assert_eq!(h["content-location"], "/a.json");
        assert_eq!(h["expires"], "Thu, 01 Dec 2094 16:00:00 GMT");
        assert_eq!(h["last-modified"], "Sun, 06 Nov 1994 08:49:37 GMT");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["accept-encoding", "Origin"]);
        assert!(!h.contains_key("content-type"));
        assert!(!h.contains_key("x-custom"));
        assert_ne!(h["date"], "Sun, 06 Nov 1994 08:49:37 GMT", "generated now");
        assert_eq!(variant.mask, 0b1001);
    }

    #[test]
    fn a_stored_variant_is_recognised_in_an_unchanged_response() {
        let fields = [
            ("cache-control", "max-age=60"),
            ("etag", "W/\"abc\""),
            ("vary", "accept-encoding"),
        ];
        let (status, headers, extensions) = response(&fields);
        let remembered = remember(status, &headers, &extensions, &default_vary()).unwrap();
        let stored = remembered.to_variant(7);
        assert_eq!(stored.etag_value(), b"W/\"abc\"");
        assert_eq!(stored.etag(), TagRef::new(true, b"abc"));
        assert!(remembered.replayed_by(&stored, 7, &[]));
        assert!(
            !remembered.replayed_by(&stored, 8, &[]),
            "other request fields"
        );
        assert!(
            !remembered.replayed_by(&stored, 7, &[1]),
            "other surrogate tags"
        );
        let (status, headers, extensions) = response(&[
            ("cache-control", "max-age=61"),
            ("etag", "W/\"abc\""),
            ("vary", "accept-encoding"),
        ]);
        let changed = remember(status, &headers, &extensions, &default_vary()).unwrap();
        assert!(!changed.replayed_by(&stored, 7, &[]));
    }

    #[test]
    fn responses_that_must_not_be_replayed_are_not_stored() {
        let tag = ("etag", "\"abc\"");
        for (fields, why) in [
            (
                vec![tag, ("cache-control", "no-store")],
                NotStored::CacheControl,
            ),
            (
                vec![tag, ("cache-control", "max-age=0, Private")],
                NotStored::CacheControl,
            ),
            (
                vec![tag, ("cache-control", "private=\"x\"")],
                NotStored::CacheControl,
            ),
            (vec![tag, ("set-cookie", "a=1")], NotStored::SetCookie),
            (vec![tag, ("vary", "*")], NotStored::Vary),
            (vec![tag, ("vary", "accept, user-agent")], NotStored::Vary),
            (vec![("etag", "unquoted")], NotStored::NoTag),
            (
                vec![("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
                NotStored::NoTag,
            ),
        ] {
            assert_eq!(try_remember(&fields).err(), Some(why), "{fields:?}");
        }
        let huge = "x".repeat(MAX_HEADER_BYTES);
        assert_eq!(
            try_remember(&[tag, ("cache-control", &huge)]).err(),
            Some(NotStored::TooLarge)
        );
    }

    #[test]
    fn only_200_and_a_304_made_from_a_200_are_stored() {
        let (_, headers, mut extensions) = response(&[("etag", "\"abc\"")]);
        let vary = default_vary();
        for status in [
            StatusCode::CREATED,
            StatusCode::NOT_MODIFIED,
            StatusCode::NOT_FOUND,
        ] {
            let got = remember(status, &headers, &extensions, &vary);
            assert_eq!(got.err(), Some(NotStored::Status), "{status}");
        }
        extensions.insert(FromOk);
        assert!(remember(StatusCode::NOT_MODIFIED, &headers, &extensions, &vary).is_ok());
    }

    #[test]
    fn variants_replace_their_own_kind_and_stay_bounded() {
        let make = |fields: u8| {
            let mut v = try_remember(&[("etag", "\"abc\"")]).unwrap();
            v.fields = u64::from(fields);
            v
        };
        let mut entry = Entry::with(None, make(0));
        for i in 1..20 {
            entry = Entry::with(Some(&entry), make(i % 10));
        }
        assert_eq!(entry.variants().len(), MAX_VARIANTS);
        assert_eq!(entry.variants()[0].fields, 9, "newest first");
        let again = Entry::with(Some(&entry), make(9));
        assert_eq!(again.variants().len(), MAX_VARIANTS, "replaced, not added");
    }
}
