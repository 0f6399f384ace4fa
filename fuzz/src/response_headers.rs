//! The `response_headers` target: `encode::header_allowed`, `put_frame` and `put_header` with
//! arbitrary names, values and frames, read back by httparse as a client would.
//!
//! Input: [`SETTINGS_BYTES`] bytes of settings, then the name and the value.
//! - bytes 0-1: the status, `100 + u16 (little-endian) % 900`;
//! - byte 2: the persistence (`% 3`: close, keep-alive, HTTP/1.0 keep-alive);
//! - byte 3: the capacity of a small fixed sink, `4 * byte` bytes;
//! - bytes 4-11: the content length (u64, little-endian);
//! - bytes 12-15: the date, seconds since the epoch (u32, little-endian);
//! - byte 16: the name's length in bytes; the name is those bytes (as UTF-8, lossily), the
//!   value is the rest.
//!
//! Properties:
//! - a header that RFC 9110 allows (the name a token, the value a `field-value`) is accepted;
//! - an accepted header, written after the frame, reads back with httparse as exactly the
//!   frame's own fields and then one more with exactly that name and that value: no CR/LF
//!   injection, no field lost or split, no byte changed or trimmed;
//! - the frame is a well-formed status line and fields, with the status asked for and the
//!   date given;
//! - a fixed sink either takes the whole head or answers `Full`: never a silent truncation.

use crate::show;
use cella::http::date::{format_imf_fixdate, DateCache};
use cella::http::encode::{self, FixedSink, HeadFrame, Persistence, Sink};
use std::time::{Duration, UNIX_EPOCH};

/// Bytes of settings before the name and the value.
pub const SETTINGS_BYTES: usize = 17;

/// Fields a parsed response may have: the frame's (at most 3) and the handler's.
const FIELDS_MAX: usize = 8;

/// One input, decoded.
#[derive(Debug)]
pub struct Case {
    pub status: u16,
    pub persistence: Persistence,
    pub sink_capacity_bytes: usize,
    pub content_length: usize,
    pub date_s: u32,
    pub name: String,
    pub value: Vec<u8>,
}

impl Case {
    pub fn from_input(data: &[u8]) -> Option<Case> {
        let (settings, rest) = data.split_at_checked(SETTINGS_BYTES)?;
        let name_len = usize::from(settings[16]).min(rest.len());
        let (name, value) = rest.split_at(name_len);
        let u64_at = |at: usize| u64::from_le_bytes(settings[at..at + 8].try_into().expect("8"));
        Some(Case {
            status: 100 + u16::from_le_bytes([settings[0], settings[1]]) % 900,
            persistence: match settings[2] % 3 {
                0 => Persistence::Close,
                1 => Persistence::KeepAlive,
                _ => Persistence::KeepAliveHttp10,
            },
            sink_capacity_bytes: 4 * usize::from(settings[3]),
            content_length: u64_at(4) as usize,
            date_s: u32::from_le_bytes(settings[12..16].try_into().expect("4 bytes")),
            name: String::from_utf8_lossy(name).into_owned(),
            value: value.to_vec(),
        })
    }
}

/// Runs one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let Some(case) = Case::from_input(data) else { return };
    let mut date = DateCache::default();
    date.refresh(UNIX_EPOCH + Duration::from_secs(u64::from(case.date_s)));
    let frame = HeadFrame {
        status: case.status,
        content_length: case.content_length,
        persistence: case.persistence,
        date: &date,
    };
    let allowed = encode::header_allowed(&case.name, &case.value);
    if is_token(case.name.as_bytes()) && is_field_value(&case.value) {
        assert!(allowed, "a valid header is refused: {}", describe(&case));
    }

    let frame_only = encode_head(frame, None);
    let frame_fields = parse_frame(&frame_only, &case);

    let with_header = encode_head(frame, Some((&case.name, &case.value)));
    check_small_sink(frame, &case, &with_header);
    if !allowed {
        return;
    }
    let mut fields = [httparse::EMPTY_HEADER; FIELDS_MAX];
    let mut response = httparse::Response::new(&mut fields);
    let parsed = response.parse(&with_header);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(len)) if len == with_header.len()),
        "an accepted header breaks the response ({parsed:?}): {}\n  encoded: {}",
        describe(&case),
        show(&with_header),
    );
    let read: Vec<(&str, &[u8])> = response.headers.iter().map(|f| (f.name, f.value)).collect();
    let mut expected: Vec<(&str, &[u8])> =
        frame_fields.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
    expected.push((&case.name, &case.value));
    assert!(
        read == expected,
        "an accepted header does not read back as itself: {}\n  encoded: {}\n  read: {}",
        describe(&case),
        show(&with_header),
        read.iter().map(|(n, v)| format!("{n}: {}", show(v))).collect::<Vec<_>>().join(" | "),
    );
}

/// The head as the runtime writes it: the frame, the handler's header if any, the empty line.
fn encode_head(frame: HeadFrame<'_>, header: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut sink = VecSink(Vec::new());
    encode::put_frame(&mut sink, frame).expect("a vector has room");
    if let Some((name, value)) = header {
        encode::put_header(&mut sink, name, value).expect("a vector has room");
    }
    sink.put(b"\r\n").expect("a vector has room");
    sink.0
}

/// Parses the frame alone: it must be a complete, well-formed head with the status and date
/// asked for. Returns its fields.
fn parse_frame(head: &[u8], case: &Case) -> Vec<(String, Vec<u8>)> {
    let mut fields = [httparse::EMPTY_HEADER; FIELDS_MAX];
    let mut response = httparse::Response::new(&mut fields);
    let parsed = response.parse(head);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(len)) if len == head.len()),
        "the frame alone is not a head ({parsed:?}): {}",
        show(head)
    );
    assert_eq!(response.code, Some(case.status), "status line: {}", show(head));
    assert_eq!(response.version, Some(1), "version: {}", show(head));
    let date = format_imf_fixdate(u64::from(case.date_s));
    let date_field = response.headers.iter().find(|f| f.name.eq_ignore_ascii_case("date"));
    assert_eq!(date_field.map(|f| f.value), Some(&date[..]), "date: {}", show(head));
    response.headers.iter().map(|f| (f.name.to_string(), f.value.to_vec())).collect()
}

/// A fixed sink too small for the head says `Full`; one large enough holds the same bytes.
fn check_small_sink(frame: HeadFrame<'_>, case: &Case, whole: &[u8]) {
    let mut buf = vec![0u8; case.sink_capacity_bytes];
    let mut sink = FixedSink { buf: &mut buf, len: 0 };
    let written = encode::put_frame(&mut sink, frame)
        .and_then(|()| encode::put_header(&mut sink, &case.name, &case.value))
        .and_then(|()| sink.put(b"\r\n"));
    assert!(sink.len <= case.sink_capacity_bytes, "a fixed sink wrote past its end");
    match written {
        Ok(()) => assert_eq!(&sink.buf[..sink.len], whole, "a fixed sink changed the head"),
        Err(encode::Full) => assert!(
            whole.len() > case.sink_capacity_bytes,
            "a fixed sink of {} bytes refused a head of {}",
            case.sink_capacity_bytes,
            whole.len()
        ),
    }
}

struct VecSink(Vec<u8>);

impl Sink for VecSink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), encode::Full> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// RFC 9110 `token`.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 §5.5 `field-value = *field-content`: no leading or trailing whitespace, and
/// inside only SP, HTAB, VCHAR and obs-text.
fn is_field_value(bytes: &[u8]) -> bool {
    let vchar = |b: u8| matches!(b, 0x21..=0x7E | 0x80..=0xFF);
    let inner = |b: u8| b == b' ' || b == b'\t' || vchar(b);
    match (bytes.first(), bytes.last()) {
        (None, None) => true,
        (Some(&first), Some(&last)) => {
            vchar(first) && vchar(last) && bytes.iter().all(|&b| inner(b))
        }
        _ => unreachable!("a slice has both ends or neither"),
    }
}

fn describe(case: &Case) -> String {
    format!("name {:?}, value {}", case.name, show(&case.value))
}
