//! The targets of the naked entries of [`export_c_allocator!`](crate::export_c_allocator): the
//! C signature of each symbol with the caller's return address added as the last argument.
//! Not for direct use.

use std::ffi::c_void;

macro_rules! entries {
    ($( $name:ident => $target:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ;)*) => {$(
        /// The entry's target (see the module documentation).
        ///
        /// # Safety
        /// As the C function; `caller` is the C call's return address.
        pub unsafe extern "C" fn $name($($arg: $ty,)* caller: usize) -> $ret {
            // SAFETY: our contract is the function's.
            unsafe { super::$target($($arg,)* caller) }
        }
    )*};
}

entries! {
    malloc => malloc_from(size: usize) -> *mut c_void;
    calloc => calloc_from(count: usize, size: usize) -> *mut c_void;
    realloc => realloc_from(block: *mut c_void, size: usize) -> *mut c_void;
    reallocarray => reallocarray_from(block: *mut c_void, count: usize, size: usize) -> *mut c_void;
    memalign => memalign_from(align: usize, size: usize) -> *mut c_void;
    posix_memalign => posix_memalign_from(out: *mut *mut c_void, align: usize, size: usize) -> i32;
    valloc => valloc_from(size: usize) -> *mut c_void;
    pvalloc => pvalloc_from(size: usize) -> *mut c_void;
}
