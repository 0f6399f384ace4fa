//! The handler API through its public surface: handlers that return `Result` and use `?`, JSON
//! bodies, percent-decoded parameters, router fallbacks and nesting. Each is called without a
//! socket through `cella::testing` (this binary's global allocator is `RoutingAlloc`, so a
//! handler's allocations land in its slot's arena and the arena's limit is the server's), and
//! the same features are served over real sockets by `runtime/examples/api.rs`.

use cella::testing::{self, TestRequest};
use cella::{handler_fn, try_handler_fn, Error, Request, Response, Router, StatusCode};

#[global_allocator]
static ALLOCATOR: cella::RoutingAlloc = cella::RoutingAlloc;

/// `GET /double/{n}`: `?` turns a bad number into a 400 through `cella::Error`.
fn double<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
    let n: i64 = request
        .param("n")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::bad_request("expected /double/{n} with an integer\n"))?;
    let doubled = n.checked_mul(2).ok_or((StatusCode::UNPROCESSABLE_ENTITY, "too large\n"))?;
    Ok(Response::text(format!("{doubled}\n")))
}

/// A handler whose error type is a bare status.
fn only_even<'a>(request: &Request<'a>) -> Result<Response<'a>, StatusCode> {
    match request.param("n").and_then(|n| n.parse::<u64>().ok()) {
        Some(n) if n % 2 == 0 => Ok(Response::text("even\n")),
        Some(_) => Err(StatusCode::NOT_ACCEPTABLE),
        None => Err(StatusCode::BAD_REQUEST),
    }
}

#[test]
fn handlers_returning_result_answer_their_error_and_question_mark_converts_it() {
    let app = Router::new().get("/double/{n}", double).get("/even/{n}", only_even).get(
        "/first/{list}",
        try_handler_fn(|request| {
            let list = request.param("list").ok_or(StatusCode::BAD_REQUEST)?;
            let first = list.split(',').next().filter(|f| !f.is_empty());
            Ok(Response::text(first.ok_or(Error::not_found("empty list\n"))?.to_owned()))
        }),
    );
    let call = |target: &str| testing::call(&app, TestRequest::get(target));
    assert_eq!(
        (call("/double/21").status().as_u16(), call("/double/21").text()),
        (200, "42\n".into())
    );
    let bad = call("/double/x");
    assert_eq!(
        (bad.status().as_u16(), bad.text().as_str()),
        (400, "expected /double/{n} with an integer\n")
    );
    assert_eq!(call(&format!("/double/{}", i64::MAX)).status().as_u16(), 422);
    assert_eq!(call("/even/4").text(), "even\n");
    let odd = call("/even/3");
    assert_eq!((odd.status().as_u16(), odd.text().as_str()), (406, "Not Acceptable\n"));
    assert_eq!(call("/first/a,b").text(), "a");
    assert_eq!(call("/first/,b").status().as_u16(), 404);
}

#[test]
fn an_overrun_under_testing_is_a_500_and_the_next_call_succeeds() {
    let app = Router::new().get(
        "/alloc/{kib}",
        handler_fn(|request| {
            let kib: usize = request.param("kib").and_then(|k| k.parse().ok()).unwrap_or(0);
            let buffer = vec![1u8; kib << 10];
            Response::text(format!("{}", std::hint::black_box(&buffer).len()))
        }),
    );
    for _ in 0..20 {
        let overrun = testing::call(&app, TestRequest::get("/alloc/4096"));
        assert_eq!(
            (overrun.status().as_u16(), overrun.text().as_str()),
            (500, "request exceeded its memory\n")
        );
        assert_eq!(testing::call(&app, TestRequest::get("/alloc/64")).text(), "65536");
    }
}

#[derive(serde::Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    item: std::borrow::Cow<'a, str>,
    quantity: u32,
}

#[derive(serde::Serialize)]
struct Receipt<'a> {
    item: &'a str,
    quantity: u32,
    total_cents: u64,
}

/// `POST /orders`: a JSON body in, a JSON body out; a body that is not an order is a 400.
fn order<'a>(request: &Request<'a>) -> Result<Response<'a>, Error> {
    let order: Order<'a> = request.json()?;
    let total_cents = u64::from(order.quantity) * 250;
    let receipt = Receipt { item: &order.item, quantity: order.quantity, total_cents };
    Ok(Response::json_value(&receipt).with_status(StatusCode::CREATED))
}

#[test]
fn a_json_body_in_and_out_and_a_bad_one_is_a_400() {
    let app = Router::new().post("/orders", order);
    let request =
        TestRequest::post("/orders").json(&serde_json::json!({"item": "t\u{e9}a", "quantity": 3}));
    let created = testing::call(&app, request);
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.header("content-type"), Some("application/json"));
    let receipt: serde_json::Value = created.json().expect("a JSON receipt");
    assert_eq!(receipt, serde_json::json!({"item": "t\u{e9}a", "quantity": 3, "total_cents": 750}));
    let escaped = TestRequest::post("/orders").body(r#"{"item":"caf\u00e9","quantity":1}"#);
    assert_eq!(
        testing::call(&app, escaped).json::<serde_json::Value>().unwrap()["item"],
        "caf\u{e9}"
    );
    for bad in ["", "{", r#"{"item":"x"}"#, r#"{"item":"x","quantity":-1}"#, "[1,2]"] {
        let refused = testing::call(&app, TestRequest::post("/orders").body(bad));
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(refused.text().starts_with("invalid JSON body: "), "{bad:?}: {refused:?}");
    }
}

#[test]
fn parameters_and_query_values_are_decoded_and_the_raw_forms_kept() {
    let app = Router::new().get(
        "/files/{name}",
        handler_fn(|request| {
            let name = request.param("name").unwrap_or("-");
            let raw = request.param_raw("name").unwrap_or("-");
            let tag = request.query_param("tag").unwrap_or("-");
            let tag_raw = request.query_param_raw("tag").unwrap_or("-");
            Response::text(format!("{name}|{raw}|{tag}|{tag_raw}"))
        }),
    );
    let got = testing::call(&app, TestRequest::get("/files/r%C3%A9sum%C3%A9%20v2.txt?tag=a+b%21"));
    assert_eq!(got.text(), "résumé v2.txt|r%C3%A9sum%C3%A9%20v2.txt|a b!|a+b%21");
    // Decoding into a nearly full arena is the request's overrun, like any other allocation.
    let greedy = Router::new().get(
        "/{name}",
        handler_fn(|request| {
            let left = request.arena().remaining_bytes();
            let hoard = Vec::<u8>::with_capacity(left - 512);
            std::hint::black_box(&hoard);
            let name = request.param("name").unwrap_or("-");
            Response::text(if name.len() > 1 { "decoded" } else { "plain" })
        }),
    );
    assert_eq!(testing::call(&greedy, TestRequest::get("/x")).text(), "plain");
    let long = format!("/{}", "%41".repeat(600));
    assert_eq!(testing::call(&greedy, TestRequest::get(&long)).status().as_u16(), 500);
    let short = format!("/{}", "%41".repeat(20));
    assert_eq!(testing::call(&greedy, TestRequest::get(&short)).text(), "decoded");
}
