//! The aligned allocations: `memalign` (and `aligned_alloc`), `valloc`, `pvalloc` and
//! `posix_memalign`, each a checked alignment and size on top of one `memalign_from`, whose
//! block goes where `calls.rs`'s `home_for` says.

use std::ffi::c_void;
use std::sync::atomic::Ordering; // For `next!`.

use super::calls::{home_for, Home};
use super::libc_own::state_block;
use super::{__libc_memalign, arena_block, fail, release_deferred_if_unsealed, NEXT_MEMALIGN};
use crate::route;

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
