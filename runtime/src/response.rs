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

/// A response. `Content-Length`, `Date` and `Connection` are written by the runtime.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(Text<'a>, Text<'a>)>,
    pub(crate) body: Body<'a>,
}

impl<'a> Response<'a> {
    /// Room for this many headers is made at once (one arena allocation, no growth).
    const HEADERS_USUAL: usize = 4;

    pub fn new(status: StatusCode) -> Self {
        Response { status, headers: Vec::with_capacity(Self::HEADERS_USUAL), body: Body::Empty }
    }

    /// 200 with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<Body<'a>>) -> Self {
        Self::new(StatusCode::OK).header("content-type", "text/plain; charset=utf-8").body(body)
    }

    /// 200 with an `application/json` body.
    pub fn json(body: impl Into<Body<'a>>) -> Self {
        Self::new(StatusCode::OK).header("content-type", "application/json").body(body)
    }

    /// 200 with an `application/octet-stream` body.
    pub fn bytes(body: impl Into<Body<'a>>) -> Self {
        Self::new(StatusCode::OK).header("content-type", "application/octet-stream").body(body)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a header, sent as given. Content-Length, Transfer-Encoding and Date are the
    /// runtime's and are dropped; a name that is not a token or a value with CR/LF turns the
    /// response into a 500 (no header injection).
    pub fn header(mut self, name: impl Into<Text<'a>>, value: impl Into<Text<'a>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Body<'a>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn body_bytes(&self) -> &[u8] {
        self.body.as_bytes()
    }
}
