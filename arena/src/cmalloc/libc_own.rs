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
use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::state::StateHeap;

/// Most text ranges of libc and its helpers recorded (each object has one or two).
pub const LIBC_TEXT_RANGES_MAX: usize = 16;

/// `[start, end)` of each recorded executable segment; 0 when the entry is free.
static TEXT: [(AtomicUsize, AtomicUsize); LIBC_TEXT_RANGES_MAX] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; LIBC_TEXT_RANGES_MAX];
/// Entries of `TEXT` in use.
static TEXT_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The objects whose allocations are libc's own: libc, the dynamic loader, and the libraries
/// glibc splits some of its functions into.
const LIBC_OBJECTS: [&[u8]; 6] =
    [b"libc.so", b"ld-linux", b"libresolv.so", b"libnss_", b"libpthread.so", b"libdl.so"];

fn is_libc_object(path: &[u8]) -> bool {
    let name = path.rsplit(|&byte| byte == b'/').next().unwrap_or(path);
    LIBC_OBJECTS.iter().any(|prefix| name.starts_with(prefix))
}

unsafe extern "C" fn record_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    _data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr(3) passes a valid `dl_phdr_info` for the callback's duration.
    let info = unsafe { &*info };
    let name: &[u8] = if info.dlpi_name.is_null() {
        b""
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string (dl_iterate_phdr(3)).
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    if !is_libc_object(name) || info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers (dl_iterate_phdr(3)).
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    for header in headers {
        if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_X == 0 {
            continue;
        }
        let start = info.dlpi_addr as usize + header.p_vaddr as usize;
        // Relaxed: only the startup thread writes, before any handler runs.
        let index = TEXT_COUNT.load(Ordering::Relaxed);
        if index == LIBC_TEXT_RANGES_MAX {
            return 1;
        }
        TEXT[index].1.store(start + header.p_memsz as usize, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `is_libc`, after `end`.
        TEXT[index].0.store(start, Ordering::Release);
        TEXT_COUNT.store(index + 1, Ordering::Release);
    }
    0
}

/// Records the text ranges of libc, the loader and libc's helpers loaded now. Called once at
/// startup by `resolve_next` (before any handler); a second call does nothing.
pub fn collect_libc_text() {
    // Acquire: pairs with the Release store in `record_object`.
    if TEXT_COUNT.load(Ordering::Acquire) != 0 {
        return;
    }
    // SAFETY: dl_iterate_phdr(3) with a callback that only reads what it is given.
    unsafe { libc::dl_iterate_phdr(Some(record_object), ptr::null_mut()) };
}

/// How many text ranges were recorded (tests, and the startup check).
pub fn libc_text_ranges() -> usize {
    TEXT_COUNT.load(Ordering::Acquire)
}

/// Whether `caller` (a return address) lies in libc's text.
#[inline]
pub(crate) fn is_libc(caller: usize) -> bool {
    // Acquire: pairs with the Release store in `record_object`.
    let count = TEXT_COUNT.load(Ordering::Acquire);
    TEXT[..count].iter().any(|(start, end)| {
        caller >= start.load(Ordering::Relaxed) && caller < end.load(Ordering::Relaxed)
    })
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
