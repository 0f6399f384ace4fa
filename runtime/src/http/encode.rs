//! Response heads, written into any byte sink without allocating.

use super::chars::TCHAR;
use super::date::DateCache;

/// The sink is full (a fixed buffer) or its arena is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Where encoded bytes go: a fixed buffer or an arena vector.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full>;
}

/// A fixed buffer being filled from `len`.
pub struct FixedSink<'b> {
    pub buf: &'b mut [u8],
    pub len: usize,
}

impl Sink for FixedSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let end = self.len.checked_add(bytes.len()).ok_or(Full)?;
        self.buf.get_mut(self.len..end).ok_or(Full)?.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

impl Sink for cella_arena::ArenaVec<'_, u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        self.try_extend_from_slice(bytes).map_err(|_| Full)
    }
}

/// What the connection does after this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// `Connection: close`; the connection ends after the response.
    Close,
    /// HTTP/1.1 default: nothing to say.
    KeepAlive,
    /// HTTP/1.0 client that asked for keep-alive: say `Connection: keep-alive`.
    KeepAliveHttp10,
}

/// The framing part of a head, which the runtime (never the handler) decides.
#[derive(Clone, Copy, Debug)]
pub struct HeadFrame<'d> {
    pub status: u16,
    /// Sent only when [`BodyRule::content_length`] says so.
    pub content_length: usize,
    pub persistence: Persistence,
    pub date: &'d DateCache,
}

/// What a response may carry, from its status and the request's method (RFC 9110 §6.4.1,
/// §8.6, §9.3.2, §15.3.5, §15.4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRule {
    pub content_length: bool,
    pub body: bool,
}

impl BodyRule {
    pub fn of(status: u16, head_request: bool) -> BodyRule {
        match status {
            // 1xx and 204 have no content and say nothing of its length; a 304's length
            // would have to be the selected representation's, which we do not know.
            100..=199 | 204 | 304 => BodyRule { content_length: false, body: false },
            // HEAD: the length a GET would get, no bytes.
            _ if head_request => BodyRule { content_length: true, body: false },
            _ => BodyRule { content_length: true, body: true },
        }
    }
}

/// Writes `value` in decimal, without allocating.
pub fn put_decimal(sink: &mut impl Sink, mut value: u64) -> Result<(), Full> {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    sink.put(&digits[start..])
}

/// The status lines sent most, ready-made.
fn common_status_line(status: u16) -> Option<&'static [u8]> {
    Some(match status {
        200 => b"HTTP/1.1 200 OK\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        _ => return None,
    })
}

/// Writes the status line and the runtime's headers (Date, Content-Length, Connection).
pub fn put_frame(sink: &mut impl Sink, frame: HeadFrame<'_>) -> Result<(), Full> {
    if let Some(line) = common_status_line(frame.status) {
        sink.put(line)?;
    } else {
        let reason = http::StatusCode::from_u16(frame.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("Unknown");
        sink.put(b"HTTP/1.1 ")?;
        put_decimal(sink, u64::from(frame.status))?;
        sink.put(b" ")?;
        sink.put(reason.as_bytes())?;
        sink.put(b"\r\n")?;
    }
    sink.put(b"date: ")?;
    sink.put(frame.date.bytes())?;
    if BodyRule::of(frame.status, false).content_length {
        sink.put(b"\r\ncontent-length: ")?;
        put_decimal(sink, frame.content_length as u64)?;
    }
    sink.put(match frame.persistence {
        Persistence::Close => b"\r\nconnection: close\r\n",
        Persistence::KeepAlive => b"\r\n",
        Persistence::KeepAliveHttp10 => b"\r\nconnection: keep-alive\r\n",
    })
}

/// Whether a handler's header may be sent as given: a token name and a value that is a valid
/// field value (no control bytes but tab, no leading or trailing whitespace).
pub fn header_allowed(name: &str, value: &[u8]) -> bool {
    // Folds, not `all`: without the early exit the loops vectorise (every response's headers
    // pass here).
    let token = !name.is_empty() && name.bytes().fold(true, |ok, b| ok & TCHAR[usize::from(b)]);
    // A field value (RFC 9110 §5.5): visible bytes, obs-text, spaces and tabs inside, no
    // other control byte (a strict client rejects the whole response for one) and no
    // whitespace at either end (it would not read back the same).
    let clean = value.iter().fold(true, |ok, &b| ok & (b == b'\t' || (b >= 0x20 && b != 0x7f)))
        && !matches!(value.first(), Some(b' ' | b'\t'))
        && !matches!(value.last(), Some(b' ' | b'\t'));
    token && clean
}

/// Headers the runtime writes itself; a handler's copies are dropped (a handler's
/// `connection: close` is honoured by closing, and said once, by the runtime).
pub fn header_owned_by_runtime(name: &str) -> bool {
    ["content-length", "transfer-encoding", "date", "connection"]
        .iter()
        .any(|owned| name.eq_ignore_ascii_case(owned))
}

/// Writes one header line.
pub fn put_header(sink: &mut impl Sink, name: &str, value: &[u8]) -> Result<(), Full> {
    sink.put(name.as_bytes())?;
    sink.put(b": ")?;
    sink.put(value)?;
    sink.put(b"\r\n")
}

/// An error response to encode: the status and message come from the error table, the rest
/// from the request it answers.
#[derive(Clone, Copy, Debug)]
pub struct ErrorReply<'m> {
    pub status: u16,
    pub message: &'m str,
    pub persistence: Persistence,
    pub retry_after_s: Option<u64>,
    /// The request was HEAD: the head only.
    pub head_request: bool,
}

/// Writes a complete error response: head and a one-line plain-text body (none for HEAD).
pub fn put_error(
    sink: &mut impl Sink,
    reply: ErrorReply<'_>,
    date: &DateCache,
) -> Result<(), Full> {
    let ErrorReply { status, message, persistence, retry_after_s, head_request } = reply;
    let frame = HeadFrame { status, content_length: message.len() + 1, persistence, date };
    put_frame(sink, frame)?;
    sink.put(b"content-type: text/plain; charset=utf-8\r\n")?;
    if let Some(seconds) = retry_after_s {
        sink.put(b"retry-after: ")?;
        put_decimal(sink, seconds)?;
        sink.put(b"\r\n")?;
    }
    sink.put(b"\r\n")?;
    if !BodyRule::of(status, head_request).body {
        return Ok(());
    }
    sink.put(message.as_bytes())?;
    sink.put(b"\n")
}

/// A short plain-text answer the runtime gives by itself (the probes): the status, the body,
/// and what the request it answers decides.
#[derive(Clone, Copy, Debug)]
pub struct TextReply<'m> {
    pub status: u16,
    pub text: &'m [u8],
    pub persistence: Persistence,
    /// The request was HEAD: the head only (with the length a GET would get).
    pub head_request: bool,
}

/// Writes a complete plain-text response: head, then the text (none for HEAD).
pub fn put_text(sink: &mut impl Sink, reply: TextReply<'_>, date: &DateCache) -> Result<(), Full> {
    let TextReply { status, text, persistence, head_request } = reply;
    put_frame(sink, HeadFrame { status, content_length: text.len(), persistence, date })?;
    sink.put(b"content-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\n\r\n")?;
    if BodyRule::of(status, head_request).body {
        sink.put(text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_reply_is_framed_and_a_head_request_gets_no_body() {
        let date = DateCache::default();
        let mut buf = [0u8; 256];
        let mut sink = FixedSink { buf: &mut buf, len: 0 };
        let reply = TextReply {
            status: 200,
            text: b"ok\n",
            persistence: Persistence::Close,
            head_request: false,
        };
        put_text(&mut sink, reply, &date).unwrap();
        let text = std::str::from_utf8(&sink.buf[..sink.len]).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{text}");
        assert!(text.contains("\r\ncontent-length: 3\r\nconnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
        let mut sink = FixedSink { buf: &mut buf, len: 0 };
        put_text(&mut sink, TextReply { head_request: true, ..reply }, &date).unwrap();
        let text = std::str::from_utf8(&sink.buf[..sink.len]).unwrap();
        assert!(text.contains("\r\ncontent-length: 3\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn error_response_is_complete_and_framed() {
        let date = DateCache::default();
        let mut buf = [0u8; 256];
        let mut sink = FixedSink { buf: &mut buf, len: 0 };
        let reply = ErrorReply {
            status: 503,
            message: "busy",
            persistence: Persistence::KeepAlive,
            retry_after_s: Some(1),
            head_request: false,
        };
        put_error(&mut sink, reply, &date).unwrap();
        let text = std::str::from_utf8(&sink.buf[..sink.len]).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\ndate: "));
        assert!(text.contains("\r\ncontent-length: 5\r\n"));
        assert!(text.contains("\r\nretry-after: 1\r\n"));
        assert!(text.ends_with("\r\n\r\nbusy\n"));
    }

    #[test]
    fn a_full_sink_fails_instead_of_truncating_silently() {
        let date = DateCache::default();
        let mut buf = [0u8; 16];
        let mut sink = FixedSink { buf: &mut buf, len: 0 };
        let reply = ErrorReply {
            status: 500,
            message: "x",
            persistence: Persistence::Close,
            retry_after_s: None,
            head_request: false,
        };
        assert_eq!(put_error(&mut sink, reply, &date), Err(Full));
    }

    #[test]
    fn bodiless_statuses_and_head_requests_carry_no_body() {
        assert_eq!(BodyRule::of(204, false), BodyRule { content_length: false, body: false });
        assert_eq!(BodyRule::of(304, false), BodyRule { content_length: false, body: false });
        assert_eq!(BodyRule::of(101, false), BodyRule { content_length: false, body: false });
        assert_eq!(BodyRule::of(500, true), BodyRule { content_length: true, body: false });
        assert_eq!(BodyRule::of(200, false), BodyRule { content_length: true, body: true });
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(header_allowed("x-a", b"b"));
        assert!(!header_allowed("x-a", b"b\r\nset-cookie: 1"));
        assert!(!header_allowed("x-a", b"a\x01b") && !header_allowed("x-a", b"a\x7fb"));
        assert!(!header_allowed("x-a", b" v") && !header_allowed("x-a", b"v\t"));
        assert!(header_allowed("x-a", b"a b\tc \xe9") && header_allowed("x-a", b""));
        assert!(!header_allowed("x a", b"b"));
        assert!(!header_allowed("", b"b"));
    }
}
