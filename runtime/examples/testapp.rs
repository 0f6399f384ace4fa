//! The demo app plus endpoints that only tests need: they misbehave on purpose (write through a
//! null pointer, keep a socket open while overrunning) or report what happened (drop counts).
//! Built by `cargo test` (examples are), run by the black-box tests as a separate process.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cella::net::TcpStream;
use cella::{handler_fn, Response};

// The documented setup: RoutingAlloc, cella's C allocator (libc's own allocations go to the
// state heap) and the descriptor hooks (descriptors a handler opens are its slot's, closed by
// the runtime when it ends hard), and cella's command line over `app`.
cella::main!(app);

/// How many `Tracked` values have been dropped.
static DROPS: AtomicU64 = AtomicU64::new(0);

struct Tracked;

impl Drop for Tracked {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Allocates during unwinding until even the panic reserve is spent.
struct AllocatesWhileUnwinding;

impl Drop for AllocatesWhileUnwinding {
    fn drop(&mut self) {
        let mut hoard = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![7u8; 4096]));
        }
    }
}

/// Waits (suspends its request) in `drop`, as a buffered writer over a `cella::net` socket that
/// flushes in `drop` does. While its request unwinds, the wait is refused and returns at once.
struct SleepsInDrop(u64);

impl Drop for SleepsInDrop {
    fn drop(&mut self) {
        cella::net::sleep(Duration::from_millis(self.0));
    }
}

/// Reserves exactly what is left of the request's arena; the next allocation would overrun it.
fn fill_arena(arena: &cella::Arena) -> Vec<u8> {
    Vec::with_capacity(arena.remaining_bytes())
}

/// `count` copies of `byte`, formatted without allocating (a panic message made while the arena
/// is spent: its bytes come from the panic reserve).
struct Repeated(char, usize);

impl std::fmt::Display for Repeated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for _ in 0..self.1 {
            std::fmt::Write::write_char(f, self.0)?;
        }
        Ok(())
    }
}

fn overrun() -> usize {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 16 << 10]));
    }
}

fn app() -> cella::Router {
    let app = || {
        cella::demo::app()
            .get(
                "/status/{code}",
                handler_fn(|request| {
                    let code = request.param("code").and_then(|c| c.parse().ok()).unwrap_or(200);
                    let status = cella::StatusCode::from_u16(code).expect("a valid status code");
                    Response::text("a body the status may not allow").with_status(status)
                }),
            )
            .get(
                "/hold-fds",
                handler_fn(|request| {
                    // Opens `n` descriptors and keeps them `ms` milliseconds (suspended), to use
                    // up the process's open-file limit from inside the plan.
                    let number = |key| request.query_param(key).and_then(|v| v.parse::<u64>().ok());
                    let count = number("n").unwrap_or(0) as usize;
                    let ms = number("ms").unwrap_or(0);
                    let files: Vec<std::fs::File> =
                        (0..count).filter_map(|_| std::fs::File::open("/dev/null").ok()).collect();
                    cella::net::sleep(Duration::from_millis(ms));
                    Response::text(files.len().to_string())
                }),
            )
            .get(
                "/header/{name}",
                handler_fn(|request| {
                    let name = request.param("name").unwrap_or("");
                    Response::bytes(request.header_bytes(name).unwrap_or(b"(none)"))
                }),
            )
            .get(
                "/retyped",
                handler_fn(|_| {
                    // A handler's own content type replaces the one `Response::text` set.
                    Response::text("<p>hi</p>")
                        .header("Content-Type", "text/html")
                        .header("x-extra", "1")
                }),
            )
            .get(
                "/drops",
                handler_fn(|_| Response::text(DROPS.load(Ordering::Relaxed).to_string())),
            )
            .get(
                "/drop-then-overrun",
                handler_fn(|_| {
                    let tracked = Tracked;
                    let n = overrun();
                    drop(tracked);
                    Response::text(n.to_string())
                }),
            )
            .get(
                "/drop-then-panic",
                handler_fn(|_| {
                    let _tracked = Tracked;
                    panic!("panicking with a Tracked value on the stack");
                }),
            )
            .get(
                "/socket-then-overrun",
                handler_fn(|request| {
                    let to: SocketAddr =
                        request.query_param("to").and_then(|t| t.parse().ok()).expect("?to=ADDR");
                    let mut stream =
                        TcpStream::connect(to, Duration::from_secs(5)).expect("upstream accepts");
                    stream.write_all(b"x").expect("write");
                    Response::text(overrun().to_string())
                }),
            )
            .get(
                "/null-write",
                handler_fn(|_| {
                    // SAFETY: none; this endpoint exists to prove a wild write is not turned into a 500.
                    unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
                    Response::text("unreachable")
                }),
            )
            .get(
                "/panic-when-full",
                handler_fn(|request| {
                    let arena = request.arena();
                    // Fill the arena to within a few bytes, then panic with a formatted message,
                    // whose payload must come from the worker's reserve.
                    let mut fill = Vec::new();
                    while let Ok(chunk) = arena.try_alloc_slice_copy(&[0u8; 1024]) {
                        fill.push(chunk.len());
                    }
                    while arena.try_alloc(0u8).is_ok() {}
                    panic!("arena full after {} KiB: {}", fill.len(), "x".repeat(100));
                }),
            )
            .get(
                "/panic-exhausts-reserve",
                handler_fn(|_| {
                    let _guard = AllocatesWhileUnwinding;
                    panic!("unwinding will allocate without end");
                }),
            )
    };
    // Built at startup (in the system heap), written by a handler: the escape check's `full`.
    let shared_text = Arc::new(std::sync::Mutex::new(String::new()));
    escape_endpoints(ladder_endpoints(app()), shared_text)
}

/// A lazily initialised static whose first initialisation happens inside a handler.
static FIRST_PATH: OnceLock<String> = OnceLock::new();
/// An address inside some request's arena, kept past that request (tests/escape.rs).
static LEAKED: AtomicUsize = AtomicUsize::new(0);
/// A cell in the state heap (made inside `persist`) that a handler stores an arena address in.
static IN_STATE_HEAP: OnceLock<Box<AtomicUsize>> = OnceLock::new();

thread_local! {
    /// A thread-local filled inside a handler.
    static FILLED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Endpoints that keep memory of their request's arena past the request, on purpose: what the
/// escape check and quarantine mode must catch (tests/escape.rs).
fn escape_endpoints(router: cella::Router, shared_text: Arc<Mutex<String>>) -> cella::Router {
    router
        .get(
            "/escape/static",
            handler_fn(|request| {
                Response::text(
                    FIRST_PATH.get_or_init(|| format!("first set by {}", request.path())).clone(),
                )
            }),
        )
        .get(
            "/escape/thread-local",
            handler_fn(|_| {
                let len = FILLED.with(|filled| {
                    let mut filled = filled.borrow_mut();
                    if filled.is_empty() {
                        filled.extend_from_slice(&[7u8; 300]);
                    }
                    filled.iter().map(|&byte| usize::from(byte)).sum::<usize>()
                });
                Response::text(len.to_string())
            }),
        )
        .get(
            "/escape/heap",
            handler_fn(move |_| {
                let Ok(mut text) = shared_text.lock() else { return Response::text("poisoned") };
                if text.is_empty() {
                    text.push_str("written by a handler");
                }
                Response::text(text.clone())
            }),
        )
        .get(
            "/escape/state-heap",
            handler_fn(|_| {
                let cell =
                    IN_STATE_HEAP.get_or_init(|| cella::persist(|| Box::new(AtomicUsize::new(0))));
                if cell.load(Ordering::Relaxed) == 0 {
                    let kept: &'static [u8; 16] = Box::leak(Box::new([5u8; 16])); // arena memory
                    cell.store(kept.as_ptr() as usize, Ordering::Relaxed);
                }
                Response::text("kept")
            }),
        )
        .get(
            "/escape/leak",
            handler_fn(|_| {
                let kept: &'static mut [u8; 64] = Box::leak(Box::new([42u8; 64]));
                LEAKED.store(kept.as_ptr() as usize, Ordering::Relaxed);
                Response::text("leaked")
            }),
        )
        .get(
            "/escape/read-leaked",
            handler_fn(|_| {
                let address = LEAKED.load(Ordering::Relaxed) as *const u8;
                // SAFETY: none: this endpoint reads memory of a finished request on purpose.
                Response::text(unsafe { std::ptr::read_volatile(address) }.to_string())
            }),
        )
}

/// Endpoints that climb the cancellation ladder (tests/ladder.rs).
/// Recurses until less than `left` bytes of stack are left before the headroom, then runs
/// `at_bottom` there.
#[inline(never)]
fn descend(left: usize, at_bottom: &dyn Fn()) -> usize {
    let pad = std::hint::black_box([1u8; 48]);
    if cella::stack_remaining_bytes().unwrap_or(0) <= left {
        at_bottom();
        return 0;
    }
    descend(left, at_bottom) + std::hint::black_box(pad)[0] as usize
}

/// A value whose formatting recurses without end (inside `println!`, with stdout's lock held).
struct Bottomless;

impl std::fmt::Display for Bottomless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pad = std::hint::black_box([0u8; 256]);
        write!(f, "{}", Bottomless)?;
        f.write_str(std::str::from_utf8(&pad[..1]).unwrap_or(""))
    }
}

/// Recurses without end when dropped: during a panic's unwind it runs past the stack headroom.
struct BottomlessDrop;

#[inline(never)]
#[allow(unconditional_recursion)] // On purpose: it ends in the guard page.
fn bottomless(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth as u8; 256]);
    bottomless(depth + 1) + std::hint::black_box(pad)[0] as u64
}

impl Drop for BottomlessDrop {
    fn drop(&mut self) {
        std::hint::black_box(bottomless(0));
    }
}

/// Spins for ever in the handler's own code: no allocation, no library call, no suspension.
#[inline(never)]
fn spin_pure() -> u64 {
    let mut turns = 0u64;
    loop {
        turns = std::hint::black_box(turns.wrapping_add(1));
        if turns == 0 {
            return turns;
        }
    }
}

/// A value whose formatting spins for ever (inside `println!`, with stdout's lock held).
struct SpinsWhenFormatted;

impl std::fmt::Display for SpinsWhenFormatted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&spin_pure().to_string())
    }
}

/// A value whose formatting allocates 4 MiB (inside `println!`): past the arena, an overrun.
struct AllocatesWhenFormatted;

impl std::fmt::Display for AllocatesWhenFormatted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let big = std::hint::black_box(vec![b'a'; 4 << 20]);
        f.write_str(std::str::from_utf8(&big[..1]).unwrap_or(""))
    }
}

fn ladder_endpoints(router: cella::Router) -> cella::Router {
    router
        .get(
            "/println-spin",
            handler_fn(|_| {
                println!("{}", SpinsWhenFormatted);
                Response::text("unreachable")
            }),
        )
        .get(
            "/println-overrun",
            handler_fn(|_| {
                println!("{}", AllocatesWhenFormatted);
                Response::text("unreachable")
            }),
        )
        .get("/spin-pure", handler_fn(|_| Response::text(spin_pure().to_string())))
        .get(
            "/thread-sleep/{ms}",
            // A blocking system call in a handler: the preemption timer cannot cut it off.
            handler_fn(|request| {
                let ms = request.param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                Response::text("slept")
            }),
        )
        .get(
            "/panic-then-bottomless-drop",
            handler_fn(|_| {
                let _deep = BottomlessDrop;
                panic!("unwinding into a destructor that recurses without end");
            }),
        )
        .get(
            "/println",
            handler_fn(|_| {
                println!("cella testapp: a line on stdout");
                Response::text("printed")
            }),
        )
        .get(
            "/println-at-stack-limit/{bytes}",
            handler_fn(|request| {
                let left = request.param("bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
                descend(left, &|| {
                    println!("cella testapp: {} at the stack limit", Repeated('p', 40))
                });
                Response::text("printed")
            }),
        )
        .get(
            "/panic-at-stack-limit/{bytes}",
            handler_fn(|request| {
                let left = request.param("bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
                descend(left, &|| panic!("at the stack limit: {}", Repeated('s', 40)));
                Response::text("unreachable")
            }),
        )
        .get(
            "/println-bottomless",
            handler_fn(|_| {
                println!("{}", Bottomless);
                Response::text("unreachable")
            }),
        )
        .get(
            "/read-file",
            // `std::fs::read` sizes its buffer from the file's length: a file larger than the
            // arena is opened, then the request is cancelled hard with the file open.
            handler_fn(|request| {
                let path = request.query_param("path").expect("?path=FILE");
                match std::fs::read(path) {
                    Ok(bytes) => Response::text(bytes.len().to_string()),
                    Err(error) => Response::text(error.to_string()),
                }
            }),
        )
        .get(
            "/thread",
            // Which worker runs the request: lets a test put two connections on one worker.
            handler_fn(|_| Response::text(format!("{:?}", std::thread::current().id()))),
        )
        .get(
            "/sleep-in-drop/{ms}",
            handler_fn(|request| {
                let ms = request.param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                let _waits_in_drop = SleepsInDrop(200);
                cella::net::sleep(Duration::from_millis(ms));
                Response::text("slept")
            }),
        )
        .get(
            "/panic-sleep-in-drop",
            handler_fn(|_| {
                let _waits_in_drop = SleepsInDrop(300);
                panic!("panicking with a value that waits in drop");
            }),
        )
        .get(
            "/panic-when-full-sleep-in-drop",
            handler_fn(|request| {
                let _waits_in_drop = SleepsInDrop(300);
                let _full = fill_arena(request.arena());
                panic!("arena full: {}", Repeated('x', 100));
            }),
        )
        .get(
            "/catch-panic-when-full-then-sleep/{ms}",
            handler_fn(|request| {
                // The payload of a caught panic is made while the arena is spent, so it lives in
                // the worker's panic reserve; the handler keeps it across a suspension, while
                // other requests on the worker panic and finish.
                let ms = request.param("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                let full = fill_arena(request.arena());
                let payload = std::panic::catch_unwind(|| -> () {
                    panic!("{}", Repeated('r', 100));
                })
                .expect_err("it panicked");
                drop(full); // The last arena allocation: its space comes back.
                cella::net::sleep(Duration::from_millis(ms));
                let message = payload.downcast_ref::<String>().map_or("(none)", |s| s.as_str());
                Response::text(message.to_string())
            }),
        )
}
