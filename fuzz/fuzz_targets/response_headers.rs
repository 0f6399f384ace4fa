//! libFuzzer entry for the `response_headers` target; the property is in `cella_fuzz::response_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cella_fuzz::response_headers::check(data));
