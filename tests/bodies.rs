//! Request bodies and slots, over real sockets: a body that fits the read buffer is read before
//! a slot is claimed; a larger one holds its slot while it arrives, but only `body_slots_max`
//! of them at once in the whole instance, and each at `body_rate_min_bytes_per_s` at least.
//! Past either: 408 and close, and everyone else keeps being served.

use std::time::{Duration, Instant};

use cella_tests::{get, Client, ServerProcess};

/// A POST /echo whose Content-Length (`length`) is larger than the read buffer, with the first
/// `sent` bytes of its body.
fn upload_started(server: &ServerProcess, length: usize, sent: usize) -> Client {
    let mut client = Client::connect(server.addr());
    let head = format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {length}\r\n\r\n");
    client.send(head.as_bytes());
    client.send(&vec![b'x'; sent]);
    client
}

#[test]
fn body_slot_limit_allows_exact_limit_and_is_enforced() {
    let server = ServerProcess::start(&["--slots", "4", "--set", "body_slots_max=2"]);
    // At the limit: two uploads hold slots while their bodies arrive.
    let mut first = upload_started(&server, 20_000, 100);
    let mut second = upload_started(&server, 20_000, 100);
    // Past it: on the one worker, the first two have taken their body slots by the time the
    // third's head is read (their bytes came first): 408 and close.
    let mut third = upload_started(&server, 20_000, 100);
    let refused = third.response();
    assert_eq!((refused.status, refused.header("connection")), (408, Some("close")));
    assert!(third.is_closed_by_server());
    assert_eq!(get(server.addr(), "/").status, 200, "other requests are served meanwhile");
    for upload in [&mut first, &mut second] {
        upload.send(&vec![b'x'; 19_900]);
        assert_eq!(upload.response().body.len(), 20_000);
    }
}

#[test]
fn a_body_slower_than_the_minimum_rate_is_cut_off() {
    let server = ServerProcess::start(&[
        "--set",
        "body_rate_min_bytes_per_s=200",
        "--set",
        "body_rate_window_ms=1000",
    ]);
    // Ten times the rate (2000 B/s; a window would need a 1 s stall of the client to fail it).
    let mut fast = upload_started(&server, 12_000, 1000);
    for _ in 0..22 {
        std::thread::sleep(Duration::from_millis(250)); // pacing a client, not synchronising
        fast.send(&[b'x'; 500]);
    }
    assert_eq!(fast.response().body.len(), 12_000);
    // 100 bytes then nothing: 408 at the end of the first window, not at the 30 s deadline.
    let started = Instant::now();
    let mut slow = upload_started(&server, 12_000, 100);
    let response = slow.response();
    assert_eq!((response.status, response.header("connection")), (408, Some("close")));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(slow.is_closed_by_server());
}

#[test]
fn a_slow_body_attack_with_more_connections_than_slots_leaves_requests_served() {
    let server = ServerProcess::start(&["--slots", "4"]);
    // Twelve uploads announce large bodies and send almost nothing: at most half the slots
    // (the default body_slots_max) are theirs, the rest are refused with 408.
    let attackers: Vec<Client> = (0..12).map(|_| upload_started(&server, 30_000, 10)).collect();
    for _ in 0..20 {
        assert_eq!(get(server.addr(), "/").status, 200);
    }
    drop(attackers);
}
