//! The ETag middleware: [`ETagLayer`] builds [`ETag`] services, whose
//! [`ResponseFuture`] reads the inner response, buffers and hashes its body
//! ([`buffer`]), mints the tag ([`mint`]), evaluates the request's
//! preconditions against it (the pure functions of
//! [`protocol`](crate::protocol)) and sends a [`ResponseBody`].

mod body;
mod buffer;
mod config;
mod future;
mod layer;
mod metrics;
mod mint;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::ETagLayer;
pub use service::ETag;
