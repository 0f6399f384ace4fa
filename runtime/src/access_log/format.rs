//! Formatting one access log line into a fixed buffer: pure functions over bytes, no allocation,
//! no clock, no libc time functions (the time is civil UTC computed arithmetically, so no
//! `localtime`/`tzset`, which may lock and allocate).
//!
//! The request fields come from the raw bytes of the request head (the connection's read buffer,
//! or the slot's copy of it): the request line is the head's first line, as nginx's `$request`.
//! Every field written from the client's bytes is escaped (nginx's `\xHH` in `combined`,
//! `\u00HH` in `json`) and cut to a fixed number of output bytes, so that no request can break
//! the line format or make a line longer than [`LINE_BYTES_MAX`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use cella_shared::config::AccessLogFormat;

use crate::http::encode::{self, Full, Sink};

pub(crate) use cella_shared::limits::ACCESS_LOG_LINE_BYTES_MAX as LINE_BYTES_MAX;

/// Most output bytes of the request line (`combined`) or the path (`json`), escapes included.
pub(crate) const REQUEST_BYTES_MAX: usize = 2048;
/// Most output bytes of the method and of the protocol (`json`).
const METHOD_BYTES_MAX: usize = 64;
/// Most output bytes of the `Referer` and of the `User-Agent`.
const HEADER_BYTES_MAX: usize = 512;
/// Appended to a field cut at its maximum.
pub(crate) const TRUNCATED: &[u8] = b"[truncated]";

// The fixed parts (time, address, numbers, keys) take well under 600 bytes; the escaped fields
// at their maximum, with their marks, must leave room for them.
const _: () = assert!(
    REQUEST_BYTES_MAX + 2 * METHOD_BYTES_MAX + 2 * HEADER_BYTES_MAX + 4 * TRUNCATED.len() + 600
        <= LINE_BYTES_MAX
);

/// What one line says about one answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    /// Seconds and milliseconds since the Unix epoch, when the answer was queued.
    pub unix_time: Duration,
    pub remote: SocketAddr,
    /// The raw request head, or as much of it as arrived (empty: no request line).
    pub head: &'a [u8],
    pub status: u16,
    /// Bytes of the response body.
    pub body_bytes: u64,
    /// From the first parse of the request's bytes to its answer being queued.
    pub duration: Duration,
    /// The most the request's arena held, in bytes (0: it had no slot).
    pub arena_high_water_bytes: u64,
}

/// Writes `entry` as one line (newline included) in `format` into `out`; returns its length.
pub(crate) fn format_line(
    entry: &Entry<'_>,
    format: AccessLogFormat,
    out: &mut [u8; LINE_BYTES_MAX],
) -> usize {
    let mut line = Line { out, len: 0 };
    match format {
        AccessLogFormat::Combined => put_combined(&mut line, entry),
        AccessLogFormat::Json => put_json(&mut line, entry),
    }
    // `put` leaves the last byte free for it.
    line.out[line.len] = b'\n';
    line.len + 1
}

/// The head's request line and the two headers the formats show.
struct RequestParts<'a> {
    line: &'a [u8],
    referer: &'a [u8],
    user_agent: &'a [u8],
}

impl<'a> RequestParts<'a> {
    fn of(head: &'a [u8]) -> RequestParts<'a> {
        let mut lines = head.split(|&byte| byte == b'\n').map(trim_cr);
        let line = lines.next().unwrap_or_default();
        let (mut referer, mut user_agent): (&[u8], &[u8]) = (b"", b"");
        for field in lines.take_while(|field| !field.is_empty()) {
            let Some(colon) = field.iter().position(|&byte| byte == b':') else { continue };
            let (name, value) = (&field[..colon], trim_spaces(&field[colon + 1..]));
            if name.eq_ignore_ascii_case(b"referer") {
                referer = value;
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                user_agent = value;
            }
        }
        RequestParts { line, referer, user_agent }
    }

    /// Method, target and protocol: the first word, the last (with three words or more) and
    /// what lies between.
    fn split_line(&self) -> (&'a [u8], &'a [u8], &'a [u8]) {
        let line = self.line;
        let Some(first) = line.iter().position(|&byte| byte == b' ') else {
            return (line, b"", b"");
        };
        let rest = &line[first + 1..];
        match rest.iter().rposition(|&byte| byte == b' ') {
            Some(last) => (&line[..first], &rest[..last], &rest[last + 1..]),
            None => (&line[..first], rest, b""),
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_spaces(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// `remote - - [time] "request line" status bytes "referer" "user agent" duration high-water`
fn put_combined(line: &mut Line<'_>, entry: &Entry<'_>) {
    let parts = RequestParts::of(entry.head);
    line.put_ip(entry.remote);
    line.put(b" - - [");
    line.put_clf_time(entry.unix_time);
    line.put(b"] \"");
    line.put_field(parts.line, REQUEST_BYTES_MAX, Escape::Nginx);
    line.put(b"\" ");
    line.put_number(u64::from(entry.status));
    line.put(b" ");
    line.put_number(entry.body_bytes);
    line.put(b" \"");
    line.put_field(parts.referer, HEADER_BYTES_MAX, Escape::Nginx);
    line.put(b"\" \"");
    line.put_field(parts.user_agent, HEADER_BYTES_MAX, Escape::Nginx);
    line.put(b"\" ");
    line.put_seconds(entry.duration);
    line.put(b" ");
    line.put_number(entry.arena_high_water_bytes);
}

/// One JSON object; see docs/operations.md for the keys.
fn put_json(line: &mut Line<'_>, entry: &Entry<'_>) {
    let parts = RequestParts::of(entry.head);
    let (method, path, protocol) = parts.split_line();
    line.put(b"{\"time\":\"");
    line.put_iso_time(entry.unix_time);
    line.put(b"\",\"remote\":\"");
    line.put_ip(entry.remote);
    let strings = [
        (&b"\",\"method\":\""[..], method, METHOD_BYTES_MAX),
        (b"\",\"path\":\"", path, REQUEST_BYTES_MAX),
        (b"\",\"protocol\":\"", protocol, METHOD_BYTES_MAX),
    ];
    for (key, value, max) in strings {
        line.put(key);
        line.put_field(value, max, Escape::Json);
    }
    line.put(b"\",\"status\":");
    line.put_number(u64::from(entry.status));
    line.put(b",\"bytes\":");
    line.put_number(entry.body_bytes);
    line.put(b",\"duration_s\":");
    line.put_seconds(entry.duration);
    line.put(b",\"arena_high_water_bytes\":");
    line.put_number(entry.arena_high_water_bytes);
    line.put(b",\"referer\":\"");
    line.put_field(parts.referer, HEADER_BYTES_MAX, Escape::Json);
    line.put(b"\",\"user_agent\":\"");
    line.put_field(parts.user_agent, HEADER_BYTES_MAX, Escape::Json);
    line.put(b"\"}");
}

#[derive(Clone, Copy)]
enum Escape {
    /// nginx's access log escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
    Nginx,
    /// JSON: `\"`, `\\`, and bytes outside printable ASCII as `\u00HH`.
    Json,
}

/// A line being written; writes past the buffer are dropped (the fields' maxima keep a line
/// inside it, which the unit tests check with every field at its longest).
struct Line<'a> {
    out: &'a mut [u8; LINE_BYTES_MAX],
    len: usize,
}

/// For `encode::put_decimal`: a write past the buffer is dropped like any other, not refused.
impl Sink for Line<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        Line::put(self, bytes);
        Ok(())
    }
}

impl Line<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let room = LINE_BYTES_MAX - 1 - self.len; // The newline always fits.
        let take = bytes.len().min(room);
        self.out[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
    }

    /// `value` escaped, cut to `max` output bytes (then marked with [`TRUNCATED`]); `-` in
    /// `combined` for an empty value, as nginx writes.
    fn put_field(&mut self, value: &[u8], max: usize, escape: Escape) {
        if value.is_empty() && matches!(escape, Escape::Nginx) {
            return self.put(b"-");
        }
        let mut written = 0;
        for &byte in value {
            let mut escaped = [0u8; 6];
            let bytes = escape_byte(byte, escape, &mut escaped);
            if written + bytes.len() > max {
                return self.put(TRUNCATED);
            }
            self.put(bytes);
            written += bytes.len();
        }
    }

    fn put_number(&mut self, value: u64) {
        // Never `Full`: this sink cuts instead (see `Sink for Line`).
        let _ = encode::put_decimal(self, value);
    }

    /// Zero-padded to `width` digits.
    fn put_padded(&mut self, value: u64, width: usize) {
        for power in (1..width as u32).rev() {
            if value < 10u64.pow(power) {
                self.put(b"0");
            }
        }
        self.put_number(value);
    }

    /// Seconds with microseconds: `0.000123`.
    fn put_seconds(&mut self, duration: Duration) {
        self.put_number(duration.as_secs());
        self.put(b".");
        self.put_padded(u64::from(duration.subsec_micros()), 6);
    }

    /// The address without its port (nginx's `$remote_addr`).
    fn put_ip(&mut self, remote: SocketAddr) {
        let mut text = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        // Into a stack buffer that holds any IPv6 address: cannot fail, does not allocate.
        let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{}", remote.ip()));
        let len = cursor.position() as usize;
        self.put(&text[..len]);
    }

    /// `02/Dec/2026:12:30:05 +0000` (the common log format's time, in UTC).
    fn put_clf_time(&mut self, unix_time: Duration) {
        let (year, month, day, second_of_day) = civil(unix_time);
        self.put_padded(u64::from(day), 2);
        self.put(b"/");
        self.put(crate::http::date::MONTHS[month as usize - 1]);
        self.put(b"/");
        self.put_number(year);
        self.put(b":");
        self.put_time_of_day(second_of_day);
        self.put(b" +0000");
    }

    /// `2026-12-02T12:30:05.123Z` (RFC 3339, UTC, milliseconds).
    fn put_iso_time(&mut self, unix_time: Duration) {
        let (year, month, day, second_of_day) = civil(unix_time);
        self.put_padded(year, 4);
        self.put(b"-");
        self.put_padded(u64::from(month), 2);
        self.put(b"-");
        self.put_padded(u64::from(day), 2);
        self.put(b"T");
        self.put_time_of_day(second_of_day);
        self.put(b".");
        self.put_padded(u64::from(unix_time.subsec_millis()), 3);
        self.put(b"Z");
    }

    fn put_time_of_day(&mut self, second_of_day: u64) {
        self.put_padded(second_of_day / 3600, 2);
        self.put(b":");
        self.put_padded(second_of_day / 60 % 60, 2);
        self.put(b":");
        self.put_padded(second_of_day % 60, 2);
    }
}

/// (year, month, day, second of the day) in UTC.
fn civil(unix_time: Duration) -> (u64, u32, u32, u64) {
    let seconds = unix_time.as_secs();
    let (year, month, day) = crate::http::date::civil_from_days((seconds / 86_400) as i64);
    (year.max(0) as u64, month, day, seconds % 86_400)
}

/// `byte` as the format writes it, in `scratch`.
fn escape_byte(byte: u8, escape: Escape, scratch: &mut [u8; 6]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let printable = (0x20..0x7f).contains(&byte);
    match escape {
        _ if printable && byte != b'"' && byte != b'\\' => {
            scratch[0] = byte;
            &scratch[..1]
        }
        Escape::Json if byte == b'"' || byte == b'\\' => {
            *scratch = [b'\\', byte, 0, 0, 0, 0];
            &scratch[..2]
        }
        Escape::Json => {
            *scratch =
                [b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]];
            &scratch[..6]
        }
        Escape::Nginx => {
            *scratch =
                [b'\\', b'x', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)], 0, 0];
            &scratch[..4]
        }
    }
}

#[cfg(test)]
mod tests;
