//! HTTP/1.1 behaviour of the `cella` binary over real sockets: the demo app's endpoints,
//! keep-alive and pipelining with byte-exact responses, every request limit at and past its
//! edge, and request-smuggling shapes rejected with the connection closed.

use cella_tests::{exchange, get, Client, ServerProcess};

#[test]
fn demo_endpoints_behave_as_specified() {
    let server = ServerProcess::start(&[]);
    let addr = server.addr();
    let hello = get(addr, "/");
    assert_eq!((hello.status, hello.text().as_str()), (200, "Hello, World!"));
    assert_eq!(hello.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(hello.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(get(addr, "/alloc/10").text(), "10240");
    assert_eq!(get(addr, "/alloc/100000").status, 500);
    assert_eq!(get(addr, "/panic").status, 500);
    let panicked = "the demo app's /panic endpoint; answering 500\n";
    assert!(server.wait_stderr(panicked), "one line from the panic hook: {}", server.stderr());
    assert!(server.stderr().contains("cella: handler panicked at runtime/src/demo.rs:"));
    assert_eq!(get(addr, "/overflow").status, 500);
    assert_eq!(get(addr, "/sleep/20").status, 200);
    assert_eq!(get(addr, "/spin/20").status, 200);
    let mut client = Client::connect(addr);
    client.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 11\r\n\r\nhello world");
    assert_eq!(client.response().body, b"hello world");
    assert_eq!(get(addr, "/missing").status, 404);
    let (wrong_method, _) = exchange(addr, b"DELETE / HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
    assert_eq!(get(addr, "/").status, 200, "still serving after every failure above");
}

#[test]
fn a_handlers_content_type_replaces_the_constructors_and_is_sent_once() {
    let mut args = vec!["serve"];
    args.extend_from_slice(cella_tests::SMALL);
    let server = ServerProcess::start_binary("testapp", &args, &[]);
    let mut raw = Client::connect(server.addr());
    raw.send(b"GET /retyped HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut raw.stream, &mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert_eq!(head.matches("content-type:").count(), 1, "{text}");
    assert!(head.contains("\r\ncontent-type: text/html\r\nx-extra: 1"), "{text}");
    assert!(text.ends_with("\r\n\r\n<p>hi</p>"), "{text}");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    for _ in 0..100 {
        let response = client.get("/");
        assert_eq!(response.body, b"Hello, World!");
        assert_eq!(response.header("connection"), None, "HTTP/1.1 keeps alive silently");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_byte_exact() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend_from_slice(format!("GET /alloc/{i} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc");
    batch.extend_from_slice(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
    client.send(&batch);
    for i in 0..16 {
        assert_eq!(client.response().text(), (i * 1024).to_string());
    }
    assert_eq!(client.response().body, b"abc");
    let last = client.response();
    let date = last.header("date").unwrap().to_string();
    let expected = format!(
        "HTTP/1.1 200 OK\r\ndate: {date}\r\ncontent-length: 13\r\ncontent-type: text/plain; charset=utf-8\r\n\r\nHello, World!"
    );
    let mut raw = Client::connect(server.addr());
    raw.send(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut raw.stream, &mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let date_now = text.split("date: ").nth(1).unwrap()[..29].to_string();
    let expected_close = expected
        .replace(&date, &date_now)
        .replace("content-length: 13\r\n", "content-length: 13\r\nconnection: close\r\n");
    assert_eq!(text, expected_close);
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let server = ServerProcess::start(&[]);
    let (response, mut client) = exchange(server.addr(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed_by_server());
    let (response, mut client) =
        exchange(server.addr(), b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n");
    assert_eq!(response.header("connection"), Some("keep-alive"));
    assert_eq!(client.get("/").status, 200);
}

#[test]
fn head_gets_headers_and_no_body() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\n");
    let head = client.response_to_head();
    assert_eq!(head.header("content-length"), Some("13"));
    assert_eq!(client.get("/").body, b"Hello, World!", "no stray body bytes came before");
}

#[test]
fn chunked_bodies_are_decoded() {
    let server = ServerProcess::start(&[]);
    let (response, _) = exchange(
        server.addr(),
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: x\r\n\r\n",
    );
    assert_eq!(response.body, b"hello world");
}

#[test]
fn expect_continue_gets_100_before_the_body() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n",
    );
    assert_eq!(client.response().status, 100);
    client.send(b"ping");
    assert_eq!(client.response().body, b"ping");
    let mut too_big = Client::connect(server.addr());
    too_big.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n");
    assert_eq!(too_big.response().status, 413, "413 at once, never 100");
}

/// Sends `raw` and asserts the status and that the server then closes the connection.
fn assert_rejected_and_closed(server: &ServerProcess, raw: &[u8], status: u16) {
    let (response, mut client) = exchange(server.addr(), raw);
    assert_eq!(response.status, status, "{}", String::from_utf8_lossy(raw));
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed_by_server(), "{}", String::from_utf8_lossy(raw));
}

#[test]
fn smuggling_shapes_are_rejected_and_the_connection_closed() {
    let server = ServerProcess::start(&[]);
    let cases: &[(&[u8], u16)] = &[
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd", 400),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 0x3\r\n\r\nabc", 400),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked, identity\r\n\r\n", 400),
        (b"POST /echo HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\r\nx: a\r\n b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: t\rx: y\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        assert_rejected_and_closed(&server, raw, *status);
    }
    assert_eq!(get(server.addr(), "/").status, 200);
}

#[test]
fn request_line_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--set", "request_line_size_max=100"]);
    // "GET " + target + " HTTP/1.1" is exactly 100 bytes.
    let target_at_limit = format!("/alloc/0?{}", "a".repeat(100 - 4 - 9 - 9));
    let at_limit = format!("GET {target_at_limit} HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(exchange(server.addr(), at_limit.as_bytes()).0.status, 200);
    let past = format!("GET {target_at_limit}a HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_rejected_and_closed(&server, past.as_bytes(), 414);
}

#[test]
fn head_size_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&[
        "--set",
        "request_head_size_max=1KiB",
        "--set",
        "request_line_size_max=512",
    ]);
    let base = "GET / HTTP/1.1\r\nhost: t\r\nx: \r\n\r\n".len();
    let at_limit = format!("GET / HTTP/1.1\r\nhost: t\r\nx: {}\r\n\r\n", "a".repeat(1024 - base));
    assert_eq!(at_limit.len(), 1024);
    assert_eq!(exchange(server.addr(), at_limit.as_bytes()).0.status, 200);
    let past = format!("GET / HTTP/1.1\r\nhost: t\r\nx: {}\r\n\r\n", "a".repeat(1025 - base));
    assert_rejected_and_closed(&server, past.as_bytes(), 431);
}

#[test]
fn header_count_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--set", "headers_count_max=10"]);
    let at_limit = format!("GET / HTTP/1.1\r\nhost: t\r\n{}\r\n", "x: y\r\n".repeat(9));
    assert_eq!(exchange(server.addr(), at_limit.as_bytes()).0.status, 200);
    let past = format!("GET / HTTP/1.1\r\nhost: t\r\n{}\r\n", "x: y\r\n".repeat(10));
    assert_rejected_and_closed(&server, past.as_bytes(), 431);
}

#[test]
fn body_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--set", "request_body_size_max=1000"]);
    let body = vec![b'x'; 1000];
    let mut at_limit =
        format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n").into_bytes();
    at_limit.extend_from_slice(&body);
    let (response, _) = exchange(server.addr(), &at_limit);
    assert_eq!((response.status, response.body.len()), (200, 1000));
    assert_rejected_and_closed(
        &server,
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1001\r\n\r\n",
        413,
    );
    let mut chunked_at_limit =
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3e8\r\n".to_vec();
    chunked_at_limit.extend_from_slice(&body);
    chunked_at_limit.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(exchange(server.addr(), &chunked_at_limit).0.body.len(), 1000);
    let mut chunked_past =
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3e9\r\n".to_vec();
    chunked_past.extend_from_slice(&body);
    chunked_past.extend_from_slice(b"x\r\n0\r\n\r\n");
    assert_rejected_and_closed(&server, &chunked_past, 413);
}

#[test]
fn responses_larger_than_the_write_buffer_go_out_whole_and_the_connection_stays_usable() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    let body: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let mut request =
        format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", body.len())
            .into_bytes();
    request.extend_from_slice(&body);
    // Twice, pipelined, then a small request: order and bytes must survive the large writes.
    let mut batch = request.clone();
    batch.extend_from_slice(&request);
    batch.extend_from_slice(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
    client.send(&batch);
    assert_eq!(client.response().body, body);
    assert_eq!(client.response().body, body);
    assert_eq!(client.response().body, b"Hello, World!");
}

/// A chunked POST /echo of "hello" whose one chunk carries `extension` and whose trailer
/// section is `trailer`.
fn chunked_echo(extension: &str, trailer: &str) -> Vec<u8> {
    format!(
        "POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5;{extension}\r\nhello\r\n0\r\n{trailer}\r\n"
    )
    .into_bytes()
}

#[test]
fn chunk_extension_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--set", "chunk_extension_size_max=100"]);
    let (response, _) = exchange(server.addr(), &chunked_echo(&"e".repeat(100), ""));
    assert_eq!((response.status, response.body.as_slice()), (200, &b"hello"[..]));
    assert_rejected_and_closed(&server, &chunked_echo(&"e".repeat(101), ""), 400);
}

#[test]
fn trailer_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--set", "trailer_size_max=100"]);
    // Trailer bytes are counted without their CRLFs: "x: " + 97 bytes = 100.
    let at_limit = format!("x: {}\r\n", "t".repeat(97));
    let (response, _) = exchange(server.addr(), &chunked_echo("e", &at_limit));
    assert_eq!((response.status, response.body.as_slice()), (200, &b"hello"[..]));
    let past = format!("x: {}\r\n", "t".repeat(98));
    assert_rejected_and_closed(&server, &chunked_echo("e", &past), 431);
}
