//! The malloc-family functions themselves. Each `*_from` function takes the caller's return
//! address (passed by the naked entries of [`export_c_allocator!`](crate::export_c_allocator)),
//! which decides where a new block goes ([`home_for`]); the functions without the suffix are
//! the same with a caller that is not libc (tests, Rust callers). Frees and reallocations
//! find a block's home by its address: a state heap, an arena (inside a region), or the next
//! allocator.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::Ordering;

use super::libc_own::{free_state_block, is_libc, resize_state_block, state_block};
use super::{__libc_calloc, __libc_free, __libc_malloc, __libc_memalign, __libc_realloc};
use super::{
    arena_block, block_layout, block_size, defer_free, fail, release_deferred_if_unsealed, routed,
    HEADER, NEXT_CALLOC, NEXT_FREE, NEXT_MALLOC, NEXT_MEMALIGN, NEXT_REALLOC, NEXT_USABLE_SIZE,
};
use crate::route::{self, Route};
use crate::state::{self, StateHeap};

/// Where a new block goes.
enum Home {
    /// The state heap: libc's own allocation inside a handler or on a sealed thread.
    State(&'static StateHeap),
    /// The running handler's arena.
    Arena(&'static Route),
    /// The next allocator (outside handlers, on a thread that may call it).
    System,
}

/// Where a block allocated now by code returning to `caller` goes. The text-range check runs
/// only inside handlers and on sealed threads, where the answer matters.
#[inline]
fn home_for(caller: usize) -> Home {
    let route = routed();
    if (route.is_some() || route::current_thread_is_sealed()) && is_libc(caller) {
        if let Some(heap) = state::active() {
            return Home::State(heap);
        }
    }
    match route {
        Some(route) => Home::Arena(route),
        None => Home::System,
    }
}

/// `malloc(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn malloc(size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { malloc_from(size, 0) }
}

/// `malloc(3)`, called from `caller`.
///
/// # Safety
/// As the C function.
pub unsafe fn malloc_from(size: usize, caller: usize) -> *mut c_void {
    match home_for(caller) {
        Home::State(heap) => state_block(heap, size, HEADER),
        // SAFETY: route from this thread.
        Home::Arena(route) => unsafe { arena_block(route, size, HEADER) },
        Home::System => {
            release_deferred_if_unsealed();
            route::count_system_call();
            let next = next!(NEXT_MALLOC, __libc_malloc, fn(usize) -> *mut c_void);
            // SAFETY: forwarded unchanged to the next allocator.
            unsafe { next(size) }
        }
    }
}

/// `free(3)`, by the block's address: a state block goes back to its heap; arena memory comes
/// back only when it was the arena's latest block (the wipe reclaims the rest); memory of the
/// next allocator is freed there, or, inside a handler or on a sealed thread, its `free` is
/// deferred (see the module documentation).
///
/// # Safety
/// As the C function.
pub unsafe fn free(block: *mut c_void) {
    if block.is_null() {
        return;
    }
    let address = block as usize;
    let route = routed();
    if let Some(route) = route {
        // SAFETY: the route's arena is valid while entered.
        let arena = unsafe { &*route.arena };
        if arena.contains(block.cast()) {
            // Gives the bytes back when this was the most recent allocation. First: the
            // common case inside a handler.
            arena.free(block.cast::<u8>().wrapping_sub(HEADER));
            return;
        }
    }
    if route::in_any_region(address) {
        if let Some(heap) = state::owner_of(address) {
            // SAFETY: C code frees only blocks this allocator gave it; in a state heap, those
            // are `state_block`'s.
            unsafe { free_state_block(heap, block) };
        }
        return; // Another arena's memory: reclaimed by its wipe.
    }
    if route.is_some() || route::current_thread_is_sealed() {
        defer_free(block);
        return;
    }
    release_deferred_if_unsealed();
    route::count_system_call();
    let next = next!(NEXT_FREE, __libc_free, fn(*mut c_void) -> ());
    // SAFETY: not region memory, so it came from the next allocator; forwarded unchanged.
    unsafe { next(block) }
}

/// `calloc(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn calloc(count: usize, size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { calloc_from(count, size, 0) }
}

/// `calloc(3)`: NULL with `ENOMEM` when `count × size` overflows.
///
/// # Safety
/// As the C function.
pub unsafe fn calloc_from(count: usize, size: usize, caller: usize) -> *mut c_void {
    let block = match home_for(caller) {
        Home::System => {
            release_deferred_if_unsealed();
            route::count_system_call();
            let next = next!(NEXT_CALLOC, __libc_calloc, fn(usize, usize) -> *mut c_void);
            // SAFETY: forwarded unchanged to the next allocator (which checks the product).
            return unsafe { next(count, size) };
        }
        home => {
            let Some(bytes) = count.checked_mul(size) else { return fail(libc::ENOMEM) };
            let block = match home {
                Home::State(heap) => state_block(heap, bytes, HEADER),
                // SAFETY: route from this thread.
                Home::Arena(route) => unsafe { arena_block(route, bytes, HEADER) },
                Home::System => ptr::null_mut(),
            };
            (block, bytes)
        }
    };
    if !block.0.is_null() {
        // SAFETY: the block has `bytes` writable bytes (arena and state heap memory may hold
        // earlier data, so it is zeroed here).
        unsafe { ptr::write_bytes(block.0.cast::<u8>(), 0, block.1) };
    }
    block.0
}

/// `realloc(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { realloc_from(block, size, 0) }
}

/// `realloc(3)`. A block stays in its home when it can (a state block in its heap, an arena
/// block in the running handler's arena); a block of the next allocator is moved where
/// [`home_for`] says inside a handler or on a sealed thread (see the module documentation).
///
/// # Safety
/// As the C function.
pub unsafe fn realloc_from(block: *mut c_void, size: usize, caller: usize) -> *mut c_void {
    if block.is_null() {
        // SAFETY: as the C function.
        return unsafe { malloc_from(size, caller) };
    }
    if block_layout(size, HEADER).is_none() {
        return fail(libc::ENOMEM); // The block is left as it was, as realloc(3) says.
    }
    let address = block as usize;
    let in_region = route::in_any_region(address);
    if let Some(heap) = state::owner_of(address).filter(|_| in_region) {
        // SAFETY: a state block (see `free`); `size + HEADER` does not overflow (checked).
        if unsafe { resize_state_block(heap, block, size) } {
            return block;
        }
        // SAFETY: the header is the block's own; then as `move_block` requires.
        return unsafe {
            move_block(block, block_size(block), size, state_block(heap, size, HEADER))
        };
    }
    if in_region {
        // SAFETY: region memory handed to C outside a state heap comes from `arena_block`.
        return unsafe { realloc_arena_block(block, size, caller) };
    }
    let home = home_for(caller);
    if let Home::System = home {
        release_deferred_if_unsealed();
        route::count_system_call();
        let next = next!(NEXT_REALLOC, __libc_realloc, fn(*mut c_void, usize) -> *mut c_void);
        // SAFETY: memory of the next allocator, forwarded unchanged.
        return unsafe { next(block, size) };
    }
    // Acquire: pairs with the Release store in `resolve_next`.
    if NEXT_USABLE_SIZE.load(Ordering::Acquire) == 0 {
        return fail(libc::ENOMEM); // Unknown size: refuse rather than copy too little.
    }
    let usable = next!(NEXT_USABLE_SIZE, malloc_usable_size_fallback, fn(*mut c_void) -> usize);
    // SAFETY: memory of the next allocator: its usable size, which it computes without
    // allocating, is at least what was asked and all of it is readable.
    let old_size = unsafe { usable(block) };
    let moved = match home {
        Home::State(heap) => state_block(heap, size, HEADER),
        // SAFETY: route from this thread.
        Home::Arena(route) => unsafe { arena_block(route, size, HEADER) },
        Home::System => ptr::null_mut(),
    };
    // SAFETY: as `move_block` requires (the new block is fresh); the old block's free is
    // deferred (a handler runs, or the thread is sealed).
    unsafe { move_block(block, old_size, size, moved) }
}

/// `realloc` of an arena block: in place, or moved within the running handler's arena; outside
/// its handler, moved to where `malloc` would put it.
///
/// # Safety
/// `block` is an arena block made by `arena_block`, not freed; `size + HEADER` does not
/// overflow.
unsafe fn realloc_arena_block(block: *mut c_void, size: usize, caller: usize) -> *mut c_void {
    // SAFETY: our contract.
    let old_size = unsafe { block_size(block) };
    let Some(route) = routed() else {
        // SAFETY: as the C functions.
        return unsafe { move_block(block, old_size, size, malloc_from(size, caller)) };
    };
    // SAFETY: the route's arena is valid while entered.
    let arena = unsafe { &*route.arena };
    if arena.try_resize_in_place(block.cast::<u8>().wrapping_sub(HEADER), size + HEADER) {
        // SAFETY: the block is ours and now holds `size` bytes.
        unsafe { block.cast::<u8>().sub(HEADER).cast::<usize>().write(size) };
        return block;
    }
    // SAFETY: route from this thread; then as `move_block` requires (the new block is fresh).
    unsafe { move_block(block, old_size, size, arena_block(route, size, HEADER)) }
}

/// Copies `min(old_size, size)` bytes of `block` to `moved` and frees `block` (see [`free`]);
/// when `moved` is NULL, leaves `block` alone.
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

/// `reallocarray(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn reallocarray(block: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { reallocarray_from(block, count, size, 0) }
}

/// `reallocarray(3)`: NULL with `ENOMEM`, the block left alone, when `count × size` overflows.
///
/// # Safety
/// As the C function.
pub unsafe fn reallocarray_from(
    block: *mut c_void,
    count: usize,
    size: usize,
    caller: usize,
) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: as the C function.
        Some(bytes) => unsafe { realloc_from(block, bytes, caller) },
        None => fail(libc::ENOMEM),
    }
}

unsafe extern "C" fn malloc_usable_size_fallback(_block: *mut c_void) -> usize {
    0
}

/// `memalign(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { memalign_from(align, size, 0) }
}

/// `memalign(3)` and `aligned_alloc(3)`: NULL with `EINVAL` when `align` is not a power of two,
/// with `ENOMEM` when the size is impossible.
///
/// # Safety
/// As the C function.
pub unsafe fn memalign_from(align: usize, size: usize, caller: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return fail(libc::EINVAL);
    }
    match home_for(caller) {
        Home::State(heap) => state_block(heap, size, align),
        // SAFETY: route from this thread; `align` is a power of two.
        Home::Arena(route) => unsafe { arena_block(route, size, align) },
        Home::System => {
            release_deferred_if_unsealed();
            route::count_system_call();
            let next = next!(NEXT_MEMALIGN, __libc_memalign, fn(usize, usize) -> *mut c_void);
            // SAFETY: forwarded unchanged to the next allocator.
            unsafe { next(align, size) }
        }
    }
}

/// `valloc(3)`: page-aligned.
///
/// # Safety
/// As the C function.
pub unsafe fn valloc(size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { valloc_from(size, 0) }
}

/// `valloc(3)`, called from `caller`.
///
/// # Safety
/// As the C function.
pub unsafe fn valloc_from(size: usize, caller: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { memalign_from(crate::page_size(), size, caller) }
}

/// `pvalloc(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: as the C function.
    unsafe { pvalloc_from(size, 0) }
}

/// `pvalloc(3)`: page-aligned, the size rounded up to whole pages (at least one); NULL with
/// `ENOMEM` when the rounding overflows.
///
/// # Safety
/// As the C function.
pub unsafe fn pvalloc_from(size: usize, caller: usize) -> *mut c_void {
    let page = crate::page_size();
    match size.div_ceil(page).max(1).checked_mul(page) {
        // SAFETY: as the C function.
        Some(rounded) => unsafe { memalign_from(page, rounded, caller) },
        None => fail(libc::ENOMEM),
    }
}

/// `posix_memalign(3)` for a caller that is not libc.
///
/// # Safety
/// As the C function.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    // SAFETY: as the C function.
    unsafe { posix_memalign_from(out, align, size, 0) }
}

/// `posix_memalign(3)`: `EINVAL` or `ENOMEM` returned, `errno` left as it was.
///
/// # Safety
/// As the C function.
pub unsafe fn posix_memalign_from(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
    caller: usize,
) -> i32 {
    if out.is_null() || !align.is_power_of_two() || align % size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    // SAFETY: __errno_location(3) is the calling thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: as the C function.
    let block = unsafe { memalign_from(align, size, caller) };
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
        // SAFETY: region memory handed to C comes from `arena_block` or `state_block`, which
        // both write the size 16 bytes before the block.
        return unsafe { block_size(block) };
    }
    let next = next!(NEXT_USABLE_SIZE, malloc_usable_size_fallback, fn(*mut c_void) -> usize);
    // SAFETY: forwarded unchanged to the next allocator.
    unsafe { next(block) }
}
