//! Fuzz targets for cella's HTTP/1.1 parsing and encoding, as plain functions: each `check`
//! takes one input and panics when a property does not hold. The libFuzzer binaries in
//! `fuzz_targets/` call them (built with `fuzz/run.sh`, on stable Rust), and
//! `tests/replay.rs` replays the seed corpus and every saved regression through them under
//! a plain `cargo test`. docs/fuzzing.md says how to run them and what they have found.

pub mod chunked;
pub mod head;
pub mod reference;
pub mod response_headers;

/// A target's property: panics on an input that breaks it.
pub type Check = fn(&[u8]);

/// The targets, by name: the names of `fuzz_targets/*.rs` and of the corpus folders.
pub const TARGETS: [(&str, Check); 3] = [
    ("head", head::check),
    ("chunked", chunked::check),
    ("response_headers", response_headers::check),
];

/// Bytes as a quoted string with escapes, for failure messages: printable ASCII as is,
/// everything else (CR and LF included) escaped, so the exact input can be read back.
pub fn show(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 2);
    text.push('"');
    for &byte in bytes {
        text.extend(std::ascii::escape_default(byte).map(char::from));
    }
    text.push('"');
    text
}
