//! Tests of the tester (`testing/mod.rs`): a handler called with a test request goes through the
//! same parsing, slot, coroutine and encoding as a served request.

use super::*;
use crate::handler::{handler_fn, Request};
use crate::handler::{Response, StatusCode};

fn echo_parts<'a>(request: &Request<'a>) -> Response<'a> {
    let text = format!(
        "{} {} {:?} {:?} {} {}",
        request.method(),
        request.path(),
        request.query(),
        request.header("x-test"),
        String::from_utf8_lossy(request.body()),
        request.remote_addr(),
    );
    Response::text(text).header("x-answer", "yes")
}

#[test]
fn a_handler_gets_the_parsed_request_and_its_response_comes_back_copied() {
    let request = TestRequest::post("/a/b?c=d").header("x-test", "t").body("payload");
    let response = call(&echo_parts, request);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text(), r#"POST /a/b Some("c=d") Some("t") payload 127.0.0.1:1"#);
    assert_eq!(response.header("X-Answer"), Some("yes"));
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn a_head_the_server_refuses_gets_the_servers_answer_without_calling_the_handler() {
    let never = handler_fn(|_| panic!("the handler must not run"));
    let bad_target = call(&never, TestRequest::get("/a b"));
    assert_eq!(bad_target.status(), StatusCode::BAD_REQUEST);
    let bad_escape = call(&never, TestRequest::get("/a%zz"));
    assert_eq!(bad_escape.status(), StatusCode::BAD_REQUEST);
    let two_hosts = TestRequest::get("/").header("host", "a").header("host", "b");
    assert_eq!(call(&never, two_hosts).status(), StatusCode::BAD_REQUEST);
    let mut config = Config { workers: 1, ..Config::default() };
    config.set("request_body_size_max", "1KiB", "a test").expect("a valid size");
    let tester = Tester::new(&config).expect("the tester maps its slot");
    let too_large = tester.call(&never, TestRequest::post("/").body(vec![b'x'; 1025]));
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.text(), "request body too large\n");
}

#[test]
fn a_panic_and_a_stack_overflow_get_500_and_the_slots_serve_the_next_calls() {
    #[allow(unconditional_recursion)]
    fn recurse(depth: u64) -> u64 {
        let frame = [depth as u8; 512];
        std::hint::black_box(&frame);
        recurse(depth + 1).wrapping_add(u64::from(frame[0]))
    }
    let panics = handler_fn(|_| panic!("on purpose"));
    let overflows = handler_fn(|_| Response::text(format!("{}", recurse(0))));
    for _ in 0..DEFAULT_TESTER_SLOTS + 1 {
        let panicked = call(&panics, TestRequest::get("/"));
        assert_eq!(
            (panicked.status().as_u16(), panicked.text().as_str()),
            (500, "handler failed\n")
        );
        let overflowed = call(&overflows, TestRequest::get("/"));
        assert_eq!(overflowed.text(), "request exceeded its stack\n");
        assert_eq!(call(&echo_parts, TestRequest::get("/fine")).status(), StatusCode::OK);
    }
}

#[test]
fn a_handler_that_sleeps_is_resumed_and_one_past_its_deadline_gets_504() {
    let config = Config { workers: 1, handler_timeout_ms: 200, ..Config::default() };
    let tester = Tester::new(&config).expect("the tester maps its slot");
    let sleeps = handler_fn(|request| {
        let ms = request.query().and_then(|q| q.parse().ok()).unwrap_or(0);
        crate::net::sleep(Duration::from_millis(ms));
        Response::text("awake")
    });
    assert_eq!(tester.call(&sleeps, TestRequest::get("/?20")).text(), "awake");
    let started = Instant::now();
    let late = tester.call(&sleeps, TestRequest::get("/?60000"));
    assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(10), "cancelled at the deadline");
}

#[test]
fn the_response_is_trimmed_as_the_server_sends_it() {
    let app = handler_fn(|_| {
        Response::text("body").header("content-length", "99").header("date", "then")
    });
    let got = call(&app, TestRequest::get("/"));
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.header("date"), None);
    assert_eq!(call(&app, TestRequest::head("/")).body(), b"");
    let no_content = handler_fn(|_| Response::text("x").with_status(StatusCode::NO_CONTENT));
    assert_eq!(call(&no_content, TestRequest::get("/")).body(), b"");
    let injected = handler_fn(|_| Response::text("x").header("x-bad", "a\r\nb: c"));
    assert_eq!(call(&injected, TestRequest::get("/")).status().as_u16(), 500);
    let interim = handler_fn(|_| Response::new(StatusCode::CONTINUE));
    assert_eq!(call(&interim, TestRequest::get("/")).status().as_u16(), 500);
}

#[test]
fn more_threads_than_slots_all_get_their_answers() {
    let threads: Vec<_> = (0..DEFAULT_TESTER_SLOTS * 3)
        .map(|index| {
            std::thread::spawn(move || {
                let target = format!("/thread/{index}");
                let response = call(&echo_parts, TestRequest::get(&target));
                assert!(response.text().contains(&target), "{response:?}");
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("each call answers");
    }
}
