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

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A block of `size` bytes aligned to `align` (at least 16) from the route's arena, with its
/// header written. Never returns null: a spent arena cancels the request (or, while
/// panicking, uses the reserve).
unsafe fn arena_block(route: &Route, size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let Some(total) = size.checked_add(align) else {
        // SAFETY: as in `alloc_routed`: an impossible size spends the arena.
        return unsafe {
            route::alloc_routed(route, Layout::from_size_align_unchecked(usize::MAX / 2, 1))
        }
        .cast();
    };
    // SAFETY: align is a power of two (callers check) and total does not overflow.
    let layout = unsafe { Layout::from_size_align_unchecked(total, align) };
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

/// `malloc(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn malloc(size: usize) -> *mut c_void {
    if let Some(route) = routed() {
        // SAFETY: route from this thread.
        return unsafe { arena_block(route, size, HEADER) };
    }
    route::count_system_call();
    // SAFETY: forwarded.
    {
        let next = next!(NEXT_MALLOC, __libc_malloc, fn(usize) -> *mut c_void);
        // SAFETY: forwarded unchanged to the next allocator.
        unsafe { next(size) }
    }
}

/// `free(3)`.
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
    route::count_system_call();
    // SAFETY: not arena memory, so it came from the next allocator.
    {
        let next = next!(NEXT_FREE, __libc_free, fn(*mut c_void) -> ());
        // SAFETY: forwarded unchanged to the next allocator.
        unsafe { next(block) }
    }
}

/// `calloc(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn calloc(count: usize, size: usize) -> *mut c_void {
    if let Some(route) = routed() {
        let Some(bytes) = count.checked_mul(size) else { return ptr::null_mut() };
        // SAFETY: route from this thread; the block has `bytes` writable bytes (arena memory
        // may hold earlier data of this request, so it is zeroed here).
        unsafe {
            let block = arena_block(route, bytes, HEADER);
            ptr::write_bytes(block.cast::<u8>(), 0, bytes);
            return block;
        }
    }
    route::count_system_call();
    // SAFETY: forwarded.
    {
        let next = next!(NEXT_CALLOC, __libc_calloc, fn(usize, usize) -> *mut c_void);
        // SAFETY: forwarded unchanged to the next allocator.
        unsafe { next(count, size) }
    }
}

/// `realloc(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
    if block.is_null() {
        // SAFETY: as the C function.
        return unsafe { malloc(size) };
    }
    let in_region = route::in_any_region(block as usize);
    let route = routed();
    if !in_region && route.is_none() {
        route::count_system_call();
        // SAFETY: forwarded.
        return {
            let next = next!(NEXT_REALLOC, __libc_realloc, fn(*mut c_void, usize) -> *mut c_void);
            // SAFETY: forwarded unchanged to the next allocator.
            unsafe { next(block, size) }
        };
    }
    let old_size = if in_region {
        // SAFETY: arena memory handed to C comes from `arena_block`.
        unsafe { block_size(block) }
    } else {
        // SAFETY: memory of the next allocator: its usable size is at least what was asked.
        {
            let next =
                next!(NEXT_USABLE_SIZE, malloc_usable_size_fallback, fn(*mut c_void) -> usize);
            // SAFETY: forwarded unchanged to the next allocator.
            unsafe { next(block) }
        }
    };
    if let (true, Some(route)) = (in_region, route) {
        // SAFETY: the route's arena is valid while entered.
        let arena = unsafe { &*route.arena };
        let start = block.cast::<u8>().wrapping_sub(HEADER);
        if arena.try_resize_in_place(start, size.saturating_add(HEADER)) {
            // SAFETY: the block is ours and now holds `size` bytes.
            unsafe { block.cast::<u8>().sub(HEADER).cast::<usize>().write(size) };
            return block;
        }
    }
    // SAFETY: as the C functions; the two blocks are distinct and hold at least the bytes
    // copied.
    unsafe {
        let moved = malloc(size);
        if !moved.is_null() {
            ptr::copy_nonoverlapping(block.cast::<u8>(), moved.cast::<u8>(), old_size.min(size));
            free(block);
        }
        moved
    }
}

unsafe extern "C" fn malloc_usable_size_fallback(_block: *mut c_void) -> usize {
    0
}

/// `memalign(3)`, `aligned_alloc(3)` and, with error codes, `posix_memalign(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    if let Some(route) = routed() {
        // SAFETY: route from this thread; `align` is a power of two.
        return unsafe { arena_block(route, size, align) };
    }
    route::count_system_call();
    // SAFETY: forwarded.
    {
        let next = next!(NEXT_MEMALIGN, __libc_memalign, fn(usize, usize) -> *mut c_void);
        // SAFETY: forwarded unchanged to the next allocator.
        unsafe { next(align, size) }
    }
}

/// `posix_memalign(3)`.
///
/// # Safety
/// As the C function.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if out.is_null() || !align.is_power_of_two() || align % size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    // SAFETY: as the C function.
    let block = unsafe { memalign(align, size) };
    if block.is_null() {
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
    // SAFETY: forwarded.
    {
        let next = next!(NEXT_USABLE_SIZE, malloc_usable_size_fallback, fn(*mut c_void) -> usize);
        // SAFETY: forwarded unchanged to the next allocator.
        unsafe { next(block) }
    }
}

/// Defines the C allocator symbols in the calling binary, routed as this module describes.
/// Use once, at the top level of a binary that hosts foreign handlers.
#[macro_export]
macro_rules! export_c_allocator {
    () => {
        mod c_allocator {
            use std::ffi::c_void;
            use $crate::cmalloc;
            // SAFETY (all below): each forwards the C contract unchanged to `cmalloc`.
            #[no_mangle]
            pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
                unsafe { cmalloc::malloc(size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn free(block: *mut c_void) {
                unsafe { cmalloc::free(block) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
                unsafe { cmalloc::calloc(count, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
                unsafe { cmalloc::realloc(block, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn reallocarray(
                block: *mut c_void,
                count: usize,
                size: usize,
            ) -> *mut c_void {
                match count.checked_mul(size) {
                    Some(bytes) => unsafe { cmalloc::realloc(block, bytes) },
                    None => std::ptr::null_mut(),
                }
            }
            #[no_mangle]
            pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
                unsafe { cmalloc::memalign(align, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
                unsafe { cmalloc::memalign(align, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn posix_memalign(
                out: *mut *mut c_void,
                align: usize,
                size: usize,
            ) -> i32 {
                unsafe { cmalloc::posix_memalign(out, align, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
                unsafe { cmalloc::memalign($crate::page_size(), size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
                let page = $crate::page_size();
                unsafe { cmalloc::memalign(page, size.div_ceil(page).max(1) * page) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn malloc_usable_size(block: *mut c_void) -> usize {
                unsafe { cmalloc::malloc_usable_size(block) }
            }
        }
    };
}
