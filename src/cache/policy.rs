//! The cache's policy, fixed when it is built: how long entries answer,
//! which request fields responses may vary on, and how requesters are told
//! apart.

use std::{sync::Arc, time::Duration};

use http::{header, request::Parts, HeaderName};

/// The function that partitions entries by requester, if the app set one.
pub(crate) type Partition = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The most request fields responses may vary on: a variant records which
/// of them its response names in a 16-bit mask.
pub(crate) const MAX_VARY_FIELDS: usize = 16;

/// What the cache stores and for how long, beyond what its store keeps.
pub(crate) struct Policy {
    pub(crate) time_to_live: Duration,
    /// At most [`MAX_VARY_FIELDS`].
    pub(crate) vary: Box<[HeaderName]>,
    pub(crate) partition: Option<Partition>,
    pub(crate) record_outcome: bool,
    /// gRPC calls invalidate their target as other writes do.
    pub(crate) grpc_invalidates: bool,
    /// The cache's name in `Cache-Status` (serialized), when the app asked
    /// for the field.
    pub(crate) cache_status: Option<Arc<str>>,
}

/// The default fields responses may vary on: the proactive-negotiation
/// fields and CORS's `Origin`.
pub(crate) fn default_vary() -> Vec<HeaderName> {
    vec![
        header::ACCEPT_ENCODING,
        header::ACCEPT,
        header::ACCEPT_LANGUAGE,
        header::ORIGIN,
    ]
}
