//! The HTTP semantics both layers rely on, as pure functions over `http`
//! types, table-tested on their own: no I/O, no bodies, no state.
//!
//! - [`entity_tag`]: entity tags, their comparison and lists (RFC 9110
//!   §8.8.3);
//! - [`precondition`]: the four preconditions evaluated in the order of
//!   RFC 9110 §13.2.2;
//! - [`not_modified`]: the head of a 304 or 412 made out of a 200's
//!   (RFC 9110 §15.4.5);
//! - [`directives`]: `Cache-Control` and `Pragma` directive lists
//!   (RFC 9111 §5.2).
//!
//! Range requests and `If-Range` (RFC 9110 §13.1.5, §14) belong here too,
//! as a `range` module beside `precondition`, when the layer serves them.

pub(crate) mod directives;
pub(crate) mod entity_tag;
pub(crate) mod not_modified;
pub(crate) mod precondition;
