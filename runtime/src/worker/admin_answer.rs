//! What the admin listener answers (`admin.rs` serves the connections): the admin request
//! parsed into a method and a path, the short text answers and their heads, and the `/config`
//! text rendered at startup. Must not touch connections, the event loop or the pools.

use cella_shared::{Config, MemoryPlan};

use crate::http::encode::{self, FixedSink, HeadFrame, Persistence, Sink};

/// Largest admin request head (a Prometheus scrape sends about 300 bytes). Past it: 431.
pub(super) const ADMIN_REQUEST_BYTES_MAX: usize = 2048;
/// Header fields parsed in an admin request. Past it: 431.
const ADMIN_HEADERS_MAX: usize = 32;

/// The body of `/config`: every key with its effective value, then the memory plan, as
/// `cella check-config` prints them.
pub(crate) fn config_text(config: &Config, plan: &MemoryPlan) -> Box<[u8]> {
    let mut text = String::new();
    for (key, value) in config.entries() {
        text.push_str(&format!("{key} = {value}\n"));
    }
    text.push_str(&format!("# memory plan: {plan}\n"));
    text.into_bytes().into_boxed_slice()
}

/// What an admin request asked for.
pub(super) struct AdminRequest<'r> {
    /// GET or HEAD; `None`: another method (405).
    pub(super) head_method: Option<bool>,
    pub(super) path: &'r str,
}

/// The parsed request, `Ok(None)` while it is incomplete, or the status of the error.
pub(super) fn parse_admin_request(bytes: &[u8]) -> Result<Option<AdminRequest<'_>>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; ADMIN_HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if bytes.len() < ADMIN_REQUEST_BYTES_MAX => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    }
    let head_method = match request.method {
        Some("GET") => Some(false),
        Some("HEAD") => Some(true),
        _ => None,
    };
    let target = request.path.unwrap_or("/");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Some(AdminRequest { head_method, path }))
}

/// What an admin request is answered with.
#[derive(Clone, Copy)]
pub(super) enum Answer {
    /// 200 with the body rendered into the response buffer.
    Rendered { content_type: &'static [u8] },
    /// A short fixed text.
    Text(TextAnswer),
}

#[derive(Clone, Copy)]
pub(super) struct TextAnswer {
    pub(super) status: u16,
    pub(super) text: &'static [u8],
}

pub(super) const METRICS_CONTENT_TYPE: &[u8] =
    b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n";
pub(super) const TEXT_CONTENT_TYPE: &[u8] = b"content-type: text/plain; charset=utf-8\r\n";

/// The head of a short text answer written at accept (no buffer is free).
pub(super) fn put_answer_head(
    sink: &mut FixedSink<'_>,
    answer: TextAnswer,
    date: &crate::http::date::DateCache,
) -> Result<(), encode::Full> {
    let frame = HeadFrame {
        status: answer.status,
        content_length: answer.text.len(),
        persistence: Persistence::Close,
        date,
    };
    encode::put_frame(sink, frame)?;
    sink.put(TEXT_CONTENT_TYPE)?;
    sink.put(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_requests_parse_to_a_method_and_a_path_without_its_query() {
        let parsed = parse_admin_request(b"GET /metrics?x=1 HTTP/1.1\r\nhost: a\r\n\r\n");
        let request = parsed.unwrap().unwrap();
        assert_eq!((request.head_method, request.path), (Some(false), "/metrics"));
        let parsed = parse_admin_request(b"HEAD /config HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(parsed.head_method, Some(true));
        let parsed = parse_admin_request(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(parsed.head_method, None);
        assert!(matches!(parse_admin_request(b"GET /metrics HTTP/1.1\r\nhost"), Ok(None)));
        assert!(matches!(parse_admin_request(b"GET /\x01 HTTP/1.1\r\n\r\n"), Err(400)));
        let full = [b'a'; ADMIN_REQUEST_BYTES_MAX];
        assert!(matches!(parse_admin_request(&full), Err(_)));
    }
}
