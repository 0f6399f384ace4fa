//! A service written the way a new user writes one, set up with `cella::main!`: it logs with
//! the `log` macros, prints, uses `thread_local!`, reads the environment and resolves names
//! inside handlers. The black-box tests (tests/lazy.rs) run it and check that what std and
//! libc set up lazily never lands in an arena and that logging works in handlers.

use std::cell::RefCell;
use std::fmt;
use std::net::ToSocketAddrs;

use cella::{handler_fn, Response, Router};

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

fn app() -> Router {
    log::info!("userapp: building the app (a log line at startup)");
    Router::new()
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
