//! The memory contract, observed from outside the process: overruns, stack overflows and panics
//! end as 500 while the server keeps serving; values on an abandoned stack are never dropped;
//! descriptors are not leaked; a wild pointer write still crashes; a failure injected at any
//! allocation gives a 500 and never a hang; and after startup the system allocator is never
//! called.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::thread;

use cella_tests::{get, Client, ServerProcess, SMALL};

fn testapp(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("testapp", &args, &[])
}

#[test]
fn a_value_captured_before_an_overrun_is_never_dropped_and_before_a_panic_once() {
    let server = testapp(&[]);
    assert_eq!(get(server.addr(), "/drops").text(), "0");
    assert_eq!(get(server.addr(), "/drop-then-overrun").status, 500);
    assert_eq!(get(server.addr(), "/drops").text(), "0", "an abandoned stack runs no destructors");
    assert_eq!(get(server.addr(), "/drop-then-panic").status, 500);
    assert_eq!(get(server.addr(), "/drops").text(), "1", "a panic unwinds: dropped exactly once");
}

#[test]
fn a_thousand_overruns_leave_the_fd_count_unchanged_and_the_next_request_succeeds() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    thread::spawn(move || {
        // Accept and hold each connection until the server closes it.
        for stream in upstream.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.read_to_end(&mut Vec::new());
            });
        }
    });
    let server = testapp(&[]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").status, 200);
    let fds_before = server.fd_count();
    let path = format!("/socket-then-overrun?to={upstream_addr}");
    for i in 0..1000 {
        let path = if i % 2 == 0 { "/alloc/100000" } else { path.as_str() };
        assert_eq!(client.get(path).status, 500);
    }
    assert_eq!(server.fd_count(), fds_before, "the slots' sockets were closed by the runtime");
    assert_eq!(client.get("/").body, b"Hello, World!");
}

#[test]
fn a_stack_overflow_gives_500_twice_on_the_same_slot() {
    let server = ServerProcess::start(&["--slots", "1"]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/overflow").status, 500);
    assert_eq!(client.get("/overflow").status, 500);
    assert_eq!(client.get("/").status, 200);
}

#[test]
fn a_null_pointer_write_in_a_handler_crashes_the_process() {
    let mut server = testapp(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"GET /null-write HTTP/1.1\r\nhost: t\r\n\r\n");
    assert!(client.is_closed_by_server());
    let status = server.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "not turned into a 500: {status:?}");
    assert!(server.stderr().contains("faulted outside its stack guard page"));
}

#[test]
fn a_panic_with_the_arena_full_still_ends_as_500_and_the_next_panic_is_normal() {
    let mut server = testapp(&[]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/panic-when-full").status, 500);
    assert_eq!(client.get("/panic").status, 500);
    assert_eq!(client.get("/").status, 200);
    assert!(server.is_running());
}

#[test]
fn running_out_of_memory_while_the_reserve_is_spent_aborts_with_a_message() {
    let mut server = testapp(&[]);
    let mut client = Client::connect(server.addr());
    client.send(b"GET /panic-exhausts-reserve HTTP/1.1\r\nhost: t\r\n\r\n");
    assert!(client.is_closed_by_server());
    let status = server.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    assert!(server.stderr().contains("panic reserve is spent"), "{}", server.stderr());
}

/// Sends a request failing its handler's `k`-th allocation; the response status.
fn status_failing_allocation(client: &mut Client, request: &str, k: u32) -> u16 {
    let with_header = request.replacen("\r\n", &format!("\r\nx-cella-fail-alloc: {k}\r\n"), 1);
    client.send(with_header.as_bytes());
    client.response().status
}

#[test]
fn failing_the_kth_allocation_of_each_demo_handler_gives_500_and_never_hangs() {
    let server = ServerProcess::start(&["--set", "fault_injection=true"]);
    // Whether each handler allocates: a static text or a borrowed body with the content type
    // `Response::text`/`bytes` set allocates nothing; formatting and the 405's Allow do.
    let requests = [
        ("GET / HTTP/1.1\r\nhost: t\r\n\r\n", false),
        ("GET /alloc/4 HTTP/1.1\r\nhost: t\r\n\r\n", true),
        ("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi", false),
        ("GET /sleep/1 HTTP/1.1\r\nhost: t\r\n\r\n", true),
        ("GET /missing HTTP/1.1\r\nhost: t\r\n\r\n", false),
        ("DELETE / HTTP/1.1\r\nhost: t\r\n\r\n", true),
    ];
    let mut client = Client::connect(server.addr());
    for (request, allocates) in requests {
        let mut allocations = 0;
        for k in 1..=64 {
            match status_failing_allocation(&mut client, request, k) {
                500 => allocations = k,
                _ => break,
            }
        }
        assert_eq!(allocations >= 1, allocates, "{request:?} allocates: {allocations}");
        assert!(allocations < 64, "{request:?} finishes once k passes its allocation count");
        for k in 1..=allocations {
            assert_eq!(
                status_failing_allocation(&mut client, request, k),
                500,
                "{request:?} k={k}"
            );
        }
    }
    assert_eq!(client.get("/").status, 200);
}

#[test]
fn thousands_of_requests_make_no_system_allocation_after_startup() {
    let mut server = ServerProcess::start(&["--workers", "2"]);
    let mut client = Client::connect(server.addr());
    for i in 0..3000 {
        let (path, status) = match i % 6 {
            0 => ("/alloc/100000", 500),
            1 => ("/panic", 500),
            2 => ("/overflow", 500),
            3 => ("/alloc/16", 200),
            4 => ("/nope", 404),
            _ => ("/", 200),
        };
        assert_eq!(client.get(path).status, status);
    }
    client.send(
        b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    );
    assert_eq!(client.response().body, b"ok");
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    // The fullest arena held the chunked echo: its body buffer reserves request_body_size_max
    // (64 KiB) plus the head. (A 100000 KiB `Vec` fails at once: it never fills the arena.)
    let high_water: u64 = server
        .stderr()
        .lines()
        .find_map(|l| {
            l.strip_prefix("cella: the fullest arena held ")?.strip_suffix(" bytes")?.parse().ok()
        })
        .expect("the high-water line");
    assert!(high_water > 64 << 10 && high_water <= 256 << 10, "{high_water}");
}
