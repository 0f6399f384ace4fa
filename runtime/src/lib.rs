//! cella: a web runtime whose memory is fixed at startup.
//!
//! At startup cella maps one region and carves it into slots. Each request being handled owns
//! one slot: a stack for its handler and a bump arena for everything it allocates. A handler
//! that exceeds its arena or its stack, or panics, gets its client a 500 and nobody else
//! notices; when every slot is busy new requests get an immediate 503.
//!
//! ```no_run
//! use cella::{handler_fn, Config, Response, Router, Server};
//!
//! let app = Router::new().get("/hello/{name}", handler_fn(|req| {
//!     Response::text(format!("hello, {}\n", req.param("name").unwrap_or("world")))
//! }));
//! let server = Server::new(Config::default(), app).start().expect("server starts");
//! println!("listening on http://{}", server.local_addr());
//! ```
//!
//! A binary sets itself up with one line, [`main!`] (`cella::main!(app)`): the global allocator
//! [`RoutingAlloc`], so that ordinary allocations inside handlers land in the slot's arena (a
//! server refuses to start without it), cella's C allocator for plugins, and cella's command
//! line. State that outlives a request goes to the state heap: build it inside [`persist`], or
//! while holding a [`sync::Mutex`].

#![deny(unsafe_op_in_unsafe_fn)]

mod access_log;
mod cancel;
pub mod cli;
pub mod demo;
mod deploy;
mod escape;
pub mod ffi;
mod handler;
pub mod http;
#[cfg(feature = "json")]
mod json;
mod lazy;
mod line;
pub mod log;
pub mod metrics;
pub mod net;
mod panic_hook;
mod pool;
mod quarantine;
mod reply;
mod response;
mod router;
mod runtime_thread;
mod server;
pub mod setup;
mod slot_request;
mod state;
pub mod sync;
mod sys;
mod systemd;
pub mod testing;
mod tick;
mod worker;

pub use cella_arena::{
    export_c_allocator, export_fd_hooks, AllocError, Arena, ArenaString, ArenaVec, RoutingAlloc,
};
pub use cella_shared::{Config, ConfigError, MemoryPlan};
pub use handler::{
    handler_fn, try_handler_fn, Body, Handler, HandlerFn, Method, Params, Request, Response,
    StatusCode, Text,
};
#[cfg(feature = "json")]
pub use json::JsonError;
pub use reply::{Error, IntoHandlerResult, IntoResponse};
pub use router::Router;
pub use server::{fds_needed, RunningServer, Server, StartError, Stats};
pub use state::{allocations_persist, in_arena, persist, state_heap_stats, StateHeapStats};

/// Bytes of stack the running handler has left before its stack headroom (see
/// `docs/architecture.md`, the cancellation ladder); `None` outside a handler.
pub fn stack_remaining_bytes() -> Option<usize> {
    cancel::stack_remaining_bytes()
}

/// Descriptors open in this process (Linux: /proc/self/fd), for tests and diagnostics.
pub fn open_fd_count() -> std::io::Result<usize> {
    sys::open_fd_count()
}
