//! Where the body is buffered and hashed.
//!
//! A [`Buffer`] reads the inner body frame by frame. A body that says how
//! long it is at most (`Content-Length`, a file's length: its size hint),
//! within [`COALESCE_LIMIT`], is copied into one segment of exactly that
//! length unless it comes as one frame, and is sent as one frame. Otherwise
//! frames at least as long as the next segment are kept as they are
//! (reference-counted [`Bytes`], not copied); shorter ones are copied, as
//! they arrive, into a segment (16 KiB for the first, growing with the body
//! to 128 KiB; 16 KiB again past the first 2 MiB), and dropped once copied;
//! and the last piece of a body longer than 128 KiB is made at least that
//! long (see [`Pieces::even_out_tail`]). So a body streamed in many small
//! frames is held as a few large pieces: BLAKE3 hashes each piece in one
//! `update` call at its full SIMD width, and the response is sent as a few
//! large frames, which costs the server far less than many small ones and
//! never ends in a short write that Nagle's algorithm would hold. Memory
//! stays at most the body plus one segment.
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
    task::{ready, Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::mint::{self, MintedTag, TagKey};

/// The smallest segment: frames this long or longer are not copied (unless
/// they fit in an open segment, as in a body that announced its length),
/// and every piece but the last is at least this long, which keeps every BLAKE3
/// `update` at its full SIMD width (16 of its 1 KiB chunks side by side).
pub(crate) const MIN_SEGMENT: usize = 16 * 1024;

/// The largest segment. Segments grow with the body (each as long as the
/// body so far) up to this: hyper writes a 128 KiB frame at close to the cost
/// of one large buffer, and a larger one would only add to what a response
/// may hold beyond its body. It is also the shortest last frame of a body
/// longer than it ([`Pieces::even_out_tail`]): two full TCP segments even on
/// loopback, whose segments are 64 KiB.
pub(crate) const MAX_SEGMENT: usize = 128 * 1024;

/// How much of a body is coalesced into growing segments, and the longest
/// body that is copied into one segment when it announces its length. Past
/// it, segments
/// stay at [`MIN_SEGMENT`]: frames that long pass as they are, and only
/// shorter ones are copied (for the hash's SIMD width). Copying pays while
/// the body is still in the CPU's caches: `bash benches/load.sh` measured
/// 1 MiB streamed in 16 KiB frames at +74 µs over plain with segments of up
/// to 128 KiB, but 16 MiB at +5,115 µs with them against +4,366 µs without
/// (the copy then streams through memory and fresh pages, and costs more
/// than the frames it saves hyper); with this limit, +4,406 µs.
pub(crate) const COALESCE_LIMIT: usize = 2 * 1024 * 1024;

/// How long the next segment is once `read` bytes of the body have been
/// read: as long as the body so far, between [`MIN_SEGMENT`] and `largest`,
/// and [`MIN_SEGMENT`] past [`COALESCE_LIMIT`].
fn segment_len(read: u64, largest: usize) -> usize {
    match usize::try_from(read).unwrap_or(usize::MAX) {
        read if read > COALESCE_LIMIT => MIN_SEGMENT,
        read => read.clamp(MIN_SEGMENT, largest),
    }
}

/// What the bytes read are likely for, which decides how much copying pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A response to send: frames are coalesced into large segments, which
    /// cost the server far less to send.
    Send,
    /// Most likely only to hash: a `HEAD` (whose body is dropped) or a
    /// request with `If-None-Match` (most often answered 304). Only what
    /// BLAKE3 needs is copied: frames shorter than [`MIN_SEGMENT`] into
    /// segments of that length; longer ones are kept as they are. If the
    /// body is sent after all, it goes out in those pieces.
    Hash,
}

pin_project! {
    /// The inner body together with what has been read from it.
    pub(crate) struct Buffer<B: Body> {
        #[pin]
        body: B,
        pieces: Pieces,
        trailers: Option<HeaderMap>,
        state: State<B::Error>,
    }
}

/// What has been read of the body, and its hash so far.
struct Pieces {
    // The pieces completed, in order.
    chunks: Chunks,
    // A short frame not copied yet: a body of one short frame is never
    // copied. At most one of `held` and `open` holds bytes.
    held: Option<Bytes>,
    // The segment being filled from short frames; its bytes come after
    // `chunks`.
    open: BytesMut,
    // Bytes read: in `chunks`, `held` and `open`.
    len: u64,
    // Created once the body has two pieces: a body held in one piece is
    // hashed with one call at the end, without the hasher's 1.9 KB of
    // state.
    hasher: Option<Box<blake3::Hasher>>,
    // Cleared once the body outgrew the cap: what is read then is only
    // kept, to be sent on untagged.
    hashing: bool,
    key: Option<TagKey>,
    // The body's length, when it announced one (an exact size hint or
    // `Content-Length`) within [`COALESCE_LIMIT`]: the rest of the body is
    // then copied into one segment as long as what is left.
    announced: Option<usize>,
    // The longest segment: [`MAX_SEGMENT`], or [`MIN_SEGMENT`] for bytes
    // read only to be hashed.
    largest: usize,
    // Whether the tail was evened out: done once, when sending starts (a
    // body that is only hashed is never sent).
    evened: bool,
}

impl Pieces {
    /// Adds a completed piece, hashing it if the hasher runs, or starting
    /// the hasher once there are two pieces.
    fn add(&mut self, piece: Bytes) {
        match &mut self.hasher {
            Some(hasher) => {
                hasher.update(&piece);
            }
            None if self.hashing && !self.chunks.is_empty() => {
                let mut started = Box::new(mint::hasher(self.key.as_deref()));
                for chunk in self.chunks.iter() {
                    started.update(chunk);
                }
                started.update(&piece);
                self.hasher = Some(started);
            }
            None => {}
        }
        self.chunks.push(piece);
    }

    /// Completes the open segment or the held frame, if any.
    fn close(&mut self) {
        if let Some(held) = self.held.take() {
            self.add(held);
        } else if !self.open.is_empty() {
            let open = std::mem::take(&mut self.open).freeze();
            self.add(open);
        }
    }

    /// Takes a data frame, given the length of the segment it would start.
    fn push(&mut self, data: Bytes, segment: usize) {
        let room = self.open.capacity() - self.open.len();
        if self.announced.is_some() && !self.open.is_empty() && data.len() <= room {
            // The open segment was sized for the rest of an announced body:
            // it takes every frame, so that the body stays one piece.
            self.copy(&data, segment);
        } else if data.len() >= segment {
            // Long enough to stand as a piece (or all the body has left):
            // kept, not copied.
            self.close();
            self.add(data);
        } else if self.open.is_empty() && self.held.is_none() {
            // Copied only if another short frame follows.
            self.held = Some(data);
        } else {
            self.copy(&data, segment);
        }
    }

    /// The segment a copy would start once `frame` more bytes were read, for
    /// a body that announced its length: as long as all that is not in a
    /// completed piece yet (the held frame, this frame and the rest), so
    /// that the body is copied into one segment and sent as one frame.
    /// `None` past what was announced, and for a frame of [`MAX_SEGMENT`] or
    /// more with no segment open.
    fn announced_segment(&self, frame: usize) -> Option<usize> {
        let announced = self.announced?;
        if frame >= MAX_SEGMENT && self.open.is_empty() {
            // Sent as it is, not copied.
            return None;
        }
        let held = self.held.as_ref().map_or(0, Bytes::len);
        // Bytes read before `frame`, held and open ones included.
        let before = usize::try_from(self.len).ok()? - frame;
        let completed = before - held - self.open.len();
        announced
            .checked_sub(completed)
            .filter(|&rest| rest >= held + frame)
    }

    /// Copies a short frame into segments of `segment` bytes, completing
    /// each one that fills up.
    fn copy(&mut self, mut rest: &[u8], segment: usize) {
        if let Some(held) = self.held.take() {
            self.open.reserve(segment.max(held.len()));
            self.open.extend_from_slice(&held);
        }
        while !rest.is_empty() {
            if self.open.capacity() == 0 {
                self.open.reserve(segment.max(rest.len().min(MAX_SEGMENT)));
            }
            let room = self.open.capacity() - self.open.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.open.extend_from_slice(now);
            rest = later;
            if self.open.len() == self.open.capacity() {
                self.close();
            }
        }
    }

    /// Once the whole body is read and hashed, when it starts to be sent: if
    /// it is longer than
    /// [`MAX_SEGMENT`] and its last piece is shorter, the bytes just before
    /// that piece are moved into it, so that the body is never sent with a
    /// short last frame.
    ///
    /// Why: hyper writes a response in several flushes once it holds more
    /// than its write buffer's limit (about 400 KiB by default), and each
    /// flush but the last leaves a part-filled TCP segment. With Nagle's
    /// algorithm on (`axum::serve` and hyper leave it on), a short last
    /// flush is then held until the client acknowledges that segment, and a
    /// client that delays its acknowledgements (most do, by up to 40 ms)
    /// stalls every such response: a 1 MiB body streamed in 8 KiB frames
    /// was served at 0.2× the requests per second of the same body sent
    /// in one frame (`benches/frames.sh`, loopback, whose segments are
    /// 64 KiB). A last frame of at least two segments makes the client
    /// acknowledge at once. The cost is one copy of less than
    /// [`MAX_SEGMENT`] + [`MIN_SEGMENT`] bytes: into the last piece's own
    /// buffer when it is ours and has room (then rotated into place), else
    /// into a new one, and the last piece is dropped; memory stays at most
    /// the body plus about one segment.
    fn even_out_tail(&mut self) {
        if self.len <= MAX_SEGMENT as u64 {
            return;
        }
        let Some(last) = self.chunks.pop_back_if(|last| last.len() < MAX_SEGMENT) else {
            return;
        };
        // Every byte is hashed already: only how the bytes are framed
        // changes from here on.
        debug_assert!(self.hasher.is_some() || !self.hashing);
        // The pieces, from the end, whose bytes move: the first of them in
        // part, unless what would stay of it is shorter than a segment.
        let mut parts = Vec::new();
        let mut needed = MAX_SEGMENT - last.len();
        while needed > 0 {
            let mut piece = self.chunks.pop_back().expect("the body is longer");
            if piece.len() >= needed + MIN_SEGMENT {
                parts.push(piece.split_off(piece.len() - needed));
                self.chunks.push(piece);
                break;
            }
            needed = needed.saturating_sub(piece.len());
            parts.push(piece);
            if self.chunks.is_empty() {
                break;
            }
        }
        let moved: usize = parts.iter().map(Bytes::len).sum();
        let tail = match last.try_into_mut() {
            // Our own segment (or a frame no one else holds) with room for
            // the moved bytes: appended, and rotated to the front.
            Ok(mut tail) if tail.capacity() - tail.len() >= moved => {
                let len = tail.len();
                for part in parts.iter().rev() {
                    tail.extend_from_slice(part);
                }
                tail.rotate_left(len);
                tail
            }
            last => {
                let last = last.map_or_else(|shared| shared, BytesMut::freeze);
                let mut tail = BytesMut::with_capacity(moved + last.len());
                for part in parts.iter().rev() {
                    tail.extend_from_slice(part);
                }
                tail.extend_from_slice(&last);
                tail
            }
        };
        self.chunks.push(tail.freeze());
    }

    /// Keeps everything read, and `data`, to send it, but stops hashing:
    /// the response goes out untagged.
    fn overflow(&mut self, data: Bytes) {
        self.hashing = false;
        self.hasher = None;
        self.close();
        self.chunks.push(data);
    }

    /// The hash of the complete body.
    fn hash(&self) -> blake3::Hash {
        debug_assert!(
            self.open.is_empty() && self.held.is_none(),
            "called once reading completed"
        );
        match &self.hasher {
            Some(hasher) => hasher.finalize(),
            // One piece, or none.
            None => mint::hash(
                self.chunks.first.as_deref().unwrap_or_default(),
                self.key.as_deref(),
            ),
        }
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

    fn pop_back(&mut self) -> Option<Bytes> {
        self.rest.pop_back().or_else(|| self.first.take())
    }

    /// Removes the last piece if there are several and it satisfies `f`.
    fn pop_back_if(&mut self, f: impl FnOnce(&Bytes) -> bool) -> Option<Bytes> {
        match self.rest.back() {
            Some(last) if f(last) => self.rest.pop_back(),
            _ => None,
        }
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

impl<B: Body<Data = Bytes>> Buffer<B> {
    /// Buffers `body` for `purpose`; its tag will be keyed with `key`, if
    /// any. `announced` is its length if the response announced one in
    /// `Content-Length`; the body's exact size hint counts as well.
    pub(crate) fn new(
        body: B,
        key: Option<TagKey>,
        announced: Option<u64>,
        purpose: Purpose,
    ) -> Self {
        let announced = body
            .size_hint()
            .exact()
            .or(announced)
            .and_then(|len| usize::try_from(len).ok())
            .filter(|&len| len <= COALESCE_LIMIT && purpose == Purpose::Send);
        let largest = match purpose {
            Purpose::Send => MAX_SEGMENT,
            Purpose::Hash => MIN_SEGMENT,
        };
        Self {
            body,
            pieces: Pieces {
                chunks: Chunks::default(),
                held: None,
                open: BytesMut::new(),
                len: 0,
                hasher: None,
                hashing: true,
                key,
                announced,
                largest,
                evened: false,
            },
            trailers: None,
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
        let pieces = this.pieces;
        loop {
            let frame = match ready!(this.body.as_mut().poll_frame(cx)) {
                None => {
                    pieces.close();
                    *this.state = State::Complete;
                    return Poll::Ready(Filled::Complete);
                }
                Some(Err(error)) => {
                    pieces.close();
                    *this.state = State::Failed(Some(error));
                    return Poll::Ready(Filled::Failed);
                }
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
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
            pieces.len += data.len() as u64;
            if pieces.len > cap as u64 {
                pieces.overflow(data);
                *this.state = State::Overflowed;
                return Poll::Ready(Filled::Overflowed);
            }
            let segment = match pieces.announced_segment(data.len()) {
                Some(segment) => segment,
                None => {
                    let mut segment = segment_len(pieces.len, pieces.largest);
                    // The body's hint can only shorten the segment (to what
                    // is left at most): asked only when that matters.
                    if data.len() < segment {
                        if let Some(left) = this.body.size_hint().upper() {
                            let left = usize::try_from(left).unwrap_or(usize::MAX);
                            segment = segment.min(data.len().saturating_add(left));
                        }
                    }
                    segment
                }
            };
            pieces.push(data, segment);
        }
    }

    /// The number of body bytes read.
    pub(crate) fn len(&self) -> u64 {
        self.pieces.len
    }

    /// Whether trailers were read.
    pub(crate) fn has_trailers(&self) -> bool {
        self.trailers.is_some()
    }

    /// The entity tag of the complete body (see [`mint`]).
    pub(crate) fn tag(&self, weak: bool) -> MintedTag {
        MintedTag::new(&self.pieces.hash(), weak)
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
        if !this.pieces.evened && matches!(this.state, State::Complete) {
            this.pieces.evened = true;
            this.pieces.even_out_tail();
        }
        if let Some(chunk) = this.pieces.chunks.pop() {
            this.pieces.len -= chunk.len() as u64;
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
        if !self.pieces.chunks.is_empty() {
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
            State::Complete if self.trailers.is_none() => SizeHint::with_exact(self.pieces.len),
            State::Overflowed => {
                let inner = self.body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(self.pieces.len));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(self.pieces.len));
                }
                hint
            }
            _ => {
                let mut hint = SizeHint::new();
                hint.set_lower(self.pieces.len);
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn tag_of(bytes: &[u8], weak: bool) -> MintedTag {
        mint::tag_of(bytes, None, weak)
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
                *left = left.saturating_sub(chunk.len() as u64);
            }
            Poll::Ready(chunk.map(|chunk| Ok(Frame::data(chunk))))
        }

        fn size_hint(&self) -> SizeHint {
            self.1.map_or_else(SizeHint::new, SizeHint::with_exact)
        }
    }

    /// How a test body announces its length.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Announce {
        Not,
        /// An exact size hint.
        Hint,
        /// `Content-Length`, right or off by the given bytes.
        Header(i64),
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
            for (piece, keyed, announce, purpose) in
                [1, 7, 512, 1024, 4096, MIN_SEGMENT, 70_000, MAX_SEGMENT + 3]
                    .into_iter()
                    .flat_map(|piece| {
                        use Purpose::{Hash, Send};
                        [
                            (piece, false, Announce::Not, Send),
                            (piece, true, Announce::Not, Send),
                            (piece, false, Announce::Hint, Send),
                            (piece, false, Announce::Header(0), Send),
                            // A body that sends more, or less, than its
                            // response announced.
                            (piece, false, Announce::Header(-1000), Send),
                            (piece, false, Announce::Header(1000), Send),
                            (piece, false, Announce::Not, Hash),
                            (piece, true, Announce::Hint, Hash),
                        ]
                    })
            {
                let key = keyed.then(|| Arc::new(key));
                let bytes = data.slice(..total);
                let chunks = (0..total)
                    .step_by(piece)
                    .map(|at| bytes.slice(at..(at + piece).min(total)))
                    .collect();
                let hint = (announce == Announce::Hint).then_some(total as u64);
                let header = match announce {
                    Announce::Header(off) => u64::try_from(total as i64 + off).ok(),
                    _ => None,
                };
                let mut buffer = Box::pin(Buffer::new(
                    Ready(chunks, hint),
                    key.clone(),
                    header,
                    purpose,
                ));
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let filled = buffer.as_mut().poll_fill(&mut cx, usize::MAX);
                assert_eq!(filled, Poll::Ready(Filled::Complete));
                assert_eq!(buffer.len(), total as u64);
                let expected = match key {
                    None => tag_of(&bytes, false),
                    Some(ref key) => mint::tag_of(&bytes, Some(key), false),
                };
                assert_eq!(
                    buffer.tag(false).to_header_value(),
                    expected.to_header_value(),
                    "{total} bytes in pieces of {piece}, keyed: {keyed}, {announce:?}"
                );
                assert_eq!(buffer.size_hint().exact(), Some(total as u64));
                let mut sent = Vec::new();
                let mut frames = Vec::new();
                while let Poll::Ready(Some(frame)) = buffer.as_mut().poll_frame(&mut cx) {
                    let frame = frame.unwrap().into_data().unwrap();
                    frames.push(frame.len());
                    sent.extend_from_slice(&frame);
                }
                assert_eq!(
                    sent, bytes,
                    "{total} bytes in pieces of {piece}, {announce:?}"
                );
                assert!(buffer.is_end_stream());
                let shape = format!("{total} bytes in pieces of {piece}, {announce:?}: {frames:?}");
                if total > MAX_SEGMENT {
                    // Never a short last frame after others.
                    assert!(*frames.last().unwrap() >= MAX_SEGMENT, "{shape}");
                }
                let announced = matches!(announce, Announce::Hint | Announce::Header(0));
                if announced && piece < MAX_SEGMENT && purpose == Purpose::Send {
                    // A body that says how long it is goes out as one frame.
                    assert!(frames.len() <= 1, "{shape}");
                }
            }
        }
    }

    #[test]
    fn the_last_frame_is_made_long_from_fresh_or_shared_frames() {
        const K: usize = 1024;
        for sizes in [
            &[125 * K, K, K, 2 * K][..],
            &[256 * K, 256 * K, 256 * K, 256 * K, 10 * K],
            &[64 * K; 17],
            &[200 * K, K],
            &[130 * K, 20 * K, 3],
            &[MAX_SEGMENT, MAX_SEGMENT - 1],
        ] {
            let total: usize = sizes.iter().sum();
            let data: Vec<u8> = (0..total).map(|i| (i * 13 + i / 251) as u8).collect();
            for fresh in [true, false] {
                let shared = Bytes::from(data.clone());
                let mut at = 0;
                let chunks = sizes
                    .iter()
                    .map(|&size| {
                        let range = at..at + size;
                        at += size;
                        // Fresh frames are the layer's alone once read.
                        if fresh {
                            Bytes::from(data[range].to_vec())
                        } else {
                            shared.slice(range)
                        }
                    })
                    .collect();
                let mut buffer =
                    Box::pin(Buffer::new(Ready(chunks, None), None, None, Purpose::Send));
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let filled = buffer.as_mut().poll_fill(&mut cx, usize::MAX);
                assert_eq!(filled, Poll::Ready(Filled::Complete));
                assert_eq!(
                    buffer.tag(false).to_header_value(),
                    tag_of(&data, false).to_header_value()
                );
                let mut sent = Vec::new();
                let mut last = 0;
                while let Poll::Ready(Some(frame)) = buffer.as_mut().poll_frame(&mut cx) {
                    let frame = frame.unwrap().into_data().unwrap();
                    last = frame.len();
                    sent.extend_from_slice(&frame);
                }
                assert!(sent == data, "{sizes:?}, fresh: {fresh}");
                assert!(
                    last >= MAX_SEGMENT,
                    "{sizes:?}, fresh: {fresh}: last {last}"
                );
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
            let mut buffer = Box::pin(Buffer::new(Ready(chunks, None), None, None, Purpose::Send));
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
            let mut last = 0;
            while let Poll::Ready(Some(frame)) = buffer.as_mut().poll_frame(&mut cx) {
                let frame = frame.unwrap().into_data().unwrap();
                last = frame.len();
                sent.extend_from_slice(&frame);
                frames += 1;
            }
            assert!(last >= MAX_SEGMENT, "pieces of {piece}: last frame {last}");
            assert_eq!(sent, data, "pieces of {piece}");
            // Short frames are sent as segments of at least 16 KiB.
            assert!(frames <= total / MIN_SEGMENT + 2, "{frames} frames");
        }
    }
}
