//! libc's own allocations: recognised by the caller's address, served by the state heap.
//!
//! libc sets state up lazily with `malloc` the first time it is needed: NSS and the resolver
//! (`getaddrinfo`), `tzset` (`localtime`, `strftime`), stdio's `FILE` buffers (`printf`), the
//! node `__cxa_thread_atexit_impl` `calloc`s for each thread-local destructor. Made inside a
//! handler, that memory would come from the request's arena and be wiped under libc. So each
//! exported malloc-family symbol is a naked entry ([`export_c_allocator!`]) that passes its
//! return address on, and an allocation whose return address lies in the text of libc, the
//! dynamic loader or libc's helper libraries (collected at startup with `dl_iterate_phdr`,
//! [`collect_libc_text`]) is served by the state heap, inside handlers and on sealed threads.
//!
//! What libc allocates *for its caller* (`strdup`, `asprintf`, `getline`, `fopen`'s `FILE`, the
//! `getaddrinfo` list) is recognised the same way and comes from the state heap too: it must be
//! freed, as C requires (a plugin that forgets it leaks state heap, where the arena's wipe
//! would have reclaimed it). Libraries libc loads later (an NSS module named in
//! `/etc/nsswitch.conf` other than `files` and `dns`, which glibc 2.34+ has built in) are not in
//! the table: their allocations land in the arena.
//!
//! State blocks carry the C header of arena blocks (the size, 16 bytes before the block) and
//! their alignment in the header's second word; they are freed by address, whoever frees them.
//!
//! [`export_c_allocator!`]: crate::export_c_allocator

use std::alloc::Layout;
use std::ffi::c_void;

use crate::state::StateHeap;
use crate::text::{Pick, TextRanges};

/// Most text ranges of libc and its helpers recorded (each object has one or two).
pub const LIBC_TEXT_RANGES_MAX: usize = 16;

/// The text of libc and its helpers (`crate::text`).
static TEXT: TextRanges<LIBC_TEXT_RANGES_MAX> = TextRanges::new();

/// The objects whose allocations are libc's own: libc, the dynamic loader, and the libraries
/// glibc splits some of its functions into.
const LIBC_OBJECTS: [&[u8]; 6] =
    [b"libc.so", b"ld-linux", b"libresolv.so", b"libnss_", b"libpthread.so", b"libdl.so"];

fn libc_objects(path: &[u8]) -> Pick {
    let name = path.rsplit(|&byte| byte == b'/').next().unwrap_or(path);
    if LIBC_OBJECTS.iter().any(|prefix| name.starts_with(prefix)) {
        Pick::Record
    } else {
        Pick::Skip
    }
}

/// Records the text ranges of libc, the loader and libc's helpers loaded now. Called once at
/// startup by `resolve_next` (before any handler); a second call does nothing.
pub fn collect_libc_text() {
    TEXT.record(libc_objects);
}

/// How many text ranges were recorded (tests, and the startup check).
pub fn libc_text_ranges() -> usize {
    TEXT.len()
}

/// Whether `caller` (a return address) lies in libc's text.
#[inline]
pub(crate) fn is_libc(caller: usize) -> bool {
    TEXT.contains(caller)
}

/// A block of `size` bytes aligned to `align` (a power of two; at least 16 is used) from the
/// state heap, with its header; NULL with `ENOMEM` when the heap is full or the size impossible.
pub(crate) fn state_block(heap: &StateHeap, size: usize, align: usize) -> *mut c_void {
    let align = align.max(super::HEADER);
    let Some(layout) = super::block_layout(size, align) else { return super::fail(libc::ENOMEM) };
    // SAFETY: the layout's size is at least `align`, non-zero.
    let start = unsafe { heap.alloc(layout) };
    if start.is_null() {
        return super::fail(libc::ENOMEM);
    }
    // SAFETY: the block has `size + align` bytes; the header lies in the `align` bytes before
    // the returned pointer.
    unsafe {
        let block = start.add(align);
        block.sub(super::HEADER).cast::<usize>().write(size);
        block.sub(super::HEADER / 2).cast::<usize>().write(align);
        block.cast()
    }
}

/// The layout and start of a state block made by [`state_block`].
///
/// # Safety
/// `block` was returned by `state_block` and not freed.
unsafe fn state_layout(block: *mut c_void) -> (*mut u8, Layout) {
    // SAFETY: our contract: `state_block` wrote both header words.
    let (size, align) = unsafe {
        let bytes = block.cast::<u8>();
        (
            bytes.sub(super::HEADER).cast::<usize>().read(),
            bytes.sub(super::HEADER / 2).cast::<usize>().read(),
        )
    };
    // SAFETY: the same size and alignment `state_block` checked and allocated with.
    let layout = unsafe { Layout::from_size_align_unchecked(size + align, align) };
    (block.cast::<u8>().wrapping_sub(align), layout)
}

/// Frees a state block.
///
/// # Safety
/// `block` was returned by [`state_block`] from `heap` and is not used afterwards.
pub(crate) unsafe fn free_state_block(heap: &StateHeap, block: *mut c_void) {
    // SAFETY: our contract.
    unsafe {
        let (start, layout) = state_layout(block);
        heap.dealloc(start, layout);
    }
}

/// Grows or shrinks a state block in place to `size` bytes; whether it could.
///
/// # Safety
/// As [`free_state_block`]; `size + HEADER` does not overflow.
pub(crate) unsafe fn resize_state_block(heap: &StateHeap, block: *mut c_void, size: usize) -> bool {
    // SAFETY: our contract.
    let (start, layout) = unsafe { state_layout(block) };
    let Some(new_size) = size.checked_add(layout.align()) else { return false };
    // SAFETY: the heap's block with `layout`; `new_size` is non-zero.
    if !unsafe { heap.resize_in_place(start, layout, new_size) } {
        return false;
    }
    // SAFETY: the header is the block's own.
    unsafe { block.cast::<u8>().sub(super::HEADER).cast::<usize>().write(size) };
    true
}
