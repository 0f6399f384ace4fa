//! libFuzzer entry for the `head` target; the property is in `cella_fuzz::head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cella_fuzz::head::check(data));
