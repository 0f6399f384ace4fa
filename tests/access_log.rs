//! The access log (`access_log`, `access_log_format`, `access_log_buffer_size`), through the
//! `cella` binary over real loopback sockets. Proves that both formats give one line per answer
//! with the fields of the traffic sent (method, path, status, body bytes, remote 127.0.0.1, a
//! sane duration, the arena high-water mark), for handler answers, cancelled handlers' 500s,
//! 504s, busy 503s and the 4xx of bad requests; that a renamed file is reopened on SIGHUP with
//! no line lost (old lines in the old file, every line after the reopen in the new one); that a
//! writer stalled on a pipe nobody reads never slows the answers, and lines plus dropped lines
//! equal the answers in `/metrics`; that hostile request bytes (8KiB paths, quotes, control and
//! non-ASCII bytes) are escaped and cut, one line each; that bad settings are refused in one
//! line; and that SIGHUP never stops cella, log or not. The no-allocation check with the access
//! log on is in tests/check/no-alloc-after-startup.sh.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cella_tests::admin::{admin_addr, scrape};
use cella_tests::{binary, exchange, get, Client, ServerProcess, SMALL, STEP_TIMEOUT};

fn log_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir()
        .join(format!("cella-access-log-test-{}-{name}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn start(log: &str, extra: &[&str]) -> ServerProcess {
    let access_log = format!("access_log={log}");
    let mut args = vec!["--set", &access_log];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Waits (bounded) until `path` holds `count` lines; returns them.
fn wait_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let lines = read_lines(path);
        if lines.len() >= count || Instant::now() >= deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The fields of one line, whichever its format.
#[derive(Debug)]
struct Logged {
    remote: String,
    method: String,
    path: String,
    status: u16,
    bytes: u64,
    duration_s: f64,
    high_water: u64,
    user_agent: String,
}

/// `remote - - [time] "METHOD PATH PROTO" status bytes "referer" "ua" duration high-water`.
fn parse_combined(line: &str) -> Logged {
    let (remote, rest) = line.split_once(" - - [").expect("remote - - [");
    let (time, rest) = rest.split_once("] \"").expect("] \"");
    assert!(time.ends_with(" +0000") && time.len() == 26, "time {time:?} in {line}");
    let (request, rest) = rest.split_once("\" ").expect("request");
    let mut words = request.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (numbers, rest) = rest.split_once(" \"").expect("status bytes");
    let (status, bytes) = numbers.split_once(' ').expect("status bytes");
    let (_referer, rest) = rest.split_once("\" \"").expect("referer");
    let (user_agent, rest) = rest.split_once("\" ").expect("user agent");
    let (duration, high_water) = rest.split_once(' ').expect("duration high-water");
    Logged {
        remote: remote.to_string(),
        method: method.to_string(),
        path: path.to_string(),
        status: status.parse().expect("status"),
        bytes: bytes.parse().expect("bytes"),
        duration_s: duration.parse().expect("duration"),
        high_water: high_water.parse().expect("high-water"),
        user_agent: user_agent.to_string(),
    }
}

fn parse_json(line: &str) -> Logged {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let text =
        |key: &str| value[key].as_str().unwrap_or_else(|| panic!("{key}: {line}")).to_string();
    let number = |key: &str| value[key].as_u64().unwrap_or_else(|| panic!("{key}: {line}"));
    let time = text("time");
    assert!(time.ends_with('Z') && time.len() == 24, "time {time:?}");
    assert_eq!(text("protocol"), "HTTP/1.1", "{line}");
    Logged {
        remote: text("remote"),
        method: text("method"),
        path: text("path"),
        status: number("status") as u16,
        bytes: number("bytes"),
        duration_s: value["duration_s"].as_f64().expect("duration_s"),
        high_water: number("arena_high_water_bytes"),
        user_agent: text("user_agent"),
    }
}

/// Sends a mix of traffic (each kind of answer the runtime gives) and returns what each line
/// must say, in order: (method, path, status, body bytes, whether the request had a slot).
fn send_traffic(server: &ServerProcess) -> Vec<(&'static str, &'static str, u16, u64, bool)> {
    let addr = server.addr();
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nhost: t\r\nuser-agent: probe/1.0\r\n\r\n");
    assert_eq!(client.response().status, 200);
    assert_eq!(client.get("/alloc/64").status, 200);
    assert_eq!(client.request("POST", "/echo", b"abc").text(), "abc");
    assert_eq!(client.get("/nope").status, 404);
    assert_eq!(client.get("/panic").status, 500);
    // A handler past `handler_timeout_ms` (1000): 504; meanwhile the one slot is busy: 503
    // (a second leaves room for this thread to be descheduled on a busy machine).
    let slow = thread::spawn(move || get(addr, "/sleep/3000").status);
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut early_200s = 0;
    loop {
        match get(addr, "/").status {
            503 => break,
            200 => early_200s += 1, // The sleeping request had not claimed the slot yet.
            other => panic!("{other}"),
        }
        assert!(Instant::now() < deadline, "never got the busy 503");
    }
    assert_eq!(slow.join().unwrap(), 504);
    let (bad, _) = exchange(addr, b"GET /x HTTP/1.1\r\nbad header\r\n\r\n");
    assert_eq!(bad.status, 400);
    let mut expected = vec![
        ("GET", "/", 200, 13, true),
        ("GET", "/alloc/64", 200, 5, true),
        ("POST", "/echo", 200, 3, true),
        ("GET", "/nope", 404, 0, true),
        ("GET", "/panic", 500, 0, true),
    ];
    expected.extend(std::iter::repeat_n(("GET", "/", 200, 13, true), early_200s));
    expected.extend([("GET", "/", 503, 0, false), ("GET", "/sleep/3000", 504, 0, true)]);
    expected.push(("GET", "/x", 400, 0, false));
    expected
}

fn check_format(format: &str, parse: fn(&str) -> Logged) {
    let path = log_path(format);
    let format_key = format!("access_log_format={format}");
    let mut server = start(
        path.to_str().unwrap(),
        &["--slots", "1", "--set", &format_key, "--set", "handler_timeout_ms=1000"],
    );
    let expected = send_traffic(&server);
    let before_exit = Instant::now();
    assert!(server.terminate().success(), "{}", server.stderr());
    let lines = read_lines(&path);
    assert_eq!(lines.len(), expected.len(), "one line per answer: {lines:#?}");
    for (line, &(method, target, status, bytes, had_slot)) in lines.iter().zip(&expected) {
        let logged = parse(line);
        let what = format!("{format}: {line}");
        assert_eq!(logged.remote, "127.0.0.1", "{what}");
        assert_eq!((logged.method.as_str(), logged.path.as_str()), (method, target), "{what}");
        assert_eq!(logged.status, status, "{what}");
        // Error bodies are the runtime's own messages: only their presence is checked.
        if status < 400 {
            assert_eq!(logged.bytes, bytes, "{what}");
        } else {
            assert!(logged.bytes > 0, "{what}");
        }
        assert!(logged.duration_s < before_exit.elapsed().as_secs_f64() + 5.0, "{what}");
        assert_eq!(logged.high_water > 0, had_slot, "{what}");
    }
    let alloc = parse(&lines[1]);
    assert!(alloc.high_water >= 64 << 10, "/alloc/64 used 64KiB of its arena: {}", lines[1]);
    let timed_out = parse(&lines[lines.len() - 2]);
    assert!(timed_out.duration_s >= 1.0, "the 504 took its handler_timeout_ms: {timed_out:?}");
    assert_eq!(parse(&lines[0]).user_agent, "probe/1.0");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn combined_lines_carry_the_fields_of_every_answer_sent() {
    check_format("combined", parse_combined);
}

#[test]
fn json_lines_carry_the_fields_of_every_answer_sent() {
    check_format("json", parse_json);
}

#[test]
fn sighup_reopens_a_renamed_log_and_no_line_is_lost() {
    let path = log_path("rotate");
    let rotated = path.with_extension("log.1");
    let _ = std::fs::remove_file(&rotated);
    let mut server = start(path.to_str().unwrap(), &[]);
    for index in 0..20 {
        assert_eq!(get(server.addr(), &format!("/before/{index}")).status, 404);
    }
    assert_eq!(wait_lines(&path, 20).len(), 20);
    std::fs::rename(&path, &rotated).unwrap();
    server.signal(libc::SIGHUP);
    // The reopen creates the file again: from then on, every line goes there.
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "SIGHUP did not reopen: {}", server.stderr());
        thread::sleep(Duration::from_millis(5));
    }
    for index in 0..30 {
        assert_eq!(get(server.addr(), &format!("/after/{index}")).status, 404);
    }
    assert!(server.terminate().success(), "SIGHUP does not stop cella: {}", server.stderr());
    let old = read_lines(&rotated);
    let new = read_lines(&path);
    assert_eq!(old.len(), 20, "{old:#?}");
    assert!(old.iter().all(|line| line.contains("\"GET /before/")), "{old:#?}");
    assert_eq!(new.len(), 30, "{new:#?}");
    for (index, line) in new.iter().enumerate() {
        assert!(line.contains(&format!("\"GET /after/{index} HTTP/1.1\" 404")), "{line}");
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&rotated);
}

#[test]
fn a_stalled_writer_never_slows_answers_and_every_line_is_written_or_counted_dropped() {
    let mut command = Command::new(binary("cella"));
    command.arg("serve").args(SMALL).args(cella_tests::admin::ADMIN_AND_AGENT);
    command.args(["--set", "access_log=-", "--set", "access_log_buffer_size=4KiB"]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Standard output is a pipe this test does not read until the end: once the kernel's pipe
    // buffer (64KiB) is full, the writer blocks in write(2), and the worker's ring fills.
    let (mut server, mut stdout) = ServerProcess::spawn_keeping_stdout(command);
    server.signal(libc::SIGHUP); // `-` has nothing to reopen: ignored.
    let mut client = Client::connect(server.addr());
    let requests = 3000;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for index in 0..requests {
        let asked = Instant::now();
        let response = client.get(&format!("/stalled/{index:05}/{}", "x".repeat(40)));
        assert_eq!(response.status, 404);
        slowest = slowest.max(asked.elapsed());
    }
    let scraped = scrape(admin_addr(&server));
    let (lines, dropped) = (
        scraped.get("cella_access_log_lines_total"),
        scraped.get("cella_access_log_dropped_total"),
    );
    assert_eq!(scraped.sum("cella_http_requests_total"), requests as f64);
    assert_eq!(lines + dropped, requests as f64, "every answer is a line or a drop");
    assert!(dropped > 0.0, "the stalled writer made the buffer overflow ({lines} lines)");
    assert!(
        slowest < Duration::from_secs(1),
        "no answer waited for the log: slowest {slowest:?}, all {:?}",
        started.elapsed()
    );
    server.signal(libc::SIGTERM);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("the server's standard output");
    assert!(server.wait_exit().success(), "{}", server.stderr());
    let written = rest.lines().filter(|line| line.contains("\"GET /stalled/")).count();
    assert_eq!(written as f64, lines, "every line added to the buffer is written at the end");
    assert!(server.stderr().contains("dropped (a worker's access_log_buffer_size"));
}

#[test]
fn hostile_request_bytes_are_escaped_and_cut_one_line_each() {
    let path = log_path("hostile");
    let big = ["16KiB"; 3];
    let mut server = start(
        path.to_str().unwrap(),
        &[
            "--set",
            &format!("request_line_size_max={}", big[0]),
            "--set",
            &format!("request_head_size_max={}", big[1]),
            "--set",
            &format!("connection_read_buffer_size={}", big[2]),
        ],
    );
    let long_path = format!("/{}", "a".repeat(8 << 10));
    assert_eq!(get(server.addr(), &long_path).status, 404);
    // `"` and `\` are not URI characters: refused (400, no slot), logged from the read buffer.
    let (quoted, _) = exchange(server.addr(), b"GET /q\"uote\\ HTTP/1.1\r\nhost: t\r\n\r\n");
    assert_eq!(quoted.status, 400);
    // In a header they are valid (obs-text too): logged from the slot's copy of the head.
    let (agent, _) = exchange(
        server.addr(),
        b"GET /ok HTTP/1.1\r\nhost: t\r\nuser-agent: ua\"\\\xff\xfe\r\n\r\n",
    );
    assert_eq!(agent.status, 404);
    let (control, _) = exchange(server.addr(), b"GET /c\x01\x1b[2J HTTP/1.1\r\n\r\n");
    assert_eq!(control.status, 400, "a control byte in the target is refused");
    assert!(server.terminate().success(), "{}", server.stderr());
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 4, "one line each: {lines:#?}");
    assert!(lines[0].len() < 4096, "an 8KiB path is cut: {} bytes", lines[0].len());
    assert!(lines[0].contains("\"GET /aaaa") && lines[0].contains("[truncated]\" 404 "));
    assert!(lines[1].contains("\"GET /q\\x22uote\\x5C HTTP/1.1\" 400 "), "{}", lines[1]);
    assert!(lines[2].contains("\"GET /ok HTTP/1.1\" 404 "), "{}", lines[2]);
    assert!(lines[2].contains("\"ua\\x22\\x5C\\xFF\\xFE\""), "{}", lines[2]);
    assert!(lines[3].contains("\"GET /c\\x01\\x1B[2J HTTP/1.1\" 400 "), "{}", lines[3]);
    for line in &lines {
        assert!(line.bytes().all(|byte| (0x20..0x7f).contains(&byte)), "printable: {line}");
        parse_combined(line);
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_access_log_settings_are_refused_in_one_line() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--set", "access_log_format=xml"],
            "config key `access_log_format`: `xml` is not an access log format (combined or json)",
        ),
        (
            &["--set", "access_log=-", "--set", "access_log_buffer_size=4095B"],
            "access_log_buffer_size must be at least 4KiB",
        ),
        (&["--set", "access_log=/nonexistent-dir/cella.log"], "cannot open access_log: "),
    ];
    for (args, expected) in cases {
        let output = Command::new(binary("cella"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("CELLA_QUARANTINE")
            .stdin(Stdio::null())
            .output()
            .expect("cella runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "`{expected}` in {stderr}");
    }
    let plan = Command::new(binary("cella"))
        .args(["check-config", "--workers", "2", "--set", "access_log=-"])
        .output()
        .expect("cella runs");
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains(
            "2 workers × (64KiB signal stack + 64KiB panic reserve + 64KiB access log buffer)"
        ),
        "{text}"
    );
}

#[test]
fn sighup_never_stops_cella_even_without_an_access_log() {
    let mut server = ServerProcess::start(&[]);
    server.signal(libc::SIGHUP);
    server.signal(libc::SIGHUP);
    assert_eq!(get(server.addr(), "/").status, 200, "{}", server.stderr());
    assert!(server.is_running());
    assert!(server.terminate().success(), "SIGTERM still drains: {}", server.stderr());
    let stderr = server.stderr();
    assert!(!stderr.contains("second signal: exiting"), "SIGHUP is no stop signal: {stderr}");
}
