//! The `head` target: `parse::parse_head` over arbitrary bytes with a fixed header array, then
//! `parse::split_target` on what it returns.
//!
//! Input: the bytes a client sent, as they are.
//!
//! Properties, on every input:
//! - no panic, and every slice the parser returns (method, target, each field's name and
//!   value) lies inside the head it parsed, which lies inside the input;
//! - the head has no bare CR and no bare LF (RFC 9112 §2.2);
//! - the target's split is made of ranges inside the target, on character boundaries; the
//!   path is `*` (OPTIONS only) or starts with `/` and holds no `?` or `#`; the query is
//!   exactly what follows the target's first `?`; `split_target` gives what `parse_head` put
//!   in the head;
//! - a strict prefix of a complete head is incomplete (`Ok(None)`), never an error: a head that
//!   arrives in several reads is parsed as if it came at once;
//! - a head re-encodes (`method SP target SP HTTP/1.x CRLF`, `name: value CRLF` per field,
//!   CRLF) to bytes that parse to an equivalent head: same method, target, version, fields,
//!   split, framing, keep-alive and expectation.

use crate::show;
use cella::http::parse::{self, Head, HeadLimits, PathPart, TargetParts};
use std::mem::MaybeUninit;

/// The fixed header array: small, so that the fuzzer reaches "too many headers".
pub const HEADERS_COUNT_MAX: usize = 16;

/// Small limits, so that the fuzzer reaches them within libFuzzer's default 4096-byte inputs.
pub const LIMITS: HeadLimits = HeadLimits { line_bytes_max: 512, head_bytes_max: 2048 };

/// A parsed head with its fields, owned, for comparing two parses.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    len: usize,
    method: String,
    target: String,
    parts: TargetParts,
    minor_version: u8,
    fields: Vec<(String, Vec<u8>)>,
    framing: parse::Framing,
    keep_alive: bool,
    expect_continue: bool,
}

/// Runs one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let mut headers = [MaybeUninit::uninit(); HEADERS_COUNT_MAX];
    let Ok(Some((head, fields))) = parse::parse_head(data, &mut headers, LIMITS) else {
        return;
    };
    let parsed = own(data, &head, fields);
    check_line_ends(&data[..head.len]);
    check_split(&head);
    check_prefix(data, head.len);

    let encoded = encode(&parsed);
    // Re-encoding may lengthen the head (`name:value` gains a space): the head limit is not
    // what this property is about. The request line is the same bytes, so its limit stays.
    let limits = HeadLimits { head_bytes_max: LIMITS.head_bytes_max.max(encoded.len()), ..LIMITS };
    let mut headers = [MaybeUninit::uninit(); HEADERS_COUNT_MAX];
    let again = match parse::parse_head(&encoded, &mut headers, limits) {
        Ok(Some((head, fields))) => own(&encoded, &head, fields),
        other => panic!(
            "a parsed head does not parse again once re-encoded ({:?})\n  input: {}\n  encoded: {}",
            other.map(|parsed| parsed.map(|(head, _)| head)),
            show(&data[..head.len]),
            show(&encoded)
        ),
    };
    let expected = Parsed { len: encoded.len(), ..parsed };
    assert!(
        again == expected,
        "a re-encoded head parses differently\n  input: {}\n  encoded: {}\n  first: {expected:?}\n  again: {again:?}",
        show(&data[..head.len]),
        show(&encoded),
    );
}

/// Copies a parse out of its buffer, checking on the way that every slice lies inside the
/// head, and the head inside the buffer.
fn own(buf: &[u8], head: &Head<'_>, fields: &[httparse::Header<'_>]) -> Parsed {
    assert!(head.len <= buf.len(), "a head longer than its input");
    assert_eq!(head.headers_count, fields.len(), "headers_count is not the fields' count");
    assert!(fields.len() <= HEADERS_COUNT_MAX, "more fields than the array holds");
    let inside = |what: &str, slice: &[u8]| {
        let start = slice.as_ptr() as usize;
        let head_start = buf.as_ptr() as usize;
        assert!(
            start >= head_start && start + slice.len() <= head_start + head.len,
            "{what} lies outside the head: {}",
            show(&buf[..head.len])
        );
    };
    inside("the method", head.method.as_bytes());
    inside("the target", head.target.as_bytes());
    for field in fields {
        inside("a field name", field.name.as_bytes());
        inside("a field value", field.value);
    }
    assert!(head.minor_version <= 1, "a version other than 1.0 or 1.1 was accepted");
    Parsed {
        len: head.len,
        method: head.method.to_string(),
        target: head.target.to_string(),
        parts: head.parts,
        minor_version: head.minor_version,
        fields: fields.iter().map(|f| (f.name.to_string(), f.value.to_vec())).collect(),
        framing: head.framing,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
    }
}

/// Every CR is followed by LF and every LF preceded by CR.
fn check_line_ends(head: &[u8]) {
    for (index, &byte) in head.iter().enumerate() {
        let bare_cr = byte == b'\r' && head.get(index + 1) != Some(&b'\n');
        let bare_lf = byte == b'\n' && (index == 0 || head[index - 1] != b'\r');
        assert!(!bare_cr && !bare_lf, "a head with a bare CR or LF was accepted: {}", show(head));
    }
}

fn check_split(head: &Head<'_>) {
    let target = head.target;
    let parts = parse::split_target(head.method, target)
        .expect("split_target accepts the target parse_head accepted");
    assert_eq!(parts, head.parts, "parse_head and split_target split {target:?} differently");
    let range = |what: &str, (start, end): (usize, usize)| -> &str {
        target
            .get(start..end)
            .unwrap_or_else(|| panic!("{what} {start}..{end} is not inside {target:?}"))
    };
    let path = match parts.path {
        PathPart::Range(start, end) => range("the path", (start, end)),
        PathPart::Root => "/",
        PathPart::Asterisk => {
            assert!(
                head.method == "OPTIONS" && target == "*",
                "`*` for {} {target:?}",
                head.method
            );
            "*"
        }
    };
    assert_eq!(parts.path(target), path, "TargetParts::path disagrees with its range");
    if path != "*" {
        assert!(path.starts_with('/'), "the path {path:?} of {target:?} does not start with /");
    }
    assert!(
        !path.contains(['?', '#']),
        "the path {path:?} of {target:?} holds a query or fragment"
    );
    let query = parts.query.map(|range_| range("the query", range_));
    assert_eq!(parts.query(target), query, "TargetParts::query disagrees with its range");
    let expected_query = target.split_once('?').map(|(_, query)| query);
    assert_eq!(query, expected_query, "the query of {target:?}");
    if let Some(authority) = parts.authority {
        let authority = range("the authority", authority);
        assert!(!authority.contains(['/', '?', '#', '@']), "authority {authority:?} of {target:?}");
    }
}

/// A strict prefix of a complete head (cut where a hash of the head says) is incomplete.
fn check_prefix(data: &[u8], len: usize) {
    let hash = data[..len]
        .iter()
        .fold(0usize, |hash, &b| hash.wrapping_mul(31).wrapping_add(usize::from(b)));
    let cut = hash % len;
    let mut headers = [MaybeUninit::uninit(); HEADERS_COUNT_MAX];
    let prefix = parse::parse_head(&data[..cut], &mut headers, LIMITS).map(|p| p.map(|(h, _)| h));
    assert!(
        matches!(prefix, Ok(None)),
        "a prefix of a complete head is not incomplete ({prefix:?}): {}",
        show(&data[..cut])
    );
}

fn encode(parsed: &Parsed) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(parsed.len + 2 * parsed.fields.len());
    bytes.extend_from_slice(parsed.method.as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(parsed.target.as_bytes());
    bytes.extend_from_slice(if parsed.minor_version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in &parsed.fields {
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}
