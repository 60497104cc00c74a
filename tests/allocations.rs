//! Memory, counted by a global allocator: the layer never copies body bytes,
//! holds at most the body (and never more than the cap) per response,
//! streams a 1 GiB body through in bounded memory, and frees everything when
//! a request is cancelled at any point.
//!
//! The counters are per thread and every request is driven on the test's own
//! thread, so tests running in parallel do not disturb each other.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_etag::ETagLayer;

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn on_alloc(size: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + size));
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + size as isize);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

fn on_dealloc(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - size as isize));
}

// The counting allocator needs `unsafe` to implement `GlobalAlloc`; it only
// forwards to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_dealloc(layout.size());
        on_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated, and the peak of live bytes above the starting point,
/// while `f` runs on this thread.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let start_allocated = ALLOCATED.with(Cell::get);
    let start_live = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start_live));
    let out = f();
    let allocated = ALLOCATED.with(Cell::get) - start_allocated;
    let peak = PEAK.with(Cell::get) - start_live;
    (out, allocated, peak.max(0) as usize)
}

const MIB: usize = 1024 * 1024;

/// A body of prepared chunks (no allocation when polled), or of `count`
/// freshly allocated chunks of `size` bytes (memory the layer would hold).
struct Chunks {
    ready: VecDeque<Bytes>,
    fresh: Option<(usize, usize)>,
    /// Then never end, instead of ending.
    hang: bool,
    /// The `Content-Length` the response announces, if any.
    announced: Option<u64>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let hang = self.hang;
        match &mut self.fresh {
            Some((count, size)) if *count > 0 => {
                *count -= 1;
                let chunk = Bytes::from(vec![0x5a; *size]);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            _ if hang => Poll::Pending,
            _ => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (self.fresh, self.ready.len()) {
            (None, 1) => SizeHint::with_exact(self.ready[0].len() as u64),
            _ => SizeHint::new(),
        }
    }
}

/// Runs one GET through the layer on this thread and drains the response;
/// returns the ETag and the number of body bytes received.
fn round_trip(layer: ETagLayer, body: impl FnOnce() -> Chunks) -> (Option<String>, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut body = Some(body());
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |_req: Request<()>| {
                let body = body.take().expect("one request");
                let announced = body.announced;
                let mut response = Response::new(body);
                if let Some(len) = announced {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, len.into());
                }
                async move { Ok::<_, Infallible>(response) }
            }));
    runtime.block_on(async move {
        let response = service.oneshot(Request::new(())).await.unwrap();
        let tag = response
            .headers()
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap().to_owned());
        let mut body = response.into_body();
        let mut received = 0;
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().into_data().unwrap().len();
        }
        (tag, received)
    })
}

fn content(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn prepared(bytes: &Bytes, chunk: usize) -> Chunks {
    Chunks {
        ready: (0..bytes.len())
            .step_by(chunk)
            .map(|at| bytes.slice(at..(at + chunk).min(bytes.len())))
            .collect(),
        fresh: None,
        hang: false,
        announced: None,
    }
}

/// What the same request costs without the layer, as a baseline for the
/// runtime's and the harness's own allocations.
fn baseline(body: impl FnOnce() -> Chunks) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut body = Some(body());
    let (_, allocated, _) = measure(|| {
        runtime.block_on(async move {
            let service = service_fn(move |_req: Request<()>| {
                let response = Response::new(body.take().expect("one request"));
                async move { Ok::<_, Infallible>(response) }
            });
            let response = service.oneshot(Request::new(())).await.unwrap();
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                drop(frame.unwrap());
            }
        })
    });
    allocated
}

/// The longest segment the layer copies short frames into (128 KiB).
const SEGMENT: usize = 128 * 1024;

#[test]
fn large_frames_are_not_copied_and_short_ones_at_most_once() {
    let bytes = content(MIB);
    for (chunk, name, copied) in [
        (MIB, "single chunk", 0),
        (256 * 1024, "4 chunks of 256 KiB", 0),
        (16 * 1024, "64 chunks of 16 KiB", MIB),
        (1024, "1,024 chunks of 1 KiB", MIB),
    ] {
        let ((tag, received), allocated, _) =
            measure(|| round_trip(ETagLayer::new(), || prepared(&bytes, chunk)));
        assert!(tag.is_some(), "{name}: tagged");
        assert_eq!(received, MIB);
        let without = baseline(|| prepared(&bytes, chunk));
        let added = allocated.saturating_sub(without);
        println!("{name}: {added} bytes allocated by the layer for a 1 MiB response");
        // The layer's own allocations: the buffer, the piece list, the hasher
        // state for bodies of several pieces, the header map and two header
        // values; and, for frames shorter than a segment, the segments they
        // are copied into (the body once, and the unused end of the last).
        let bound = copied + if copied > 0 { SEGMENT } else { 0 } + 16 * 1024;
        assert!(added < bound, "{name}: {added} bytes allocated");
    }
}

#[test]
fn a_tagged_response_holds_no_more_than_its_body() {
    // Fresh chunks: what the layer holds while buffering is real memory.
    let ((tag, received), _, peak) = measure(|| {
        round_trip(ETagLayer::new(), || Chunks {
            ready: VecDeque::new(),
            fresh: Some((64, 16 * 1024)),
            hang: false,
            announced: None,
        })
    });
    assert!(tag.is_some());
    assert_eq!(received, MIB);
    println!("peak live bytes for a 1 MiB tagged response: {peak}");
    // The body, plus at most one segment (the frame being copied and the
    // unused end of the last segment), plus bookkeeping.
    assert!(peak <= MIB + SEGMENT + 16 * 1024, "peak {peak}");
}

#[test]
fn a_body_of_announced_length_is_held_once() {
    // Fresh 16 KiB frames of a body whose `Content-Length` is announced:
    // copied into one segment of that length as they come, each dropped once
    // copied.
    let ((tag, received), _, peak) = measure(|| {
        round_trip(ETagLayer::new(), || Chunks {
            ready: VecDeque::new(),
            fresh: Some((64, 16 * 1024)),
            hang: false,
            announced: Some(MIB as u64),
        })
    });
    assert!(tag.is_some());
    assert_eq!(received, MIB);
    println!("peak live bytes for a 1 MiB announced response: {peak}");
    // The body, then (while the segment takes the first two) the first
    // frame and the second, and bookkeeping.
    assert!(peak <= MIB + 2 * 16 * 1024 + 16 * 1024, "peak {peak}");
}

#[test]
fn a_gibibyte_streams_through_in_bounded_memory() {
    let cap = 2 * MIB;
    let chunk = 64 * 1024;
    let ((tag, received), _, peak) = measure(|| {
        round_trip(ETagLayer::new(), || Chunks {
            ready: VecDeque::new(),
            fresh: Some((1024 * MIB / chunk, chunk)),
            hang: false,
            announced: None,
        })
    });
    assert_eq!(tag, None, "over the cap: untagged");
    assert_eq!(received, 1024 * MIB, "every byte");
    println!("peak live bytes while streaming 1 GiB: {peak}");
    // At most the cap plus the chunk that crossed it, one segment's unused
    // end, and bookkeeping.
    assert!(peak <= cap + chunk + SEGMENT + 16 * 1024, "peak {peak}");
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: std::future::Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

#[test]
fn cancelled_requests_free_everything() {
    // Everything is driven by hand on this thread, without a runtime, so
    // that every allocation and free is counted here.
    let layer = ETagLayer::new().max_body_size(256 * 1024);
    let hanging = |count, size| Chunks {
        ready: VecDeque::new(),
        fresh: Some((count, size)),
        hang: true,
        announced: None,
    };
    let ((), _, _) = measure(|| ());
    let start = LIVE.with(Cell::get);
    for _ in 0..100 {
        // 1. The handler has not answered yet.
        let service = ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(|_req: Request<()>| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Chunks {
                    ready: VecDeque::new(),
                    fresh: None,
                    hang: false,
                    announced: None,
                }))
            }));
        let mut future = std::pin::pin!(service.oneshot(Request::new(())));
        assert!(poll_once(future.as_mut()).is_pending());

        // 2. The layer is buffering: 100 KiB read in 4 KiB chunks, so the
        // chunk list and the incremental hasher exist.
        for size in [4 * 1024, 64 * 1024] {
            let service = ServiceBuilder::new()
                .layer(layer.clone())
                .service(service_fn(move |_req: Request<()>| async move {
                    Ok::<_, Infallible>(Response::new(hanging(100 * 1024 / size, size)))
                }));
            let mut future = std::pin::pin!(service.oneshot(Request::new(())));
            assert!(poll_once(future.as_mut()).is_pending());
        }

        // 3. The body outgrew the cap and is being sent when the client
        // goes away.
        let service = ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(move |_req: Request<()>| async move {
                Ok::<_, Infallible>(Response::new(hanging(10, 64 * 1024)))
            }));
        let mut future = std::pin::pin!(service.oneshot(Request::new(())));
        let Poll::Ready(Ok(response)) = poll_once(future.as_mut()) else {
            panic!("the head is ready once the body outgrows the cap");
        };
        assert!(!response.headers().contains_key(header::ETAG));
        let mut body = std::pin::pin!(response.into_body());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut sent = 0;
        while sent < 10 * 64 * 1024 {
            let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
                panic!("every byte read so far is sent");
            };
            sent += frame.into_data().unwrap().len();
        }
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    }
    let leaked = LIVE.with(Cell::get) - start;
    println!("live bytes after 400 cancelled requests: {leaked}");
    assert_eq!(leaked, 0, "bytes still allocated after cancelling");
}
