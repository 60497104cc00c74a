//! The [`ETag`] service.

use std::{
    fmt,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{
    body::ResponseBody,
    config::Config,
    future::{RequestInfo, ResponseFuture},
};
use crate::{
    predicate::{DefaultPredicate, Predicate},
    protocol::precondition::Conditions,
};

/// Middleware that adds an `ETag` to responses and answers conditional `GET`
/// and `HEAD` requests with 304 Not Modified or 412 Precondition Failed.
///
/// Usually built by [`ETagLayer`](super::ETagLayer); see the [crate
/// documentation](crate).
///
/// ```
/// use std::convert::Infallible;
///
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceExt};
/// use tower_etag::ETag;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ETag::new(service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(String::from("hello")))
/// }));
/// let response = service.oneshot(Request::new(())).await.unwrap();
/// assert!(response.headers().contains_key(http::header::ETAG));
/// # }
/// ```
#[derive(Clone)]
pub struct ETag<S, P = DefaultPredicate> {
    inner: S,
    config: Config<P>,
}

impl<S> ETag<S> {
    /// Wraps `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Config::default())
    }
}

impl<S, P> ETag<S, P> {
    pub(crate) fn from_config(inner: S, config: Config<P>) -> Self {
        Self { inner, config }
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, P> fmt::Debug for ETag<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ETag")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for ETag<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    P: Predicate,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            // Other methods (POST, PUT, gRPC, ...) pass through untouched.
            // Preconditions on unsafe methods are the inner service's to
            // evaluate: this layer does not know the outcome of the write.
            _ => {
                let future = self.inner.call(req);
                return ResponseFuture::passthrough(future, &self.config.settings);
            }
        };
        // Read what the response will be evaluated against before the request
        // is handed over.
        let conditions = Conditions::from_headers(req.headers());
        if head {
            // RFC 9110 §9.3.2: a HEAD response carries the header fields a GET
            // would, ETag and Content-Length included. Those are computed
            // from the GET content, so ask the inner service for it and drop
            // it afterwards; hashing the empty body some stacks return for
            // HEAD would give every resource the same tag.
            *req.method_mut() = Method::GET;
        }
        let request = RequestInfo::new(head, conditions, self.config.clone());
        ResponseFuture::new(self.inner.call(req), request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::header;
    use http_body_util::Full;
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn new_and_layer_build_the_default_middleware() {
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
        });
        // `layer` does not use the service type; any will do to name it.
        for service in [ETag::new(inner), ETag::<()>::layer().layer(inner)] {
            let response = service.oneshot(Request::new(())).await.unwrap();
            assert!(response.headers().contains_key(header::ETAG));
        }
    }

    #[test]
    fn accessors_reach_the_inner_service() {
        let mut service = ETag::new(7_u32);
        assert_eq!(*service.get_ref(), 7);
        *service.get_mut() = 8;
        assert_eq!(service.into_inner(), 8);
    }
}
