//! Fuzz target: see `spec/tests/support/decoders.rs` for what it checks.
#![no_main]

#[path = "../../spec/tests/support/decoders.rs"]
mod decoders;

libfuzzer_sys::fuzz_target!(|data: &[u8]| decoders::auth_headers(data));
