//! What an [`ETagLayer`](super::ETagLayer) and the services it builds
//! share: every option, once.

use std::fmt;

use super::{metrics::ETagMetrics, mint::TagKey};
use crate::predicate::DefaultPredicate;

/// The default buffering cap: 2 MiB, the bound axum puts on request bodies.
pub(crate) const DEFAULT_MAX_BODY_SIZE: usize = 2 * 1024 * 1024;

/// What a layer and the services it builds share: every option in
/// [`Settings`], once, and the predicate.
#[derive(Clone)]
pub(crate) struct Config<P> {
    pub(crate) settings: Settings,
    pub(crate) predicate: P,
}

/// The layer's options other than the predicate (whose type changes when it
/// is replaced). A new option is added here and nowhere else.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) max_body_size: usize,
    pub(crate) weak: bool,
    pub(crate) record_outcome: bool,
    pub(crate) key: Option<TagKey>,
    pub(crate) metrics: ETagMetrics,
}

impl Default for Config<DefaultPredicate> {
    fn default() -> Self {
        Self {
            settings: Settings {
                max_body_size: DEFAULT_MAX_BODY_SIZE,
                weak: false,
                record_outcome: false,
                key: None,
                #[cfg(feature = "metrics")]
                metrics: ETagMetrics::new("tower_etag", &[]),
                #[cfg(not(feature = "metrics"))]
                metrics: ETagMetrics,
            },
            predicate: DefaultPredicate::new(),
        }
    }
}

impl<P> Config<P> {
    /// The fields of both `Debug` outputs (the layer's and the service's).
    pub(crate) fn debug_fields(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        let settings = &self.settings;
        f.field("max_body_size", &settings.max_body_size)
            .field("weak", &settings.weak)
            .field("record_outcome", &settings.record_outcome)
            // Never the key itself.
            .field("keyed", &settings.key.is_some())
            .field("predicate", &std::any::type_name::<P>());
    }
}

impl<P> fmt::Debug for Config<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Config");
        self.debug_fields(&mut debug);
        debug.finish()
    }
}
