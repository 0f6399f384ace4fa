//! A program that starts the server with `Server::start` from a `main` of its own and never
//! touched stdout before: its ready line is written with write(2), so the first `println!` of
//! the process is made inside a handler (tests/lazy.rs).

use cella::{handler_fn, Response, Router};

#[global_allocator]
static ALLOCATOR: cella::RoutingAlloc = cella::RoutingAlloc;

fn main() {
    let mut config = cella::Config::default();
    if let Err(error) = config.apply_env(std::env::vars()) {
        eprintln!("startapp: {error}");
        std::process::exit(2);
    }
    config.listen = "127.0.0.1:0".parse().expect("an address");
    let app = Router::new().get(
        "/println/{n}",
        handler_fn(|request| {
            let count: usize = request.param("n").and_then(|v| v.parse().ok()).unwrap_or(0);
            let body: usize = request.query_param("body").and_then(|v| v.parse().ok()).unwrap_or(0);
            // Made before the prints: a print that writes into a buffer left in this slot's
            // arena by an earlier request shows in it.
            let body = "x".repeat(body);
            for index in 0..count {
                println!("startapp stdout line {index} {}", "o".repeat(60));
            }
            Response::text(body)
        }),
    );
    let server = match cella::Server::new(config, app).start() {
        Ok(server) => server,
        Err(error) => {
            eprintln!("startapp: {error}");
            std::process::exit(1);
        }
    };
    let line = format!("listening on http://{}\n", server.local_addr());
    // SAFETY: write(2) of a valid buffer to stdout, bypassing std's stdout on purpose.
    unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
    loop {
        std::thread::park(); // Serves until killed.
    }
}
