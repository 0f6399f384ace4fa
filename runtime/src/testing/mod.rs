//! Calling a handler without a socket, as the server would call it: for unit tests.
//!
//! ```
//! use cella::testing::{self, TestRequest};
//! use cella::{handler_fn, Response, Router};
//!
//! let app = Router::new().get("/hello/{name}", handler_fn(|req| {
//!     Response::text(format!("hello, {}\n", req.param("name").unwrap_or("you")))
//! }));
//! let response = testing::call(&app, TestRequest::get("/hello/caf%C3%A9"));
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.text(), "hello, café\n");
//! ```
//!
//! [`call`] goes the server's way from the request head on: the head is encoded as a client
//! would send it, parsed by the server's own parser with the configuration's limits (a head the
//! server refuses gets the server's answer: 400, 413, 431, ...), copied with the body into a
//! real slot (a region mapped by the tester: guard page, stack, arena), and the handler runs as a
//! coroutine on that slot's stack with its allocations routed to the slot's arena (when the test
//! binary's global allocator is [`RoutingAlloc`](crate::RoutingAlloc)). So a handler that
//! overruns its arena or its stack, or panics, gets a 500 here as in the server, and one that runs
//! past `handler_timeout_ms` a 504; the slot is wiped after each call. The response is checked
//! and trimmed as the server does (a 1xx status or a header that is not a valid field: 500; the
//! runtime's own headers dropped; no body for HEAD, 204 and 304) and copied out of the arena.
//!
//! What differs from the server: `cella::net` sockets are not available (their calls fail with
//! `Unsupported`; `cella::net::sleep` works, on the calling thread); `prepare_thread` runs
//! before every call, on the calling thread; the request's remote address is `127.0.0.1:1`
//! unless set; the runtime's response headers (`Date`, `Content-Length`, `Connection`) are not
//! added. Without `RoutingAlloc` as the global allocator, the handler's ordinary allocations go
//! to the system heap and its arena limit is not enforced.
//!
//! Memory: the first [`call`] maps the default tester's region (the default configuration with
//! [`DEFAULT_TESTER_SLOTS`] slots and the default state heap, faulted in as used) and keeps it
//! for the life of the process, so state a handler persists ([`crate::persist`],
//! [`crate::sync::Mutex`]) outlives the call as it would outlive a request. A [`Tester`] made
//! with another configuration maps slots of its own but shares that state heap.
//!
//! This file owns the tester (its slots and one call's path); `messages.rs` the test request
//! and response types; `tests.rs` its own tests.

use std::mem::MaybeUninit;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cella_arena::fds::{self, FdTable};
use cella_arena::{Arena, Region, RegionOptions, Route, SlotMemory, Span};
use cella_shared::limits::HEADERS_COUNT_MAX;

use crate::cancel::{self, Fault, Step, Task, Wake};
use crate::handler::{Handler, Method};
use crate::http::parse::{self, Framing, HeadLimits};
use crate::http::ErrorKind;
use crate::slot_request::{BodyBuf, CopyError, RawRequest};
use crate::{sys, Config, StartError};

mod messages;

pub use messages::{TestRequest, TestResponse};

/// Slots of the default tester: as many calls run at once (from the test harness's threads);
/// more wait for a free slot.
pub const DEFAULT_TESTER_SLOTS: usize = 8;

/// The remote address a [`TestRequest`] has unless [`TestRequest::remote_addr`] sets one.
pub const DEFAULT_REMOTE_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 1);

/// Calls `handler` with `request` on a slot of the default tester (see the module docs).
///
/// # Panics
/// When the default tester's region cannot be mapped (the process is out of address space or
/// of region slots), or when the request cannot be framed with a Content-Length (see
/// [`TestRequest::header`]).
pub fn call<H: Handler + ?Sized>(handler: &H, request: TestRequest) -> TestResponse {
    default_tester().call(handler, request)
}

fn default_tester() -> &'static Tester {
    static DEFAULT: OnceLock<Tester> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let config = Config {
            workers: DEFAULT_TESTER_SLOTS,
            slots: DEFAULT_TESTER_SLOTS,
            io_buffers: 1,
            ..Config::default()
        };
        Tester::map(&config, true)
            .unwrap_or_else(|error| panic!("cella::testing: cannot map the test slots: {error}"))
    })
}

/// What one call needs of the configuration.
struct Limits {
    head: HeadLimits,
    headers_count_max: usize,
    body_bytes_max: usize,
    handler_timeout: Duration,
}

/// One slot of a tester, with the signal stack and panic reserve of the "worker" that runs it
/// (the calling thread, while the call lasts).
struct TestSlot {
    memory: SlotMemory,
    arena: Arena,
    reserve: Arena,
    signal_stack: Span,
}

/// Slots to [`call`](Tester::call) handlers on, mapped for one configuration: its arena and
/// stack sizes, its head and body limits, its `handler_timeout_ms`. As many calls run at once
/// as it has slots (one per worker of the configuration); more wait for a free one.
pub struct Tester {
    // Dropped last: the slots below point into it.
    _region: Region,
    slots: Mutex<Vec<TestSlot>>,
    freed: Condvar,
    limits: Limits,
}

impl Tester {
    /// Maps slots for `config` (`workers` slots, at least one). Its handlers' persisted state
    /// goes to the default tester's state heap, which lives as long as the process.
    pub fn new(config: &Config) -> Result<Tester, StartError> {
        default_tester();
        let config = Config { slots: config.workers_resolved(), io_buffers: 1, ..config.clone() };
        Tester::map(&config, false)
    }

    fn map(config: &Config, with_state_heap: bool) -> Result<Tester, StartError> {
        let mut plan =
            config.validate(cella_arena::page_size() as u64).map_err(StartError::Config)?;
        if !with_state_heap {
            plan.total_bytes -= plan.state_heap_size;
            plan.state_heap_size = 0;
        }
        crate::panic_hook::install();
        sys::install_fault_handler()
            .map_err(|source| StartError::Io { step: "install the fault handler", source })?;
        let options = RegionOptions { prefault: false, mlock: false, quarantine: false };
        let mut region = Region::map(&plan, options).map_err(StartError::Region)?;
        let mut slots = Vec::with_capacity(plan.slots);
        for worker in region.carve() {
            let reserve = worker.panic_reserve;
            let (memory, arena) = worker.slots.into_iter().next().expect("one slot per worker");
            cancel::protect_headroom(&memory)
                .map_err(|source| StartError::Io { step: "protect a stack's headroom", source })?;
            slots.push(TestSlot { memory, arena, reserve, signal_stack: worker.signal_stack });
        }
        let limits = Limits {
            head: HeadLimits {
                line_bytes_max: config.request_line_size_max.0 as usize,
                head_bytes_max: config.request_head_size_max.0 as usize,
            },
            headers_count_max: config.headers_count_max.min(HEADERS_COUNT_MAX),
            body_bytes_max: config.request_body_size_max.0 as usize,
            handler_timeout: Duration::from_millis(config.handler_timeout_ms),
        };
        Ok(Tester { _region: region, slots: Mutex::new(slots), freed: Condvar::new(), limits })
    }

    /// Calls `handler` with `request` on one of this tester's slots (see the module docs).
    ///
    /// # Panics
    /// As [`call`].
    pub fn call<H: Handler + ?Sized>(&self, handler: &H, request: TestRequest) -> TestResponse {
        let head_request = request.method == Method::HEAD;
        let head_bytes = request.encode_head();
        let mut storage = [MaybeUninit::uninit(); HEADERS_COUNT_MAX];
        let fields = &mut storage[..self.limits.headers_count_max];
        let (head, fields) = match parse::parse_head(&head_bytes, fields, self.limits.head) {
            Ok(Some(parsed)) => parsed,
            // The head ends with an empty line: a head still "incomplete" is malformed.
            Ok(None) => return TestResponse::from_error(ErrorKind::MalformedHead, head_request),
            Err(kind) => return TestResponse::from_error(kind, head_request),
        };
        let body_len = match head.framing {
            Framing::Empty => 0,
            Framing::Length(length) => length,
            Framing::Chunked => unreachable!("encode_head refuses Transfer-Encoding"),
        };
        assert!(
            body_len == request.body.len() as u64,
            "the test request's content-length says {body_len} bytes but its body has {}",
            request.body.len()
        );
        if request.body.len() > self.limits.body_bytes_max {
            return TestResponse::from_error(ErrorKind::BodyTooLarge, head_request);
        }
        let mut slot = self.take_slot();
        let copied = RawRequest::copy_in(
            &slot.arena,
            &head_bytes[..head.len],
            &head,
            fields,
            request.remote,
        )
        .map_err(|error| match error {
            CopyError::Alloc => ErrorKind::HeadersTooLarge,
            CopyError::OutsideHead => ErrorKind::MalformedHead,
        })
        .and_then(|mut raw| {
            let mut body = BodyBuf::alloc(&slot.arena, request.body.len())
                .map_err(|_| ErrorKind::BodyTooLarge)?;
            body.unfilled().copy_from_slice(&request.body);
            body.filled = request.body.len();
            raw.set_body(body, &slot.arena);
            Ok(raw)
        });
        let response = match copied {
            Ok(raw) => self.run(&mut slot, handler, raw, head_request),
            Err(kind) => TestResponse::from_error(kind, head_request),
        };
        slot.arena.wipe();
        self.give_back(slot);
        response
    }

    fn take_slot(&self) -> TestSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(slot) = slots.pop() {
                return slot;
            }
            slots = self.freed.wait(slots).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn give_back(&self, slot: TestSlot) {
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.push(slot);
        self.freed.notify_one();
    }

    /// Runs the handler on `slot` until it ends, as a worker does (`worker/slots.rs`), and copies
    /// its response out. Leaves the arena to be wiped by the caller.
    fn run<H: Handler + ?Sized>(
        &self,
        slot: &mut TestSlot,
        handler: &H,
        raw: RawRequest,
        head_request: bool,
    ) -> TestResponse {
        handler.prepare_thread();
        let handler: *const H = handler;
        let mut task = Task::new(&slot.memory, move || {
            // SAFETY: `handler` is borrowed by `run`'s caller until the task has ended, and the
            // slot keeps the request's memory until the caller wipes it, after the response is
            // dropped.
            unsafe { (*handler).handle(&raw.to_request()) }
        });
        let mut route = Route::new(cancel::on_arena_exhausted);
        route.arena = &slot.arena;
        route.reserve = &slot.reserve;
        let fd_table = FdTable::new();
        let previous_stack = sys::swap_signal_stack(slot.signal_stack)
            .unwrap_or_else(|error| panic!("cella::testing: cannot set the signal stack: {error}"));
        let deadline = Instant::now() + self.limits.handler_timeout;
        let mut wake = Wake::Start;
        let step = loop {
            // SAFETY: the table and the route (with the arenas it names) live in this frame
            // until the `leave` calls right after the task gives control back.
            unsafe { fds::enter(&fd_table) };
            // SAFETY: as above.
            unsafe { cella_arena::enter(&route) };
            let step = task.resume(wake);
            cella_arena::leave();
            fds::leave();
            let Step::Suspended(wait) = step else { break step };
            // No sockets here: only a sleep (or the handler's deadline) ends a wait.
            let until = wait.deadline.map_or(deadline, |at| at.min(deadline));
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            wake = if Instant::now() >= deadline { Wake::Cancel } else { Wake::TimedOut };
        };
        let _ = sys::restore_signal_stack(previous_stack);
        let (response, ended_hard) = match step {
            Step::Finished(Ok(response)) => {
                let copied = TestResponse::from_response(&response, head_request);
                drop(response);
                (copied, false)
            }
            Step::Finished(Err(fault)) => {
                let kind = match fault {
                    Fault::Panicked => ErrorKind::HandlerPanicked,
                    Fault::StackOverflow | Fault::StackHeadroomUsed => ErrorKind::StackOverflow,
                    Fault::Cancelled | Fault::Preempted => ErrorKind::HandlerTimeout,
                };
                (TestResponse::from_error(kind, head_request), fault == Fault::StackOverflow)
            }
            Step::Overrun => {
                (TestResponse::from_error(ErrorKind::ArenaExhausted, head_request), true)
            }
            Step::Suspended(_) => unreachable!("the loop runs the task until it ends"),
        };
        drop(task);
        // As `release_slot`: a lock still held is released and poisoned before the wipe, and
        // descriptors the handler opened are closed if its destructors never ran.
        route.end_request();
        if ended_hard {
            fd_table.close_all();
        } else {
            fd_table.forget_all();
        }
        slot.reserve.wipe();
        response
    }
}

#[cfg(test)]
mod tests;
