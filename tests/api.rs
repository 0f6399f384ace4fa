//! The handler API through its public surface: handlers that return `Result` and use `?`, JSON
//! bodies, percent-decoded parameters, router fallbacks, nesting and prepare hooks. Each is
//! called without a socket through `cella::testing` (this binary's global allocator is
//! `RoutingAlloc`, so a handler's allocations land in its slot's arena and the arena's limit is
//! the server's), and the same features are served over real sockets by
//! `runtime/examples/api.rs`, a binary set up with `cella::main!` alone: it serves C plugins
//! too, with no system allocation after startup. A binary without the setup
//! (`runtime/examples/without_setup.rs`) refuses to start, and one without the exported C
//! allocator (`testapp`) refuses `--handler`, each with one line that says what to do.

use std::path::PathBuf;
use std::process::Command;

use cella::testing::{self, TestRequest};
use cella::{handler_fn, try_handler_fn, Error, Request, Response, Router, StatusCode};
use cella_tests::{binary, get, Client, ServerProcess, SMALL};

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

fn serve_api(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("api", &args, &[])
}

fn json(response: &cella_tests::Response) -> serde_json::Value {
    assert_eq!(response.header("content-type"), Some("application/json"), "{}", response.text());
    serde_json::from_slice(&response.body).expect("a JSON body")
}

#[test]
fn the_api_example_answers_results_errors_and_json_over_a_socket() {
    let server = serve_api(&[]);
    let mut client = Client::connect(server.addr());
    let ada = client.get("/users/1");
    assert_eq!((ada.status, json(&ada)), (200, serde_json::json!({"id": 1, "name": "ada"})));
    let bad = client.get("/users/x");
    assert_eq!((bad.status, bad.text()), (400, "expected /users/{id} with a number\n".into()));
    assert_eq!(
        (client.get("/users/9").status, client.get("/users/9").text()),
        (404, "Not Found\n".into())
    );
    let order = br#"{"item":"t\u00e9a","quantity":3}"#;
    let created = client.request("POST", "/api/v1/orders", order);
    let receipt = serde_json::json!({"item": "t\u{e9}a", "quantity": 3, "total_cents": 750});
    assert_eq!((created.status, json(&created)), (201, receipt));
    let refused = client.request("POST", "/api/v1/orders", br#"{"item":"tea""#);
    assert_eq!(refused.status, 400);
    assert!(
        refused.text().starts_with("invalid JSON body: EOF while parsing"),
        "{}",
        refused.text()
    );
    let zero = client.request("POST", "/api/v1/orders", br#"{"item":"tea","quantity":0}"#);
    assert_eq!((zero.status, zero.text()), (422, "quantity must be at least 1\n".into()));
}

#[test]
fn the_api_example_decodes_parameters_and_routes_nested_paths_and_fallbacks() {
    let server = serve_api(&[]);
    let mut client = Client::connect(server.addr());
    let file = client.get("/api/v1/files/r%C3%A9sum%C3%A9%2Fv2.txt?tag=a+b%26c");
    let expected = serde_json::json!({
        "name": "r\u{e9}sum\u{e9}/v2.txt", "name_as_sent": "r%C3%A9sum%C3%A9%2Fv2.txt",
        "tag": "a b&c", "tag_as_sent": "a+b%26c",
    });
    assert_eq!((file.status, json(&file)), (200, expected));
    let nested_miss = client.get("/api/v1/nothing/here");
    let expected = serde_json::json!({"error": "no such endpoint", "path": "/api/v1/nothing/here"});
    assert_eq!((nested_miss.status, json(&nested_miss)), (404, expected));
    let miss = client.get("/api/v2/orders");
    assert_eq!((miss.status, miss.text()), (404, "nothing at /api/v2/orders\n".into()));
    let wrong_method = client.get("/api/v1/orders");
    assert_eq!((wrong_method.status, wrong_method.header("allow")), (405, Some("POST")));
}

#[test]
fn the_prepare_hook_runs_on_every_worker_before_it_serves() {
    let server = serve_api(&["--workers", "2", "--slots", "4"]);
    // Each connection is served by the worker whose listener accepted it (SO_REUSEPORT): over
    // many connections both answer, each with the number its hook gave it.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let answer = get(server.addr(), "/worker").text();
        seen.insert(answer);
        if seen.len() == 2 {
            break;
        }
    }
    let expected: std::collections::BTreeSet<String> =
        ["worker 1\n", "worker 2\n"].iter().map(|s| s.to_string()).collect();
    assert!(seen.is_subset(&expected) && !seen.is_empty(), "{seen:?}");
    assert!(!seen.contains("worker 0\n"), "a worker served before its prepare hook ran");
}

/// The shared C plugin app, compiled once for these tests.
fn c_plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_c_plugin).clone()
}

fn build_c_plugin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("root").to_path_buf();
    let dir = binary("api").parent().expect("target dir").join("plugins");
    std::fs::create_dir_all(&dir).expect("plugins dir");
    let output = dir.join("libapp_c_for_api.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-I"])
        .arg(root.join("runtime/include"))
        .arg(root.join("tests/plugins/c/app.c"))
        .arg("-o")
        .arg(&output)
        .status()
        .expect("cc runs");
    assert!(status.success(), "the C plugin compiles");
    output
}

#[test]
fn a_binary_set_up_with_cella_main_serves_c_plugins_in_the_arena() {
    let plugin = c_plugin();
    let mut server = serve_api(&["--handler", plugin.to_str().expect("a UTF-8 path")]);
    let mut client = Client::connect(server.addr());
    for _ in 0..200 {
        assert_eq!(client.get("/").text(), "Hello, World!");
        assert_eq!(client.get("/alloc/100000").status, 500, "the plugin's malloc hits the arena");
        assert_eq!(client.get("/alloc/16").text(), "16384");
    }
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

fn refused(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary(name))
        .args(args)
        .env_remove("CELLA_QUARANTINE")
        .output()
        .expect("the binary runs");
    assert!(output.stdout.is_empty(), "no ready line");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    (output.status.code(), stderr)
}

#[test]
fn a_binary_whose_global_allocator_is_not_routing_alloc_refuses_to_start() {
    let (code, message) = refused("without_setup", &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1));
    assert!(message.contains("global allocator is not cella::RoutingAlloc"), "{message}");
    assert!(message.contains("cella::main!(app)"), "{message}");
}

#[test]
fn handler_is_offered_only_by_binaries_that_export_the_c_allocator() {
    let plugin = c_plugin();
    let args = ["serve", "--listen", "127.0.0.1:0", "--handler", plugin.to_str().expect("UTF-8")];
    let (code, message) = refused("without_setup", &args);
    assert_eq!(code, Some(2));
    assert!(message.contains("--handler is not available"), "{message}");
    assert!(message.contains("cella::main!(app)"), "{message}");
    let help = |name: &str| {
        let output = Command::new(binary(name)).args(["serve", "--help"]).output().expect("runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(!help("without_setup").contains("--handler <PATH.so>"));
    assert!(help("api").contains("--handler <PATH.so>"));
    assert!(help("cella").contains("--handler <PATH.so>"));
}
