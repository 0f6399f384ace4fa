//! The cancellation ladder against std and libc, observed from outside: a release-built
//! `testapp` with two workers, driven over loopback sockets. Each test is one way a real handler
//! could misbehave (a destructor that waits while its request is cancelled or panicking, a
//! caught panic whose payload lives in the worker's panic reserve, ...); afterwards every
//! worker must answer correctly: `/panic` gives 500, an overrun gives 500, `/` gives 200, and
//! the process is still running. Scenarios that need two requests on one worker find two
//! connections the kernel gave to the same worker (`/thread` names the worker's thread).

use std::time::{Duration, Instant};

use cella_tests::{Client, ServerProcess, SMALL};

/// The release-built test app with two workers, `SMALL` limits and `extra` flags.
fn testapp(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", "2"]);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("testapp", &args, &[])
}

/// Two connections served by the same worker.
fn same_worker_clients(server: &ServerProcess) -> (Client, Client) {
    let mut first = Client::connect(server.addr());
    let worker = first.get("/thread").text();
    for _ in 0..64 {
        let mut other = Client::connect(server.addr());
        if other.get("/thread").text() == worker {
            return (first, other);
        }
    }
    panic!("64 connections and none on the first one's worker");
}

/// Every worker still answers as it should (several connections, so both workers are hit).
fn assert_every_worker_answers(server: &mut ServerProcess) {
    for _ in 0..8 {
        let mut client = Client::connect(server.addr());
        assert_eq!(client.get("/").body, b"Hello, World!");
        assert_eq!(client.get("/panic").status, 500);
        assert_eq!(client.get("/alloc/100000").status, 500, "an overrun is still a 500");
        assert_eq!(client.get("/drop-then-overrun").status, 500);
        assert_eq!(client.get("/println").body, b"printed", "stdout's lock is free");
        assert_eq!(client.get("/").status, 200);
    }
    assert!(server.is_running(), "{}", server.stderr());
}

#[test]
fn a_destructor_that_waits_during_a_deadline_cancel_returns_at_once_and_the_worker_keeps_serving() {
    let mut server = testapp(&["--set", "handler_timeout_ms=300"]);
    let mut client = Client::connect(server.addr());
    let start = Instant::now();
    assert_eq!(client.get("/sleep-in-drop/5000").status, 504);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert_every_worker_answers(&mut server);
}

#[test]
fn a_destructor_that_waits_when_its_client_resets_does_not_abort_the_process() {
    let mut server = testapp(&[]);
    for attempt in 0..10u64 {
        let mut client = Client::connect(server.addr());
        client.send(b"GET /sleep-in-drop/5000 HTTP/1.1\r\nhost: t\r\n\r\n");
        // Not synchronisation: varied head starts so the reset lands before, at and after the
        // handler's first suspension.
        std::thread::sleep(Duration::from_millis(10 * attempt));
        client.reset();
    }
    assert_every_worker_answers(&mut server);
}

#[test]
fn a_panic_whose_unwind_would_wait_does_not_leave_its_worker_panicking() {
    let mut server = testapp(&[]);
    let (mut panicking, mut neighbour) = same_worker_clients(&server);
    panicking.send(b"GET /panic-sleep-in-drop HTTP/1.1\r\nhost: t\r\n\r\n");
    // On the same worker, while the unwind would be suspended: an overrun must still be an
    // ordinary 500, not taken for an out-of-memory panic.
    assert_eq!(neighbour.get("/alloc/100000").status, 500);
    assert_eq!(panicking.response().status, 500);
    assert_every_worker_answers(&mut server);
}

#[test]
fn a_request_finishing_during_a_panic_with_the_arena_full_does_not_wipe_the_reserve_under_it() {
    let mut server = testapp(&[]);
    let (mut panicking, mut neighbour) = same_worker_clients(&server);
    panicking.send(b"GET /panic-when-full-sleep-in-drop HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(neighbour.get("/").status, 200);
    assert_eq!(neighbour.get("/panic-when-full").status, 500);
    assert_eq!(panicking.response().status, 500);
    assert_every_worker_answers(&mut server);
}

#[test]
fn a_caught_panic_payload_in_the_reserve_survives_other_requests_panicking_on_its_worker() {
    let mut server = testapp(&[]);
    let (mut holder, mut neighbour) = same_worker_clients(&server);
    holder.send(b"GET /catch-panic-when-full-then-sleep/300 HTTP/1.1\r\nhost: t\r\n\r\n");
    for _ in 0..3 {
        assert_eq!(neighbour.get("/panic-when-full").status, 500);
    }
    let response = holder.response();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "r".repeat(100), "the payload was not wiped under its holder");
    assert_every_worker_answers(&mut server);
}

#[test]
fn a_thousand_hard_cancels_with_a_file_open_leave_the_fd_count_flat() {
    let path = std::env::temp_dir().join(format!("cella-ladder-{}.bin", std::process::id()));
    std::fs::write(&path, vec![7u8; 2 << 20]).expect("a 2 MB file");
    let mut server = testapp(&["--slot-arena", "1MiB"]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").status, 200);
    let fds_before = server.fd_count();
    let request = format!("/read-file?path={}", path.display());
    for _ in 0..1000 {
        assert_eq!(client.get(&request).status, 500, "2 MB does not fit a 1 MiB arena");
    }
    assert_eq!(server.fd_count(), fds_before, "each file was closed by the runtime");
    assert_every_worker_answers(&mut server);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_panic_with_little_stack_left_gives_500_and_leaves_std_panic_state_clean() {
    let mut server = testapp(&[]);
    for _ in 0..4 {
        let mut client = Client::connect(server.addr());
        for left in [0, 256, 512, 1024, 1536, 2048, 3072, 4096] {
            let path = format!("/panic-at-stack-limit/{left}");
            assert_eq!(client.get(&path).status, 500, "{path}");
            assert_eq!(client.get("/panic").status, 500, "the next panic is ordinary");
            assert_eq!(client.get("/alloc/100000").status, 500, "the next overrun is ordinary");
        }
    }
    assert_every_worker_answers(&mut server);
    assert!(!server.stderr().contains("tainted"), "{}", server.stderr());
}

#[test]
fn a_stack_overflow_inside_println_gives_500_and_println_still_works_on_every_worker() {
    let mut server = testapp(&[]);
    for _ in 0..4 {
        let mut client = Client::connect(server.addr());
        for left in [0, 128, 256, 512] {
            let path = format!("/println-at-stack-limit/{left}");
            assert_eq!(client.get(&path).status, 500, "{path}: it ran out of stack");
            assert_eq!(client.get("/println").body, b"printed");
        }
    }
    assert_every_worker_answers(&mut server);
}

#[test]
fn a_panic_cut_short_past_the_headroom_taints_its_worker_and_the_instance_exits_naming_it() {
    let mut server = testapp(&[]);
    let mut neighbour = Client::connect(server.addr());
    neighbour.send(b"GET /sleep/300 HTTP/1.1\r\nhost: t\r\n\r\n");
    let start = Instant::now();
    let mut client = Client::connect(server.addr());
    client.send(b"GET /panic-then-bottomless-drop HTTP/1.1\r\nhost: t\r\n\r\n");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(70), "{status:?}: {}", server.stderr());
    assert!(start.elapsed() < Duration::from_secs(5), "bounded: {:?}", start.elapsed());
    let stderr = server.stderr();
    let line = stderr.lines().find(|l| l.contains("is tainted")).expect("the escalation line");
    assert!(line.starts_with("cella: fatal: worker "), "{line}");
    assert!(line.contains("a panic was cut short"), "{line}");
    assert!(line.contains("last request cancelled: GET /panic-then-bottomless-drop"), "{line}");
    assert_eq!(stderr.matches("is tainted").count(), 1, "one line: {stderr}");
    assert!(client.is_closed_by_server(), "no answer rather than a wrong one");
}
