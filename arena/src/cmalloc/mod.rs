//! The C allocator for foreign handlers: while a handler runs, `malloc`, `calloc`, `realloc`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc` and `pvalloc` made by any code on its
//! thread (a C, Zig or Nim plugin) allocate from its slot's arena, and `free` of arena memory is
//! a no-op (the wipe reclaims it). Outside handlers they forward to the next allocator in symbol
//! order (glibc's, or an `LD_PRELOAD`ed one).
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
//! - `free` records the block in a fixed table of deferred frees ([`DEFERRED_FREES_MAX`]
//!   entries, static: no allocation) and returns. The table is emptied, with the next
//!   allocator's `free`, by [`release_deferred_frees`] (`cella serve` calls it at drain) and by
//!   any malloc-family call outside a handler on a thread that is not sealed (a plugin's own
//!   thread). Sealed threads never empty it, so the process makes no system allocator call
//!   between its ready line and its drain. When the table is full the block is never freed (it
//!   leaks, and [`deferred_free_counts`] counts it): a `free` while a handler runs must not call
//!   the system allocator, and nothing else could be done with it.
//! - `realloc` copies the block's contents (`malloc_usable_size` bytes, read from the next
//!   allocator, which allocates nothing) into a new arena block and frees the old one as `free`
//!   above. If the next allocator's `malloc_usable_size` is unknown (before [`resolve_next`]),
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

/// `malloc(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn malloc(size: usize) -> *mut c_void {
    if let Some(route) = routed() {
        // SAFETY: route from this thread.
        return unsafe { arena_block(route, size, HEADER) };
    }
    release_deferred_if_unsealed();
    route::count_system_call();
    let next = next!(NEXT_MALLOC, __libc_malloc, fn(usize) -> *mut c_void);
    // SAFETY: forwarded unchanged to the next allocator.
    unsafe { next(size) }
}

/// `free(3)`. Arena memory: the bytes come back only when this was the arena's latest block
/// (the wipe reclaims the rest). Other memory inside a handler: the `free` is deferred (see the
/// module documentation); outside one: the next allocator's `free`.
///
/// # Safety
/// As the C function.
pub unsafe fn free(block: *mut c_void) {
    if block.is_null() {
        return;
    }
    if route::in_any_region(block as usize) {
        if let Some(route) = routed() {
            // SAFETY: the route's arena is valid while entered.
            let arena = unsafe { &*route.arena };
            // Gives the bytes back when this was the most recent allocation.
            arena.free(block.cast::<u8>().wrapping_sub(HEADER));
        }
        return;
    }
    if routed().is_some() {
        defer_free(block);
        return;
    }
    release_deferred_if_unsealed();
    route::count_system_call();
    let next = next!(NEXT_FREE, __libc_free, fn(*mut c_void) -> ());
    // SAFETY: not arena memory, so it came from the next allocator; forwarded unchanged.
    unsafe { next(block) }
}

/// `calloc(3)`: NULL with `ENOMEM` when `count × size` overflows.
///
/// # Safety
/// As the C function.
pub unsafe fn calloc(count: usize, size: usize) -> *mut c_void {
    if let Some(route) = routed() {
        let Some(bytes) = count.checked_mul(size) else { return fail(libc::ENOMEM) };
        // SAFETY: route from this thread.
        let block = unsafe { arena_block(route, bytes, HEADER) };
        if !block.is_null() {
            // SAFETY: the block has `bytes` writable bytes (arena memory may hold earlier data
            // of this request, so it is zeroed here).
            unsafe { ptr::write_bytes(block.cast::<u8>(), 0, bytes) };
        }
        return block;
    }
    release_deferred_if_unsealed();
    route::count_system_call();
    let next = next!(NEXT_CALLOC, __libc_calloc, fn(usize, usize) -> *mut c_void);
    // SAFETY: forwarded unchanged to the next allocator (which checks the product itself).
    unsafe { next(count, size) }
}

/// `realloc(3)`. See the module documentation for blocks from outside the arena.
///
/// # Safety
/// As the C function.
pub unsafe fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
    if block.is_null() {
        // SAFETY: as the C function.
        return unsafe { malloc(size) };
    }
    let in_region = route::in_any_region(block as usize);
    let Some(route) = routed() else {
        if !in_region {
            release_deferred_if_unsealed();
            route::count_system_call();
            let next = next!(NEXT_REALLOC, __libc_realloc, fn(*mut c_void, usize) -> *mut c_void);
            // SAFETY: memory of the next allocator, forwarded unchanged.
            return unsafe { next(block, size) };
        }
        // Arena memory outside its handler: move it to the system allocator.
        // SAFETY: arena memory handed to C comes from `arena_block`; as the C functions.
        return unsafe { move_block(block, block_size(block), size, malloc(size)) };
    };
    if block_layout(size, HEADER).is_none() {
        return fail(libc::ENOMEM); // The block is left as it was, as realloc(3) says.
    }
    let old_size = if in_region {
        // SAFETY: arena memory handed to C comes from `arena_block`.
        let old_size = unsafe { block_size(block) };
        // SAFETY: the route's arena is valid while entered.
        let arena = unsafe { &*route.arena };
        // `size + HEADER` does not overflow: `block_layout` checked it.
        if arena.try_resize_in_place(block.cast::<u8>().wrapping_sub(HEADER), size + HEADER) {
            // SAFETY: the block is ours and now holds `size` bytes.
            unsafe { block.cast::<u8>().sub(HEADER).cast::<usize>().write(size) };
            return block;
        }
        old_size
    } else {
        // Acquire: pairs with the Release store in `resolve_next`.
        if NEXT_USABLE_SIZE.load(Ordering::Acquire) == 0 {
            return fail(libc::ENOMEM); // Unknown size: refuse rather than copy too little.
        }
        let next = next!(NEXT_USABLE_SIZE, malloc_usable_size_fallback, fn(*mut c_void) -> usize);
        // SAFETY: memory of the next allocator: its usable size, which it computes without
        // allocating, is at least what was asked and all of it is readable.
        unsafe { next(block) }
    };
    // SAFETY: route from this thread; then as `move_block` requires (the new block is fresh).
    unsafe {
        let moved = arena_block(route, size, HEADER);
        move_block(block, old_size, size, moved)
    }
}

/// Copies `min(old_size, size)` bytes of `block` to `moved` and frees `block` (deferred when it
/// is the next allocator's and a handler runs); when `moved` is NULL, leaves `block` alone.
///
/// # Safety
/// `block` holds `old_size` readable bytes and may be freed; `moved` is NULL or a fresh block of
/// at least `size` bytes.
unsafe fn move_block(
    block: *mut c_void,
    old_size: usize,
    size: usize,
    moved: *mut c_void,
) -> *mut c_void {
    if !moved.is_null() {
        // SAFETY: the two blocks are distinct (`moved` is fresh) and hold at least the bytes
        // copied; `free` as the C function.
        unsafe {
            ptr::copy_nonoverlapping(block.cast::<u8>(), moved.cast::<u8>(), old_size.min(size));
            free(block);
        }
    }
    moved
}

/// `reallocarray(3)`: NULL with `ENOMEM`, the block left alone, when `count × size` overflows.
///
/// # Safety
/// As the C function.
pub unsafe fn reallocarray(block: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: as the C function.
        Some(bytes) => unsafe { realloc(block, bytes) },
        None => fail(libc::ENOMEM),
    }
}

unsafe extern "C" fn malloc_usable_size_fallback(_block: *mut c_void) -> usize {
    0
}

/// `memalign(3)` and `aligned_alloc(3)`: NULL with `EINVAL` when `align` is not a power of two,
/// with `ENOMEM` when the size is impossible.
///
/// # Safety
/// As the C function.
pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return fail(libc::EINVAL);
    }
    if let Some(route) = routed() {
        // SAFETY: route from this thread; `align` is a power of two.
        return unsafe { arena_block(route, size, align) };
    }
    release_deferred_if_unsealed();
    route::count_system_call();
    let next = next!(NEXT_MEMALIGN, __libc_memalign, fn(usize, usize) -> *mut c_void);
    // SAFETY: forwarded unchanged to the next allocator.
    unsafe { next(align, size) }
}

/// `valloc(3)`: page-aligned.
///
/// # Safety
/// As the C function.
pub unsafe fn valloc(size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { memalign(crate::page_size(), size) }
}

/// `pvalloc(3)`: page-aligned, the size rounded up to whole pages (at least one); NULL with
/// `ENOMEM` when the rounding overflows.
///
/// # Safety
/// As the C function.
pub unsafe fn pvalloc(size: usize) -> *mut c_void {
    let page = crate::page_size();
    match size.div_ceil(page).max(1).checked_mul(page) {
        // SAFETY: as the C function.
        Some(rounded) => unsafe { memalign(page, rounded) },
        None => fail(libc::ENOMEM),
    }
}

/// `posix_memalign(3)`: `EINVAL` or `ENOMEM` returned, `errno` left as it was.
///
/// # Safety
/// As the C function.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if out.is_null() || !align.is_power_of_two() || align % size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    // SAFETY: __errno_location(3) is the calling thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: as the C function.
    let block = unsafe { memalign(align, size) };
    if block.is_null() {
        // SAFETY: as above; posix_memalign(3) reports through its result, not errno.
        unsafe { *libc::__errno_location() = errno };
        return libc::ENOMEM;
    }
    // SAFETY: `out` is non-null and writable (C contract).
    unsafe { out.write(block) };
    0
}

/// `malloc_usable_size(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn malloc_usable_size(block: *mut c_void) -> usize {
    if block.is_null() {
        return 0;
    }
    if route::in_any_region(block as usize) {
        // SAFETY: arena memory handed to C comes from `arena_block`.
        return unsafe { block_size(block) };
    }
    let next = next!(NEXT_USABLE_SIZE, malloc_usable_size_fallback, fn(*mut c_void) -> usize);
    // SAFETY: forwarded unchanged to the next allocator.
    unsafe { next(block) }
}

#[cfg(test)]
mod tests;
