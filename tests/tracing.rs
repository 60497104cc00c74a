//! With the `tracing` feature each decision is logged at debug level.
//!
//! A file of its own with a single test: the subscriber is installed as the
//! global default, which no other test in this process can race with
//! (tracing caches each call site's interest process-wide).
#![cfg(feature = "tracing")]

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt};
use tower_etag::ETagLayer;
use tracing::{field::Visit, span, Event, Level, Metadata, Subscriber};

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
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
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
    tracing::subscriber::set_global_default(outcomes.clone()).unwrap();
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
