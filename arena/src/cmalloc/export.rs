//! The macro that defines the C allocator symbols in the final binary (a `#[macro_export]`
//! macro: it is used as `cella_arena::export_c_allocator!()`).

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
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::free(block) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::calloc(count, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::realloc(block, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn reallocarray(
                block: *mut c_void,
                count: usize,
                size: usize,
            ) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::reallocarray(block, count, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::memalign(align, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::memalign(align, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn posix_memalign(
                out: *mut *mut c_void,
                align: usize,
                size: usize,
            ) -> i32 {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::posix_memalign(out, align, size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::valloc(size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::pvalloc(size) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn malloc_usable_size(block: *mut c_void) -> usize {
                // SAFETY: the caller keeps the C contract of this allocator function, which `cmalloc` keeps unchanged.
                unsafe { cmalloc::malloc_usable_size(block) }
            }
        }
    };
}
