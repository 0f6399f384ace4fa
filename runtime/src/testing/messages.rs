//! What [`call`](super::call) takes and gives: a request as a client would send it, and the
//! response as the server would send it (checked and trimmed), both owned by the test.

use std::fmt;
use std::net::SocketAddr;

use super::DEFAULT_REMOTE_ADDR;
use crate::handler::{Method, Response, StatusCode};
use crate::http::encode::{self, BodyRule};
use crate::http::ErrorKind;

/// A request to [`call`] a handler with: a method, a target as a client sends it
/// (`/path?query`, not decoded), headers, and a body.
#[derive(Clone, Debug)]
pub struct TestRequest {
    pub(super) method: Method,
    pub(super) target: String,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) body: Vec<u8>,
    pub(super) remote: SocketAddr,
    pub(super) minor_version: u8,
}

impl TestRequest {
    /// A request for `target` (`/path?query`, sent as given: percent-encode it as a client
    /// would).
    pub fn new(method: Method, target: &str) -> TestRequest {
        TestRequest {
            method,
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            remote: SocketAddr::from(DEFAULT_REMOTE_ADDR),
            minor_version: 1,
        }
    }

    pub fn get(target: &str) -> TestRequest {
        TestRequest::new(Method::GET, target)
    }

    pub fn head(target: &str) -> TestRequest {
        TestRequest::new(Method::HEAD, target)
    }

    pub fn post(target: &str) -> TestRequest {
        TestRequest::new(Method::POST, target)
    }

    pub fn put(target: &str) -> TestRequest {
        TestRequest::new(Method::PUT, target)
    }

    pub fn delete(target: &str) -> TestRequest {
        TestRequest::new(Method::DELETE, target)
    }

    /// Adds a header. `Host: test` is sent unless one is given, and `Content-Length` (the
    /// body's) unless one is given; a `Transfer-Encoding` makes [`call`] panic (the body is
    /// always sent whole).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> TestRequest {
        self.headers.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestRequest {
        self.body = body.into();
        self
    }

    pub fn remote_addr(mut self, remote: SocketAddr) -> TestRequest {
        self.remote = remote;
        self
    }

    /// Sends the request as HTTP/1.0 (HTTP/1.1 otherwise).
    pub fn http_1_0(mut self) -> TestRequest {
        self.minor_version = 0;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The head as a client sends it.
    pub(super) fn encode_head(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(128 + self.target.len());
        head.extend_from_slice(self.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.target.as_bytes());
        head.extend_from_slice(if self.minor_version == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        if !self.has_header("host") {
            head.extend_from_slice(b"host: test\r\n");
        }
        assert!(
            !self.has_header("transfer-encoding"),
            "cella::testing sends the body whole with a Content-Length: leave Transfer-Encoding out"
        );
        if !self.has_header("content-length") && !self.body.is_empty() {
            head.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head
    }
}

#[cfg(feature = "json")]
impl TestRequest {
    /// `value` serialised as the body, with `Content-Type: application/json`.
    ///
    /// # Panics
    /// When serde_json cannot serialise `value` (a map whose keys are not strings).
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> TestRequest {
        let body = serde_json::to_vec(value).expect("the test request's JSON body serialises");
        self.header("content-type", "application/json").body(body)
    }
}

/// The response a handler gave through [`call`], copied out of its slot.
#[derive(Clone, PartialEq, Eq)]
pub struct TestResponse {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl TestResponse {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header the handler set and the server would send, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced by U+FFFD).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }

    /// What the server answers for `kind` (a refused head, a failed handler).
    pub(super) fn from_error(kind: ErrorKind, head_request: bool) -> TestResponse {
        let reply = kind.response();
        let status =
            StatusCode::from_u16(reply.status).expect("the error table's statuses are valid");
        let mut body = Vec::new();
        if BodyRule::of(reply.status, head_request).body {
            body.extend_from_slice(reply.message.as_bytes());
            body.push(b'\n');
        }
        let content_type = ("content-type".to_owned(), "text/plain; charset=utf-8".to_owned());
        TestResponse { status, headers: vec![content_type], body }
    }

    /// Copies what the server would send of `response` (see `worker/respond.rs`).
    pub(super) fn from_response(response: &Response<'_>, head_request: bool) -> TestResponse {
        let valid = !response.status().is_informational()
            && response
                .headers()
                .all(|(name, value)| encode::header_allowed(name, value.as_bytes()));
        if !valid {
            return TestResponse::from_error(ErrorKind::BadResponse, head_request);
        }
        let headers = response
            .headers()
            .filter(|(name, _)| !encode::header_owned_by_runtime(name))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let body = if BodyRule::of(response.status().as_u16(), head_request).body {
            response.body_bytes().to_vec()
        } else {
            Vec::new()
        };
        TestResponse { status: response.status(), headers, body }
    }
}

impl fmt::Debug for TestResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}
