//! A key-value store: the supported way to keep state across requests.
//!
//! ```sh
//! cargo run --release -p cella --example kv -- serve
//! curl -X PUT --data-binary hello localhost:8080/kv/greeting    # 204
//! curl localhost:8080/kv/greeting                                # 200 hello
//! curl -X DELETE localhost:8080/kv/greeting                      # 204
//! curl 'localhost:8080/kv/greeting?pad=4096'                     # 500: 4 MiB past the arena
//! curl localhost:8080/stats                                      # requests, keys, poisonings
//! curl 'localhost:8080/kv/greeting?hold_ms=500'                  # holds the lock 500 ms
//! curl localhost:8080/locked                                     # 1 while someone holds it
//! ```
//!
//! The store is a `cella::sync::Mutex<HashMap<..>>`: while its guard is held, everything the
//! handler allocates (the key and value it inserts, the map's growth) goes to the state heap and
//! survives the request. `?pad={kib}` allocates `kib` KiB in the request's arena while holding the
//! lock (`cella::in_arena`): past the arena the request is cancelled hard (500), the runtime
//! releases the lock and poisons it, and the next request recovers the store (the pad never
//! touches the map, so the store is consistent: it clears the poison).
//!
//! Each request of the store's routes writes one line to stderr with the `log` macros
//! (`cella::log`, installed by `cella::main!`: no allocation, one write per line).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, TryLockError};

use cella::sync::{Mutex, MutexGuard};
use cella::{handler_fn, Request, Response, Router, StatusCode};

/// Requests served by the store's routes (a plain atomic: no allocation, no lock).
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Times a request found the store poisoned (a holder was cancelled) and recovered it.
static RECOVERED_POISONS: AtomicU64 = AtomicU64::new(0);

type Store = Mutex<HashMap<String, Vec<u8>>>;

/// Locks the store, recovering it from a poison: every holder below changes the map in single
/// calls (`insert`, `remove`) that a cancellation cannot split, so it is never half-updated.
fn lock(store: &Store) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
    match store.lock() {
        Ok(map) => map,
        Err(poisoned) => {
            RECOVERED_POISONS.fetch_add(1, Ordering::Relaxed);
            store.clear_poison();
            poisoned.into_inner()
        }
    }
}

fn get<'a>(store: &Store, request: &Request<'a>) -> Response<'a> {
    let key = request.param("key").unwrap_or("");
    let pad_kib: usize = request.query_param("pad").and_then(|v| v.parse().ok()).unwrap_or(0);
    let hold_ms: u64 = request.query_param("hold_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
    let map = lock(store);
    if hold_ms > 0 {
        // Holds the lock while suspended: other requests that want it wait, suspended too,
        // and the worker serves everything else meanwhile.
        cella::net::sleep(std::time::Duration::from_millis(hold_ms));
    }
    if pad_kib > 0 {
        // Scratch memory while holding the lock: the arena, not the state heap.
        cella::in_arena(|| {
            let pad = vec![1u8; pad_kib << 10];
            std::hint::black_box(&pad);
        });
    }
    match map.get(key) {
        // The copy for the response is request memory too.
        Some(value) => Response::bytes(cella::in_arena(|| value.clone())),
        None => Response::text("no such key\n").with_status(StatusCode::NOT_FOUND),
    }
}

fn put<'a>(store: &Store, request: &Request<'a>) -> Response<'a> {
    let key = request.param("key").unwrap_or("");
    let mut map = lock(store);
    // Built while the guard is held: the key and the value live in the state heap.
    map.insert(key.to_owned(), request.body().to_vec());
    Response::new(StatusCode::NO_CONTENT)
}

fn delete<'a>(store: &Store, request: &Request<'a>) -> Response<'a> {
    let key = request.param("key").unwrap_or("");
    lock(store).remove(key);
    Response::new(StatusCode::NO_CONTENT)
}

fn stats<'a>(store: &Store) -> Response<'a> {
    let keys = lock(store).len();
    let heap = cella::state_heap_stats();
    Response::text(format!(
        "requests {}\nkeys {keys}\nrecovered_poisons {}\nstate_heap_used_bytes {}\n\
         state_heap_failures {}\n",
        REQUESTS.load(Ordering::Relaxed),
        RECOVERED_POISONS.load(Ordering::Relaxed),
        heap.used_bytes,
        heap.failures,
    ))
}

/// One log line per request, after its answer is known.
fn logged<'a>(request: &Request<'a>, response: Response<'a>) -> Response<'a> {
    log::info!("{} {} {}", request.method(), request.path(), response.status().as_u16());
    response
}

fn app() -> Router {
    // Built before the server starts: the map's first table comes from the system heap, and
    // its later growth and frees never call the system allocator (they happen under the lock).
    let store: Arc<Store> = Arc::new(Mutex::new(HashMap::new()));
    let (s1, s2, s3, s5) = (store.clone(), store.clone(), store.clone(), store.clone());
    let s4 = store;
    Router::new()
        .get(
            "/kv/{key}",
            handler_fn(move |request| {
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                logged(request, get(&s1, request))
            }),
        )
        .put(
            "/kv/{key}",
            handler_fn(move |request| {
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                logged(request, put(&s2, request))
            }),
        )
        .delete(
            "/kv/{key}",
            handler_fn(move |request| {
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                logged(request, delete(&s3, request))
            }),
        )
        .get(
            "/locked",
            handler_fn(move |_| {
                // Without taking the lock: whether someone holds it now.
                let held = matches!(s5.try_lock(), Err(TryLockError::WouldBlock));
                Response::text(if held { "1" } else { "0" })
            }),
        )
        .get("/stats", handler_fn(move |_| stats(&s4)))
}

// The global allocator (RoutingAlloc), the exported C allocator, and cella's command line.
cella::main!(app);
