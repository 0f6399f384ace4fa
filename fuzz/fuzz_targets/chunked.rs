//! libFuzzer entry for the `chunked` target; the property is in `cella_fuzz::chunked`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cella_fuzz::chunked::check(data));
