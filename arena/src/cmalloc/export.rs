//! The macro that defines the C allocator symbols in the final binary (a `#[macro_export]`
//! macro: it is used as `cella_arena::export_c_allocator!()`).
//!
//! Each allocating symbol is a naked function: it loads its own return address (the word at
//! `[rsp]` on entry, x86-64 SysV) into the next free argument register and jumps to the
//! `*_from` function of `cmalloc`, which sees it as its last argument, with the stack exactly as
//! the caller left it. The return address says whether libc itself is allocating
//! (`libc_own.rs`). Measured cost: docs/benchmarks.md ("The C allocator's caller check").

/// Defines the C allocator symbols in the calling binary, routed as this module describes.
/// Use once, at the top level of a binary that hosts foreign handlers.
#[macro_export]
macro_rules! export_c_allocator {
    () => {
        mod c_allocator {
            use std::ffi::c_void;
            use $crate::cmalloc;
            // SAFETY (every naked entry below): it only copies its return address into an
            // argument register the C signature leaves unused and tail-jumps to the `*_from`
            // function, whose C contract is the symbol's plus that argument; the stack and the
            // other argument registers are untouched.
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rsi, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::malloc,
                )
            }
            #[no_mangle]
            pub unsafe extern "C" fn free(block: *mut c_void) {
                // SAFETY: the caller keeps the C contract of `free`, which `cmalloc` keeps.
                unsafe { cmalloc::free(block) }
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rdx, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::calloc,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rdx, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::realloc,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn reallocarray(
                block: *mut c_void,
                count: usize,
                size: usize,
            ) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rcx, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::reallocarray,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rdx, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::memalign,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rdx, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::memalign,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn posix_memalign(
                out: *mut *mut c_void,
                align: usize,
                size: usize,
            ) -> i32 {
                ::core::arch::naked_asm!(
                    "mov rcx, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::posix_memalign,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rsi, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::valloc,
                )
            }
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
                ::core::arch::naked_asm!(
                    "mov rsi, qword ptr [rsp]",
                    "jmp {target}",
                    target = sym cmalloc::entries::pvalloc,
                )
            }
            #[no_mangle]
            pub unsafe extern "C" fn malloc_usable_size(block: *mut c_void) -> usize {
                // SAFETY: the caller keeps the C contract of this function, which `cmalloc` keeps.
                unsafe { cmalloc::malloc_usable_size(block) }
            }
        }
    };
}
