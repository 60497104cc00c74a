//! The response body of [`ValidatorCacheService`](super::ValidatorCacheService).

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`ValidatorCacheService`](super::ValidatorCacheService):
    /// the inner service's body untouched, or none for a 304 answered from
    /// the cache and for a write refused with a 503 (strict writes on a
    /// shared store).
    ///
    /// A 304's body reports its end at once but leaves its size hint open:
    /// servers derive a missing `Content-Length` from an exact hint, and
    /// `Content-Length: 0` on a 304 would claim that the representation is
    /// empty (RFC 9110 §8.6).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        NotModified,
        Empty,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn not_modified() -> Self {
        Self {
            kind: Kind::NotModified,
        }
    }

    /// No body: a 304's (see above), or an empty one for any other status.
    pub(crate) fn blank(status: http::StatusCode) -> Self {
        if status == http::StatusCode::NOT_MODIFIED {
            Self::not_modified()
        } else {
            Self { kind: Kind::Empty }
        }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::NotModified | KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::NotModified | Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::NotModified => SizeHint::default(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::NotModified => "NotModified",
            Kind::Empty => "Empty",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
