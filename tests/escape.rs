//! Memory a request leaves behind (issue 10), caught from outside the process: the `testapp`
//! example's `/escape/*` endpoints keep a pointer into their arena in a lazily initialised
//! static, a thread-local, a `std::sync::Mutex<String>` built at startup and a cell of the state
//! heap. With
//! `escape_check` on, each produces one `cella: escape:` line naming the kind of memory, the
//! request, and the slot, which is retired: later requests read what the first one left (with
//! the check off, they read the wiped arena instead), the count shows in `/metrics`, and when
//! every slot is retired the instance exits with a named cause. Ordinary requests of the demo
//! app and of the `kv` example, overruns and panics included, produce no hit with `full`.
//!
//! Quarantine mode catches the same leak when it is read: a handler keeps a pointer into its
//! arena in a static, a later request reads it, and the process crashes with one line naming
//! the slot and the address, where it would otherwise have read the wiped arena's bytes.

use std::thread;

use cella_tests::admin::{admin_addr, scrape};
use cella_tests::{get, Client, ServerProcess, SMALL};

/// `testapp` with `escape_check = level`, the admin listener on, and quarantine off unless
/// `extra` turns it on (CI's quarantine pass sets it for every test).
fn testapp(level: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    let check = format!("escape_check={level}");
    args.extend_from_slice(&["--set", &check, "--set", "admin_listen=127.0.0.1:0"]);
    args.extend_from_slice(&["--set", "quarantine=false"]);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("testapp", &args, &[]).expect_escapes()
}

/// The `cella: escape:` lines the server wrote.
fn escape_lines(server: &ServerProcess) -> Vec<String> {
    let stderr = server.stderr();
    stderr.lines().filter(|line| line.starts_with("cella: escape:")).map(String::from).collect()
}

/// Requests `path` once, expects one escape line naming `kind` and the request, then asks
/// `path` and `/` again many times: every answer is the first one's (or Hello, World!), and
/// the metrics count one escape and one retired slot.
fn escape_is_reported_and_the_slot_retired(level: &str, path: &str, kind: &str) {
    let mut server = testapp(level, &[]);
    let admin = admin_addr(&server);
    let first = get(server.addr(), path);
    assert_eq!(first.status, 200);
    assert!(server.wait_stderr("cella: escape:"), "no escape line: {}", server.stderr());
    let lines = escape_lines(&server);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let expected = format!("cella: escape: {kind}");
    assert!(lines[0].starts_with(&expected), "{}", lines[0]);
    assert!(lines[0].contains(&format!("as used by GET {path}; the slot is retired")), "{lines:?}");
    let mut client = Client::connect(server.addr());
    for _ in 0..20 {
        assert_eq!(client.get(path).body, first.body, "what the first request left is intact");
        assert_eq!(client.get("/").text(), "Hello, World!");
    }
    let metrics = scrape(admin);
    assert_eq!(metrics.get("cella_escapes_total"), 1.0);
    assert_eq!(metrics.get("cella_slots_retired"), 1.0);
    assert!(server.terminate().success()); // every line read
    assert_eq!(escape_lines(&server).len(), 1, "the retired slot was never used again");
    let drained =
        "cella: escape check: 1 words found pointing into released arenas, 1 slots retired";
    assert!(server.stderr().contains(drained), "{}", server.stderr());
}

#[test]
fn a_static_first_initialised_in_a_handler_is_reported_and_its_slot_retired() {
    escape_is_reported_and_the_slot_retired("statics", "/escape/static", "static in testapp+0x");
}

#[test]
fn a_thread_local_filled_in_a_handler_is_reported_and_its_slot_retired() {
    escape_is_reported_and_the_slot_retired("statics", "/escape/thread-local", "thread-local");
}

#[test]
fn a_std_mutex_built_at_startup_and_written_in_a_handler_is_reported_with_full() {
    escape_is_reported_and_the_slot_retired("full", "/escape/heap", "heap");
}

#[test]
fn a_state_heap_value_holding_an_arena_address_is_reported_with_full() {
    escape_is_reported_and_the_slot_retired("full", "/escape/state-heap", "state heap");
}

#[test]
fn without_the_check_a_later_request_reads_the_wiped_arena() {
    let server = testapp("off", &[]);
    let first = get(server.addr(), "/escape/static");
    assert_eq!(first.text(), "first set by /escape/static");
    let later = get(server.addr(), "/escape/static");
    assert_ne!(
        later.body, first.body,
        "the slot was wiped and reused: this is what the check stops"
    );
    assert!(escape_lines(&server).is_empty());
}

#[test]
fn the_heap_is_not_scanned_with_statics() {
    let mut server = testapp("statics", &[]);
    assert_eq!(get(server.addr(), "/escape/heap").status, 200);
    assert_eq!(get(server.addr(), "/").status, 200);
    assert!(server.terminate().success()); // every line read
    assert!(escape_lines(&server).is_empty(), "{}", server.stderr());
}

#[test]
fn when_every_slot_is_retired_the_instance_exits_naming_the_cause() {
    let mut server = testapp("statics", &["--slots", "1"]);
    // The instance may exit before this request's answer is written: it is not read.
    let mut client = Client::connect(server.addr());
    client.send(b"GET /escape/static HTTP/1.1\r\nHost: x\r\n\r\n");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(70), "{}", server.stderr());
    let stderr = server.stderr();
    assert!(
        stderr.contains("cella: fatal: worker 0 is tainted: every slot is retired"),
        "{stderr}"
    );
    assert!(stderr.contains("last request: GET /escape/static"), "{stderr}");
}

#[test]
fn in_quarantine_reading_a_leaked_arena_pointer_names_the_slot_and_address() {
    let mut server = testapp("off", &["--set", "quarantine=true"]);
    assert_eq!(get(server.addr(), "/escape/leak").text(), "leaked");
    // The process crashes while handling this one: its answer is not read.
    let mut client = Client::connect(server.addr());
    client.send(b"GET /escape/read-leaked HTTP/1.1\r\nHost: x\r\n\r\n");
    let status = server.wait_exit();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGSEGV));
    let stderr = server.stderr();
    let line = stderr.lines().find(|line| line.starts_with("cella: fatal: quarantine:"));
    let line = line.unwrap_or_else(|| panic!("no quarantine line: {stderr}"));
    assert!(line.contains("the arena of slot 0 was touched at 0x"), "{line}");
}

#[test]
fn without_quarantine_the_same_read_silently_gets_other_bytes() {
    let server = testapp("off", &[]);
    assert_eq!(get(server.addr(), "/escape/leak").text(), "leaked");
    // The slot was wiped and given to this very request: the byte is now its own.
    let read = get(server.addr(), "/escape/read-leaked");
    assert_eq!(read.status, 200);
    assert_ne!(read.text(), "42", "the leaked byte is gone, silently");
}

#[test]
fn in_quarantine_with_the_check_on_the_leaked_memory_stays_readable() {
    let server = testapp("statics", &["--set", "quarantine=true"]);
    assert_eq!(get(server.addr(), "/escape/leak").text(), "leaked");
    assert_eq!(get(server.addr(), "/escape/read-leaked").text(), "42", "retired, not wiped");
    assert!(server.wait_stderr("as used by GET /escape/leak; the slot is retired"));
}

#[test]
fn ordinary_requests_of_the_demo_app_make_no_hit_with_full() {
    let mut server = testapp("full", &["--workers", "2"]);
    let addr = server.addr();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                for round in 0..40 {
                    assert_eq!(client.get("/").status, 200);
                    assert_eq!(client.get(&format!("/alloc/{}", round % 5)).status, 200);
                    assert_eq!(client.request("POST", "/echo", &[b'e'; 3000]).status, 200);
                    if round % 10 == 0 {
                        assert_eq!(client.get("/alloc/100000").status, 500); // an overrun
                        assert_eq!(client.get("/panic").status, 500);
                        client = Client::connect(addr);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    assert!(escape_lines(&server).is_empty(), "{}", server.stderr());
}

#[test]
fn the_kv_example_makes_no_hit_with_full() {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", "2", "--set", "escape_check=full"]);
    let mut server = ServerProcess::start_binary("kv", &args, &[]);
    let mut client = Client::connect(server.addr());
    for round in 0..3 {
        for key in 0..60 {
            let value = format!("value {key} of round {round}").repeat(key % 7 + 1);
            let put = client.request("PUT", &format!("/kv/k{key}"), value.as_bytes());
            assert_eq!(put.status, 204);
            assert_eq!(client.get(&format!("/kv/k{key}")).text(), value);
            if key % 20 == 0 {
                assert_eq!(client.get(&format!("/kv/k{key}?pad=100000")).status, 500);
                client = Client::connect(server.addr());
            }
        }
        for key in (0..60).step_by(3) {
            assert_eq!(client.request("DELETE", &format!("/kv/k{key}"), b"").status, 204);
        }
    }
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    assert!(escape_lines(&server).is_empty(), "{}", server.stderr());
}
