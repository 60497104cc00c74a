//! The `Outcome` the layer records for each response, read by an outer
//! layer, over real TCP.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tower::ServiceBuilder;
use tower_etag::{ETagLayer, Outcome, SkipETag};

/// Serves routes for every outcome behind `layer`, with an outer layer that
/// reports the outcome recorded in each response (a channel rather than a
/// header, because a failing body aborts the response before its head).
async fn start(layer: ETagLayer) -> (SocketAddr, UnboundedReceiver<Option<Outcome>>) {
    let (outcomes, received) = unbounded_channel();
    let inner = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let mut response = Response::new(ScriptBody::new([Bytes::from_static(b"hello")]));
        match request.uri().path() {
            "/missing" => *response.status_mut() = StatusCode::NOT_FOUND,
            "/created" => *response.status_mut() = StatusCode::CREATED,
            "/skip" => {
                response.extensions_mut().insert(SkipETag);
            }
            "/own" => {
                let tag = HeaderValue::from_static("\"mine\"");
                response.headers_mut().insert(header::ETAG, tag);
            }
            "/no-store" => {
                let no_store = HeaderValue::from_static("no-store");
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, no_store);
            }
            "/large" => {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(100));
                *response.body_mut() = ScriptBody::new([Bytes::from(vec![b'x'; 100])]);
            }
            "/grows" => *response.body_mut() = ScriptBody::chunked(&[b'x'; 100], 10),
            "/fails" => {
                *response.body_mut() = ScriptBody::new([Bytes::from_static(b"part")]).end(End::Fail)
            }
            _ => {}
        }
        response
    });
    let service = ServiceBuilder::new()
        .map_response(move |response: Response<_>| {
            let _ = outcomes.send(response.extensions().get::<Outcome>().copied());
            response
        })
        .layer(layer.max_body_size(64))
        .service(inner);
    (serve_hyper(service).await, received)
}

#[tokio::test]
async fn every_outcome_is_recorded() {
    let (addr, mut outcomes) = start(ETagLayer::new().record_outcome(true)).await;
    let tag = expected_tag(b"hello");
    // Method, path, request header fields, the outcome expected.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("GET", "/", &[], "Tagged"),
        ("HEAD", "/", &[], "Tagged"),
        ("GET", "/", &[("if-none-match", &tag)], "NotModified"),
        (
            "GET",
            "/",
            &[("if-match", "\"other\"")],
            "PreconditionFailed",
        ),
        ("POST", "/", &[], "Skipped(Method)"),
        ("GET", "/missing", &[], "Skipped(Status)"),
        ("GET", "/created", &[], "Skipped(Status)"),
        ("GET", "/skip", &[], "Skipped(OptedOut)"),
        ("GET", "/own", &[], "Skipped(OwnValidator)"),
        (
            "GET",
            "/own",
            &[("if-none-match", "\"mine\"")],
            "NotModified",
        ),
        (
            "GET",
            "/own",
            &[("if-match", "\"other\"")],
            "PreconditionFailed",
        ),
        ("GET", "/no-store", &[], "Skipped(Predicate)"),
        ("GET", "/large", &[], "Skipped(TooLarge)"),
        ("GET", "/grows", &[], "Skipped(TooLarge)"),
        ("GET", "/fails", &[], "Skipped(BodyError)"),
    ];
    for (method, path, headers, expected) in cases {
        // The failing body aborts the response: its result is an error.
        let result = send(addr, request(method, path, headers)).await;
        assert_eq!(result.is_ok(), *path != "/fails", "{path}");
        let outcome = outcomes.recv().await.unwrap().unwrap();
        assert_eq!(
            format!("{outcome:?}"),
            *expected,
            "{method} {path} {headers:?}"
        );
    }
}

#[tokio::test]
async fn nothing_is_recorded_unless_asked() {
    let (addr, mut outcomes) = start(ETagLayer::new()).await;
    for path in ["/", "/missing", "/grows"] {
        get(addr, path, &[]).await;
        assert_eq!(outcomes.recv().await.unwrap(), None, "{path}");
    }
}

/// With the `tracing` feature each decision is logged at debug level.
#[cfg(feature = "tracing")]
mod tracing_feature {
    use std::{
        convert::Infallible,
        sync::{Arc, Mutex},
    };

    use http::{Request, Response};
    use http_body_util::Full;
    use tower::ServiceExt;
    use tracing::{field::Visit, span, Event, Level, Metadata, Subscriber};

    use super::*;

    /// Collects the `outcome` field of every event from the crate.
    #[derive(Clone, Default)]
    struct Outcomes(Arc<Mutex<Vec<(Level, String)>>>);

    impl Subscriber for Outcomes {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target() == "tower_etag"
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            struct OutcomeField(Option<String>);
            impl Visit for OutcomeField {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "outcome" {
                        self.0 = Some(format!("{value:?}"));
                    }
                }
            }
            let mut field = OutcomeField(None);
            event.record(&mut field);
            if let Some(outcome) = field.0 {
                let level = *event.metadata().level();
                self.0.lock().unwrap().push((level, outcome));
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[tokio::test(flavor = "current_thread")]
    async fn decisions_are_logged_at_debug_level() {
        let outcomes = Outcomes::default();
        let _guard = tracing::subscriber::set_default(outcomes.clone());
        let service =
            ServiceBuilder::new()
                .layer(ETagLayer::new())
                .service_fn(|_: Request<()>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
                });
        for method in ["GET", "POST"] {
            let request = Request::builder().method(method).body(()).unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
        let logged = outcomes.0.lock().unwrap().clone();
        assert_eq!(
            logged,
            [
                (Level::DEBUG, "Tagged".to_owned()),
                (Level::DEBUG, "Skipped(Method)".to_owned()),
            ]
        );
    }
}
