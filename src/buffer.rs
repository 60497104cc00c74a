//! Where the body is buffered and hashed.
//!
//! A [`Buffer`] reads the inner body frame by frame and keeps the chunks
//! themselves (reference-counted [`Bytes`], not copied; only a body under
//! 16 KiB in all that came in several chunks is joined into one). Chunks are
//! hashed as they arrive once the body is large enough to keep BLAKE3 busy,
//! and in one call at the end otherwise. Once reading stops, for whatever
//! reason, the same `Buffer` becomes the body that is sent: first the chunks
//! already read, then whatever is left (trailers, the rest of the inner body,
//! or the inner body's error). Nothing read is ever lost.

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

/// A BLAKE3 key: tags are then `blake3::keyed_hash(key, body)`. Shared
/// rather than copied into every request: a pointer costs the unkeyed
/// common case less than 33 bytes carried through every future.
pub(crate) type Key = Arc<[u8; 32]>;

pin_project! {
    /// The inner body together with what has been read from it.
    pub(crate) struct Buffer<B: Body> {
        #[pin]
        body: B,
        chunks: Chunks,
        // Bytes in `chunks`.
        len: u64,
        trailers: Option<HeaderMap>,
        // Created once the body has several chunks and `STAGE` bytes: a body
        // of one chunk (the usual `Full<Bytes>` or `Body::from(bytes)`) or a
        // small one (joined into one chunk) is hashed with one call at the
        // end, without the hasher's 1.9 KB of state.
        hasher: Option<Box<Hasher>>,
        key: Option<Key>,
        state: State<B::Error>,
    }
}

/// The chunks read, in order. The first lives outside the deque so that a
/// body of one chunk costs no allocation to hold.
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

    fn count(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.first.iter().chain(&self.rest)
    }

    /// Replaces the chunks by one holding all their `len` bytes.
    fn join(&mut self, len: u64) {
        let mut joined = BytesMut::with_capacity(len as usize);
        for chunk in self.iter() {
            joined.extend_from_slice(chunk);
        }
        *self = Self {
            first: Some(joined.freeze()),
            rest: VecDeque::new(),
        };
    }

    /// The chunk pushed last; only called after a push.
    fn last(&self) -> &Bytes {
        self.rest
            .back()
            .or(self.first.as_ref())
            .expect("called after a push")
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

impl<B: Body<Data = Bytes>> Buffer<B> {
    /// Buffers `body`; its tag will be keyed with `key`, if any.
    pub(crate) fn new(body: B, key: Option<Key>) -> Self {
        Self {
            body,
            chunks: Chunks::default(),
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
        loop {
            let frame = match ready!(this.body.as_mut().poll_frame(cx)) {
                None => {
                    match this.hasher.as_mut() {
                        Some(hasher) => hasher.flush(),
                        // Less than `STAGE` bytes in several chunks: join them.
                        // Copying a few KiB once costs less than hashing them
                        // piecemeal and passing each frame down the stack.
                        None if this.chunks.count() > 1 => this.chunks.join(*this.len),
                        None => {}
                    }
                    *this.state = State::Complete;
                    return Poll::Ready(Filled::Complete);
                }
                Some(Err(error)) => {
                    *this.state = State::Failed(Some(error));
                    return Poll::Ready(Filled::Failed);
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    *this.len += data.len() as u64;
                    if *this.len > cap as u64 {
                        // Keep the chunk to send it, but stop hashing: the
                        // response goes out untagged.
                        this.chunks.push(data);
                        *this.state = State::Overflowed;
                        return Poll::Ready(Filled::Overflowed);
                    }
                    this.chunks.push(data);
                    match this.hasher.as_mut() {
                        Some(hasher) => hasher.update(this.chunks.last()),
                        // Small bodies are hashed in one call at the end; the
                        // hasher starts once there is enough to keep it busy.
                        None if *this.len >= STAGE as u64 && this.chunks.count() > 1 => {
                            let mut hasher = Box::new(Hasher::new(this.key.as_deref()));
                            for chunk in this.chunks.iter() {
                                hasher.update(chunk);
                            }
                            *this.hasher = Some(hasher);
                        }
                        None => {}
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        match this.trailers {
                            Some(existing) => existing.extend(trailers),
                            None => *this.trailers = Some(trailers),
                        }
                    }
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
        let hash = match (&self.hasher, &self.key) {
            (Some(hasher), _) => hasher.finalize(),
            // One chunk (a small body of several was joined into one).
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

/// How many bytes [`Hasher`] gives BLAKE3 at a time, at least.
const STAGE: usize = 16 * 1024;

/// BLAKE3 over chunks as they arrive, fed in pieces of at least 16 KiB.
///
/// BLAKE3 hashes up to 16 of its 1 KiB chunks side by side (AVX-512), but
/// only within one `update` call: frames of 4 KiB hashed one by one run at
/// less than half its speed. So frames shorter than 16 KiB are copied into a
/// 16 KiB staging area (allocated only when such a frame comes) and hashed
/// from there. This copy is for the hash input only; the frames that are sent
/// are never copied. (Bodies smaller than 16 KiB in all are joined into one
/// chunk instead and hashed in one call.)
struct Hasher {
    hasher: blake3::Hasher,
    stage: Vec<u8>,
}

impl Hasher {
    fn new(key: Option<&[u8; 32]>) -> Self {
        Self {
            hasher: key.map_or_else(blake3::Hasher::new, blake3::Hasher::new_keyed),
            stage: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        loop {
            if self.stage.is_empty() && data.len() >= STAGE {
                self.hasher.update(data);
                return;
            }
            if data.is_empty() {
                return;
            }
            if self.stage.capacity() == 0 {
                self.stage.reserve_exact(STAGE);
            }
            let take = (STAGE - self.stage.len()).min(data.len());
            self.stage.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.stage.len() == STAGE {
                self.hasher.update(&self.stage);
                self.stage.clear();
            }
        }
    }

    /// Hashes what is staged; call once the input is complete.
    fn flush(&mut self) {
        self.hasher.update(&self.stage);
        self.stage.clear();
    }

    fn finalize(&self) -> blake3::Hash {
        debug_assert!(self.stage.is_empty(), "flushed before finalizing");
        self.hasher.finalize()
    }
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

    #[test]
    fn staged_hashing_equals_one_shot_hashing() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for pieces in [
            vec![1usize],
            vec![100, 5000, 1],
            vec![STAGE - 1, 2, STAGE, 3 * STAGE + 5],
            vec![4096],
            vec![70_000, 17],
        ] {
            let mut hasher = Hasher::new(None);
            let mut at = 0;
            for &len in pieces.iter().cycle() {
                if at == data.len() {
                    break;
                }
                let end = (at + len).min(data.len());
                hasher.update(&data[at..end]);
                at = end;
            }
            hasher.flush();
            assert_eq!(hasher.finalize(), blake3::hash(&data), "{pieces:?}");
        }
    }

    /// A body that is always ready with the given chunks.
    struct Ready(VecDeque<Bytes>);

    impl Body for Ready {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    #[test]
    fn tag_is_the_hash_of_the_bytes_however_they_are_chunked() {
        let data: Bytes = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let key = [0x5a; 32];
        for total in [0, 1, 1000, 1024, 1025, STAGE - 1, STAGE, STAGE + 1, 100_000] {
            for (piece, keyed) in [1, 7, 512, 1024, 4096, STAGE, 70_000]
                .into_iter()
                .flat_map(|piece| [(piece, false), (piece, true)])
            {
                let key = keyed.then(|| Arc::new(key));
                let bytes = data.slice(..total);
                let chunks = (0..total)
                    .step_by(piece)
                    .map(|at| bytes.slice(at..(at + piece).min(total)))
                    .collect();
                let mut buffer = Box::pin(Buffer::new(Ready(chunks), key.clone()));
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
                    "{total} bytes in pieces of {piece}, keyed: {keyed}"
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
    fn tag_of_known_input_is_stable() {
        // BLAKE3("") from the reference test vectors.
        assert_eq!(
            tag_of(b"", false).to_header_value(),
            "\"af1349b9f5f9a1a6a0404dea36dcc949\""
        );
    }
}
