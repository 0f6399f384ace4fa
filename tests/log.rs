//! `cella::log` (issue 10), observed from outside the process through the `userapp` example
//! (set up with `cella::main!`, logging with the `log` macros inside handlers): every line
//! arrives whole on stderr under concurrent clients on two workers, a line longer than
//! `log_line_size_max` is cut and marked, a `Display` that overruns the arena or panics in
//! the middle of a log call costs only its request (500) and the worker's later log lines still
//! come out, and the process makes no system allocator call after its ready line.

use std::collections::HashSet;
use std::thread;

use cella_tests::{Client, ServerProcess, SMALL};

fn userapp(workers: &str, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", workers]);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("userapp", &args, &[])
}

fn lines_containing(server: &ServerProcess, text: &str) -> Vec<String> {
    server.stderr().lines().filter(|line| line.contains(text)).map(str::to_owned).collect()
}

#[test]
fn log_lines_from_many_requests_on_both_workers_arrive_whole() {
    let mut server = userapp("2", &["--slots", "8"]);
    assert!(server.stderr().contains("INFO userapp: userapp: building the app"), "startup logs");
    let addr = server.addr();
    let (clients, connections, lines) = (4, 25, 5);
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            thread::spawn(move || {
                let mut workers = HashSet::new();
                for _ in 0..connections {
                    let mut connection = Client::connect(addr);
                    workers.insert(connection.get("/thread-name").text());
                    let path = format!("/log/{lines}?tag=c{client}");
                    assert_eq!(connection.get(&path).status, 200);
                }
                workers
            })
        })
        .collect();
    let mut workers = HashSet::new();
    for thread in threads {
        workers.extend(thread.join().expect("a client thread"));
    }
    assert_eq!(workers.len(), 2, "both workers served: {workers:?}");
    // The drain reads every line the server wrote before its exit.
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    let logged = lines_containing(&server, "userapp line");
    assert_eq!(logged.len(), clients * connections * lines, "one line per log call");
    let tail = "p".repeat(100);
    for line in &logged {
        let rest = line.strip_prefix("INFO userapp: userapp line tag=c").unwrap_or("");
        let (client, rest) = rest.split_once(" index=").unwrap_or(("", ""));
        let (index, pad) = rest.split_once(' ').unwrap_or(("", ""));
        let whole = client.parse::<usize>().is_ok_and(|c| c < clients)
            && index.parse::<usize>().is_ok_and(|i| i < lines)
            && pad == tail;
        assert!(whole, "a line cut or mixed with another: {line:?}");
    }
}

#[test]
fn a_line_of_exactly_log_line_size_max_is_whole_and_a_longer_one_is_truncated_and_marked() {
    let mut server = userapp("1", &["--set", "log_line_size_max=1KiB"]);
    let mut client = Client::connect(server.addr());
    // "WARN userapp: long:" is 19 bytes; with the newline, 19 + 1004 + 1 = 1024.
    assert_eq!(client.get("/log-long/1004").status, 200);
    assert_eq!(client.get("/log-long/1005").status, 200);
    assert_eq!(client.get("/log-long/100000").status, 200);
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    let logged = lines_containing(&server, "WARN userapp: long:");
    assert_eq!(logged.len(), 3, "{logged:?}");
    assert_eq!(logged[0], format!("WARN userapp: long:{}", "L".repeat(1004)));
    for line in &logged[1..] {
        assert_eq!(line.len() + 1, 1024, "cut to the limit, newline included");
        assert!(line.ends_with("L …[truncated]"), "marked: {line}");
    }
}

#[test]
fn a_display_that_overruns_or_panics_inside_a_log_call_fails_its_request_and_logging_goes_on() {
    let mut server = userapp("1", &[]);
    let mut client = Client::connect(server.addr());
    for round in 0..3 {
        assert_eq!(client.get("/log-overrun").status, 500, "round {round}");
        // Longer than the fallback buffer on the stack: only the worker's buffer holds it.
        assert_eq!(client.get("/log-long/1000").status, 200);
        assert_eq!(client.get("/log-panic").status, 500, "round {round}");
        assert_eq!(client.get("/log-long/1000").status, 200);
    }
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    let whole = format!("WARN userapp: long:{}", "L".repeat(1000));
    assert_eq!(lines_containing(&server, &whole).len(), 6, "{}", server.stderr());
    assert!(!server.stderr().contains("never written"), "a failed call writes no line");
    assert!(!server.stderr().contains("already borrowed"));
}

#[test]
fn log_level_filters_lines_and_a_bad_level_is_refused() {
    let mut server = userapp("1", &["--set", "log_level=error"]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/log/3?tag=filtered").status, 200);
    assert_eq!(client.get("/log-long/10").status, 200);
    assert_eq!(client.get("/log-panic").status, 500);
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    let stderr = server.stderr();
    assert!(!stderr.contains("userapp line") && !stderr.contains("long:"), "{stderr}");
    let refused = std::process::Command::new(cella_tests::binary("userapp"))
        .args(["check-config", "--set", "log_level=loud"])
        .output()
        .expect("userapp runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("log_level"));
}
