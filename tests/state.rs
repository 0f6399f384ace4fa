//! State that outlives a request (issue 10), observed from outside the process through the
//! `kv` example: a `cella::sync::Mutex<HashMap>` built at startup whose entries are inserted,
//! replaced and removed by handlers (so they live in the state heap), with `?pad=` requests that
//! overrun their arena while holding the lock. On the old design the entries were arena memory
//! wiped after each request (GET returned NUL bytes, another request's bytes, or hung the worker
//! in a corrupted table) and an overrun while holding a lock left it held forever. Here every
//! write is read back, under concurrent clients, with overruns interleaved, in quarantine mode
//! too, and the server makes no system allocator call between its ready line and its drain.

use std::thread;
use std::time::Instant;

use cella_tests::{Client, ServerProcess, SMALL, STEP_TIMEOUT};

fn kv(env: &[(&str, &str)]) -> ServerProcess {
    kv_with_workers(env, "2")
}

fn kv_with_workers(env: &[(&str, &str)], workers: &str) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", workers, "--set", "state_heap_size=4MiB"]);
    ServerProcess::start_binary("kv", &args, env)
}

/// A value whose bytes say which key and which write they belong to, long enough to need more
/// than one allocation size class.
fn value(key: usize, version: usize) -> Vec<u8> {
    let mut value = format!("key {key} version {version} ").into_bytes();
    value.resize(64 + (key * 37) % 700, b'a' + (key % 26) as u8);
    value
}

fn stat(client: &mut Client, name: &str) -> u64 {
    let stats = client.get("/stats").text();
    let line = stats.lines().find_map(|line| line.strip_prefix(&format!("{name} ")));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no {name}: {stats}"))
}

#[test]
fn put_then_get_returns_the_value_across_many_requests_and_delete_removes_it() {
    let mut server = kv(&[]);
    let mut client = Client::connect(server.addr());
    for round in 0..3 {
        for key in 0..200 {
            let put = client.request("PUT", &format!("/kv/k{key}"), &value(key, round));
            assert_eq!(put.status, 204, "round {round}, key {key}");
        }
        for key in 0..200 {
            let got = client.get(&format!("/kv/k{key}"));
            assert_eq!(got.status, 200, "round {round}, key {key}");
            assert_eq!(got.body, value(key, round), "round {round}, key {key}");
        }
    }
    for key in (0..200).step_by(2) {
        assert_eq!(client.request("DELETE", &format!("/kv/k{key}"), b"").status, 204);
    }
    for key in 0..200 {
        let got = client.get(&format!("/kv/k{key}"));
        let expected = if key % 2 == 0 { 404 } else { 200 };
        assert_eq!(got.status, expected, "key {key}");
    }
    assert_eq!(stat(&mut client, "keys"), 100);
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
    // One log line per request of the store (cella::log), each whole.
    let stderr = server.stderr();
    let logged: Vec<&str> = stderr.lines().filter(|line| line.starts_with("INFO kv: ")).collect();
    assert_eq!(logged.len(), 3 * 200 * 2 + 100 + 200, "{stderr}");
    assert!(
        logged.contains(&"INFO kv: PUT /kv/k7 204") && logged.contains(&"INFO kv: GET /kv/k8 404")
    );
}

/// `clients` threads, each writing its own keys and reading them back, every fourth request of
/// each an overrun while holding the store's lock (500); afterwards every last write is there.
fn concurrent_writes_survive_overruns(env: &[(&str, &str)]) {
    let mut server = kv(env);
    let addr = server.addr();
    let (clients, keys, rounds) = (4, 40, 3);
    let threads: Vec<_> = (0..clients)
        .map(|client_index| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut overruns = 0;
                for round in 0..rounds {
                    for key in (0..keys).map(|k| client_index * keys + k) {
                        let path = format!("/kv/k{key}");
                        assert_eq!(client.request("PUT", &path, &value(key, round)).status, 204);
                        if key % 4 == 0 {
                            // 1 MiB in a 256 KiB arena, with the lock held.
                            assert_eq!(client.get(&format!("{path}?pad=1024")).status, 500);
                            overruns += 1;
                        }
                        assert_eq!(client.get(&path).body, value(key, round), "key {key}");
                    }
                }
                overruns
            })
        })
        .collect();
    let overruns: u64 = threads.into_iter().map(|t| t.join().expect("a client thread")).sum();
    let mut client = Client::connect(addr);
    for key in 0..clients * keys {
        let got = client.get(&format!("/kv/k{key}"));
        assert_eq!((got.status, got.body), (200, value(key, rounds - 1)), "key {key}");
    }
    assert_eq!(stat(&mut client, "keys"), (clients * keys) as u64);
    assert_eq!(
        stat(&mut client, "recovered_poisons"),
        overruns,
        "each overrun left the lock poisoned for the next holder, never held"
    );
    assert_eq!(stat(&mut client, "state_heap_failures"), 0);
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn concurrent_clients_with_overruns_interleaved_keep_every_write() {
    concurrent_writes_survive_overruns(&[]);
}

#[test]
fn concurrent_clients_with_overruns_keep_every_write_in_quarantine_mode() {
    concurrent_writes_survive_overruns(&[("CELLA_QUARANTINE", "true")]);
}

#[test]
fn a_full_state_heap_fails_only_the_request_that_asked() {
    let mut server = kv(&[]);
    let mut client = Client::connect(server.addr());
    // 60 KiB values into a 4 MiB heap: it fills after about 68 of them.
    let big = vec![b'x'; 60 << 10];
    let mut stored = 0;
    let mut refused = 0;
    for key in 0..100 {
        match client.request("PUT", &format!("/kv/big{key}"), &big).status {
            204 => stored += 1,
            500 => refused += 1,
            other => panic!("PUT big{key}: {other}"),
        }
    }
    assert!(stored > 30 && refused > 0, "stored {stored}, refused {refused}");
    assert!(stat(&mut client, "state_heap_failures") >= refused);
    for key in 0..stored {
        assert_eq!(client.get(&format!("/kv/big{key}")).body.len(), big.len(), "big{key}");
    }
    for key in 0..stored {
        assert_eq!(client.request("DELETE", &format!("/kv/big{key}"), b"").status, 204);
    }
    assert_eq!(client.request("PUT", "/kv/after", &big).status, 204, "the space came back");
    assert_eq!(client.get("/kv/after").body, big);
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn a_request_waiting_for_the_lock_is_suspended_so_its_worker_serves_the_holder_and_others() {
    // One worker: if waiting blocked the worker, the holder (suspended on the same worker)
    // could never finish, nor could anything else be served.
    let mut server = kv_with_workers(&[], "1");
    let addr = server.addr();
    let mut holder = Client::connect(addr);
    holder.send(b"GET /kv/a?hold_ms=300 HTTP/1.1\r\nhost: t\r\n\r\n");
    let mut observer = Client::connect(addr);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while observer.get("/locked").text() != "1" {
        assert!(Instant::now() < deadline, "the holder never took the lock");
    }
    let mut waiter = Client::connect(addr);
    waiter.send(b"PUT /kv/b HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nvalue");
    assert_eq!(observer.get("/locked").text(), "1", "served while one holds and one waits");
    assert_eq!(waiter.response().status, 204, "the waiter got the lock once it was released");
    assert_eq!(holder.response().status, 404);
    assert_eq!(observer.get("/kv/b").body, b"value");
    drop((holder, observer, waiter));
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

/// `cella::sync::RwLock` through the `userapp` example's `/rw/{key}` table: `?pad=` overruns
/// the arena while holding a read or a write guard, `?hold_ms=` holds one while suspended.
fn userapp(workers: &str) -> ServerProcess {
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--workers", workers, "--slots", "8"]);
    ServerProcess::start_binary("userapp", &args, &[])
}

#[test]
fn rwlock_writes_survive_overruns_of_readers_and_writers_and_only_writers_poison() {
    let mut server = userapp("2");
    let addr = server.addr();
    let (clients, keys) = (4, 30);
    let threads: Vec<_> = (0..clients)
        .map(|client_index| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut write_overruns = 0;
                for key in (0..keys).map(|k| client_index * keys + k) {
                    let path = format!("/rw/k{key}");
                    if key % 3 == 0 {
                        // A writer cancelled hard: the lock is released and poisoned.
                        assert_eq!(
                            client.request("PUT", &format!("{path}?pad=1024"), b"x").status,
                            500
                        );
                        write_overruns += 1;
                    }
                    assert_eq!(client.request("PUT", &path, &value(key, 1)).status, 204);
                    // A reader cancelled hard: released, not poisoned.
                    assert_eq!(client.get(&format!("{path}?pad=1024")).status, 500);
                    assert_eq!(client.get(&path).body, value(key, 1), "key {key}");
                }
                write_overruns
            })
        })
        .collect();
    let write_overruns: u64 = threads.into_iter().map(|t| t.join().expect("a client")).sum();
    let mut client = Client::connect(addr);
    for key in 0..clients * keys {
        assert_eq!(client.get(&format!("/rw/k{key}")).body, value(key, 1), "key {key}");
    }
    let state = client.get("/rw-state").text();
    assert_eq!(state, format!("free {write_overruns}"), "each writer overrun poisoned it once");
    drop(client);
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}

#[test]
fn rwlock_readers_share_and_a_waiting_writer_is_suspended_not_its_worker() {
    let mut server = userapp("1");
    let addr = server.addr();
    let mut observer = Client::connect(addr);
    assert_eq!(observer.request("PUT", "/rw/a", b"first").status, 204);
    let mut reader = Client::connect(addr);
    reader.send(b"GET /rw/a?hold_ms=400 HTTP/1.1\r\nhost: t\r\n\r\n");
    let deadline = Instant::now() + STEP_TIMEOUT;
    while observer.get("/rw-state").text() != "read 0" {
        assert!(Instant::now() < deadline, "the reader never took the lock");
    }
    // Another reader shares the lock at once, while the first still holds it.
    let started = Instant::now();
    assert_eq!(observer.get("/rw/a").body, b"first");
    assert!(started.elapsed().as_millis() < 300, "a second reader waited for the first");
    let mut writer = Client::connect(addr);
    writer.send(b"PUT /rw/a HTTP/1.1\r\nhost: t\r\ncontent-length: 6\r\n\r\nsecond");
    assert_eq!(observer.get("/rw-state").text(), "read 0", "served while one reads, one waits");
    assert_eq!(reader.response().body, b"first");
    assert_eq!(writer.response().status, 204, "the writer got the lock once the reader left");
    assert_eq!(observer.get("/rw/a").body, b"second");
    drop((observer, reader, writer));
    assert_eq!(server.terminate_and_count_system_allocations(), 0);
}
