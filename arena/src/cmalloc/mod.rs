//! The C allocator for foreign handlers: while a handler runs, `malloc`, `calloc`, `realloc`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc` and `pvalloc` made by any code on its
//! thread but libc itself (a C, Zig or Nim plugin) allocate from its slot's arena, and `free` of
//! arena memory is a no-op (the wipe reclaims it). Outside handlers they forward to the next
//! allocator in symbol order (glibc's, or an `LD_PRELOAD`ed one); libc's own calls go to the
//! state heap inside handlers and on sealed threads (below).
//!
//! **libc's own allocations** (NSS, `tzset`, stdio buffers, the thread-local destructor list,
//! `getaddrinfo`) are recognised by the caller's return address and go to the state heap
//! inside handlers and on sealed threads (`libc_own.rs`), so libc's lazy state never lands in
//! an arena and never reaches the system allocator after the seal. Blocks are freed by
//! address (state heap, arena, next allocator), whoever frees them. Files: `mod.rs` (the next
//! allocator, arena blocks, deferred frees), `calls.rs` (where a new block goes; `malloc`,
//! `calloc`, `free`), `resize.rs` (`realloc`, `reallocarray`, `malloc_usable_size`),
//! `aligned.rs` (`memalign`, `valloc`, `pvalloc`, `posix_memalign`), `libc_own.rs` (libc's text
//! ranges and state blocks), `export.rs` (the naked entries).
//!
//! A binary opts in with [`export_c_allocator!`](crate::export_c_allocator), which defines the
//! C symbols, and must export them dynamically (`-Wl,--export-dynamic-symbol=malloc,...`, as
//! `runtime/build.rs` does for `cella`) so that libraries loaded with `dlopen` bind to them.
//!
//! Arena blocks carry a 16-byte header holding their size (C's `realloc` and
//! `malloc_usable_size` need it); the block itself stays 16-byte aligned like glibc's.
//! Limits (docs/c-abi.md): memory a plugin mallocs inside a handler must not outlive the request;
//! `malloc_trim`, `mallinfo` and `malloc_stats` are not interposed.
//!
//! **Sizes.** Every size computation (`calloc`'s and `reallocarray`'s products, `pvalloc`'s page
//! rounding, the header and alignment added to an arena block) is checked. A size that
//! overflows, or that exceeds `PTRDIFF_MAX` as glibc refuses, gives NULL with `errno = ENOMEM`,
//! in a handler and outside one, and leaves a `realloc`ed block as it was. A size that is
//! representable but larger than what is left of the arena still cancels the request (500), as
//! a Rust handler's overrun does.
//!
//! **Blocks from outside the arena** (a plugin `malloc`ed them in `init`, or in a thread of its
//! own, from the system allocator) may be `realloc`ed and `free`d inside a handler, and behave
//! as with the system allocator, without a system allocator call while the handler runs:
//! - `free` (inside a handler or on a sealed thread) records the block in a fixed table of deferred frees ([`DEFERRED_FREES_MAX`]
//!   entries, static: no allocation) and returns. The table is emptied, with the next
//!   allocator's `free`, by [`release_deferred_frees`] (`cella serve` calls it at drain) and by
//!   any malloc-family call outside a handler on a thread that is not sealed (a plugin's own
//!   thread). Sealed threads never empty it, so the process makes no system allocator call
//!   between its ready line and its drain. When the table is full the block is never freed (it
//!   leaks, and [`deferred_free_counts`] counts it): a `free` while a handler runs must not call
//!   the system allocator, and nothing else could be done with it.
//! - `realloc` copies the block's contents (`malloc_usable_size` bytes, read from the next
//!   allocator, which allocates nothing) into a new arena block (a state block when libc is the
//!   caller) and frees the old one as `free` above. If the next allocator's `malloc_usable_size` is unknown (before [`resolve_next`]),
//!   it fails with NULL/`ENOMEM` and leaves the block alone rather than copy too little.

mod export;

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::route::{self, Route};

const HEADER: usize = 16;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(pointer: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(pointer: *mut c_void);
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
}

/// The next allocator's functions (`dlsym(RTLD_NEXT, ...)`), 0 until [`resolve_next`].
static NEXT_MALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_FREE: AtomicUsize = AtomicUsize::new(0);
static NEXT_CALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_REALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_MEMALIGN: AtomicUsize = AtomicUsize::new(0);
static NEXT_USABLE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Finds the allocator after this binary in symbol order (an `LD_PRELOAD`ed counter, or glibc).
/// Call once at the start of `main`; until then, glibc's own functions are used.
pub fn resolve_next() {
    libc_own::collect_libc_text();
    let table: [(&AtomicUsize, &[u8]); 6] = [
        (&NEXT_MALLOC, b"malloc\0"),
        (&NEXT_FREE, b"free\0"),
        (&NEXT_CALLOC, b"calloc\0"),
        (&NEXT_REALLOC, b"realloc\0"),
        (&NEXT_MEMALIGN, b"memalign\0"),
        (&NEXT_USABLE_SIZE, b"malloc_usable_size\0"),
    ];
    for (slot, name) in table {
        // SAFETY: dlsym(3) with RTLD_NEXT and a NUL-terminated name; a null result means none.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
        // Release: pairs with the Acquire loads below; the function pointer is all we publish.
        slot.store(found as usize, Ordering::Release);
    }
}

macro_rules! next {
    ($slot:ident, $fallback:ident, fn($($arg:ty),*) -> $ret:ty) => {{
        // Acquire: pairs with the Release store in `resolve_next`.
        let address = $slot.load(Ordering::Acquire);
        if address == 0 {
            $fallback as unsafe extern "C" fn($($arg),*) -> $ret
        } else {
            // SAFETY: a non-zero value is dlsym's address of the C function of that name,
            // whose signature is the C standard's.
            unsafe { std::mem::transmute::<usize, unsafe extern "C" fn($($arg),*) -> $ret>(address) }
        }
    }};
}

// After `next!`, which they use.
mod aligned;
mod calls;
pub mod entries;
mod libc_own;
mod resize;

pub use aligned::*;
pub use calls::*;
pub use libc_own::{collect_libc_text, libc_text_ranges, LIBC_TEXT_RANGES_MAX};
pub use resize::*;

/// Sets the calling thread's `errno` (malloc(3): failures set `ENOMEM`, bad alignments
/// `EINVAL`) and returns NULL.
fn fail(code: i32) -> *mut c_void {
    // SAFETY: __errno_location(3) returns the calling thread's errno, valid for the thread's life.
    unsafe { *libc::__errno_location() = code };
    ptr::null_mut()
}

/// The layout of an arena block of `size` bytes aligned to `align` (a power of two, at least
/// [`HEADER`]): the header room comes before the block. `None` when the total overflows or
/// exceeds `isize::MAX` (`PTRDIFF_MAX`, beyond which glibc refuses too).
fn block_layout(size: usize, align: usize) -> Option<Layout> {
    let total = size.checked_add(align)?;
    Layout::from_size_align(total, align).ok()
}

/// A block of `size` bytes aligned to `align` (a power of two; at least 16 is used) from the
/// route's arena, with its header written. NULL with `ENOMEM` when the size is impossible (see
/// [`block_layout`]); otherwise never NULL: a spent arena cancels the request (or, while
/// panicking, uses the reserve).
unsafe fn arena_block(route: &Route, size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let Some(layout) = block_layout(size, align) else { return fail(libc::ENOMEM) };
    // SAFETY: the route is valid (the caller read it from this thread's state).
    let start = unsafe { route::alloc_routed(route, layout) };
    // SAFETY: `start + align` is inside the block of `size + align` bytes; the header lies in
    // the `align - 16 + 16` bytes before the returned pointer.
    unsafe {
        let block = start.add(align);
        block.sub(HEADER).cast::<usize>().write(size);
        block.cast()
    }
}

/// The size recorded in the header of an arena block.
unsafe fn block_size(block: *mut c_void) -> usize {
    // SAFETY: callers pass arena blocks made by `arena_block`, which wrote the header.
    unsafe { block.cast::<u8>().sub(HEADER).cast::<usize>().read() }
}

fn routed() -> Option<&'static Route> {
    // SAFETY: a non-null route is valid until `leave` on this thread, which cannot happen
    // during this call.
    unsafe { route::current().as_ref() }
}

/// Most blocks of the system allocator whose `free` can wait at once: 8 KiB of static memory.
/// Past it, a block freed while a handler runs is leaked and counted.
pub const DEFERRED_FREES_MAX: usize = 1024;

/// Blocks of the next allocator freed (or moved by `realloc`) while a handler ran, waiting for
/// a thread that may call the system allocator; 0 marks a free entry.
static DEFERRED_FREES: [AtomicUsize; DEFERRED_FREES_MAX] =
    [const { AtomicUsize::new(0) }; DEFERRED_FREES_MAX];
/// Entries of `DEFERRED_FREES` in use: lets the malloc-family calls skip the table when empty.
static DEFERRED_PENDING: AtomicUsize = AtomicUsize::new(0);
static DEFERRED_TOTAL: AtomicU64 = AtomicU64::new(0);
static DEFERRED_LEAKED: AtomicU64 = AtomicU64::new(0);

/// What became of the system-allocator blocks that handlers freed, since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeferredFrees {
    /// Blocks whose `free` was deferred (each is freed by [`release_deferred_frees`]).
    pub deferred: u64,
    /// Blocks never freed because the table of [`DEFERRED_FREES_MAX`] entries was full.
    pub leaked: u64,
    /// Blocks deferred and not freed yet.
    pub pending: usize,
}

/// Counts of deferred and leaked frees (see the module documentation).
pub fn deferred_free_counts() -> DeferredFrees {
    // Relaxed: statistics; a caller that needs them exact reads after the handlers finished.
    DeferredFrees {
        deferred: DEFERRED_TOTAL.load(Ordering::Relaxed),
        leaked: DEFERRED_LEAKED.load(Ordering::Relaxed),
        pending: DEFERRED_PENDING.load(Ordering::Relaxed),
    }
}

/// Marks a table entry whose block Rust's `System` allocator made (through the `malloc` symbol,
/// so it is freed through the `free` symbol, as `System.dealloc` does), rather than the next
/// allocator. Blocks are at least 2-byte aligned, so bit 0 is free for it.
const SYSTEM_BLOCK_TAG: usize = 1;

/// Set while [`release_deferred_frees`] runs: the `free` it calls for a `System` block may come
/// back here through the exported `free`, which must not start another release.
static RELEASING: AtomicBool = AtomicBool::new(false);

/// Records `block`, made by Rust's `System` allocator before the seal and freed by Rust code
/// inside a handler or on a sealed thread, for a later `free` (see [`defer_free`]).
pub(crate) fn defer_system_free(block: *mut u8) {
    defer_entry(block as usize | SYSTEM_BLOCK_TAG);
}

/// Records `block` (memory of the next allocator, freed while a handler runs) for a later
/// `free`. Takes no lock and calls no allocator: a scan of the static table.
fn defer_free(block: *mut c_void) {
    defer_entry(block as usize);
}

fn defer_entry(address: usize) {
    for entry in &DEFERRED_FREES {
        // Relaxed: only a hint that the entry is free; the exchange below decides.
        if entry.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // Release: pairs with the Acquire swap in `release_deferred_frees`, so that every use
        // of the block by this handler (the copy `realloc` made) happens before its `free`.
        if entry.compare_exchange(0, address, Ordering::Release, Ordering::Relaxed).is_ok() {
            // Relaxed (all three): counters; `DEFERRED_PENDING` is only a hint to skip the scan,
            // and the table entries themselves carry the synchronisation.
            DEFERRED_PENDING.fetch_add(1, Ordering::Relaxed);
            DEFERRED_TOTAL.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    DEFERRED_LEAKED.fetch_add(1, Ordering::Relaxed);
}

/// Frees, with the next allocator, every block whose `free` was deferred because a handler ran;
/// returns how many. Does nothing inside a handler (it would call the system allocator there).
/// On a sealed thread each `free` counts as a system allocator call, as any other would.
pub fn release_deferred_frees() -> usize {
    if routed().is_some() {
        return 0;
    }
    let next = next!(NEXT_FREE, __libc_free, fn(*mut c_void) -> ());
    // Acquire: pairs with the Release store at the end; one release at a time.
    if RELEASING.swap(true, Ordering::Acquire) {
        return 0;
    }
    let mut released = 0;
    for entry in &DEFERRED_FREES {
        // Relaxed: a cheap look first; the swap below takes the entry.
        if entry.load(Ordering::Relaxed) == 0 {
            continue;
        }
        // Acquire: pairs with the Release exchange in `defer_free`.
        let address = entry.swap(0, Ordering::Acquire);
        if address == 0 {
            continue; // Another thread released it meanwhile.
        }
        DEFERRED_PENDING.fetch_sub(1, Ordering::Relaxed);
        route::count_system_call();
        if address & SYSTEM_BLOCK_TAG != 0 {
            // SAFETY: only the routing allocator's `dealloc` records a tagged block, and only
            // one outside every region, so made by Rust's `System`, which frees with free(3)
            // on Unix; freed once (the swap took it).
            unsafe { libc::free((address & !SYSTEM_BLOCK_TAG) as *mut c_void) };
        } else {
            // SAFETY: only `free` and `realloc` record untagged blocks, and only blocks outside
            // every region that a handler gave up: memory of the next allocator, freed once
            // (the swap took it).
            unsafe { next(address as *mut c_void) };
        }
        released += 1;
    }
    // Release: pairs with the Acquire swap above.
    RELEASING.store(false, Ordering::Release);
    released
}

/// Outside handlers, on a thread that is not sealed (startup, shutdown, a plugin's own thread),
/// a malloc-family call first frees what handlers gave back: the next allocator is being called
/// anyway.
fn release_deferred_if_unsealed() {
    // Relaxed: a hint; a missed entry is released by a later call.
    if DEFERRED_PENDING.load(Ordering::Relaxed) != 0 && !route::current_thread_is_sealed() {
        release_deferred_frees();
    }
}

#[cfg(test)]
mod tests;
