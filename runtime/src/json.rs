//! JSON bodies (the default `json` feature; serde and serde_json): [`Request::json`] parses the
//! request body, [`Response::json_value`] serialises a value as the response body, and a body
//! that does not parse is a [`JsonError`], answered 400 when a handler returns it with `?`.
//!
//! ```
//! use cella::{Error, Request, Response};
//!
//! use std::borrow::Cow;
//!
//! #[derive(serde::Deserialize)]
//! struct NewUser<'a> {
//!     // Borrowed from the request body when it has no escapes, copied when it has.
//!     #[serde(borrow)]
//!     name: Cow<'a, str>,
//! }
//!
//! #[derive(serde::Serialize)]
//! struct Created<'a> {
//!     id: u64,
//!     name: &'a str,
//! }
//!
//! fn create<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
//!     let user: NewUser<'a> = request.json()?; // not JSON, or not a NewUser: 400
//!     Ok(Response::json_value(&Created { id: 7, name: &user.name }))
//! }
//! ```
//!
//! A `&'a str` field borrows too, but a string with an escape (`\"`, `\u00e9`) cannot be
//! borrowed and is then a 400: prefer `Cow<'a, str>` with `#[serde(borrow)]`, or `String`.
//!
//! Parsing and serialising allocate like any other code in a handler: in the request's arena.
//! The request's `Content-Type` is not checked (a client that sends JSON as
//! `application/x-www-form-urlencoded`, as `curl -d` does, is served).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::handler::{Request, Response, StatusCode};
use crate::reply::{Error, IntoResponse};

/// A request body that is not the JSON the handler asked for: not JSON at all, or JSON of
/// another shape (a missing field, a wrong type). Answered 400 with serde_json's description
/// (`invalid JSON body: missing field `name` at line 1 column 2`).
#[derive(Debug)]
pub struct JsonError {
    source: serde_json::Error,
}

impl JsonError {
    /// Whether the body is valid JSON of another shape (as opposed to not JSON, or cut short).
    pub fn is_data(&self) -> bool {
        self.source.is_data()
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON body: {}", self.source)
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl<'a> IntoResponse<'a> for JsonError {
    fn into_response(self) -> Response<'a> {
        Response::text(format!("{self}\n")).with_status(StatusCode::BAD_REQUEST)
    }
}

impl From<JsonError> for Error {
    fn from(error: JsonError) -> Error {
        Error::bad_request(format!("{error}\n"))
    }
}

impl<'a> Request<'a> {
    /// The body parsed as JSON into `T`, which may borrow from the body (`&'a str` fields).
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, JsonError> {
        serde_json::from_slice(self.body).map_err(|source| JsonError { source })
    }
}

impl<'a> Response<'a> {
    /// 200 with `value` serialised as an `application/json` body. A value serde_json cannot
    /// serialise (a map whose keys are not strings, a `Serialize` impl that fails) is a
    /// programmer error: the response is then a 500 that names it.
    pub fn json_value<T: Serialize + ?Sized>(value: &T) -> Response<'a> {
        match serde_json::to_vec(value) {
            Ok(body) => Response::json(body),
            Err(error) => {
                Response::text(format!("cannot serialise the response as JSON: {error}\n"))
                    .with_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use crate::handler::{Request, Response, StatusCode};
    use crate::reply::{Error, IntoHandlerResult};
    use crate::testing::{self, TestRequest};

    #[derive(Deserialize)]
    struct Pair<'a> {
        key: &'a str,
        count: u32,
    }

    #[derive(Serialize)]
    struct Echo<'a> {
        key: &'a str,
        twice: u32,
    }

    fn echo<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
        let pair: Pair<'a> = request.json()?;
        Ok(Response::json_value(&Echo { key: pair.key, twice: pair.count * 2 }))
    }

    #[test]
    fn a_json_body_is_parsed_borrowing_from_the_request_and_the_answer_serialised() {
        let request = TestRequest::post("/").json(&serde_json::json!({"key": "ké", "count": 21}));
        let response = testing::call(&echo, request);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.text(), r#"{"key":"ké","twice":42}"#);
        let parsed: serde_json::Value = response.json().expect("the answer is JSON");
        assert_eq!(parsed["twice"], 42);
    }

    #[test]
    fn a_borrowed_str_field_refuses_an_escaped_string_and_a_cow_takes_it() {
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            name: std::borrow::Cow<'a, str>,
        }
        let named = crate::handler::try_handler_fn(|request| {
            Ok(Response::text(request.json::<Named<'_>>()?.name.into_owned()))
        });
        let escaped = r#"{"key":"k\u00e9","count":1,"name":"caf\u00e9"}"#;
        assert_eq!(testing::call(&named, TestRequest::post("/").body(escaped)).text(), "café");
        let refused = testing::call(&echo, TestRequest::post("/").body(escaped));
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refused.text().contains("expected a borrowed string"), "{refused:?}");
    }

    #[test]
    fn a_body_that_is_not_json_or_not_the_shape_asked_is_a_400_that_says_why() {
        let not_json = testing::call(&echo, TestRequest::post("/").body("{nope"));
        assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
        assert!(
            not_json.text().starts_with("invalid JSON body: key must be a string"),
            "{not_json:?}"
        );
        let missing = testing::call(&echo, TestRequest::post("/").body(r#"{"key":"k"}"#));
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
        assert!(missing.text().contains("missing field `count`"), "{missing:?}");
        let empty = testing::call(&echo, TestRequest::post("/"));
        assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_json_error_returned_directly_is_a_400_and_tells_data_from_syntax() {
        let data =
            serde_json::from_str::<u32>("\"x\"").map_err(|source| super::JsonError { source });
        let error = data.expect_err("a string is not a u32");
        assert!(error.is_data());
        let answered: Result<Response<'_>, super::JsonError> = Err(error);
        assert_eq!(answered.into_handler_result().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_value_json_cannot_represent_is_a_500_naming_the_reason() {
        let mut map = BTreeMap::new();
        map.insert((1, 2), "tuple keys are not strings");
        let response = Response::json_value(&map);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8_lossy(response.body_bytes()).into_owned();
        assert!(body.contains("key must be a string"), "{body}");
    }
}
