//! Connection and server lifecycle over real sockets: total deadlines cut off slow clients while
//! others are served; 503 when every slot is busy and recovery after; handler deadlines; a full
//! connection table and EMFILE are survived; a handler's outbound call suspends only that
//! request; SIGTERM drains without losing a request, and a second signal exits at once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use cella_tests::{
    binary, get, get_when_a_slot_is_free, Client, ServerProcess, SMALL, STEP_TIMEOUT,
};

#[test]
fn a_client_trickling_its_head_is_cut_off_by_the_total_deadline() {
    let server = ServerProcess::start(&["--set", "header_read_timeout_ms=400"]);
    let mut slow = Client::connect(server.addr());
    let started = Instant::now();
    slow.send(b"GET / HTTP/1.1\r\n");
    let trickler = thread::spawn(move || {
        // One byte every 50 ms: each gap is short, the total is not.
        for _ in 0..100 {
            if slow.stream.write_all(b"x").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        slow
    });
    for _ in 0..5 {
        assert_eq!(get(server.addr(), "/").status, 200, "others are served meanwhile");
    }
    let mut slow = trickler.join().unwrap();
    let response = slow.response();
    assert_eq!(response.status, 408);
    assert!(started.elapsed() < Duration::from_secs(3), "cut off near the deadline, not after 5 s");
}

#[test]
fn a_client_that_stalls_its_body_is_cut_off_and_its_slot_freed() {
    let server = ServerProcess::start(&["--slots", "1", "--set", "body_read_timeout_ms=300"]);
    let mut slow = Client::connect(server.addr());
    slow.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc");
    assert_eq!(slow.response().status, 408);
    assert!(slow.is_closed_by_server());
    assert_eq!(get(server.addr(), "/").status, 200, "the only slot is free again");
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let server = ServerProcess::start(&["--set", "keepalive_idle_timeout_ms=200"]);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").status, 200);
    assert!(client.is_closed_by_server());
}

#[test]
fn when_every_slot_is_busy_new_requests_get_503_at_once_then_recover() {
    let server = ServerProcess::start(&["--slots", "2"]);
    let addr = server.addr();
    let sleepers: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || get_when_a_slot_is_free(addr, "/sleep/600").status))
        .collect();
    // Wait (bounded) until both slots are taken: a request then gets 503.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let busy = loop {
        let response = get(addr, "/");
        if response.status == 503 {
            break response;
        }
        assert!(Instant::now() < deadline, "never saw 503");
    };
    assert_eq!(busy.header("retry-after"), Some("1"));
    for sleeper in sleepers {
        assert_eq!(sleeper.join().unwrap(), 200);
    }
    assert_eq!(get(addr, "/").status, 200, "recovered once the slots were freed");
}

#[test]
fn with_a_slot_wait_a_request_waits_for_a_free_slot_instead() {
    let server = ServerProcess::start(&["--slots", "1", "--set", "slot_wait_timeout_ms=5000"]);
    let addr = server.addr();
    let sleeper = thread::spawn(move || get(addr, "/sleep/300").status);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(sleeper.join().unwrap(), 200);
}

#[test]
fn a_handler_past_its_deadline_gets_504_not_the_retryable_503() {
    let server = ServerProcess::start(&["--set", "handler_timeout_ms=200"]);
    let started = Instant::now();
    assert_eq!(get(server.addr(), "/sleep/5000").status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(get(server.addr(), "/").status, 200);
}

#[test]
fn a_full_connection_table_with_nothing_idle_turns_new_connections_away_politely() {
    let server = ServerProcess::start(&["--max-connections", "2"]);
    let held = requests_in_flight(server.addr(), 2);
    let mut extra = Client::connect(server.addr());
    assert_eq!(extra.response().status, 503);
    assert!(extra.is_closed_by_server());
    drop(held);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while get_status_or_zero(server.addr()) != 200 {
        assert!(Instant::now() < deadline, "never recovered");
    }
}

#[test]
fn with_two_workers_a_full_table_with_nothing_idle_holds_a_new_connection_for_the_wait_then_503() {
    let (server, mut held) = two_workers_with_a_busy_table_of_2(&["full_table_wait_ms=300"]);
    // Whichever worker accepts it, another worker is asked to close an idle connection and has
    // none: the new connection is held for `full_table_wait_ms` and then turned away.
    let started = Instant::now();
    let mut extra = Client::connect(server.addr());
    assert_eq!(extra.response().status, 503);
    assert!(extra.is_closed_by_server());
    let held_for = started.elapsed();
    assert!(
        held_for >= Duration::from_millis(290) && held_for < Duration::from_secs(3),
        "{held_for:?}"
    );
    for client in &mut held {
        client.send(b"host: t\r\n\r\n");
        assert_eq!(client.response().status, 200, "the held requests were not disturbed");
    }
}

#[test]
fn each_worker_holds_full_table_held_max_connections_and_turns_the_next_away_at_once() {
    // Nothing can be evicted, and the wait outlasts the test: a held connection is answered
    // only once room frees.
    let (server, busy) =
        two_workers_with_a_busy_table_of_2(&["full_table_wait_ms=10000", "full_table_held_max=2"]);
    let addr = server.addr();
    // Five more: however the kernel spreads them, one worker gets at least three, holds two and
    // turns the rest away at once; so 1 to 3 are turned away (503), 2 to 4 held (no answer).
    let extra: Vec<Client> = (0..5).map(|_| Client::connect(addr)).collect();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !extra.iter().any(has_an_answer) {
        assert!(Instant::now() < deadline, "none was turned away");
        thread::sleep(Duration::from_millis(10));
    }
    // The others turned away were accepted with it: after this, any still silent is held.
    thread::sleep(Duration::from_millis(500));
    let (mut turned_away, mut held): (Vec<Client>, Vec<Client>) =
        extra.into_iter().partition(has_an_answer);
    assert!((1..=3).contains(&turned_away.len()), "{} turned away", turned_away.len());
    for client in &mut turned_away {
        assert_eq!(client.response().status, 503);
    }
    // Room frees: each held connection is admitted and served, long before its wait ends (as
    // each is served and closed, the next is admitted).
    drop(busy);
    for client in &mut held {
        client.send(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    }
    for client in &mut held {
        assert_eq!(client.response().status, 200);
    }
}

/// Whether the server sent something on `client` (or closed it) by now, without reading it.
fn has_an_answer(client: &Client) -> bool {
    client.stream.set_nonblocking(true).unwrap();
    let answered = client.stream.peek(&mut [0u8]).is_ok();
    client.stream.set_nonblocking(false).unwrap();
    answered
}

#[test]
fn with_full_table_held_max_0_a_new_connection_is_turned_away_at_once() {
    let (server, _busy) =
        two_workers_with_a_busy_table_of_2(&["full_table_wait_ms=10000", "full_table_held_max=0"]);
    let started = Instant::now();
    let mut extra = Client::connect(server.addr());
    assert_eq!(extra.response().status, 503);
    assert!(started.elapsed() < Duration::from_secs(5), "not held for the 10 s wait");
}

/// A server with 2 workers, a connection table of 2 and each `settings` (`key=value`), whose
/// table is full of requests in flight (see [`requests_in_flight`]): nothing can be evicted.
fn two_workers_with_a_busy_table_of_2(settings: &[&str]) -> (ServerProcess, Vec<Client>) {
    let mut args = vec!["--workers", "2", "--max-connections", "2"];
    for setting in settings {
        args.extend_from_slice(&["--set", setting]);
    }
    let server = ServerProcess::start(&args);
    let busy = requests_in_flight(server.addr(), 2);
    (server, busy)
}

/// `count` connections, each with a request answered and half of the next one sent in the same
/// segment: once the answer to the first arrives, the server holds the half head, a request in
/// flight, so the connection may not be evicted. The client sends the rest with `host: t\r\n\r\n`.
fn requests_in_flight(addr: std::net::SocketAddr, count: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..count).map(|_| Client::connect(addr)).collect();
    for client in &mut clients {
        client.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\nGET / HTTP/1.1\r\n");
        assert_eq!(client.response().status, 200);
    }
    clients
}

fn get_status_or_zero(addr: std::net::SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn running_out_of_file_descriptors_is_survived() {
    // SMALL's plan needs 64 connections + 1 worker x 64 held + 4 slots x 4 sockets + 1 listener
    // + 64 spare = 209.
    let mut server = serve_under_ulimit("testapp", "ulimit -n 224");
    // A handler takes most of the descriptors for a while (a plugin or a library could).
    let addr = server.addr();
    let holder = thread::spawn(move || get(addr, "/hold-fds?n=204&ms=1500").text());
    let deadline = Instant::now() + STEP_TIMEOUT;
    while std::fs::read_dir(format!("/proc/{}/fd", server.pid())).map_or(0, |d| d.count()) < 204 {
        assert!(Instant::now() < deadline, "the handler never took its descriptors");
        thread::sleep(Duration::from_millis(10));
    }
    // More connections than descriptors left: some are shed, none crash the server.
    let flood: Vec<_> = (0..60).filter_map(|_| TcpStream::connect(server.addr()).ok()).collect();
    thread::sleep(Duration::from_millis(300));
    assert!(server.is_running());
    drop(flood);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while get_status_or_zero(server.addr()) != 200 {
        assert!(Instant::now() < deadline, "never served again after EMFILE");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.is_running());
    assert!(holder.join().unwrap().parse::<usize>().unwrap() > 100);
}

/// Starts `binary serve SMALL` under a shell's `ulimit` command.
fn serve_under_ulimit(name: &str, ulimit: &str) -> ServerProcess {
    let mut command = Command::new("sh");
    let mut script = format!("{ulimit} && exec {} serve", binary(name).display());
    for arg in SMALL {
        script.push(' ');
        script.push_str(arg);
    }
    command.args(["-c", &script]);
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    ServerProcess::spawn(command)
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    // Soft 100 is below the 209 the plan needs; the hard limit is higher, so cella raises it.
    let server = serve_under_ulimit("cella", "ulimit -Sn 100");
    assert_eq!(get(server.addr(), "/").status, 200);
}

#[test]
fn a_plan_the_open_file_limit_cannot_hold_is_refused_with_both_numbers() {
    let output = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 100 && exec {} serve --workers 1 --slots 4 --max-connections 500",
                binary("cella").display()
            ),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs 645 file descriptors"), "{stderr}");
    assert!(stderr.contains("open-file limit is 100"), "{stderr}");
    let check = Command::new(binary("cella"))
        .args(["check-config", "--workers", "1", "--slots", "4", "--max-connections", "500"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(stdout.contains("# file descriptors needed: 645 "), "{stdout}");
}

#[test]
fn an_outbound_call_suspends_only_its_request() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let (mut stream, _) = upstream.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        // Answer only once the test has seen other requests served.
        let _ = released.recv_timeout(STEP_TIMEOUT);
        let _ = stream.write_all(
            b"HTTP/1.1 201 Created\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
        );
    });
    let server = ServerProcess::start(&["--workers", "1"]);
    let addr = server.addr();
    let relay = thread::spawn(move || get(addr, &format!("/upstream?to={upstream_addr}&path=/x")));
    let mut client = Client::connect(addr);
    for _ in 0..20 {
        assert_eq!(
            client.get("/").status,
            200,
            "the one worker serves others while the relay waits"
        );
    }
    assert!(!relay.is_finished());
    release.send(()).unwrap();
    let relayed = relay.join().unwrap();
    assert_eq!((relayed.status, relayed.body.as_slice()), (201, &b"upstream"[..]));
    assert_eq!(
        get(addr, "/upstream?to=10.0.0.1:80").status,
        403,
        "the demo relays to loopback only"
    );
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut server = ServerProcess::start(&[]);
    let addr = server.addr();
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/").status, 200);
    let mut busy = Client::connect(addr);
    busy.send(b"GET /sleep/500 HTTP/1.1\r\nhost: t\r\n\r\n");
    thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGTERM);
    let response = busy.response();
    assert_eq!(response.status, 200, "the in-flight request finished");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(idle.is_closed_by_server(), "idle keep-alive connections are closed");
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = ServerProcess::start(&[]);
    let mut busy = Client::connect(server.addr());
    busy.send(b"GET /sleep/10000 HTTP/1.1\r\nhost: t\r\n\r\n");
    thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    server.signal(libc::SIGINT);
    let status = server.wait_exit();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((status.code(), status.signal()), (Some(1), None));
}

#[test]
fn a_client_that_stops_reading_its_response_is_cut_off_by_the_write_deadline() {
    // An 8 MiB echo: more than the kernel's socket buffers hold while the client reads nothing.
    let server = ServerProcess::start(&[
        "--slots",
        "1",
        "--slot-arena",
        "16MiB",
        "--set",
        "request_body_size_max=8MiB",
        "--set",
        "response_write_timeout_ms=300",
    ]);
    let body = vec![b'x'; 8 << 20];
    let mut stalled = TcpStream::connect(server.addr()).unwrap();
    stalled
        .write_all(
            format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n", body.len())
                .as_bytes(),
        )
        .unwrap();
    stalled.write_all(&body).unwrap();
    // The only slot is held while the response is written; once the deadline passes, the
    // connection is closed and the slot is free for this request.
    let started = Instant::now();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while get_status_or_zero(server.addr()) != 200 {
        assert!(Instant::now() < deadline, "the slot was never freed");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The stalled client gets less than the whole response, then the end of the stream.
    stalled.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(received < body.len(), "cut off before the whole response ({received} bytes)");
}

#[test]
fn after_a_closing_error_input_is_drained_only_until_the_linger_deadline() {
    let server = ServerProcess::start(&["--set", "linger_timeout_ms=300"]);
    let mut client = Client::connect(server.addr());
    // A malformed head: 400 and close. The server half-closes (FIN) and keeps reading what the
    // client still sends, for the linger time, then closes: later writes fail (reset).
    client.send(b"GET / HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n");
    assert_eq!(client.response().status, 400);
    let started = Instant::now();
    let mut stream = client.stream;
    while stream.write_all(b"garbage").is_ok() {
        assert!(started.elapsed() < Duration::from_secs(5), "never closed");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "lingered for the configured time first"
    );
}

#[test]
fn slots_belong_to_the_instance_so_any_worker_can_use_every_slot() {
    let server = ServerProcess::start(&["--workers", "2", "--slots", "4"]);
    let addr = server.addr();
    // With slots split per worker (2 each) and connections hashed to workers by the kernel,
    // 4 concurrent requests on fresh connections land 3-to-1 or 4-to-0 in 5 rounds out of 8,
    // and one of them gets 503. Six rounds of all-200 would happen by luck once in ~360.
    for round in 0..6 {
        let started = Instant::now();
        let sleepers: Vec<_> =
            (0..4).map(|_| thread::spawn(move || get(addr, "/sleep/300").status)).collect();
        let statuses: Vec<u16> = sleepers.into_iter().map(|s| s.join().unwrap()).collect();
        assert_eq!(statuses, vec![200; 4], "round {round}");
        assert!(started.elapsed() < Duration::from_millis(1500), "ran concurrently");
    }
    // A fifth concurrent request finds every slot busy: 503 at once.
    let sleepers: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || get_when_a_slot_is_free(addr, "/sleep/800").status))
        .collect();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while get(addr, "/").status != 503 {
        assert!(Instant::now() < deadline, "never saw every slot busy");
    }
    for sleeper in sleepers {
        assert_eq!(sleeper.join().unwrap(), 200);
    }
}

#[test]
fn a_slot_freed_on_another_worker_wakes_its_waiter_at_once_not_at_the_next_sweep() {
    // testapp: the demo's endpoints and `/thread`.
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&[
        "--workers",
        "2",
        "--slots",
        "2",
        "--set",
        "slot_wait_timeout_ms=5000",
    ]);
    let server = ServerProcess::start_binary("testapp", &args, &[]);
    let addr = server.addr();
    // One slot is held throughout; the holder and the waiter take turns with the other.
    let mut filler = Client::connect(addr);
    filler.send(b"GET /sleep/1500 HTTP/1.1\r\nhost: t\r\n\r\n");
    // The holder's connection on one worker, the waiter's on the other (`/thread` names it).
    let mut holder = Client::connect(addr);
    let holder_worker = holder.get("/thread").text();
    let mut waiter = (0..64)
        .map(|_| Client::connect(addr))
        .find_map(|mut client| (client.get("/thread").text() != holder_worker).then_some(client))
        .expect("the kernel spreads connections over both workers");
    // Waking at the other worker's next sweep (every 50 ms) makes the waiter wait until then.
    // The waiter is admitted at a sweep, and the next round starts right after; the holder
    // sleeps 5 ms longer each round, so its slot comes free 0, 5, ... 45 ms past a multiple of
    // 50 ms after that sweep: ~225 ms of waiting over ten rounds. A wake at once takes well
    // under 1 ms a round on an idle machine.
    let mut waited = Duration::ZERO;
    for round in 0..10u64 {
        let sleep = 40 + 5 * round;
        holder.send(format!("GET /sleep/{sleep} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        thread::sleep(Duration::from_millis(20)); // The holder's request has the free slot.
        waiter.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
        assert_eq!(holder.response().status, 200, "round {round}");
        let freed = Instant::now(); // The slot is freed before the holder's answer is sent.
        assert_eq!(waiter.response().status, 200, "round {round}");
        waited += freed.elapsed();
    }
    assert!(
        waited < Duration::from_millis(100),
        "waited {waited:?} in all after the slots came free"
    );
    assert_eq!(filler.response().status, 200);
}

#[test]
fn a_full_table_closes_the_oldest_idle_keep_alive_connection_to_admit_a_new_one() {
    let server = ServerProcess::start(&["--max-connections", "4"]);
    let addr = server.addr();
    // Three times the table's size in keep-alive connections, each idle after one request.
    let mut idle: Vec<Client> = Vec::new();
    for _ in 0..12 {
        let mut client = Client::connect(addr);
        assert_eq!(client.get("/").status, 200, "a new client is served, never turned away");
        idle.push(client);
    }
    // The oldest were closed to make room (in order); the newest four are still open.
    for client in &mut idle[..8] {
        assert!(client.is_closed_by_server());
    }
    for client in &mut idle[8..] {
        assert_eq!(client.get("/").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(addr, "/").status, 200);
    }
}

#[test]
fn a_full_table_closes_an_idle_connection_of_another_worker_to_admit_a_new_one() {
    assert_eq!(new_client_on_the_worker_with_nothing_idle(&[]), 200);
}

#[test]
fn with_full_table_wait_ms_0_only_the_accepting_workers_idle_connections_make_room() {
    assert_eq!(new_client_on_the_worker_with_nothing_idle(&["--set", "full_table_wait_ms=0"]), 503);
}

/// Fills a table of 4 with idle keep-alive connections of one of 2 workers, then connects until
/// a new client lands on the other worker (which has nothing idle of its own): its status. The
/// clients landing on the first worker meanwhile close that worker's own oldest idle ones.
fn new_client_on_the_worker_with_nothing_idle(extra: &[&str]) -> u16 {
    // testapp: the demo's endpoints and `/thread`, which names the worker.
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", "2", "--max-connections", "4"]);
    args.extend_from_slice(extra);
    let server = ServerProcess::start_binary("testapp", &args, &[]);
    let addr = server.addr();
    let mut first = Client::connect(addr);
    let worker = first.get("/thread").text();
    let mut idle = vec![first];
    while idle.len() < 4 {
        let mut client = Client::connect(addr);
        if client.get("/thread").text() == worker {
            idle.push(client);
        } else {
            drop(client);
            thread::sleep(Duration::from_millis(100)); // The server sees the close.
        }
    }
    for _ in 0..64 {
        let mut client = Client::connect(addr);
        let response = client.get("/thread");
        if response.status != 200 || response.text() != worker {
            return response.status;
        }
        idle.push(client); // It closed its own worker's oldest idle connection.
    }
    panic!("no connection landed on the other worker");
}

#[test]
fn heads_whose_small_bodies_never_come_do_not_hold_slots() {
    let server = ServerProcess::start(&["--slots", "2"]);
    let addr = server.addr();
    // More stalled uploads than slots: each sent a head announcing 100 bytes, and no body.
    let mut stalled: Vec<Client> = (0..10)
        .map(|_| {
            let mut client = Client::connect(addr);
            client.send(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n");
            client
        })
        .collect();
    for _ in 0..5 {
        assert_eq!(get(addr, "/").status, 200, "the stalled bodies hold no slot");
    }
    // A stalled upload that completes is served.
    stalled[0].send(&[b'x'; 100]);
    assert_eq!(stalled[0].response().body, vec![b'x'; 100]);
}

/// A connection holding half of a second request (answered first request, then the start of
/// the next in the same segment): busy reading a head, so it can be neither evicted nor idle.
fn connection_mid_head(addr: std::net::SocketAddr) -> Client {
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\nGET / HTTP/1.1\r\n");
    assert_eq!(client.response().status, 200);
    client
}

#[test]
fn connections_belong_to_the_instance_so_every_worker_admits_up_to_the_limit() {
    let server = ServerProcess::start(&["--workers", "2", "--max-connections", "16"]);
    let addr = server.addr();
    // Split per worker (8 each), the kernel's hash puts more than 8 of 16 on one worker
    // almost always (only 1 in 4 of spreads is 8/8); here all 16 are admitted.
    let mut held: Vec<Client> = (0..16).map(|_| connection_mid_head(addr)).collect();
    let mut extra = Client::connect(addr);
    let refused = extra.response();
    assert_eq!((refused.status, refused.text().trim()), (503, "too many connections"));
    for client in &mut held {
        client.send(b"host: t\r\n\r\n");
        assert_eq!(client.response().status, 200, "each held connection finishes its request");
    }
}

#[test]
fn idle_connections_hold_no_io_buffers() {
    // Two buffer pairs, ten idle keep-alive connections: new clients are still served.
    let server = ServerProcess::start(&["--set", "io_buffers=2"]);
    let addr = server.addr();
    let mut idle: Vec<Client> = (0..10).map(|_| Client::connect(addr)).collect();
    for client in &mut idle {
        assert_eq!(client.get("/").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(addr, "/").status, 200);
    }
    for client in &mut idle {
        assert_eq!(client.get("/").status, 200, "idle connections are served again");
    }
}

#[test]
fn a_free_io_buffer_pair_one_worker_keeps_goes_to_a_connection_waiting_on_another() {
    // Two workers, two pairs. After keep-alive requests on both workers, each may keep one
    // free pair for its next read, and the pool is empty; a connection mid-head then holds one
    // pair. A new request on the worker without a pair must get the other worker's at once:
    // finding the pool dry, it wakes the worker that keeps it. Were the kept pair stranded, the
    // request would wait until the mid-head connection is cut off (408, after 1 s) instead.
    let server = ServerProcess::start(&["--workers", "2", "--set", "io_buffers=2"]);
    let addr = server.addr();
    for _ in 0..12 {
        let mut idle: Vec<Client> = (0..8).map(|_| Client::connect(addr)).collect();
        for client in &mut idle {
            assert_eq!(client.get("/").status, 200);
        }
        let mut holding = connection_mid_head(addr);
        let started = Instant::now();
        for _ in 0..4 {
            assert_eq!(get(addr, "/").status, 200);
        }
        holding.send(b"host: t\r\n\r\n");
        assert_eq!(holding.response().status, 200, "served, not cut off for a stranded pair");
        assert!(started.elapsed() < Duration::from_millis(900), "{:?}", started.elapsed());
    }
}

#[test]
fn a_slot_kept_for_a_pipelined_request_that_has_not_come_whole_goes_back_at_once() {
    // Two slots, two workers. A pipelined request frees its slot with the next request's head
    // half buffered: the slot, kept for that request, must go back to the instance when the
    // head turns out incomplete. Were it kept, a sleeping handler holding the other slot would
    // leave nothing for a request on the other worker: 503 (in the rounds where the kernel puts
    // the half head on one worker and the sleeper and a request on the other).
    let server = ServerProcess::start(&["--workers", "2", "--slots", "2"]);
    let addr = server.addr();
    for _ in 0..16 {
        let mut half = connection_mid_head(addr);
        let mut sleeper = Client::connect(addr);
        sleeper.send(b"GET /sleep/150 HTTP/1.1\r\nhost: t\r\n\r\n");
        thread::sleep(Duration::from_millis(20)); // The sleeper holds its slot.
        for _ in 0..3 {
            assert_eq!(get(addr, "/").status, 200, "a slot is free while a head is half sent");
        }
        assert_eq!(sleeper.response().status, 200);
        half.send(b"host: t\r\n\r\n");
        assert_eq!(half.response().status, 200);
    }
    // Whole pipelined batches on one slot: each request takes the slot the one before freed.
    let mut client = Client::connect(addr);
    client.send(&b"GET /alloc/1 HTTP/1.1\r\nhost: t\r\n\r\n".repeat(16));
    for _ in 0..16 {
        assert_eq!(client.response().text(), "1024");
    }
}

#[test]
fn io_buffer_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--set", "io_buffers=2"]);
    let addr = server.addr();
    // At the limit: two connections each hold a pair while reading a head.
    let mut first = connection_mid_head(addr);
    let mut second = connection_mid_head(addr);
    // Past it: a third connection's request waits for a pair, unanswered...
    let mut third = Client::connect(addr);
    third.send(b"GET /alloc/1 HTTP/1.1\r\nhost: t\r\n\r\n");
    third.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    let early = third.stream.read(&mut byte);
    assert!(early.is_err(), "answered without a buffer pair: {early:?}");
    third.stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    // ...until one is given back: the first connection's request completes, it goes idle.
    first.send(b"host: t\r\n\r\n");
    assert_eq!(first.response().status, 200);
    assert_eq!(third.response().text(), "1024");
    second.send(b"host: t\r\n\r\n");
    assert_eq!(second.response().status, 200);
}

#[test]
fn slow_heads_cannot_starve_the_instance_of_io_buffers() {
    let server = ServerProcess::start(&["--set", "io_buffers=4"]);
    let addr = server.addr();
    // Twelve clients start a head and stall (slowloris): three times the pairs there are.
    let mut stalled: Vec<Client> = (0..12)
        .map(|_| {
            let mut client = Client::connect(addr);
            client.send(b"GET / HTTP/1.1\r\nhost: t\r\n");
            client
        })
        .collect();
    // A normal client is served long before the stalled heads' own deadline (10 s): under
    // pressure, the heads arriving longest (at least 1 s) give their pairs back with 408.
    let started = Instant::now();
    assert_eq!(get(addr, "/").status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The oldest nine went first (the last three may still hold the pairs).
    for client in &mut stalled[..9] {
        assert!(client.is_closed_by_server());
    }
}

#[test]
fn a_handler_deadline_counts_from_its_own_start_not_from_its_loop_turn() {
    let server = ServerProcess::start(&["--set", "handler_timeout_ms=300"]);
    let mut client = Client::connect(server.addr());
    // Pipelined: the second handler starts in the same loop turn, right after the first has
    // kept the worker busy for 250 ms (within its own deadline; past it, preemption would cut
    // it off). Counted from the turn, the second one's deadline would pass 50 ms into its
    // 100 ms wait.
    client.send(
        b"GET /spin/250 HTTP/1.1\r\nhost: t\r\n\r\nGET /sleep/100 HTTP/1.1\r\nhost: t\r\n\r\n",
    );
    assert_eq!(client.response().status, 200);
    assert_eq!(client.response().status, 200, "a 100 ms handler is within a 300 ms deadline");
}
