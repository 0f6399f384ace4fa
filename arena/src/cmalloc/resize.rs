//! `realloc` and its relatives (`reallocarray`, `malloc_usable_size`): a block is found by its
//! address (a state heap, an arena inside a region, or the next allocator), kept in its home
//! when it can be, and otherwise moved to where a new block of the caller's would go
//! (`calls.rs`'s `home_for`).

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::Ordering;

use super::calls::{free, home_for, malloc_from, Home};
use super::libc_own::{resize_state_block, state_block};
use super::{
    __libc_realloc, arena_block, block_layout, block_size, fail, release_deferred_if_unsealed,
};
use super::{routed, HEADER, NEXT_REALLOC, NEXT_USABLE_SIZE};
use crate::route;
use crate::state;

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
