//! The state heap: memory that outlives a request.
//!
//! A fixed span of the region (`state_heap_size`) managed by a general-purpose allocator that
//! frees ([talc](https://docs.rs/talc), ADR 0004), shared by every worker. The routing allocator
//! sends an allocation here while the running code asked for it (`cella::persist`, or while it
//! holds a `cella::sync` lock), and sends every `dealloc`/`realloc` of a pointer inside the span
//! back here, whichever thread makes it and whatever it is routed to then.
//!
//! Running out is an ordinary allocation failure: [`StateHeap::alloc`] returns null and the
//! routing allocator turns that into the request's overrun (500), exactly like a spent arena.
//!
//! **Synchronisation.** One spinlock per heap, held only for the allocator's own operation
//! (`allocate`, `deallocate`, grow or shrink in place: bounded work over talc's bins, no user
//! code, no allocation, no I/O, no panic), never across user code and never across a
//! suspension. A spinner yields its CPU (`sched_yield`) after [`SPINS_BEFORE_YIELD`] tries, so a
//! holder preempted by the kernel costs waiters a timeslice, not a livelock. The one way a holder
//! could stop for good while holding it would be a fault on its own stack (a slot's stack
//! overflowing inside the allocator): before taking the lock, [`probe_stack`] touches
//! [`STACK_HEADROOM_BYTES`] below the caller, so an overflow happens there, before the lock.
//!
//! **Freed bytes are zeroed** (in `dealloc`, and the tail given up by a shrink in place): the
//! escape check (`escape_check = full`) scans the span between the lowest and the highest byte
//! ever handed out ([`scan_extent`]) for words pointing into a released arena, and a stale
//! word in a freed block must not read as one. It also means no request's bytes outlive their
//! block for another request to find.
//!
//! Several regions may live in one process (tests); each registers its heap in [`HEAPS`] by
//! address range, and allocations go to the most recently installed one.

use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::hint;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use cella_shared::limits::{REGIONS_MAX, STATE_HEAP_SIZE_MIN as CONFIG_STATE_HEAP_SIZE_MIN};
use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

use crate::region::Span;

/// Tries at the spinlock before each `sched_yield`.
pub const SPINS_BEFORE_YIELD: u32 = 128;

/// Stack bytes touched below the caller before the heap's lock is taken: more than talc's
/// deepest call chain needs, in a debug build too (about 1 KiB measured in release).
pub const STACK_HEADROOM_BYTES: usize = 16 << 10;

/// The smallest state heap talc can claim (its bin table lives inside the heap).
pub const STATE_HEAP_SIZE_MIN: usize = talc::min_first_heap_size::<DefaultBinning>();

// The configuration's minimum must be enough for talc's first claim.
const _: () = assert!(STATE_HEAP_SIZE_MIN as u64 <= CONFIG_STATE_HEAP_SIZE_MIN);

/// One state heap: its address range, its lock and its allocator.
pub struct StateHeap {
    /// `[start, end)`, 0 while the entry is free.
    start: AtomicUsize,
    end: AtomicUsize,
    locked: AtomicBool,
    talc: UnsafeCell<Talc<Manual, DefaultBinning>>,
    /// Bytes handed out and not freed (layout sizes).
    used_bytes: AtomicU64,
    /// The most `used_bytes` has been.
    high_water_bytes: AtomicU64,
    /// Allocations refused because the heap was full.
    failures: AtomicU64,
    /// The lowest address and the highest end of any block handed out (`usize::MAX` and 0
    /// before the first): what the escape check scans.
    low: AtomicUsize,
    high: AtomicUsize,
}

// SAFETY: `talc` is only reached through `with_lock`, which holds `locked` (Acquire on taking it,
// Release on dropping it) for the whole access; everything else is atomics.
unsafe impl Sync for StateHeap {}

impl StateHeap {
    const fn new() -> StateHeap {
        StateHeap {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            locked: AtomicBool::new(false),
            talc: UnsafeCell::new(Talc::new(Manual)),
            used_bytes: AtomicU64::new(0),
            high_water_bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            low: AtomicUsize::new(usize::MAX),
            high: AtomicUsize::new(0),
        }
    }

    /// Widens the extent the escape check scans to cover `[block, block + size)`.
    fn extend(&self, block: usize, size: usize) {
        // Relaxed (both): a bound read by the escape check, which reads the words themselves
        // with no ordering either (a block handed out on another worker at the same moment
        // cannot hold a pointer into the arena being released).
        self.low.fetch_min(block, Ordering::Relaxed);
        self.high.fetch_max(block.saturating_add(size), Ordering::Relaxed);
    }

    fn is_installed(&self) -> bool {
        // Acquire: pairs with the Release stores in `install`.
        self.start.load(Ordering::Acquire) != 0
    }

    #[inline]
    fn contains(&self, address: usize) -> bool {
        // Acquire: pairs with the Release stores in `install`.
        let start = self.start.load(Ordering::Acquire);
        start != 0 && address >= start && address < self.end.load(Ordering::Acquire)
    }

    /// Runs `f` on the allocator with the lock held. `f` is one of talc's own operations: it
    /// runs no user code, allocates nothing and does not panic.
    #[inline]
    fn with_lock<R>(&self, f: impl FnOnce(&mut Talc<Manual, DefaultBinning>) -> R) -> R {
        probe_stack();
        // A handler preempted while holding the lock would hold it for ever.
        let _section = crate::RuntimeSection::enter();
        let mut spins = 0u32;
        // Acquire: pairs with the Release store below, so the previous holder's changes to the
        // allocator's metadata are visible.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins >= SPINS_BEFORE_YIELD {
                spins = 0;
                // SAFETY: sched_yield(2) takes no arguments and cannot fail on Linux.
                unsafe { libc::sched_yield() };
            } else {
                hint::spin_loop();
            }
        }
        // SAFETY: the lock is held, so this is the only reference to the allocator.
        let result = f(unsafe { &mut *self.talc.get() });
        // Release: pairs with the Acquire exchange above.
        self.locked.store(false, Ordering::Release);
        result
    }

    fn account(&self, grown: usize, shrunk: usize) {
        // Relaxed (all): statistics.
        if grown > 0 {
            let used = self.used_bytes.fetch_add(grown as u64, Ordering::Relaxed) + grown as u64;
            self.high_water_bytes.fetch_max(used, Ordering::Relaxed);
        }
        if shrunk > 0 {
            self.used_bytes.fetch_sub(shrunk as u64, Ordering::Relaxed);
        }
    }

    /// Allocates `layout` from this heap; null when it is full. Never panics, takes only the
    /// heap's spinlock.
    ///
    /// # Safety
    /// `layout.size()` is non-zero (the `GlobalAlloc` contract).
    pub unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: non-zero size (our contract).
        let block = self.with_lock(|talc| unsafe { talc.allocate(layout) });
        match block {
            Some(block) => {
                self.account(layout.size(), 0);
                self.extend(block.as_ptr() as usize, layout.size());
                block.as_ptr()
            }
            None => {
                // Relaxed: a statistic.
                self.failures.fetch_add(1, Ordering::Relaxed);
                ptr::null_mut()
            }
        }
    }

    /// Frees a block of this heap.
    ///
    /// # Safety
    /// `block` was allocated by this heap with `layout` and is not used afterwards.
    pub unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // Zeroed before talc takes it back (see the module comment).
        // SAFETY: the block is ours, `layout.size()` bytes, and unused from now (our contract).
        unsafe { ptr::write_bytes(block, 0, layout.size()) };
        // SAFETY: forwarded from our contract.
        self.with_lock(|talc| unsafe { talc.deallocate(block, layout) });
        self.account(0, layout.size());
    }

    /// Resizes a block of this heap in place; whether it could.
    ///
    /// # Safety
    /// `block` was allocated by this heap with `layout`; `new_size` is non-zero.
    pub unsafe fn resize_in_place(&self, block: *mut u8, layout: Layout, new_size: usize) -> bool {
        if new_size < layout.size() {
            // The tail a shrink gives up is zeroed while still ours (see the module comment);
            // should the shrink fail, the caller keeps only the first `new_size` bytes anyway.
            // SAFETY: `[new_size, size)` lies inside the block, which is ours (our contract).
            unsafe { ptr::write_bytes(block.add(new_size), 0, layout.size() - new_size) };
        }
        // SAFETY: forwarded from our contract.
        let resized =
            self.with_lock(|talc| unsafe { talc.try_realloc_in_place(block, layout, new_size) });
        if resized {
            self.extend(block as usize, new_size);
            self.account(
                new_size.saturating_sub(layout.size()),
                layout.size().saturating_sub(new_size),
            );
        }
        resized
    }
}

/// One heap per possible region.
static HEAPS: [StateHeap; REGIONS_MAX] = [const { StateHeap::new() }; REGIONS_MAX];

/// The index + 1 of the heap new state allocations go to; 0: none installed.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Touches the stack `STACK_HEADROOM_BYTES` below the caller, page by page from the top, so
/// that a slot stack about to overflow faults here rather than inside the heap's lock.
#[inline(never)]
fn probe_stack() {
    let mut room = MaybeUninit::<[u8; STACK_HEADROOM_BYTES]>::uninit();
    let base = room.as_mut_ptr().cast::<u8>();
    let mut offset = STACK_HEADROOM_BYTES;
    while offset > 0 {
        offset = offset.saturating_sub(4096);
        // SAFETY: `base + offset` lies inside `room`, a local of this frame; writing a byte to
        // uninitialised memory we own is sound.
        unsafe { ptr::write_volatile(base.add(offset), 0) };
    }
    hint::black_box(&room);
}

/// Makes `span` a state heap and the one new state allocations go to; its index, or `None`
/// when every entry is taken or the span is too small.
///
/// # Safety
/// `span` is valid, writable memory used by nothing else until [`uninstall`] of the returned
/// index, which must come before the memory is unmapped.
pub unsafe fn install(span: Span) -> Option<usize> {
    if span.len < STATE_HEAP_SIZE_MIN {
        return None;
    }
    for (index, heap) in HEAPS.iter().enumerate() {
        // Claim the entry through its lock: a free entry's lock is never held for long.
        let claimed = heap.with_lock(|talc| {
            // Relaxed: `start` is only written under this lock.
            if heap.start.load(Ordering::Relaxed) != 0 {
                return false;
            }
            *talc = Talc::new(Manual);
            // SAFETY: the span is ours alone until `uninstall` (our contract).
            unsafe { talc.claim(span.ptr.as_ptr(), span.len) }.is_some()
        });
        if !claimed {
            continue;
        }
        // Relaxed (all three): statistics of a fresh heap.
        heap.used_bytes.store(0, Ordering::Relaxed);
        heap.high_water_bytes.store(0, Ordering::Relaxed);
        heap.failures.store(0, Ordering::Relaxed);
        heap.low.store(usize::MAX, Ordering::Relaxed);
        heap.high.store(0, Ordering::Relaxed);
        // Release (both): pair with the Acquire loads in `contains`; the range is published
        // before any block of the heap is handed out (that needs `ACTIVE`, stored after).
        heap.end.store(span.end(), Ordering::Release);
        heap.start.store(span.ptr.as_ptr() as usize, Ordering::Release);
        // Release: pairs with the Acquire load in `active`.
        ACTIVE.store(index + 1, Ordering::Release);
        return Some(index);
    }
    None
}

/// Ends the heap `index` (its region is about to be unmapped). New state allocations go to
/// another installed heap, if there is one.
pub fn uninstall(index: usize) {
    let heap = &HEAPS[index];
    let other = HEAPS.iter().position(|other| !ptr::eq(other, heap) && other.is_installed());
    let replacement = other.map_or(0, |other| other + 1);
    // AcqRel: whoever allocates next sees another heap, or none, rather than this one.
    let _ = ACTIVE.compare_exchange(index + 1, replacement, Ordering::AcqRel, Ordering::Relaxed);
    heap.with_lock(|talc| {
        *talc = Talc::new(Manual);
        // Release (both): pair with the Acquire loads in `contains`.
        heap.start.store(0, Ordering::Release);
        heap.end.store(0, Ordering::Release);
    });
}

/// The heap new state allocations go to, if one is installed.
#[inline]
pub(crate) fn active() -> Option<&'static StateHeap> {
    // Acquire: pairs with the Release store in `install`.
    match ACTIVE.load(Ordering::Acquire) {
        0 => None,
        index => Some(&HEAPS[index - 1]),
    }
}

/// The heap `address` lies in, if any.
#[inline]
pub(crate) fn owner_of(address: usize) -> Option<&'static StateHeap> {
    HEAPS.iter().find(|heap| heap.contains(address))
}

/// What the active state heap holds and has refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateHeapStats {
    /// Bytes allocated and not freed (as asked for: talc's overhead is not counted).
    pub used_bytes: u64,
    /// The most `used_bytes` has been.
    pub high_water_bytes: u64,
    /// Allocations refused because the heap was full (each one a 500, or a null for C).
    pub failures: u64,
}

/// The active state heap's statistics (zeros when none is installed).
pub fn stats() -> StateHeapStats {
    let Some(heap) = active() else { return StateHeapStats::default() };
    // Relaxed (all): statistics.
    StateHeapStats {
        used_bytes: heap.used_bytes.load(Ordering::Relaxed),
        high_water_bytes: heap.high_water_bytes.load(Ordering::Relaxed),
        failures: heap.failures.load(Ordering::Relaxed),
    }
}

/// The part of the active state heap the escape check scans: from the lowest byte ever handed
/// out to the highest end, `(start, end)`; `None` when no heap is installed or nothing was ever
/// allocated. Freed bytes inside it are zero (see the module comment); talc's own bookkeeping
/// there points only into the heap itself.
pub fn scan_extent() -> Option<(usize, usize)> {
    let heap = active()?;
    // Acquire: pairs with the Release stores in `install`.
    let (start, end) = (heap.start.load(Ordering::Acquire), heap.end.load(Ordering::Acquire));
    // Relaxed (both): see `StateHeap::extend`.
    let low = heap.low.load(Ordering::Relaxed).max(start);
    let high = heap.high.load(Ordering::Relaxed).min(end);
    (low < high).then_some((low, high))
}

/// Whether `address` lies in a state heap.
pub fn is_state_heap_memory(address: usize) -> bool {
    owner_of(address).is_some()
}

#[cfg(test)]
mod tests;
