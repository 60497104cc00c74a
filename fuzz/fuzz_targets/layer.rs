//! The whole layer: arbitrary request fields, handler validators, status
//! and a chunked body that may end with trailers or an error.
#![no_main]

#[path = "support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|input: support::Input| support::run(input));
