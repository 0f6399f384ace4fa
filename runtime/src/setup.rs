//! Setting a binary up: [`main!`](crate::main!) in one line, and the checks that find out at
//! startup whether a binary did it.
//!
//! Two things only the final binary can do: make [`RoutingAlloc`](crate::RoutingAlloc) its
//! global allocator (without it, handler allocations go to the system heap, unbounded, and the
//! arena limit is not enforced), and define and export the C allocator
//! (`cella_arena::cmalloc`), without which a plugin's `malloc` goes to the system heap too.
//! Neither can be seen in the types, so both are probed: an allocation is made while a probe
//! route over a small arena on the stack is entered, and whether it landed in that arena says
//! which allocator served it. [`Server::start`](crate::Server::start) refuses to start without
//! the first; `cli::main_with` offers `--handler` only with the second.

use std::alloc::Layout;
use std::ffi::c_void;
use std::mem::MaybeUninit;

use cella_arena::{Arena, Route, Span};

/// Bytes of the probe arena: room for one small Rust allocation or one C block and its header.
const PROBE_ARENA_BYTES: usize = 256;

/// The probe route's `on_exhausted`: the probes allocate far less than the probe arena holds.
unsafe fn probe_exhausted(_layout: Layout) -> ! {
    crate::sys::write_stderr(b"cella: fatal: an allocator probe overran its arena\n");
    std::process::abort()
}

/// Runs `allocate` with this thread's allocations routed to a fresh probe arena, and says
/// whether the address it returns lies in that arena. `allocate` must not keep the pointer or
/// unwind, and must free what it allocated outside the arena itself.
///
/// # Panics
/// Inside a handler (whose route the probe would replace): a programmer error.
fn lands_in_probe_arena(allocate: impl FnOnce() -> *const u8) -> bool {
    assert!(!crate::cancel::in_handler(), "allocator probes run outside handlers");
    let mut memory = MaybeUninit::<[u128; PROBE_ARENA_BYTES / 16]>::uninit();
    let span = Span::new(memory.as_mut_ptr().cast(), PROBE_ARENA_BYTES);
    // SAFETY: `memory` is this frame's own, writable, and outlives the arena, which nothing else
    // uses.
    let arena = unsafe { Arena::new(span) };
    let mut route = Route::new(probe_exhausted);
    route.arena = &arena;
    route.reserve = &arena;
    // SAFETY: the route and its arena live in this frame until `leave`, right after the call.
    unsafe { cella_arena::enter(&route) };
    let address = allocate();
    cella_arena::leave();
    arena.contains(address)
}

/// Whether the process's global allocator is [`RoutingAlloc`](crate::RoutingAlloc): a `Box`
/// made while a route is entered lands in the route's arena only under it.
pub fn routing_alloc_is_global() -> bool {
    lands_in_probe_arena(|| {
        let probe = Box::new(0u64);
        let address = std::hint::black_box(&*probe) as *const u64 as *const u8;
        drop(probe); // While the route is entered: given back to whichever allocator made it.
        address
    })
}

/// Whether this process exports cella's C allocator (`cella::main!`, or
/// `cella_arena::export_c_allocator!` in a binary that exports its symbols dynamically): the
/// `malloc` a library loaded with `dlopen` would call, looked up as the dynamic linker does,
/// allocates in the route's arena only if it is cella's.
pub fn c_allocator_is_exported() -> bool {
    // Looked up before the route is entered: dlsym may allocate.
    // SAFETY: dlsym(3) with RTLD_DEFAULT and NUL-terminated names.
    let (malloc, free) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"free".as_ptr()),
        )
    };
    if malloc.is_null() || free.is_null() {
        return false;
    }
    // SAFETY: the addresses dlsym found for `malloc` and `free`, whose signatures are the C
    // standard's.
    let (malloc, free) = unsafe {
        (
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(usize) -> *mut c_void>(malloc),
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(free),
        )
    };
    let mut block: *mut c_void = std::ptr::null_mut();
    let exported = lands_in_probe_arena(|| {
        // SAFETY: malloc(3) of 16 bytes.
        block = unsafe { malloc(16) };
        block.cast()
    });
    if !exported && !block.is_null() {
        // SAFETY: a block the same allocator's malloc returned, freed once, outside the route.
        unsafe { free(block) };
    }
    exported
}

/// Says once, on stderr, that libc's own allocations are unseen when this binary does not
/// export cella's C allocator: what cella cannot count, it must not report as zero silently.
pub(crate) fn warn_unless_c_allocator_is_exported() {
    if !c_allocator_is_exported() {
        crate::sys::write_stderr(
            b"cella: warning: this binary does not export cella's C allocator: libc's own \
              allocations (DNS lookups, localtime, stdio buffers) go to glibc's malloc, \
              unbounded and not counted in `system allocator calls after startup`; set the \
              binary up with `cella::main!(app)`\n",
        );
    }
}

/// Sets a binary up fully, in one line: [`RoutingAlloc`](crate::RoutingAlloc) as its global
/// allocator, cella's C allocator and descriptor hooks exported (so plugins' `malloc` and the
/// descriptors handlers open belong to the request's slot), and a `main` that runs cella's
/// command line ([`cli::main_with`](crate::cli::main_with): `serve`, `check-config`, flags,
/// `CELLA_*` variables, config file, `--handler`, SIGTERM drain) over the handler that
/// `make_handler` builds at startup.
///
/// ```no_run
/// use cella::{handler_fn, Response, Router};
///
/// fn app() -> Router {
///     Router::new().get("/", handler_fn(|_| Response::text("hello\n")))
/// }
///
/// cella::main!(app);
/// ```
///
/// Use it once, at the top level of a binary crate that defines no `main` and no
/// `#[global_allocator]` of its own.
#[macro_export]
macro_rules! main {
    ($make_handler:expr) => {
        #[global_allocator]
        static CELLA_GLOBAL_ALLOCATOR: $crate::RoutingAlloc = $crate::RoutingAlloc;

        $crate::export_c_allocator!();
        $crate::export_fd_hooks!();

        fn main() -> ::std::process::ExitCode {
            $crate::setup::resolve_next_allocator();
            $crate::cli::main_with(::std::env::args_os(), $make_handler)
        }
    };
}

/// Finds the allocator the exported C allocator forwards to outside handlers (an `LD_PRELOAD`ed
/// one, or glibc's); [`main!`](crate::main!) calls it first thing.
pub fn resolve_next_allocator() {
    cella_arena::cmalloc::resolve_next();
}

#[cfg(test)]
mod tests {
    use super::*;

    // The library's test binary keeps the system allocator and exports no C allocator: both
    // probes must say so (the examples built with `cella::main!` say the opposite: tests/api.rs).
    #[test]
    fn without_the_setup_both_probes_say_no_and_change_nothing() {
        assert!(!routing_alloc_is_global());
        assert!(!c_allocator_is_exported());
        assert!(!routing_alloc_is_global(), "probing twice gives the same answer");
        let after = vec![1u8; 64];
        assert_eq!(after.len(), 64, "allocations go on after a probe");
    }
}
