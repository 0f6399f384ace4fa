//! A service written the way a new user writes one, set up with `cella::main!`: it logs with
//! the `log` macros, prints, uses `thread_local!`, reads the environment and resolves names
//! inside handlers. The black-box tests (tests/lazy.rs) run it and check that what std and
//! libc set up lazily never lands in an arena and that logging works in handlers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use cella::sync::RwLock;
use cella::{handler_fn, Request, Response, Router, StatusCode};

/// Formats `count` copies of `byte` without allocating.
struct Repeated(char, usize);

impl fmt::Display for Repeated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (0..self.1).try_for_each(|_| fmt::Write::write_char(f, self.0))
    }
}

/// Allocates until the arena is spent while being formatted.
struct Overruns;

impl fmt::Display for Overruns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 16 << 10]));
            f.write_str("")?;
        }
    }
}

/// Panics while being formatted.
struct Panics;

impl fmt::Display for Panics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("half a line")?;
        panic!("a Display that panics");
    }
}

/// Counts its drops: a `thread_local!` with a destructor.
struct Counted(u64);

impl Drop for Counted {
    fn drop(&mut self) {
        std::hint::black_box(self.0);
    }
}

thread_local! {
    static PER_THREAD: RefCell<Counted> = const { RefCell::new(Counted(0)) };
}

fn number(request: &cella::Request<'_>, name: &str) -> usize {
    request.param(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

type Table = RwLock<HashMap<String, Vec<u8>>>;

/// Times a writer found the table poisoned (a writer before it was cancelled) and recovered it.
static RECOVERED_POISONS: AtomicU64 = AtomicU64::new(0);

fn query_number(request: &Request<'_>, name: &str) -> usize {
    request.query_param(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Holds the guard `hold_ms` (suspended), then allocates `pad` KiB of arena (past it: the
/// request is cancelled hard with the guard held).
fn hold_and_pad(request: &Request<'_>) {
    cella::net::sleep(Duration::from_millis(query_number(request, "hold_ms") as u64));
    let pad_kib = query_number(request, "pad");
    if pad_kib > 0 {
        cella::in_arena(|| std::hint::black_box(vec![1u8; pad_kib << 10]));
    }
}

fn rw_get<'a>(table: &Table, request: &Request<'a>) -> Response<'a> {
    // A reader cancelled hard never poisons, so a poison here is a writer's.
    let map = table.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    hold_and_pad(request);
    match map.get(request.param("key").unwrap_or("")) {
        Some(value) => Response::bytes(value.clone()),
        None => Response::new(StatusCode::NOT_FOUND),
    }
}

fn rw_put<'a>(table: &Table, request: &Request<'a>) -> Response<'a> {
    let mut map = table.write().unwrap_or_else(|poisoned| {
        RECOVERED_POISONS.fetch_add(1, Ordering::Relaxed);
        table.clear_poison(); // Writers change the map in single calls: never half-updated.
        poisoned.into_inner()
    });
    hold_and_pad(request);
    // Made while the write guard is held: the key and value live in the state heap.
    map.insert(request.param("key").unwrap_or("").to_owned(), request.body().to_vec());
    Response::new(StatusCode::NO_CONTENT)
}

fn rw_routes(router: Router) -> Router {
    let table: Arc<Table> = Arc::new(RwLock::new(HashMap::new()));
    let (t1, t2, t3) = (table.clone(), table.clone(), table);
    router
        .get("/rw/{key}", handler_fn(move |request| rw_get(&t1, request)))
        .put("/rw/{key}", handler_fn(move |request| rw_put(&t2, request)))
        .get(
            "/rw-state",
            handler_fn(move |_| {
                let state = match (t3.try_write(), t3.try_read()) {
                    (Ok(_) | Err(TryLockError::Poisoned(_)), _) => "free",
                    (_, Ok(_)) => "read",
                    _ => "write",
                };
                let poisons = RECOVERED_POISONS.load(Ordering::Relaxed);
                Response::text(format!("{state} {poisons}"))
            }),
        )
}

fn app() -> Router {
    log::info!("userapp: building the app (a log line at startup)");
    rw_routes(Router::new())
        .get(
            "/log/{n}",
            handler_fn(|request| {
                let tag = request.query_param("tag").unwrap_or("-");
                for index in 0..number(request, "n") {
                    log::info!("userapp line tag={tag} index={index} {}", Repeated('p', 100));
                }
                Response::text("logged")
            }),
        )
        .get(
            "/log-long/{bytes}",
            handler_fn(|request| {
                log::warn!("long:{}", Repeated('L', number(request, "bytes")));
                Response::text("logged")
            }),
        )
        .get(
            "/log-overrun",
            handler_fn(|_| {
                log::error!("never written: {Overruns}");
                Response::text("unreachable")
            }),
        )
        .get(
            "/log-panic",
            handler_fn(|_| {
                log::error!("never written: {Panics}");
                Response::text("unreachable")
            }),
        )
        .get(
            "/println/{n}",
            handler_fn(|request| {
                for index in 0..number(request, "n") {
                    println!("userapp stdout line {index} {}", Repeated('o', 60));
                }
                Response::text("printed")
            }),
        )
        .get(
            "/thread-local",
            handler_fn(|_| {
                let value = PER_THREAD.with(|cell| {
                    let mut counted = cell.borrow_mut();
                    counted.0 += 1;
                    counted.0
                });
                Response::text(value.to_string())
            }),
        )
        .get(
            "/thread-name",
            handler_fn(|_| {
                Response::text(std::thread::current().name().unwrap_or("(none)").to_owned())
            }),
        )
        .get(
            "/env/{name}",
            handler_fn(|request| {
                let name = request.param("name").unwrap_or("");
                Response::text(std::env::var(name).unwrap_or_else(|_| "(unset)".to_owned()))
            }),
        )
        .get(
            "/resolve/{host}",
            handler_fn(|request| {
                let host = request.param("host").unwrap_or("localhost");
                match (host, 80).to_socket_addrs() {
                    Ok(addrs) => {
                        let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                        ips.sort();
                        ips.dedup();
                        Response::text(ips.join(" "))
                    }
                    Err(error) => Response::text(format!("error: {error}")),
                }
            }),
        )
}

// The one line a user writes: RoutingAlloc, the exported C allocator and fd hooks, cella's
// command line over `app`.
cella::main!(app);
