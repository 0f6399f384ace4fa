//! The malloc-family functions: where a new block goes ([`home_for`]), and `malloc`, `calloc`
//! and `free`; `realloc` and the usable size are in `resize.rs`, the aligned allocations in
//! `aligned.rs`. Each `*_from` function takes the caller's return address (passed by the naked
//! entries of [`export_c_allocator!`](crate::export_c_allocator)), which decides where a new
//! block goes; the functions without the suffix are the same with a caller that is not libc
//! (tests, Rust callers). Frees find a block's home by its address: a state heap, an arena
//! (inside a region), or the next allocator.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::Ordering;

use super::libc_own::{free_state_block, is_libc, state_block};
use super::{__libc_calloc, __libc_free, __libc_malloc};
use super::{
    arena_block, defer_free, fail, release_deferred_if_unsealed, routed, HEADER, NEXT_CALLOC,
    NEXT_FREE, NEXT_MALLOC,
};
use crate::route::{self, Route};
use crate::state::{self, StateHeap};

/// Where a new block goes.
pub(super) enum Home {
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
pub(super) fn home_for(caller: usize) -> Home {
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
