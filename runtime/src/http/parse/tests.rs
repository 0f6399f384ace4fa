//! Tests of head parsing (`parse.rs`): the framing rules, the limits, the line ends and the
//! version errors.

use super::*;

const LIMITS: HeadLimits = HeadLimits { line_bytes_max: 64, head_bytes_max: 256 };

fn parse(text: &str) -> Result<Option<Head<'_>>, ErrorKind> {
    let mut headers = [std::mem::MaybeUninit::uninit(); 8];
    parse_head(text.as_bytes(), &mut headers, LIMITS)
        .map(|parsed| parsed.map(|(h, _)| Head { method: "", target: "", ..h }))
}

#[test]
fn simple_get_is_complete() {
    let head = parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap().unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert!(head.keep_alive);
    assert_eq!(head.len, 27);
}

#[test]
fn partial_head_waits() {
    assert!(parse("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
}

#[test]
fn smuggling_shapes_are_rejected() {
    let cases = [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            ErrorKind::ConflictingFraming,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            ErrorKind::BadContentLength,
        ),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", ErrorKind::BadContentLength),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3 4\r\n\r\n", ErrorKind::BadContentLength),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            ErrorKind::UnsupportedTransferCoding,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            ErrorKind::BadTransferEncoding,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            ErrorKind::TransferEncodingInHttp10,
        ),
        ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", ErrorKind::MalformedHead),
        ("GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", ErrorKind::MalformedHead),
        ("GET / HTTP/1.1\r\n\r\n", ErrorKind::BadHost),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ErrorKind::BadHost),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", ErrorKind::UnsupportedVersion),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text).err(), Some(expected), "{text:?}");
    }
}

#[test]
fn identical_content_lengths_are_one() {
    let head =
        parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n").unwrap().unwrap();
    assert_eq!(head.framing, Framing::Length(5));
}

#[test]
fn line_and_head_limits() {
    let at_limit = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 - 14));
    assert!(parse(&at_limit).unwrap().is_some());
    let past = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(64 - 13));
    assert_eq!(parse(&past).err(), Some(ErrorKind::UriTooLong));
    let big_head = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(256));
    assert_eq!(parse(&big_head).err(), Some(ErrorKind::HeadersTooLarge));
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "A: b\r\n".repeat(8));
    assert_eq!(parse(&many).err(), Some(ErrorKind::HeadersTooLarge));
}

#[test]
fn http10_closes_unless_asked() {
    assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
    assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap().keep_alive);
    assert!(
        !parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap()
            .keep_alive
    );
}

#[test]
fn line_ends_must_be_crlf() {
    assert_eq!(
        parse("GET / HTTP/1.1\r\nHost: x\nY: z\r\n\r\n").err(),
        Some(ErrorKind::MalformedHead)
    );
    assert_eq!(parse("GET / HTTP/1.1\nHost: x\r\n\r\n").err(), Some(ErrorKind::MalformedHead));
    assert_eq!(parse("GET / HTTP/1.1\r\nHost: x\r\n\n").err(), Some(ErrorKind::MalformedHead));
}

#[test]
fn every_cr_and_lf_must_pair_wherever_they_fall_in_a_word() {
    // The pairing is checked eight bytes at a time: move a bare CR or LF across the word
    // boundaries of heads of every length.
    for pad in 0..17 {
        let good = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n", "b".repeat(pad));
        assert!(check_line_ends(good.as_bytes()).is_ok(), "{good:?}");
        for at in 0..good.len() {
            for byte in [b'\r', b'\n'] {
                let mut bad = good.clone().into_bytes();
                if bad[at] == b'\r' || bad[at] == b'\n' {
                    continue;
                }
                bad[at] = byte;
                assert!(check_line_ends(&bad).is_err(), "{:?}", String::from_utf8_lossy(&bad));
            }
        }
    }
    assert!(check_line_ends(b"A\r").is_err());
    assert!(check_line_ends(b"\nA").is_err());
}

#[test]
fn only_well_formed_versions_are_505() {
    assert_eq!(parse("GET / HTTP/3.0\r\n\r\n").err(), Some(ErrorKind::UnsupportedVersion));
    assert_eq!(parse("GET / HTTP/1.1x\r\n\r\n").err(), Some(ErrorKind::MalformedHead));
    assert_eq!(parse("GET / FOO\r\n\r\n").err(), Some(ErrorKind::MalformedHead));
}
