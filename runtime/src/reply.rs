//! What a handler may return, and how each becomes a [`Response`]: a handler returns a
//! `Response`, or a `Result<Response, E>` whose error turns into one ([`IntoResponse`]), so that
//! `?` works inside it.
//!
//! ```
//! use cella::{Error, Request, Response, StatusCode};
//!
//! fn get_user<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
//!     let id: u64 = request
//!         .param("id")
//!         .and_then(|id| id.parse().ok())
//!         .ok_or(Error::bad_request("expected /users/{id} with a number\n"))?;
//!     if id == 0 {
//!         return Err(StatusCode::NOT_FOUND.into());
//!     }
//!     Ok(Response::text(format!("user {id}\n")))
//! }
//! ```
//!
//! A named function like this one is a [`Handler`](crate::Handler) as it is; a closure returning
//! a `Result` goes through [`try_handler_fn`](crate::try_handler_fn).

use std::fmt;

use cella_arena::AllocError;

use crate::handler::{Body, Response, StatusCode, Text};

/// Turns a value into a response: what the error type of a handler's `Result` must implement.
///
/// Implemented for [`Response`] itself, a [`StatusCode`] (its reason phrase as the body),
/// `(StatusCode, &str)` and `(StatusCode, String)` (the text as the body), and [`Error`].
pub trait IntoResponse<'a> {
    fn into_response(self) -> Response<'a>;
}

impl<'a> IntoResponse<'a> for Response<'a> {
    fn into_response(self) -> Response<'a> {
        self
    }
}

/// `text/plain`, the reason phrase and a newline (`404` → `Not Found\n`).
impl<'a> IntoResponse<'a> for StatusCode {
    fn into_response(self) -> Response<'a> {
        Response::text(reason_line(self)).with_status(self)
    }
}

/// `text/plain` with the text as the body.
impl<'a> IntoResponse<'a> for (StatusCode, &'a str) {
    fn into_response(self) -> Response<'a> {
        Response::text(self.1).with_status(self.0)
    }
}

/// `text/plain` with the text as the body.
impl<'a> IntoResponse<'a> for (StatusCode, String) {
    fn into_response(self) -> Response<'a> {
        Response::text(self.1).with_status(self.0)
    }
}

/// The body a bare status gets: its reason phrase and a newline, or the code and a newline for a
/// status the `http` crate does not name.
fn reason_line(status: StatusCode) -> Text<'static> {
    match status.canonical_reason() {
        Some(reason) => Text::Owned(format!("{reason}\n")),
        None => Text::Owned(format!("{}\n", status.as_u16())),
    }
}

/// What a handler returns: a [`Response`], or a `Result` whose error is [`IntoResponse`]. The
/// runtime calls [`IntoHandlerResult::into_handler_result`] on it.
pub trait IntoHandlerResult<'a> {
    fn into_handler_result(self) -> Response<'a>;
}

impl<'a> IntoHandlerResult<'a> for Response<'a> {
    fn into_handler_result(self) -> Response<'a> {
        self
    }
}

impl<'a, E: IntoResponse<'a>> IntoHandlerResult<'a> for Result<Response<'a>, E> {
    fn into_handler_result(self) -> Response<'a> {
        match self {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }
}

/// An error a handler returns with `?`: a status and a text answered as `text/plain`.
///
/// Made with [`Error::new`] or a shortcut ([`Error::bad_request`], [`Error::not_found`]), or
/// converted by `?` from a [`StatusCode`], a `(StatusCode, text)` pair, an [`AllocError`] (the
/// request's arena is spent: 500), or, with the `json` feature, a
/// [`JsonError`](crate::JsonError) (400). The text goes to the client as it is: put nothing in it
/// that the client must not see.
#[derive(Clone, Debug)]
pub struct Error {
    status: StatusCode,
    message: Text<'static>,
}

impl Error {
    /// An error answered with `status` and `message` (`text/plain`).
    pub fn new(status: StatusCode, message: impl Into<Text<'static>>) -> Error {
        Error { status, message: message.into() }
    }

    /// 400 Bad Request with `message`.
    pub fn bad_request(message: impl Into<Text<'static>>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found with `message`.
    pub fn not_found(message: impl Into<Text<'static>>) -> Error {
        Error::new(StatusCode::NOT_FOUND, message)
    }

    /// 500 Internal Server Error with `message`.
    pub fn internal(message: impl Into<Text<'static>>) -> Error {
        Error::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message.as_str())
    }
}

impl std::error::Error for Error {}

impl<'a> IntoResponse<'a> for Error {
    fn into_response(self) -> Response<'a> {
        Response::text(self.message).with_status(self.status)
    }
}

impl From<StatusCode> for Error {
    fn from(status: StatusCode) -> Error {
        Error { status, message: reason_line(status) }
    }
}

impl From<(StatusCode, &'static str)> for Error {
    fn from((status, message): (StatusCode, &'static str)) -> Error {
        Error::new(status, message)
    }
}

impl From<(StatusCode, String)> for Error {
    fn from((status, message): (StatusCode, String)) -> Error {
        Error::new(status, message)
    }
}

/// An explicit arena allocation (`Arena::try_alloc`, `ArenaVec::try_push`) that failed: 500, as
/// when an ordinary allocation spends the arena.
impl From<AllocError> for Error {
    fn from(_: AllocError) -> Error {
        Error::internal("request exceeded its memory\n")
    }
}

impl<'a> From<Text<'a>> for Body<'a> {
    fn from(text: Text<'a>) -> Body<'a> {
        match text {
            Text::Borrowed(text) => Body::Borrowed(text.as_bytes()),
            Text::Owned(text) => Body::Owned(text.into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(response: Response<'_>) -> (u16, String, Option<String>) {
        let content_type = response
            .headers()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.to_string());
        let body = String::from_utf8(response.body_bytes().to_vec()).expect("UTF-8 body");
        (response.status().as_u16(), body, content_type)
    }

    #[test]
    fn a_status_becomes_its_reason_phrase_as_text() {
        let (status, body, content_type) = parts(StatusCode::NOT_FOUND.into_response());
        assert_eq!((status, body.as_str()), (404, "Not Found\n"));
        assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
        let unnamed = StatusCode::from_u16(599).expect("a valid status");
        assert_eq!(parts(unnamed.into_response()).1, "599\n");
    }

    #[test]
    fn a_status_and_text_pair_becomes_that_text_with_that_status() {
        let borrowed = (StatusCode::CONFLICT, "taken\n").into_response();
        assert_eq!(parts(borrowed).0, 409);
        let owned = (StatusCode::GONE, format!("{} left\n", 3)).into_response();
        assert_eq!(parts(owned).1, "3 left\n");
    }

    #[test]
    fn an_err_result_is_answered_with_its_error_and_an_ok_with_its_response() {
        let failed: Result<Response<'_>, Error> = Err(Error::bad_request("no\n"));
        assert_eq!(parts(failed.into_handler_result()).0, 400);
        let fine: Result<Response<'_>, StatusCode> = Ok(Response::text("yes"));
        assert_eq!(parts(fine.into_handler_result()).1, "yes");
    }

    #[test]
    fn question_mark_converts_statuses_pairs_and_spent_arenas_into_errors() {
        fn status() -> Result<(), Error> {
            Err(StatusCode::FORBIDDEN)?
        }
        fn pair() -> Result<(), Error> {
            Err((StatusCode::UNPROCESSABLE_ENTITY, "bad field\n"))?
        }
        fn spent() -> Result<(), Error> {
            Err(AllocError)?
        }
        assert_eq!(status().unwrap_err().status(), StatusCode::FORBIDDEN);
        assert_eq!(status().unwrap_err().message(), "Forbidden\n");
        assert_eq!(pair().unwrap_err().message(), "bad field\n");
        assert_eq!(spent().unwrap_err().status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(Error::not_found("x").to_string(), "404 Not Found: x");
    }
}
