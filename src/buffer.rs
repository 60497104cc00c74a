//! Where the body is buffered and hashed.
//!
//! A [`Buffer`] reads the inner body frame by frame. Frames at least as long
//! as the next segment are kept as they are (reference-counted [`Bytes`], not
//! copied); shorter ones are copied, as they arrive, into a segment (16 KiB
//! for the first, growing with the body to 128 KiB, or the exact size left
//! when the body announces it; 16 KiB again past the first 2 MiB), and
//! dropped once copied. So a body streamed
//! in many small frames is held as a few large pieces: BLAKE3 hashes each
//! piece in one `update` call at its full SIMD width, and the response is
//! sent as a few large frames, which costs the server far less than many
//! small ones. Memory stays at most the body plus one segment.
//!
//! Pieces are hashed as they are completed once the body has two; a body
//! held in one piece (the usual `Full<Bytes>` or `Body::from(bytes)`, or a
//! small one copied into one segment) is hashed in one call at the end.
//! Once reading stops, for whatever reason, the same `Buffer` becomes the
//! body that is sent: first the pieces already read, then whatever is left
//! (trailers, the rest of the inner body, or the inner body's error).
//! Nothing read is ever lost.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::entity_tag::EntityTag;

/// How many bytes of the BLAKE3 digest the tag carries: 128 bits.
const TAG_BYTES: usize = 16;

/// The smallest segment: frames this long or longer are never copied, and
/// every piece but the last is at least this long, which keeps every BLAKE3
/// `update` at its full SIMD width (16 of its 1 KiB chunks side by side).
pub(crate) const MIN_SEGMENT: usize = 16 * 1024;

/// The largest segment. Segments grow with the body (each as long as the
/// body so far) up to this: hyper writes a 128 KiB frame at close to the cost
/// of one large buffer, and a larger one would only add to what a response
/// may hold beyond its body.
pub(crate) const MAX_SEGMENT: usize = 128 * 1024;

/// How much of a body is coalesced into growing segments. Past it, segments
/// stay at [`MIN_SEGMENT`]: frames that long pass as they are, and only
/// shorter ones are copied (for the hash's SIMD width). Copying pays while
/// the body is still in the CPU's caches: `bash benches/load.sh` measured
/// 1 MiB streamed in 16 KiB frames at +74 µs over plain with segments of up
/// to 128 KiB, but 16 MiB at +5,115 µs with them against +4,366 µs without
/// (the copy then streams through memory and fresh pages, and costs more
/// than the frames it saves hyper); with this limit, +4,406 µs.
pub(crate) const COALESCE_LIMIT: usize = 2 * 1024 * 1024;

/// A BLAKE3 key: tags are then `blake3::keyed_hash(key, body)`. Shared
/// rather than copied into every request: a pointer costs the unkeyed
/// common case less than 33 bytes carried through every future.
pub(crate) type Key = Arc<[u8; 32]>;

pin_project! {
    /// The inner body together with what has been read from it.
    pub(crate) struct Buffer<B: Body> {
        #[pin]
        body: B,
        // The pieces completed, in order.
        chunks: Chunks,
        // A short frame not copied yet: a body of one short frame is never
        // copied. At most one of `held` and `open` holds bytes.
        held: Option<Bytes>,
        // The segment being filled from short frames; its bytes come after
        // `chunks`.
        open: BytesMut,
        // Bytes read: in `chunks` and `open`.
        len: u64,
        trailers: Option<HeaderMap>,
        // Created once the body has two pieces: a body held in one piece is
        // hashed with one call at the end, without the hasher's 1.9 KB of
        // state.
        hasher: Option<Box<blake3::Hasher>>,
        key: Option<Key>,
        state: State<B::Error>,
    }
}

/// The pieces read, in order. The first lives outside the deque so that a
/// body of one piece costs no allocation to hold.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if self.is_empty() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.first.iter().chain(&self.rest)
    }
}

enum State<E> {
    /// Reading and hashing.
    Reading,
    /// The inner body ended within the cap: everything is in memory.
    Complete,
    /// The inner body outgrew the cap: send the chunks, then the rest of it.
    Overflowed,
    /// The inner body failed: send the chunks, then this error.
    Failed(Option<E>),
}

/// Why [`Buffer::poll_fill`] stopped reading.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// The whole body is buffered and hashed.
    Complete,
    /// The body grew past the cap; it will be streamed untagged.
    Overflowed,
    /// The body returned an error; it will be passed on after the chunks.
    Failed,
}

/// Adds a completed piece, hashing it if the hasher runs, or starting the
/// hasher once there are two pieces.
fn add_piece(
    chunks: &mut Chunks,
    hasher: &mut Option<Box<blake3::Hasher>>,
    key: Option<&[u8; 32]>,
    piece: Bytes,
) {
    match hasher {
        Some(hasher) => {
            hasher.update(&piece);
        }
        None if !chunks.is_empty() => {
            let mut started = Box::new(new_hasher(key));
            for chunk in chunks.iter() {
                started.update(chunk);
            }
            started.update(&piece);
            *hasher = Some(started);
        }
        None => {}
    }
    chunks.push(piece);
}

fn new_hasher(key: Option<&[u8; 32]>) -> blake3::Hasher {
    key.map_or_else(blake3::Hasher::new, blake3::Hasher::new_keyed)
}

impl<B: Body<Data = Bytes>> Buffer<B> {
    /// Buffers `body`; its tag will be keyed with `key`, if any.
    pub(crate) fn new(body: B, key: Option<Key>) -> Self {
        Self {
            body,
            chunks: Chunks::default(),
            held: None,
            open: BytesMut::new(),
            len: 0,
            trailers: None,
            hasher: None,
            key,
            state: State::Reading,
        }
    }

    /// Reads frames until the body ends, fails, or holds more than `cap`
    /// bytes. The tag depends only on the bytes, not on how they were split
    /// into frames.
    pub(crate) fn poll_fill(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        cap: usize,
    ) -> Poll<Filled> {
        let mut this = self.project();
        debug_assert!(matches!(this.state, State::Reading));
        let key = this.key.as_deref();
        // Completes the open segment or the held frame, if any.
        let close =
            |held: &mut Option<Bytes>, open: &mut BytesMut, chunks: &mut Chunks, hasher: &mut _| {
                if let Some(held) = held.take() {
                    add_piece(chunks, hasher, key, held);
                } else if !open.is_empty() {
                    add_piece(chunks, hasher, key, std::mem::take(open).freeze());
                }
            };
        loop {
            let frame = match ready!(this.body.as_mut().poll_frame(cx)) {
                None => {
                    close(this.held, this.open, this.chunks, this.hasher);
                    *this.state = State::Complete;
                    return Poll::Ready(Filled::Complete);
                }
                Some(Err(error)) => {
                    close(this.held, this.open, this.chunks, this.hasher);
                    *this.state = State::Failed(Some(error));
                    return Poll::Ready(Filled::Failed);
                }
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        match this.trailers {
                            Some(existing) => existing.extend(trailers),
                            None => *this.trailers = Some(trailers),
                        }
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            *this.len += data.len() as u64;
            if *this.len > cap as u64 {
                // Keep everything to send it, but stop hashing: the response
                // goes out untagged.
                if let Some(held) = this.held.take() {
                    this.chunks.push(held);
                }
                let open = std::mem::take(this.open);
                if !open.is_empty() {
                    this.chunks.push(open.freeze());
                }
                this.chunks.push(data);
                *this.state = State::Overflowed;
                return Poll::Ready(Filled::Overflowed);
            }
            // How long the next segment would be: as long as the body so far
            // (between the bounds), or exactly what is left when the body
            // says so.
            let read = usize::try_from(*this.len).unwrap_or(usize::MAX);
            let mut segment = match read {
                read if read > COALESCE_LIMIT => MIN_SEGMENT,
                read => read.clamp(MIN_SEGMENT, MAX_SEGMENT),
            };
            // (The hint can only shorten it: asked only when it matters.)
            if data.len() < segment {
                if let Some(left) = this.body.size_hint().upper() {
                    let left = usize::try_from(left).unwrap_or(usize::MAX);
                    segment = segment.min(data.len().saturating_add(left));
                }
            }
            if data.len() >= segment {
                // Long enough to stand as a piece (or all the body has
                // left): kept, not copied.
                close(this.held, this.open, this.chunks, this.hasher);
                add_piece(this.chunks, this.hasher, key, data);
                continue;
            }
            if this.open.is_empty() && this.held.is_none() {
                // Copied only if another short frame follows.
                *this.held = Some(data);
                continue;
            }
            if let Some(held) = this.held.take() {
                this.open.reserve(segment.max(held.len()));
                this.open.extend_from_slice(&held);
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                if this.open.capacity() == 0 {
                    this.open.reserve(segment.max(rest.len().min(MAX_SEGMENT)));
                }
                let room = this.open.capacity() - this.open.len();
                let (now, later) = rest.split_at(room.min(rest.len()));
                this.open.extend_from_slice(now);
                rest = later;
                if this.open.len() == this.open.capacity() {
                    close(this.held, this.open, this.chunks, this.hasher);
                }
            }
        }
    }

    /// The number of body bytes read.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Whether trailers were read.
    pub(crate) fn has_trailers(&self) -> bool {
        self.trailers.is_some()
    }

    /// The entity tag of the complete body: the first 128 bits of its BLAKE3
    /// hash (keyed, if there is a key) in lowercase hex, quoted, `W/`-prefixed
    /// if `weak`.
    pub(crate) fn tag(&self, weak: bool) -> Tag {
        debug_assert!(
            self.open.is_empty() && self.held.is_none(),
            "called once reading completed"
        );
        let hash = match (&self.hasher, &self.key) {
            (Some(hasher), _) => hasher.finalize(),
            // One piece, or none.
            (None, None) => blake3::hash(self.chunks.first.as_deref().unwrap_or_default()),
            (None, Some(key)) => {
                blake3::keyed_hash(key, self.chunks.first.as_deref().unwrap_or_default())
            }
        };
        Tag::new(hash_prefix(&hash), weak)
    }
}

/// The tag the layer gives `bytes` (the whole body), as [`Buffer::tag`]
/// does however the body arrives.
pub(crate) fn tag_of(bytes: &[u8], key: Option<&[u8; 32]>, weak: bool) -> Tag {
    let hash = match key {
        None => blake3::hash(bytes),
        Some(key) => blake3::keyed_hash(key, bytes),
    };
    Tag::new(hash_prefix(&hash), weak)
}

/// The part of the digest the tag carries.
fn hash_prefix(hash: &blake3::Hash) -> &[u8; TAG_BYTES] {
    hash.as_bytes()[..TAG_BYTES]
        .try_into()
        .expect("a BLAKE3 digest is 32 bytes")
}

/// An entity tag formatted on the stack.
///
/// The hex encoding is hand-written: the tag is 36 bytes at most, and a hex
/// crate would add a dependency for one loop.
pub(crate) struct Tag {
    bytes: [u8; 4 + TAG_BYTES * 2],
    weak: bool,
}

impl Tag {
    fn new(digest: &[u8; TAG_BYTES], weak: bool) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
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
    pub(crate) fn entity_tag(&self) -> EntityTag<'_> {
        let bytes = self.as_bytes();
        let start = if self.weak { 3 } else { 1 };
        EntityTag::new(self.weak, &bytes[start..bytes.len() - 1])
    }

    /// The `ETag` field value.
    pub(crate) fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes())
            .expect("hex digits and quotes are valid header bytes")
    }

    /// The tag as the public type.
    pub(crate) fn to_public(&self) -> crate::EntityTag {
        crate::EntityTag::from_header_value(self.to_header_value(), self.weak)
    }
}

impl<B: Body<Data = Bytes>> Body for Buffer<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(chunk) = this.chunks.pop() {
            *this.len -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match this.state {
            State::Reading => {
                debug_assert!(false, "a buffer is sent only once reading stopped");
                Poll::Ready(None)
            }
            State::Complete => Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            State::Overflowed => this.body.poll_frame(cx),
            State::Failed(error) => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.chunks.is_empty() {
            return false;
        }
        match &self.state {
            State::Reading => true,
            State::Complete => self.trailers.is_none(),
            State::Overflowed => self.body.is_end_stream(),
            State::Failed(error) => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            // Exact only without trailers: an exact size makes hyper frame the
            // response with Content-Length, and HTTP/1.1 can only carry
            // trailers in chunked framing.
            State::Complete if self.trailers.is_none() => SizeHint::with_exact(self.len),
            State::Overflowed => {
                let inner = self.body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(self.len));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(self.len));
                }
                hint
            }
            _ => {
                let mut hint = SizeHint::new();
                hint.set_lower(self.len);
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_of(bytes: &[u8], weak: bool) -> Tag {
        Tag::new(hash_prefix(&blake3::hash(bytes)), weak)
    }

    #[test]
    fn tag_is_quoted_lowercase_hex_of_128_bits() {
        let tag = tag_of(b"hello", false);
        let expected = format!("\"{}\"", &blake3::hash(b"hello").to_hex()[..32]);
        assert_eq!(tag.to_header_value(), expected.as_str());
        let value = tag.to_header_value();
        let parsed = EntityTag::parse(value.as_bytes()).unwrap();
        assert_eq!(parsed, tag.entity_tag());
        assert!(!parsed.is_weak());
        assert_eq!(parsed.opaque().len(), 32);
    }

    #[test]
    fn weak_tag_has_the_weak_indicator() {
        let tag = tag_of(b"hello", true);
        assert!(tag.to_header_value().as_bytes().starts_with(b"W/\""));
        let value = tag.to_header_value();
        let parsed = EntityTag::parse(value.as_bytes()).unwrap();
        assert_eq!(parsed, tag.entity_tag());
        assert!(parsed.is_weak());
    }

    /// A body that is always ready with the given chunks, announcing how
    /// much is left when `.1` is.
    struct Ready(VecDeque<Bytes>, Option<u64>);

    impl Body for Ready {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let chunk = self.0.pop_front();
            if let (Some(left), Some(chunk)) = (&mut self.1, &chunk) {
                *left -= chunk.len() as u64;
            }
            Poll::Ready(chunk.map(|chunk| Ok(Frame::data(chunk))))
        }

        fn size_hint(&self) -> SizeHint {
            self.1.map_or_else(SizeHint::new, SizeHint::with_exact)
        }
    }

    #[test]
    fn tag_is_the_hash_of_the_bytes_however_they_are_chunked() {
        let data: Bytes = (0..400_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let key = [0x5a; 32];
        for total in [
            0,
            1,
            1000,
            1024,
            1025,
            MIN_SEGMENT - 1,
            MIN_SEGMENT,
            MIN_SEGMENT + 1,
            100_000,
            400_000,
        ] {
            for (piece, keyed, announced) in
                [1, 7, 512, 1024, 4096, MIN_SEGMENT, 70_000, MAX_SEGMENT + 3]
                    .into_iter()
                    .flat_map(|piece| {
                        [
                            (piece, false, false),
                            (piece, true, false),
                            (piece, false, true),
                        ]
                    })
            {
                let key = keyed.then(|| Arc::new(key));
                let bytes = data.slice(..total);
                let chunks = (0..total)
                    .step_by(piece)
                    .map(|at| bytes.slice(at..(at + piece).min(total)))
                    .collect();
                let mut buffer = Box::pin(Buffer::new(
                    Ready(chunks, announced.then_some(total as u64)),
                    key.clone(),
                ));
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let filled = buffer.as_mut().poll_fill(&mut cx, usize::MAX);
                assert_eq!(filled, Poll::Ready(Filled::Complete));
                assert_eq!(buffer.len(), total as u64);
                let expected = match key {
                    None => tag_of(&bytes, false),
                    Some(ref key) => Tag::new(hash_prefix(&blake3::keyed_hash(key, &bytes)), false),
                };
                assert_eq!(
                    buffer.tag(false).to_header_value(),
                    expected.to_header_value(),
                    "{total} bytes in pieces of {piece}, keyed: {keyed}, announced: {announced}"
                );
                assert_eq!(buffer.size_hint().exact(), Some(total as u64));
                let mut sent = Vec::new();
                while let Poll::Ready(Some(frame)) = buffer.as_mut().poll_frame(&mut cx) {
                    sent.extend_from_slice(&frame.unwrap().into_data().unwrap());
                }
                assert_eq!(sent, bytes, "{total} bytes in pieces of {piece}");
                assert!(buffer.is_end_stream());
            }
        }
    }

    #[test]
    fn past_the_coalescing_limit_the_tag_and_bytes_are_unchanged() {
        let total = COALESCE_LIMIT + 700_000;
        let data: Bytes = (0..total).map(|i| (i * 7 + i / 13) as u8).collect();
        for piece in [5000, MIN_SEGMENT, MIN_SEGMENT + 1, 3 * MAX_SEGMENT] {
            let chunks = (0..total)
                .step_by(piece)
                .map(|at| data.slice(at..(at + piece).min(total)))
                .collect();
            let mut buffer = Box::pin(Buffer::new(Ready(chunks, None), None));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let filled = buffer.as_mut().poll_fill(&mut cx, usize::MAX);
            assert_eq!(filled, Poll::Ready(Filled::Complete));
            assert_eq!(
                buffer.tag(false).to_header_value(),
                tag_of(&data, false).to_header_value(),
                "pieces of {piece}"
            );
            let mut sent = Vec::new();
            let mut frames = 0;
            while let Poll::Ready(Some(frame)) = buffer.as_mut().poll_frame(&mut cx) {
                sent.extend_from_slice(&frame.unwrap().into_data().unwrap());
                frames += 1;
            }
            assert_eq!(sent, data, "pieces of {piece}");
            // Short frames are sent as segments of at least 16 KiB.
            assert!(frames <= total / MIN_SEGMENT + 2, "{frames} frames");
        }
    }

    #[test]
    fn tag_of_known_input_is_stable() {
        // BLAKE3("") from the reference test vectors.
        assert_eq!(
            tag_of(b"", false).to_header_value(),
            "\"af1349b9f5f9a1a6a0404dea36dcc949\""
        );
    }
}
