//! The response body type of the [`ETag`](crate::ETag) service.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::buffer::Buffer;

pin_project! {
    /// The response body of [`ETag`](crate::ETag).
    ///
    /// Depending on what the layer did, it is the inner body untouched, the
    /// buffered body (followed by the rest of the inner body if it outgrew the
    /// cap, or by its error if it failed), or empty (a 304, a 412, or a
    /// response to `HEAD`). Its error type is the inner body's.
    ///
    /// In an axum app it converts into axum's body like any other body:
    ///
    /// ```
    /// use axum::{body::Body, response::{IntoResponse, Response}};
    /// use tower_etag::ResponseBody;
    ///
    /// fn into_axum(response: http::Response<ResponseBody<Body>>) -> Response {
    ///     response.into_response()
    /// }
    /// ```
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Passthrough { #[pin] body: B },
        Buffered { buffer: Pin<Box<Buffer<B>>> },
        Empty { size_hint: SizeHint },
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    pub(crate) fn buffered(buffer: Pin<Box<Buffer<B>>>) -> Self {
        Self {
            kind: Kind::Buffered { buffer },
        }
    }

    /// An empty body that is the whole content: a 412's.
    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Empty {
                size_hint: SizeHint::with_exact(0),
            },
        }
    }

    /// No body, for a response whose `Content-Length`, if any, describes
    /// content it does not carry: a 304 (RFC 9110 §15.4.5) or a response to
    /// `HEAD` (§9.3.2).
    ///
    /// Its size hint is left open on purpose: servers and frameworks derive a
    /// missing `Content-Length` from an exact hint, and `Content-Length: 0`
    /// would claim that the representation is empty (RFC 9110 §8.6).
    /// `is_end_stream` still reports the end, so nothing waits for content.
    pub(crate) fn bodiless() -> Self {
        Self {
            kind: Kind::Empty {
                size_hint: SizeHint::new(),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { body } => body.poll_frame(cx),
            KindProj::Buffered { buffer } => buffer.as_mut().poll_frame(cx),
            KindProj::Empty { .. } => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Buffered { buffer } => buffer.is_end_stream(),
            Kind::Empty { .. } => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Buffered { buffer } => buffer.size_hint(),
            Kind::Empty { size_hint } => *size_hint,
        }
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Buffered { .. } => "Buffered",
            Kind::Empty { .. } => "Empty",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
