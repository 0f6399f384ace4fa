//! The probes on the main listener (`liveness_path`, `readiness_path`): answered by the worker
//! itself without a slot, so they stay 200 while every slot is busy (the case that made a load
//! balancer mark a saturated instance DOWN); HEAD gets no body; other methods, and a path whose
//! probe is turned off (empty), go to the handler; hitting them allocates nothing after startup.
//! And the drain delay: from SIGTERM, readiness is 503 while the listener still serves (with
//! `Connection: close`) for `drain_delay_ms`, then closes. Proven over real sockets against the
//! `cella` binary.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use cella_tests::{get, get_when_a_slot_is_free, Client, ServerProcess, STEP_TIMEOUT};

#[test]
fn liveness_and_readiness_answer_200_by_default() {
    let mut server = ServerProcess::start(&[]);
    let live = get(server.addr(), "/livez");
    assert_eq!((live.status, live.text().as_str()), (200, "live\n"));
    assert_eq!(live.header("content-type"), Some("text/plain; charset=utf-8"));
    let ready = get(server.addr(), "/readyz");
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    // Kept alive like any answer, and a query string does not matter.
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/readyz?from=lb").status, 200);
    assert_eq!(client.get("/livez").status, 200);
    assert_eq!(client.get("/").text(), "Hello, World!");
    assert_eq!(server.terminate_and_count_system_allocations(), 0, "{}", server.stderr());
}

#[test]
fn probes_stay_200_while_every_slot_is_busy() {
    let server = ServerProcess::start(&["--slots", "1"]);
    let addr = server.addr();
    let sleeper = std::thread::spawn(move || get_when_a_slot_is_free(addr, "/sleep/2000").status);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while get(addr, "/").status != 503 {
        assert!(Instant::now() < deadline, "the only slot never became busy");
    }
    assert_eq!(get(addr, "/livez").status, 200);
    assert_eq!(get(addr, "/readyz").status, 200, "busy for a moment is still ready");
    assert_eq!(get(addr, "/").status, 503, "the slot is still busy: the probes did not wait");
    assert_eq!(sleeper.join().unwrap(), 200);
}

#[test]
fn a_head_probe_has_no_body() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    for path in ["/livez", "/readyz"] {
        client.send(format!("HEAD {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        let head = client.response_to_head();
        assert_eq!(head.status, 200);
        assert!(head.header("content-length").is_some(), "the length a GET would get");
        assert_eq!(client.get("/").text(), "Hello, World!", "no body bytes after HEAD {path}");
    }
}

#[test]
fn an_empty_path_turns_a_probe_off_and_the_path_reaches_the_handler() {
    let server = ServerProcess::start(&["--set", "readiness_path=", "--set", "liveness_path=/up"]);
    assert_eq!(get(server.addr(), "/readyz").status, 404, "the demo router's 404");
    assert_eq!(get(server.addr(), "/livez").status, 404, "the default path moved");
    assert_eq!(get(server.addr(), "/up").text(), "live\n");
}

#[test]
fn only_get_and_head_are_probes_other_methods_reach_the_handler() {
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"POST /livez HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi");
    assert_eq!(client.response().status, 404, "the demo router has no /livez");
    client.send(b"DELETE /readyz HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(client.response().status, 404);
    assert_eq!(client.get("/readyz").status, 200, "the connection is still in step");
}

#[test]
fn a_probe_with_a_body_is_answered_and_the_connection_closed() {
    // The body is not read, so the connection's framing is lost after the answer.
    let server = ServerProcess::start(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"GET /livez HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello");
    let answer = client.response();
    assert_eq!((answer.status, answer.header("connection")), (200, Some("close")));
    assert!(client.is_closed_by_server());
}

#[test]
fn during_the_drain_delay_readiness_is_503_and_new_connections_are_served_then_refused() {
    let mut server = ServerProcess::start(&["--set", "drain_delay_ms=1000"]);
    let addr = server.addr();
    let mut kept = Client::connect(addr);
    assert_eq!(kept.get("/readyz").status, 200);
    // In flight across the delay (sent before the signal; served even if accepted after it):
    // the process is still there once the listener closes.
    let mut sleeper = Client::connect(addr);
    sleeper.send(b"GET /sleep/2500 HTTP/1.1\r\nhost: t\r\n\r\n");
    let deadline = Instant::now() + STEP_TIMEOUT;
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    assert!(server.wait_stderr("not ready"), "{}", server.stderr());
    let served = get(addr, "/");
    assert_eq!((served.status, served.header("connection")), (200, Some("close")));
    let ready = get(addr, "/readyz");
    assert_eq!((ready.status, ready.header("connection")), (503, Some("close")));
    assert_eq!(get(addr, "/livez").status, 200, "still live");
    let on_kept = kept.get("/");
    assert_eq!((on_kept.status, on_kept.header("connection")), (200, Some("close")));
    assert!(kept.is_closed_by_server());
    assert!(signalled.elapsed() < Duration::from_millis(1000), "all of it within the delay");
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "the listener never closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(signalled.elapsed() >= Duration::from_millis(1000), "not before the delay");
    assert!(server.is_running(), "the request in flight keeps the drain going");
    let slept = sleeper.response();
    assert_eq!((slept.status, slept.header("connection")), (200, Some("close")));
    assert!(server.wait_exit().success(), "{}", server.stderr());
}
