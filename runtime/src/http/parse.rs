//! Request heads: httparse over a fixed header array, then the framing rules that must be
//! strict because leniency here is what request smuggling feeds on (RFC 9112 §6).
//! Its tests are in `parse/tests.rs`.

use super::error::ErrorKind;
pub use super::target::{split_target, valid_authority, PathPart, TargetParts};

/// The limits a head is checked against.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub line_bytes_max: usize,
    pub head_bytes_max: usize,
}

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed head: the header fields are in the array passed to [`parse_head`].
#[derive(Clone, Copy, Debug)]
pub struct Head<'b> {
    /// Bytes of the head, up to and including the empty line.
    pub len: usize,
    pub method: &'b str,
    pub target: &'b str,
    /// The target split into path and query (see [`split_target`]).
    pub parts: TargetParts,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers_count: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Parses a head from `buf`. `Ok(None)`: more bytes are needed (and may come: the limits are
/// not yet reached).
/// `headers` need not be initialised: httparse fills the first `Head::headers_count`.
/// Inlined into its one caller on the request path: returned, the head and its fields were
/// copied twice per request (~60 instructions).
#[inline(always)]
pub fn parse_head<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [std::mem::MaybeUninit<httparse::Header<'b>>],
    limits: HeadLimits,
) -> Result<Option<(Head<'b>, &'h [httparse::Header<'b>])>, ErrorKind> {
    let mut request = httparse::Request::new(&mut []);
    let parsed = request.parse_with_uninit_headers(buf, headers);
    // 414 comes first, whatever else is wrong. A complete head's request line ends right after
    // its version, so only an incomplete or rejected one needs the scan for its end.
    match (&parsed, request.path) {
        (Ok(httparse::Status::Complete(_)), Some(target)) => {
            let target_end = target.as_ptr() as usize - buf.as_ptr() as usize + target.len();
            check_line_length(request_line_end(buf, target_end), limits.line_bytes_max)?;
        }
        _ => check_request_line(buf, limits.line_bytes_max)?,
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.head_bytes_max {
                return Err(ErrorKind::HeadersTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ErrorKind::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(ErrorKind::MalformedHead),
    };
    if len > limits.head_bytes_max {
        return Err(ErrorKind::HeadersTooLarge);
    }
    // httparse accepts a bare LF as a line end; a front end that does not would frame this
    // head differently (RFC 9112 §2.2 allows rejecting it, and we must).
    check_line_ends(&buf[..len])?;
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(ErrorKind::MalformedHead);
    };
    let fields_parsed: &'h [httparse::Header<'b>] = request.headers;
    let headers_count = fields_parsed.len();
    let fields = analyse_fields(fields_parsed, minor_version)?;
    let parts = split_target(method, target)?;
    if let (Some((start, end)), Some(host)) = (parts.authority, fields.host) {
        // Absolute-form: the target's authority is the request's host (RFC 9112 §3.2.2); a
        // Host that says otherwise is an attempt to confuse whoever routes on it.
        if !target.as_bytes()[start..end].eq_ignore_ascii_case(host) {
            return Err(ErrorKind::BadHost);
        }
    }
    let head = Head {
        len,
        method,
        target,
        parts,
        minor_version,
        headers_count,
        framing: fields.framing,
        keep_alive: fields.keep_alive,
        expect_continue: fields.expect_continue,
    };
    Ok(Some((head, fields_parsed)))
}

/// 414 as soon as the request line is known to be too long, even before the head is complete.
fn check_request_line(buf: &[u8], line_bytes_max: usize) -> Result<(), ErrorKind> {
    let window = &buf[..buf.len().min(line_bytes_max + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => check_line_length(end, line_bytes_max),
        None if buf.len() > line_bytes_max + 1 => Err(ErrorKind::UriTooLong),
        None => Ok(()),
    }
}

/// The request line whose LF is at `end` (its CR, if any, before) is within the limit.
fn check_line_length(end: usize, line_bytes_max: usize) -> Result<(), ErrorKind> {
    if end > line_bytes_max + 1 {
        Err(ErrorKind::UriTooLong)
    } else {
        Ok(())
    }
}

/// Where the request line of a head httparse took whole ends (its LF), given where its target
/// ends: httparse allows one space, the 8-byte version, then CRLF or a bare LF; neither method
/// nor target holds an LF, so this is the first LF of the head. The scan is only a fallback.
fn request_line_end(buf: &[u8], target_end: usize) -> usize {
    match (buf.get(target_end + 9), buf.get(target_end + 10)) {
        (Some(b'\n'), _) => target_end + 9,
        (_, Some(b'\n')) => target_end + 10,
        _ => buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len()),
    }
}

/// Every LF ends a CRLF pair and every CR starts one: no bare LF or bare CR anywhere in the
/// head (httparse takes a bare LF as a line end).
///
/// Eight bytes at a time: the LFs of a word must sit exactly one byte after its CRs (the CR in
/// its last byte pairs with the first byte of the next word). A byte-by-byte scan cost as much
/// as the rest of the parse; two counting passes still cost ~300 instructions per small head.
fn check_line_ends(head: &[u8]) -> Result<(), ErrorKind> {
    let mut carry = 0u64;
    let mut pairs = |word: u64| {
        let (cr, lf) = (byte_mask(word, b'\r'), byte_mask(word, b'\n'));
        let paired = lf == (cr << 8) | carry;
        carry = cr >> 56;
        paired
    };
    let mut words = head.chunks_exact(8);
    let mut paired = true;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        paired &= pairs(u64::from_le_bytes(bytes));
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    paired &= pairs(u64::from_le_bytes(last));
    if paired && carry == 0 {
        Ok(())
    } else {
        Err(ErrorKind::MalformedHead)
    }
}

/// The high bit of each byte of `word` that equals `wanted`, and no other bit (exact: no
/// borrow runs from one byte into the next).
fn byte_mask(word: u64, wanted: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (0x0101_0101_0101_0101 * u64::from(wanted));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// httparse reports any version it does not take as a version error. A well-formed
/// `HTTP/DIGIT.DIGIT` other than 1.0 and 1.1 is 505; anything else is a malformed line (400).
fn version_error(buf: &[u8]) -> ErrorKind {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(line);
    let well_formed = line.iter().filter(|&&b| b == b' ').count() == 2
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit());
    if well_formed {
        ErrorKind::UnsupportedVersion
    } else {
        ErrorKind::MalformedHead
    }
}

struct Fields<'b> {
    host: Option<&'b [u8]>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

fn analyse_fields<'b>(
    headers: &[httparse::Header<'b>],
    minor_version: u8,
) -> Result<Fields<'b>, ErrorKind> {
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_final = false;
    let mut hosts = 0;
    let mut host = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for header in headers {
        let name = header.name;
        // By length first: most fields are none of these, and are passed over with one
        // comparison instead of five.
        if !matches!(name.len(), 4 | 6 | 10 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(header.value)?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(ErrorKind::BadContentLength);
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in list_items(header.value) {
                if chunked_final {
                    // Anything after `chunked` (even another `chunked`) breaks framing.
                    return Err(ErrorKind::BadTransferEncoding);
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_final = true;
                } else {
                    return Err(ErrorKind::UnsupportedTransferCoding);
                }
            }
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("host") {
            if !valid_authority(header.value) {
                return Err(ErrorKind::BadHost);
            }
            hosts += 1;
            host = Some(header.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in list_items(header.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !header.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ErrorKind::UnsupportedExpectation);
            }
            expect_continue = true;
        }
    }
    if hosts > 1 || (minor_version == 1 && hosts == 0) {
        return Err(ErrorKind::BadHost);
    }
    let framing = match (transfer_encoding, content_length) {
        (true, _) if minor_version == 0 => return Err(ErrorKind::TransferEncodingInHttp10),
        (true, Some(_)) => return Err(ErrorKind::ConflictingFraming),
        (true, None) if !chunked_final => return Err(ErrorKind::BadTransferEncoding),
        (true, None) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(length)) => Framing::Length(length),
    };
    let keep_alive = if minor_version == 1 { !close } else { keep_alive_token && !close };
    Ok(Fields { host, framing, keep_alive, expect_continue: expect_continue && minor_version == 1 })
}

/// Content-Length: digits only, optionally a list of identical values (RFC 9110 §8.6).
fn parse_content_length(value: &[u8]) -> Result<u64, ErrorKind> {
    let mut result: Option<u64> = None;
    for item in value.split(|&b| b == b',') {
        let item = trim(item);
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(ErrorKind::BadContentLength);
        }
        let length = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if result.is_some_and(|previous| previous != length) {
            return Err(ErrorKind::BadContentLength);
        }
        result = Some(length);
    }
    result.ok_or(ErrorKind::BadContentLength)
}

/// Items of a comma-separated header list, trimmed, empty ones skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|item| !item.is_empty())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests;
