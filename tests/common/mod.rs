//! Real servers on 127.0.0.1:0 and real clients for the integration tests.
//!
//! The layer's tests use every item (their binary reports one that none
//! uses); the other binaries that include this module use some, and allow
//! dead code in it.
#![allow(unreachable_pub)]

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Generous bound for anything a test waits on.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `service` with hyper (HTTP/1.1 and HTTP/2 prior knowledge) on a
/// fresh loopback port until the test's runtime ends.
pub async fn serve_hyper<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Serves an axum `Router` with `axum::serve`.
pub async fn serve_axum(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Serves any service over axum requests with `axum::serve` (the layer
/// wrapped around a whole `Router`).
pub async fn serve_axum_service<S>(service: S) -> SocketAddr
where
    S: tower::Service<axum::extract::Request, Error = Infallible> + Clone + Send + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
    S::Response: 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // axum::serve wants axum's own response type.
    let service = tower::ServiceExt::map_response(service, |response: S::Response| {
        axum::response::IntoResponse::into_response(response)
    });
    let make = axum::ServiceExt::<axum::extract::Request>::into_make_service(service);
    tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
    addr
}

/// What a client received.
#[derive(Debug)]
pub struct Received {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }
}

/// Sends one request over a new HTTP/1.1 connection with hyper's client and
/// reads the whole response, trailers included.
pub async fn send<B>(addr: SocketAddr, request: Request<B>) -> Result<Received, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    receive(send_head(addr, request).await?).await
}

/// Reads a whole response, trailers included.
pub async fn receive(response: Response<Incoming>) -> Result<Received, BoxError> {
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(TIMEOUT, body.collect()).await??;
    let trailers = collected.trailers().cloned();
    Ok(Received {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Sends one request and returns as soon as the response head arrives.
pub async fn send_head<B>(
    addr: SocketAddr,
    mut request: Request<B>,
) -> Result<Response<Incoming>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    if !request.headers().contains_key("host") {
        request
            .headers_mut()
            .insert("host", addr.to_string().parse().unwrap());
    }
    Ok(tokio::time::timeout(TIMEOUT, sender.send_request(request)).await??)
}

/// Opens an HTTP/2 connection (prior knowledge) whose requests carry bodies
/// of type `B`; the connection is driven by a task of its own.
pub async fn connect_h2<B>(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<B>, BoxError>
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one request over HTTP/2 (prior knowledge).
pub async fn send_h2(
    addr: SocketAddr,
    request: Request<Empty<Bytes>>,
) -> Result<Received, BoxError> {
    let mut sender = connect_h2(addr).await?;
    receive(tokio::time::timeout(TIMEOUT, sender.send_request(request)).await??).await
}

/// Builds a request.
pub fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Empty::new()).unwrap()
}

pub async fn get(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> Received {
    send(addr, request("GET", uri, headers)).await.unwrap()
}

pub async fn head(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> Received {
    send(addr, request("HEAD", uri, headers)).await.unwrap()
}

/// Sends an HTTP/1.1 request with `connection: close` over a new connection
/// and reads until the server closes it: the bytes exactly as they crossed
/// the wire.
pub async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: x\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The header block of a raw response, lowercased, one field per line.
pub fn raw_head(response: &str) -> Vec<String> {
    let head = response.split("\r\n\r\n").next().unwrap();
    head.lines()
        .skip(1)
        .map(|l| l.to_ascii_lowercase())
        .collect()
}

/// The tag this crate gives `bytes`.
pub fn expected_tag(bytes: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(bytes).to_hex()[..32])
}

/// A body that plays a script of frames, then optionally fails or hangs.
/// Its size hint and the moment it is dropped are under the test's control.
pub struct ScriptBody {
    frames: VecDeque<Frame<Bytes>>,
    end: End,
    size_hint: SizeHint,
    dropped: Option<Arc<AtomicUsize>>,
}

pub enum End {
    /// End of stream.
    Done,
    /// Yield an error.
    Fail,
    /// Never end (like an idle event stream).
    Hang,
}

impl ScriptBody {
    pub fn new(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            frames: chunks.into_iter().map(Frame::data).collect(),
            end: End::Done,
            size_hint: SizeHint::new(),
            dropped: None,
        }
    }

    /// `bytes` cut into chunks of `chunk` bytes.
    pub fn chunked(bytes: &[u8], chunk: usize) -> Self {
        Self::new(
            bytes
                .chunks(chunk.max(1))
                .map(Bytes::copy_from_slice)
                .collect::<Vec<_>>(),
        )
    }

    pub fn trailers(mut self, trailers: HeaderMap) -> Self {
        self.frames.push_back(Frame::trailers(trailers));
        self
    }

    pub fn end(mut self, end: End) -> Self {
        self.end = end;
        self
    }

    pub fn size_hint(mut self, hint: SizeHint) -> Self {
        self.size_hint = hint;
        self
    }

    pub fn count_drop(mut self, counter: Arc<AtomicUsize>) -> Self {
        self.dropped = Some(counter);
        self
    }
}

impl Drop for ScriptBody {
    fn drop(&mut self) {
        if let Some(counter) = &self.dropped {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug)]
pub struct ScriptError;

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body failed on purpose")
    }
}

impl std::error::Error for ScriptError {}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = ScriptError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ScriptError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.end {
            End::Done => Poll::Ready(None),
            End::Fail => {
                self.end = End::Done;
                Poll::Ready(Some(Err(ScriptError)))
            }
            End::Hang => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

/// A service that answers every request with the response `make` builds,
/// counting how many requests reached it and which method they had.
pub fn service_fn<F, Fut, B>(
    make: F,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<B>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<B>, Infallible>> + Send,
> + Clone
       + Send
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
{
    tower::service_fn(move |req| {
        let fut = make(req);
        async move { Ok::<_, Infallible>(fut.await) }
    })
}

/// Whether a raw header block (from [`raw_head`]) has a field named `name`.
pub fn has_field(head: &[String], name: &str) -> bool {
    head.iter().any(|line| line.split(':').next() == Some(name))
}

/// Every counter and gauge a `metrics-util` debugging recorder holds, by
/// name and labels (`name{k=v,…}`, labels sorted), as numbers; histograms
/// by name with `_count`, their number of samples.
#[allow(dead_code)] // Used by the binaries that test metrics.
pub fn metric_values(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> std::collections::BTreeMap<String, f64> {
    use metrics_util::debugging::DebugValue;
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let labels = labels.join(",");
            match value {
                DebugValue::Counter(n) => (format!("{}{{{labels}}}", key.name()), n as f64),
                DebugValue::Gauge(g) => (format!("{}{{{labels}}}", key.name()), g.into_inner()),
                DebugValue::Histogram(samples) => (
                    format!("{}_count{{{labels}}}", key.name()),
                    samples.len() as f64,
                ),
            }
        })
        .collect()
}
