//! Operating an instance from outside: the admin listener (`admin_listen`: `/metrics`, `/livez`,
//! `/readyz`, `/config`) and the HAProxy agent-check listener (`agent_listen`). Proves that
//! `/metrics` parses as Prometheus text (a strict parser in `cella_tests::prometheus`) and that
//! its values follow the traffic sent: N requests add N, ten overruns add ten overrun
//! cancellations, busy 503s, limits and deadlines are counted under their reason, each
//! cancellation under its kind, and each request's arena high-water mark lands in its bucket;
//! that the agent's line gives the free slots as a percentage while requests hold slots, and
//! `drain` from SIGTERM on (during `drain_delay_ms`); that the admin listener never reaches the
//! handler; and that scraping, probing and agent checks allocate nothing after startup. Each
//! test starts the `testapp` binary (the demo app plus misbehaving endpoints) over real
//! loopback sockets, with one worker and four slots unless it says otherwise.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use cella_tests::admin::{admin_addr, agent_addr, agent_line, scrape, ADMIN_AND_AGENT};
use cella_tests::prometheus::Scrape;
use cella_tests::{get, Client, ServerProcess, SMALL, STEP_TIMEOUT};

fn testapp(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(ADMIN_AND_AGENT);
    args.extend_from_slice(extra);
    ServerProcess::start_binary("testapp", &args, &[])
}

/// Scrapes until `done` holds for the scrape (bounded by `STEP_TIMEOUT`); returns that scrape.
fn scrape_until(admin: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let scraped = scrape(admin);
        if done(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {scraped:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn requests_with_code(scraped: &Scrape, code: &str) -> f64 {
    scraped.value("cella_http_requests_total", &[("code", code)]).unwrap_or(0.0)
}

fn rejected(scraped: &Scrape, reason: &str) -> f64 {
    scraped
        .value("cella_rejected_total", &[("reason", reason)])
        .unwrap_or_else(|| panic!("no cella_rejected_total{{reason=\"{reason}\"}}"))
}

fn cancelled(scraped: &Scrape, kind: &str) -> f64 {
    scraped
        .value("cella_cancellations_total", &[("kind", kind)])
        .unwrap_or_else(|| panic!("no cella_cancellations_total{{kind=\"{kind}\"}}"))
}

#[test]
fn metrics_parse_as_prometheus_text_with_every_series_named_by_the_guide() {
    let server = testapp(&[]);
    assert_eq!(get(server.addr(), "/").status, 200);
    let scraped = scrape_until(admin_addr(&server), "the request's connection closed", |s| {
        s.get("cella_connections_open") == 0.0
    });
    let expected_types = [
        ("cella_http_requests_total", "counter"),
        ("cella_http_request_duration_seconds", "histogram"),
        ("cella_rejected_total", "counter"),
        ("cella_cancellations_total", "counter"),
        ("cella_slots", "gauge"),
        ("cella_slots_busy", "gauge"),
        ("cella_connections_open", "gauge"),
        ("cella_arena_high_water_bytes", "histogram"),
        ("cella_system_allocations_after_start_total", "counter"),
        ("cella_build_info", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ];
    for (family, kind) in expected_types {
        assert_eq!(scraped.types.get(family).map(String::as_str), Some(kind), "{family}");
    }
    // The naming guide: counters end in _total, and nothing else does.
    for (family, kind) in &scraped.types {
        assert_eq!(kind == "counter", family.ends_with("_total"), "{family} is a {kind}");
    }
    assert_eq!(requests_with_code(&scraped, "200"), 1.0);
    for reason in [
        "no_slot",
        "too_many_connections",
        "fd_limit",
        "head_too_large",
        "body_too_large",
        "head_timeout",
        "body_timeout",
        "body_slots_full",
        "body_too_slow",
        "malformed",
    ] {
        assert_eq!(rejected(&scraped, reason), 0.0, "{reason}");
    }
    for kind in ["overrun", "panic", "stack_overflow", "timeout", "client_gone"] {
        assert_eq!(cancelled(&scraped, kind), 0.0, "{kind}");
    }
    assert_eq!(scraped.get("cella_slots"), 4.0);
    assert_eq!(scraped.get("cella_slots_busy"), 0.0);
    assert_eq!(scraped.get("cella_system_allocations_after_start_total"), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(scraped.value("cella_build_info", &[("version", version)]), Some(1.0));
    let resident = scraped.get("process_resident_memory_bytes");
    assert!(resident > 4.0 * 256.0 * 1024.0, "the prefaulted region is resident: {resident}");
    let fds = scraped.get("process_open_fds");
    assert!((5.0..100.0).contains(&fds), "{fds} open descriptors");
}

#[test]
fn n_requests_add_n_to_the_requests_and_the_duration_histogram() {
    let server = testapp(&[]);
    let admin = admin_addr(&server);
    let before = scrape(admin);
    let mut client = Client::connect(server.addr());
    for _ in 0..25 {
        assert_eq!(client.get("/").status, 200);
    }
    assert_eq!(client.get("/no-such-path").status, 404);
    // Probes on the main listener are not requests of the metric, and scrapes are not either.
    assert_eq!(client.get("/livez").status, 200);
    let after = scrape(admin);
    let added = |name: &str| after.sum(name) - before.sum(name);
    assert_eq!(requests_with_code(&after, "200") - requests_with_code(&before, "200"), 25.0);
    assert_eq!(requests_with_code(&after, "404"), 1.0);
    assert_eq!(added("cella_http_requests_total"), 26.0);
    assert_eq!(added("cella_http_request_duration_seconds_count"), 26.0);
    assert_eq!(added("cella_probes_total"), 1.0);
    let slow = "cella_http_request_duration_seconds_bucket";
    let within = |scraped: &Scrape| scraped.value(slow, &[("le", "1")]).unwrap_or(0.0);
    assert_eq!(within(&after) - within(&before), 26.0, "each took less than a second");
    // A sleeping request takes its time: it lands above 0.25s.
    assert_eq!(client.get("/sleep/300").status, 200);
    let slept = scrape(admin);
    let quick = |scraped: &Scrape| scraped.value(slow, &[("le", "0.25")]).unwrap_or(0.0);
    assert_eq!(quick(&slept), quick(&after), "300 ms is not within 0.25 s");
    assert_eq!(
        slept.sum("cella_http_request_duration_seconds_count")
            - after.sum("cella_http_request_duration_seconds_count"),
        1.0
    );
    assert!(slept.get("cella_http_request_duration_seconds_sum") >= 0.3);
}

#[test]
fn ten_overruns_add_ten_overrun_cancellations_and_ten_500s() {
    let server = testapp(&[]);
    let admin = admin_addr(&server);
    let before = scrape(admin);
    let mut client = Client::connect(server.addr());
    for _ in 0..10 {
        assert_eq!(client.get("/alloc/100000").status, 500);
    }
    assert_eq!(client.get("/").status, 200);
    let after = scrape(admin);
    assert_eq!(cancelled(&after, "overrun") - cancelled(&before, "overrun"), 10.0);
    assert_eq!(requests_with_code(&after, "500") - requests_with_code(&before, "500"), 10.0);
    for kind in ["panic", "stack_overflow", "timeout", "client_gone"] {
        assert_eq!(cancelled(&after, kind), 0.0, "{kind}");
    }
    let count = "cella_arena_high_water_bytes_count";
    assert_eq!(after.get(count) - before.get(count), 11.0, "one mark per slot released");
}

#[test]
fn each_cancellation_is_counted_under_its_kind() {
    let server = testapp(&["--set", "handler_timeout_ms=1000"]);
    let admin = admin_addr(&server);
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/panic").status, 500);
    assert_eq!(client.get("/panic").status, 500);
    assert_eq!(client.get("/overflow").status, 500);
    assert_eq!(client.get("/sleep/3000").status, 504);
    let scraped = scrape(admin);
    assert_eq!(cancelled(&scraped, "panic"), 2.0);
    assert_eq!(cancelled(&scraped, "stack_overflow"), 1.0);
    assert_eq!(cancelled(&scraped, "timeout"), 1.0);
    assert_eq!(cancelled(&scraped, "overrun"), 0.0);
    assert_eq!(requests_with_code(&scraped, "504"), 1.0);
    // A client that goes away while its handler sleeps.
    let mut leaving = Client::connect(server.addr());
    leaving.send(b"GET /sleep/900 HTTP/1.1\r\nhost: t\r\n\r\n");
    scrape_until(admin, "the sleeping request holding a slot", |s| {
        s.get("cella_slots_busy") == 1.0
    });
    leaving.reset();
    let gone = scrape_until(admin, "client_gone", |s| cancelled(s, "client_gone") == 1.0);
    assert_eq!(gone.get("cella_slots_busy"), 0.0, "its slot was released");
    assert_eq!(cancelled(&gone, "timeout"), 1.0, "not a deadline");
}

#[test]
fn busy_503s_are_counted_as_rejected_for_no_slot() {
    let server = testapp(&["--slots", "1"]);
    let admin = admin_addr(&server);
    let addr = server.addr();
    let sleeper = thread::spawn(move || get(addr, "/sleep/1500").status);
    scrape_until(admin, "the only slot busy", |s| s.get("cella_slots_busy") == 1.0);
    for _ in 0..7 {
        assert_eq!(get(addr, "/").status, 503);
    }
    let scraped = scrape(admin);
    assert_eq!(rejected(&scraped, "no_slot"), 7.0);
    assert_eq!(requests_with_code(&scraped, "503"), 7.0);
    assert_eq!(scraped.get("cella_slots"), 1.0);
    assert_eq!(scraped.get("cella_slots_busy"), 1.0);
    assert!(scraped.get("cella_connections_open") >= 1.0, "the sleeper's connection");
    assert_eq!(sleeper.join().unwrap(), 200);
}

#[test]
fn limits_and_deadlines_are_counted_under_their_reason() {
    let server =
        testapp(&["--set", "header_read_timeout_ms=300", "--set", "body_read_timeout_ms=300"]);
    let admin = admin_addr(&server);
    let addr = server.addr();
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: t\r\n\r\n", "a".repeat(5000));
    assert_eq!(cella_tests::exchange(addr, long_target.as_bytes()).0.status, 414);
    let too_big = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n";
    assert_eq!(cella_tests::exchange(addr, too_big).0.status, 413);
    assert_eq!(
        cella_tests::exchange(addr, b"GET / HTTP/1.1\r\nhost: t\r\nbad header\r\n\r\n").0.status,
        400
    );
    assert_eq!(cella_tests::exchange(addr, b"GET / HTTP/1.1\r\nhost: t\r\n").0.status, 408);
    let half_body = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc";
    assert_eq!(cella_tests::exchange(addr, half_body).0.status, 408);
    let scraped = scrape(admin);
    assert_eq!(rejected(&scraped, "head_too_large"), 1.0);
    assert_eq!(rejected(&scraped, "body_too_large"), 1.0);
    assert_eq!(rejected(&scraped, "malformed"), 1.0);
    assert_eq!(rejected(&scraped, "head_timeout"), 1.0);
    assert_eq!(rejected(&scraped, "body_timeout"), 1.0);
    assert_eq!(rejected(&scraped, "no_slot"), 0.0);
    assert_eq!(requests_with_code(&scraped, "408"), 2.0);
}

#[test]
fn each_requests_arena_high_water_mark_lands_in_its_power_of_two_bucket() {
    let server = testapp(&[]);
    let admin = admin_addr(&server);
    let before = scrape(admin);
    let mut client = Client::connect(server.addr());
    for _ in 0..5 {
        // 100KiB of the 256KiB arena, and a little for the request.
        assert_eq!(client.get("/alloc/100").status, 200);
    }
    let after = scrape(admin);
    let bucket = |scraped: &Scrape, le: &str| {
        scraped.value("cella_arena_high_water_bytes_bucket", &[("le", le)]).unwrap()
    };
    assert_eq!(bucket(&after, "65536"), bucket(&before, "65536"), "none within 64KiB");
    assert_eq!(bucket(&after, "131072") - bucket(&before, "131072"), 5.0, "all within 128KiB");
    let sum = after.get("cella_arena_high_water_bytes_sum")
        - before.get("cella_arena_high_water_bytes_sum");
    assert!((5.0 * 102_400.0..5.0 * 131_072.0).contains(&sum), "{sum}");
}

#[test]
fn the_agent_gives_the_free_slots_as_a_percentage_never_below_one() {
    let server = testapp(&["--slots", "2"]);
    let (admin, agent) = (admin_addr(&server), agent_addr(&server));
    assert_eq!(agent_line(agent), "up ready 100% maxconn:2\n");
    let addr = server.addr();
    let first = thread::spawn(move || get(addr, "/sleep/1500").status);
    scrape_until(admin, "one slot busy", |s| s.get("cella_slots_busy") == 1.0);
    assert_eq!(agent_line(agent), "up ready 50% maxconn:2\n");
    let second = thread::spawn(move || get(addr, "/sleep/1500").status);
    scrape_until(admin, "both slots busy", |s| s.get("cella_slots_busy") == 2.0);
    assert_eq!(agent_line(agent), "up ready 1% maxconn:2\n", "never 0%: HAProxy would 503");
    assert_eq!((first.join().unwrap(), second.join().unwrap()), (200, 200));
    scrape_until(admin, "the slots free again", |s| s.get("cella_slots_busy") == 0.0);
    assert_eq!(agent_line(agent), "up ready 100% maxconn:2\n");
}

#[test]
fn from_sigterm_the_agent_says_drain_and_admin_readiness_is_503_during_the_drain_delay() {
    let mut server = testapp(&["--set", "drain_delay_ms=1500"]);
    let (admin, agent) = (admin_addr(&server), agent_addr(&server));
    assert_eq!(get(admin, "/readyz").status, 200);
    assert!(agent_line(agent).starts_with("up ready "));
    server.signal(libc::SIGTERM);
    assert!(server.wait_stderr("not ready"), "{}", server.stderr());
    let signalled = Instant::now();
    assert_eq!(agent_line(agent), "drain\n");
    assert_eq!(get(admin, "/readyz").status, 503);
    assert_eq!(get(admin, "/livez").status, 200, "still live");
    assert_eq!(scrape(admin).get("cella_ready"), 0.0);
    let served = get(server.addr(), "/");
    assert_eq!((served.status, served.header("connection")), (200, Some("close")));
    assert!(signalled.elapsed() < Duration::from_millis(1500), "all of it within the delay");
    assert!(server.wait_exit().success(), "{}", server.stderr());
}

#[test]
fn the_admin_listener_answers_itself_and_never_reaches_the_handler() {
    let server = testapp(&[]);
    let admin = admin_addr(&server);
    let config = get(admin, "/config");
    assert_eq!(config.status, 200);
    assert!(config.text().contains("\nslots = 4\n"), "{}", config.text());
    assert!(config.text().contains("admin_listen = 127.0.0.1:0\n"), "{}", config.text());
    assert!(config.text().contains("# memory plan: "), "{}", config.text());
    assert_eq!(get(admin, "/livez").text(), "live\n");
    assert_eq!(get(admin, "/readyz").text(), "ready\n");
    assert_eq!(get(admin, "/").status, 404, "not the demo app's Hello, World!");
    assert_eq!(get(admin, "/alloc/1").status, 404, "no handler behind it");
    let mut client = Client::connect(admin);
    client.send(b"HEAD /metrics HTTP/1.1\r\nhost: t\r\n\r\n");
    let head = client.response_to_head();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some_and(|length| length != "0"));
    assert!(client.is_closed_by_server(), "no body, and the connection closes");
    let (posted, _) = cella_tests::exchange(
        admin,
        b"POST /metrics HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(posted.status, 405);
    // Nor does the main listener know the admin paths.
    assert_eq!(get(server.addr(), "/metrics").status, 404);
    assert_eq!(get(server.addr(), "/config").status, 404);
}

#[test]
fn admin_connections_that_send_nothing_are_refused_past_four_then_closed_at_the_head_deadline() {
    let server = testapp(&["--set", "header_read_timeout_ms=300"]);
    let admin = admin_addr(&server);
    let idle: Vec<Client> = (0..4).map(|_| Client::connect(admin)).collect();
    // Accepted in order: once the fourth is held, a fifth is answered 503 at once.
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let answer = get(admin, "/metrics");
        if answer.status == 503 {
            assert_eq!(answer.text(), "admin connections busy\n");
            break;
        }
        assert!(Instant::now() < deadline, "a fifth admin connection was never refused");
    }
    for mut client in idle {
        assert!(client.is_closed_by_server(), "closed at the head deadline");
    }
    assert_eq!(scrape(admin).get("cella_slots"), 4.0, "the admin connections are free again");
}

#[test]
fn scraping_probing_and_agent_checks_allocate_nothing_after_startup() {
    let mut server = testapp(&["--workers", "2"]);
    let (admin, agent) = (admin_addr(&server), agent_addr(&server));
    let mut client = Client::connect(server.addr());
    for round in 0..20 {
        assert_eq!(client.get("/").status, 200);
        assert_eq!(client.get("/alloc/100000").status, 500);
        assert_eq!(client.get("/readyz").status, 200);
        let scraped = scrape(admin);
        assert_eq!(scraped.get("cella_system_allocations_after_start_total"), 0.0, "round {round}");
        assert_eq!(get(admin, "/config").status, 200);
        assert_eq!(get(admin, "/livez").status, 200);
        assert!(agent_line(agent).starts_with("up ready "));
    }
    assert_eq!(server.terminate_and_count_system_allocations(), 0, "{}", server.stderr());
}
