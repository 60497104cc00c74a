//! The header parsers: arbitrary request fields and handler validators in
//! front of a small fixed body, so that the fuzzer spends its time on
//! entity-tag lists and dates.
#![no_main]

#[path = "support.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|input: support::Input| {
    let mut input = input;
    input.chunks = vec![b"a fixed body".to_vec()];
    support::run(input)
});
