//! Responses: the [`Response`] a handler returns, its [`Body`] and header [`Text`] (borrowed, or
//! owned in the slot's arena). Re-exported by `handler.rs` (`cella::Response`); the worker
//! validates and encodes a response (`worker/respond.rs`, `http/encode.rs`), this file only
//! builds it.

use crate::handler::StatusCode;

/// Text that is borrowed or owned (owned text lives in the arena while a handler runs).
#[derive(Debug, Clone)]
pub enum Text<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(text) => text,
            Text::Owned(text) => text,
        }
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Text::Borrowed(text)
    }
}

impl From<String> for Text<'_> {
    fn from(text: String) -> Self {
        Text::Owned(text)
    }
}

/// A response body.
#[derive(Debug, Clone, Default)]
pub enum Body<'a> {
    #[default]
    Empty,
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Body<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Borrowed(bytes) => bytes,
            Body::Owned(bytes) => bytes,
        }
    }
}

impl<'a> From<&'a [u8]> for Body<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Body::Borrowed(bytes)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Body<'a> {
    fn from(bytes: &'a [u8; N]) -> Self {
        Body::Borrowed(bytes)
    }
}

impl<'a> From<&'a str> for Body<'a> {
    fn from(text: &'a str) -> Self {
        Body::Borrowed(text.as_bytes())
    }
}

impl From<Vec<u8>> for Body<'_> {
    fn from(bytes: Vec<u8>) -> Self {
        Body::Owned(bytes)
    }
}

impl From<String> for Body<'_> {
    fn from(text: String) -> Self {
        Body::Owned(text.into_bytes())
    }
}

/// A content type a constructor sets: its value, and its header line as sent (written with one
/// copy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentType {
    pub(crate) value: &'static str,
    pub(crate) line: &'static [u8],
}

macro_rules! content_type {
    ($value:literal) => {
        ContentType { value: $value, line: concat!("content-type: ", $value, "\r\n").as_bytes() }
    };
}

/// A response. `Content-Length`, `Date` and `Connection` are written by the runtime.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    pub(crate) status: StatusCode,
    /// The content type [`Response::text`], [`Response::json`] and [`Response::bytes`] set: one
    /// of their constants, a valid field value, so the runtime writes it without checking it
    /// and without an allocation (most responses carry no other header).
    pub(crate) content_type: Option<ContentType>,
    /// The headers added with [`Response::header`] (checked when the response is sent).
    pub(crate) headers: Vec<(Text<'a>, Text<'a>)>,
    pub(crate) body: Body<'a>,
}

impl<'a> Response<'a> {
    /// Room for this many headers is made at the first [`Response::header`] (one arena
    /// allocation, no growth); a response without one allocates nothing for headers.
    const HEADERS_USUAL: usize = 4;

    pub fn new(status: StatusCode) -> Self {
        Response { status, content_type: None, headers: Vec::new(), body: Body::Empty }
    }

    /// 200 with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<Body<'a>>) -> Self {
        Self::typed(content_type!("text/plain; charset=utf-8")).body(body)
    }

    /// 200 with an `application/json` body.
    pub fn json(body: impl Into<Body<'a>>) -> Self {
        Self::typed(content_type!("application/json")).body(body)
    }

    /// 200 with an `application/octet-stream` body.
    pub fn bytes(body: impl Into<Body<'a>>) -> Self {
        Self::typed(content_type!("application/octet-stream")).body(body)
    }

    fn typed(content_type: ContentType) -> Self {
        Response { content_type: Some(content_type), ..Self::new(StatusCode::OK) }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a header, sent as given. Content-Length, Transfer-Encoding and Date are the
    /// runtime's and are dropped; a name that is not a token or a value with CR/LF turns the
    /// response into a 500 (no header injection).
    /// A `content-type` added here replaces the one [`Response::text`], [`Response::json`] or
    /// [`Response::bytes`] set.
    pub fn header(mut self, name: impl Into<Text<'a>>, value: impl Into<Text<'a>>) -> Self {
        let name = name.into();
        if name.as_str().eq_ignore_ascii_case("content-type") {
            self.content_type = None;
        }
        if self.headers.capacity() == 0 {
            self.headers.reserve_exact(Self::HEADERS_USUAL);
        }
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Body<'a>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Every header of the response as the handler built it: the content type its
    /// constructor set, then those added with [`Response::header`].
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let typed = self.content_type.map(|content_type| ("content-type", content_type.value));
        typed.into_iter().chain(self.added_headers())
    }

    /// The headers added with [`Response::header`] (what the runtime must check before sending).
    pub(crate) fn added_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn body_bytes(&self) -> &[u8] {
        self.body.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'r>(response: &'r Response<'_>) -> Vec<(&'r str, &'r str)> {
        response.headers().collect()
    }

    #[test]
    fn the_constructors_content_type_is_listed_first_and_allocates_nothing() {
        let response = Response::json("{}");
        assert_eq!(headers(&response), [("content-type", "application/json")]);
        assert_eq!(response.headers.capacity(), 0, "no header added, nothing allocated");
        let plain = Response::new(StatusCode::NO_CONTENT);
        assert_eq!(headers(&plain), []);
    }

    #[test]
    fn each_content_type_line_is_its_header_as_sent() {
        for response in [Response::text(""), Response::json(""), Response::bytes("")] {
            let typed = response.content_type.expect("set by the constructor");
            assert_eq!(typed.line, format!("content-type: {}\r\n", typed.value).as_bytes());
        }
    }

    #[test]
    fn an_added_content_type_replaces_the_constructors_and_others_keep_their_order() {
        let response = Response::text("x").header("x-a", "1").header("Content-Type", "text/html");
        assert_eq!(headers(&response), [("x-a", "1"), ("Content-Type", "text/html")]);
        let response = Response::bytes("x").header("x-a", "1");
        assert_eq!(
            headers(&response),
            [("content-type", "application/octet-stream"), ("x-a", "1")]
        );
        assert_eq!(response.added_headers().collect::<Vec<_>>(), [("x-a", "1")]);
    }
}
