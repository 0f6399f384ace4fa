//! The Rust handler API: a [`Handler`] turns a borrowed [`Request`] into a [`Response`].
//!
//! Everything a request holds is borrowed from its slot: the head and body bytes, the header
//! table, and the arena. While a handler runs, ordinary allocations (`Vec`, `String`,
//! `format!`) land in the slot's arena too, when the binary uses [`cella_arena::RoutingAlloc`].
//! Spending the whole arena ends the request with a 500; other requests never notice.
//!
//! What a handler must not do: keep anything allocated during a request after it returns (in a
//! static, a thread-local or `&self` state): the arena is wiped and reused. Values on a
//! handler's stack may be abandoned without their destructors running when the request is
//! cancelled hard (arena spent, stack overflow), so a handler must not allocate while it holds
//! a lock shared with other requests, and must not pin values that something else points to.
//!
//! This file owns the handler traits and the request; `response.rs` the response, its body and
//! header text (re-exported here).

use std::borrow::Cow;
use std::net::SocketAddr;

use cella_arena::Arena;
pub use http::{Method, StatusCode};

use crate::reply::{Error, IntoHandlerResult};
pub use crate::response::{Body, Response, Text};

/// Handles requests. `&self` is shared by every worker at once, so shared state needs
/// synchronisation (and must not hold arena memory: see the module docs).
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, request: &Request<'a>) -> Response<'a>;

    /// Called once on each worker thread before it serves, while the process may still use the
    /// system allocator: set up thread-local state here (anything a handler allocates lazily on
    /// first use would otherwise land in a request's arena and be wiped).
    fn prepare_thread(&self) {}
}

/// A function from a request to what a handler may return (a [`Response`], or a `Result` whose
/// error is [`IntoResponse`](crate::IntoResponse)): every such function is a [`Handler`].
/// Implemented for every fitting `Fn`; not meant to be implemented by hand.
pub trait HandlerFn<'a>: Fn(&Request<'a>) -> <Self as HandlerFn<'a>>::Output {
    type Output: IntoHandlerResult<'a>;
}

impl<'a, F, R> HandlerFn<'a> for F
where
    F: Fn(&Request<'a>) -> R,
    R: IntoHandlerResult<'a>,
{
    type Output = R;
}

impl<F> Handler for F
where
    F: for<'a> HandlerFn<'a> + Send + Sync + 'static,
{
    fn handle<'a>(&'a self, request: &Request<'a>) -> Response<'a> {
        self(request).into_handler_result()
    }
}

/// Helps closures infer the borrowed signature: `handler_fn(|req| Response::text("hi"))`.
/// A closure that returns a `Result` goes through [`try_handler_fn`].
pub fn handler_fn<F>(f: F) -> F
where
    F: for<'a> Fn(&Request<'a>) -> Response<'a> + Send + Sync + 'static,
{
    f
}

/// As [`handler_fn`], for a closure returning `Result<Response, cella::Error>`, so that `?`
/// works inside it (anything `Into<cella::Error>` converts):
/// `try_handler_fn(|req| Ok(Response::text(req.param("id").ok_or(StatusCode::NOT_FOUND)?)))`.
///
/// Rust cannot infer a closure's borrowed signature through a bound that admits both return
/// types, hence two functions; a named function may return `Result<Response, E>` with any
/// `E: IntoResponse` and is a [`Handler`] without either.
pub fn try_handler_fn<F>(f: F) -> F
where
    F: for<'a> Fn(&Request<'a>) -> Result<Response<'a>, Error> + Send + Sync + 'static,
{
    f
}

/// Most path parameters a route may capture.
pub const PARAMS_MAX: usize = 8;

/// Path parameters captured by the [`crate::Router`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Params<'a> {
    entries: [(&'a str, &'a str); PARAMS_MAX],
    len: usize,
}

/// The parameters of a request whose route captures nothing (most): what
/// [`Request::params`] shows when the request carries none of its own.
static NO_PARAMS: Params<'static> = Params { entries: [("", ""); PARAMS_MAX], len: 0 };

impl<'a> Params<'a> {
    pub(crate) fn push(&mut self, name: &'a str, value: &'a str) {
        assert!(self.len < PARAMS_MAX, "routes capture at most {PARAMS_MAX} parameters");
        self.entries[self.len] = (name, value);
        self.len += 1;
    }

    /// The value captured for `name`, as sent (not decoded: [`Request::param`] decodes).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.entries[..self.len].iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// `(name, value)` pairs, values as sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.entries[..self.len].iter().copied()
    }
}

/// A request, borrowed from its slot for the duration of the handler.
#[derive(Clone)]
pub struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) minor_version: u8,
    pub(crate) headers: &'a [httparse::Header<'a>],
    pub(crate) body: &'a [u8],
    pub(crate) remote: SocketAddr,
    pub(crate) arena: &'a Arena,
    /// `None` for a route that captures nothing: a request is built without the 264 bytes of
    /// an empty `Params` (zeroed on every request, it cost as much as the routing).
    pub(crate) params: Option<Params<'a>>,
}

impl<'a> Request<'a> {
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, as sent (not percent-decoded): what the router matches.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query string after `?`, as sent.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The decoded value of the first query parameter whose decoded name is `name` (see
    /// [`Request::query_pairs`]); parsed on demand.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query_pairs().find(|(key, _)| *key == name).map(|(_, value)| value)
    }

    /// The value, as sent, of the first query parameter whose name as sent is `name`.
    pub fn query_param_raw(&self, name: &str) -> Option<&'a str> {
        self.query_pairs_raw().find(|(key, _)| *key == name).map(|(_, value)| value)
    }

    /// Query parameters as decoded `(name, value)` pairs, in order: decoded as
    /// `application/x-www-form-urlencoded` (the WHATWG URL standard, crate `form_urlencoded`):
    /// `+` is a space, `%XX` escapes are decoded, and bytes that do not form UTF-8 are replaced
    /// by U+FFFD. A pair with an escape or a `+` is decoded into the request's arena.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let arena = self.arena;
        form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .map(move |(key, value)| (keep_in(arena, key), keep_in(arena, value)))
    }

    /// Query parameters as `(name, value)` pairs as sent, in order (split at `&` and the first
    /// `=`; empty pairs skipped).
    pub fn query_pairs_raw(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    }

    /// `(1, 0)` or `(1, 1)`.
    pub fn version(&self) -> (u8, u8) {
        (1, self.minor_version)
    }

    /// The first header called `name` (case-insensitive), if its value is UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_bytes(name).and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first header called `name` (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// Every header, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The slot's arena, for explicit fallible allocation (`try_alloc`, `try_format`,
    /// `ArenaVec`).
    pub fn arena(&self) -> &'a Arena {
        self.arena
    }

    /// A path parameter captured by the router (`/users/{id}` → `param("id")`), percent-decoded:
    /// `%XX` escapes are decoded (`+` stays a `+`) and bytes that do not form UTF-8 are replaced
    /// by U+FFFD. A value with an escape is decoded into the request's arena. A decoded value
    /// may hold `/` (from `%2F`) and `..`: check it before using it as a file name.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        let raw = self.params().get(name)?;
        Some(keep_in(self.arena, percent_encoding::percent_decode_str(raw).decode_utf8_lossy()))
    }

    /// A path parameter as sent (not decoded).
    pub fn param_raw(&self, name: &str) -> Option<&'a str> {
        self.params().get(name)
    }

    /// The path parameters as sent (not decoded).
    pub fn params(&self) -> &Params<'a> {
        self.params.as_ref().unwrap_or(&NO_PARAMS)
    }
}

/// `text` with the lifetime of the request: borrowed text as it is; decoded text made with the
/// global allocator kept where it is when that is the request's arena (the routing allocator
/// put it there; the wipe reclaims it), else copied into the arena and freed. Only when the
/// arena is spent is the decoded text kept where it is: inside a handler under
/// [`RoutingAlloc`](cella_arena::RoutingAlloc) that cannot happen (the allocation itself would
/// have ended the request), so only a binary without it leaks the text.
fn keep_in<'a>(arena: &'a Arena, text: Cow<'a, str>) -> &'a str {
    match text {
        Cow::Borrowed(text) => text,
        Cow::Owned(text) if arena.contains(text.as_ptr()) => text.leak(),
        Cow::Owned(text) => match arena.try_alloc_str(&text) {
            Ok(copy) => copy,
            Err(_) => text.leak(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, TestRequest};
    use crate::Router;

    fn show<'a>(request: &Request<'a>) -> Response<'a> {
        let mut text = String::new();
        for name in ["a", "*"] {
            if let (Some(decoded), Some(raw)) = (request.param(name), request.param_raw(name)) {
                text.push_str(&format!("{name}={decoded}|{raw};"));
            }
        }
        for (key, value) in request.query_pairs() {
            text.push_str(&format!("q:{key}={value};"));
        }
        for (key, value) in request.query_pairs_raw() {
            text.push_str(&format!("r:{key}={value};"));
        }
        Response::text(text)
    }

    fn app() -> Router {
        Router::new().get("/p/{a}", show).get("/rest/*", show)
    }

    #[test]
    fn params_hold_what_was_pushed_and_nothing_else() {
        let mut params = Params::default();
        assert_eq!((params.iter().count(), params.get("a")), (0, None));
        for (name, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
            params.push(name, value);
        }
        let copy = params;
        assert_eq!(copy.get("a"), Some("1"), "the first of a repeated name");
        assert_eq!(copy.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2"), ("a", "3")]);
    }

    fn count_params<'a>(request: &Request<'a>) -> Response<'a> {
        let first = request.params().iter().next();
        Response::text(format!(
            "{}|{first:?}|{:?}",
            request.params().iter().count(),
            request.param("a")
        ))
    }

    #[test]
    fn a_route_that_captures_nothing_shows_no_parameters() {
        let app = Router::new().get("/plain", count_params).get("/p/{a}", count_params);
        assert_eq!(testing::call(&app, TestRequest::get("/plain")).text(), "0|None|None");
        assert_eq!(
            testing::call(&app, TestRequest::get("/p/x")).text(),
            r#"1|Some(("a", "x"))|Some("x")"#
        );
    }

    #[test]
    fn path_parameters_are_percent_decoded_and_kept_as_sent() {
        let got = testing::call(&app(), TestRequest::get("/p/caf%C3%A9%20a+b%2Fc"));
        assert_eq!(got.text(), "a=café a+b/c|caf%C3%A9%20a+b%2Fc;");
        let plain = testing::call(&app(), TestRequest::get("/p/plain"));
        assert_eq!(plain.text(), "a=plain|plain;");
        let rest = testing::call(&app(), TestRequest::get("/rest/x%2F..%2Fy/z"));
        assert_eq!(rest.text(), "*=x/../y/z|x%2F..%2Fy/z;");
    }

    #[test]
    fn bytes_that_do_not_decode_to_utf8_are_replaced() {
        let got = testing::call(&app(), TestRequest::get("/p/a%FFb?k=%C3"));
        assert_eq!(got.text(), "a=a\u{fffd}b|a%FFb;q:k=\u{fffd};r:k=%C3;");
    }

    #[test]
    fn query_values_are_form_decoded_and_kept_as_sent() {
        let target = "/p/x?name=J%C3%BCrgen+M&empty=&flag&&a%26b=c%3Dd&name=second";
        let got = testing::call(&app(), TestRequest::get(target));
        assert_eq!(
            got.text(),
            "a=x|x;q:name=Jürgen M;q:empty=;q:flag=;q:a&b=c=d;q:name=second;\
             r:name=J%C3%BCrgen+M;r:empty=;r:flag=;r:a%26b=c%3Dd;r:name=second;"
        );
        let first = Router::new().get(
            "/",
            crate::handler_fn(|request| {
                let decoded = request.query_param("a&b").unwrap_or("-");
                let raw = request.query_param_raw("a%26b").unwrap_or("-");
                let missing = request.query_param("nothing").unwrap_or("-");
                Response::text(format!("{decoded} {raw} {missing}"))
            }),
        );
        let got = testing::call(&first, TestRequest::get("/?a%26b=1+2&a%26b=3"));
        assert_eq!(got.text(), "1 2 1+2 -");
    }
}
