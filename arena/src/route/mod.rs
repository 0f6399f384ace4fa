//! The routing global allocator.
//!
//! While a handler runs, its worker thread has a *route*: the slot's arena, the worker's panic
//! reserve, and what to do when the arena is spent. Every allocation on that thread goes to the
//! arena, so ordinary `Vec`, `String` and `format!` inside a handler never reach the system
//! allocator. With no route, allocations go to the system allocator; on a *sealed* thread (one
//! that finished its startup) each such call is a bug and is counted in
//! [`sealed_system_calls`], which the tests assert stays at zero.
//!
//! The allocator does no I/O, takes no locks and never panics. When the arena is spent:
//! - during a panic (the thread is unwinding), the allocation comes from the worker's reserve,
//!   so the panic still ends as a 500; when the reserve is spent too, the process aborts with a
//!   message (the escalation rung of the cancellation ladder);
//! - otherwise it calls the route's `on_exhausted`, which never returns: the runtime abandons
//!   the handler's stack and answers 500.
//!
//! **Placement.** The running code can ask for its allocations to go elsewhere (a
//! [`Placement`], per route, or per thread outside handlers): to the state heap
//! ([`crate::state`]) inside `cella::persist` and while it holds a `cella::sync` lock, or back
//! to the arena inside `cella::in_arena`. A full state heap is handled like a spent arena.
//! Whatever the placement, `dealloc` and `realloc` find a block's home by its address: the
//! route's arena, a state heap (freed there, from any thread), another part of a region (left
//! to its wipe), or the system allocator.
//!
//! **System blocks after the seal.** A block the system allocator made before the seal and that
//! is freed inside a handler or on a sealed thread is not handed to the system allocator then:
//! its `free` is deferred to the static table the C allocator uses ([`crate::cmalloc`]), emptied
//! at drain; a `realloc` of such a block moves it to where the placement says (copying
//! `layout.size()` bytes) and defers the old block's `free` the same way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cella_shared::limits::REGIONS_MAX;

use crate::arena::Arena;
use crate::state::{self, StateHeap};

mod held;
mod placement;

pub use held::{register_held, unregister_held, HeldLock, HELD_LOCKS_MAX};

use placement::THREAD_PLACEMENT;
pub use placement::{
    begin_target, end_target, guard_began, guard_ended, placed_in_state, Placement, SavedTarget,
    Target,
};

/// Where a running handler's allocations go.
pub struct Route {
    pub arena: *const Arena,
    pub reserve: *const Arena,
    /// Called when `arena` is spent outside a panic. It must not return: it switches away from
    /// the handler's stack for good.
    pub on_exhausted: unsafe fn(Layout) -> !,
    /// Fault injection: when non-zero, the allocation that brings it from 1 to 0 fails as if the
    /// arena were spent. 0 disables it.
    pub fail_countdown: Cell<u32>,
    /// Where the handler asked its allocations to go (state heap, arena).
    pub placement: Placement,
    /// The `cella::sync` locks the handler holds, released and poisoned by
    /// [`Route::end_request`] if it still holds them when it ends (a hard cancel runs no
    /// destructor).
    held: [Cell<Option<HeldLock>>; HELD_LOCKS_MAX],
    /// Whether `held` was written since the last [`Route::end_request`]: a request that took no
    /// `cella::sync` lock (most) skips the scan.
    held_touched: Cell<bool>,
}

impl Route {
    /// A route with no arena yet (the runtime sets `arena` and `reserve` before each `enter`).
    pub fn new(on_exhausted: unsafe fn(Layout) -> !) -> Route {
        Route {
            arena: ptr::null(),
            reserve: ptr::null(),
            on_exhausted,
            fail_countdown: Cell::new(0),
            placement: Placement::new(),
            held: [const { Cell::new(None) }; HELD_LOCKS_MAX],
            held_touched: Cell::new(false),
        }
    }

    /// The request that used this route is over, however it ended: releases and poisons every
    /// lock it still holds and resets its placement. Call it before the arena is wiped (a lock
    /// may live in the arena or on the abandoned stack).
    pub fn end_request(&self) {
        if self.held_touched.replace(false) {
            self.release_held();
        }
        self.placement.reset();
    }

    /// Releases and poisons every lock still registered in `held`.
    #[cold]
    fn release_held(&self) {
        for entry in &self.held {
            if let Some(held) = entry.take() {
                // SAFETY: `register_held`'s contract: the lock outlives its registration, and
                // the function is the lock's own.
                unsafe { (held.release_poisoned)(held.lock, held.token) };
            }
        }
    }
}

thread_local! {
    static ROUTE: Cell<*const Route> = const { Cell::new(ptr::null()) };
    static SEALED: Cell<bool> = const { Cell::new(false) };
}

/// System allocator calls (allocations, reallocations and frees) made by sealed threads.
static SEALED_SYSTEM_CALLS: AtomicU64 = AtomicU64::new(0);

/// Address ranges of the live regions: `[start, end)`, 0 when the entry is free.
static REGIONS: [(AtomicUsize, AtomicUsize); REGIONS_MAX] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; REGIONS_MAX];

/// Sends this thread's allocations to `route` until [`leave`].
///
/// # Safety
/// `route` and the arenas it names must stay valid until `leave` is called on this thread.
#[inline]
pub unsafe fn enter(route: *const Route) {
    ROUTE.with(|current| current.set(route));
}

/// The route of the handler running on this thread, or null.
#[inline]
pub(crate) fn current() -> *const Route {
    ROUTE.with(Cell::get)
}

/// Ends the route set by [`enter`]; allocations go to the system allocator again.
#[inline]
pub fn leave() {
    ROUTE.with(|current| current.set(ptr::null()));
}

/// Marks this thread as done with startup: from now on a system allocation here is counted.
pub fn seal_current_thread() {
    SEALED.with(|sealed| sealed.set(true));
}

/// Lifts [`seal_current_thread`], for shutdown, which may allocate.
pub fn unseal_current_thread() {
    SEALED.with(|sealed| sealed.set(false));
}

/// Whether this thread is sealed (see [`seal_current_thread`]).
#[inline]
pub(crate) fn current_thread_is_sealed() -> bool {
    SEALED.with(Cell::get)
}

/// System allocator calls made by sealed threads since the process started.
pub fn sealed_system_calls() -> u64 {
    // Relaxed: a statistic read after the threads that wrote it were joined or synchronised.
    SEALED_SYSTEM_CALLS.load(Ordering::Relaxed)
}

pub(crate) fn register_region(start: usize, len: usize) -> Option<usize> {
    for (index, (entry_start, entry_end)) in REGIONS.iter().enumerate() {
        // AcqRel: claims the entry; pairs with the Release store in `unregister_region`.
        if entry_start.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // Release: pairs with the Acquire load in `in_any_region`; the end is published
            // before any pointer into the region is handed out (that happens after `map`).
            entry_end.store(start + len, Ordering::Release);
            return Some(index);
        }
    }
    None
}

pub(crate) fn unregister_region(index: usize) {
    let (entry_start, entry_end) = &REGIONS[index];
    entry_end.store(0, Ordering::Release);
    // Release: pairs with the AcqRel claim in `register_region`.
    entry_start.store(0, Ordering::Release);
}

#[inline]
pub(crate) fn in_any_region(address: usize) -> bool {
    REGIONS.iter().any(|(start, end)| {
        // Acquire: pairs with the Release stores in `register_region`.
        let start = start.load(Ordering::Acquire);
        start != 0 && address >= start && address < end.load(Ordering::Acquire)
    })
}

#[inline]
pub(crate) fn count_system_call() {
    if SEALED.with(Cell::get) {
        // Relaxed: an independent counter.
        SEALED_SYSTEM_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

#[cold]
fn abort_with(message: &str) -> ! {
    // SAFETY: write(2) to stderr with a valid buffer; its result is irrelevant since we abort.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::abort();
    }
}

/// The slow path of a routed allocation: the arena is spent (or fault injection said so).
#[cold]
unsafe fn alloc_when_spent(route: &Route, layout: Layout) -> *mut u8 {
    if std::thread::panicking() {
        // SAFETY: the route's reserve is valid while the route is entered.
        if let Ok(ptr) = unsafe { (*route.reserve).try_alloc_layout(layout) } {
            return ptr.as_ptr();
        }
        abort_with("cella: fatal: out of memory while a handler was panicking, and the panic reserve is spent too; aborting\n");
    }
    // SAFETY: `on_exhausted` is called on the handler's stack, which is where routed
    // allocations happen; it switches away and never returns.
    unsafe { (route.on_exhausted)(layout) }
}

#[inline]
pub(crate) unsafe fn alloc_routed(route: &Route, layout: Layout) -> *mut u8 {
    let countdown = route.fail_countdown.get();
    if countdown != 0 {
        route.fail_countdown.set(countdown - 1);
        if countdown == 1 {
            // SAFETY: forwarded from our caller.
            return unsafe { alloc_when_spent(route, layout) };
        }
    }
    // SAFETY: the route's arena is valid while the route is entered.
    match unsafe { (*route.arena).try_alloc_layout(layout) } {
        Ok(ptr) => ptr.as_ptr(),
        // SAFETY: forwarded from our caller.
        Err(_) => unsafe { alloc_when_spent(route, layout) },
    }
}

/// An allocation the placement sends to the state heap `heap`. Full: inside a handler, as a
/// spent arena (the panic reserve while panicking, else the request's overrun); outside one,
/// null (the caller's allocation error).
#[inline]
unsafe fn alloc_state(heap: &StateHeap, route: *const Route, layout: Layout) -> *mut u8 {
    // SAFETY: a non-null route is valid until `leave`.
    let route = unsafe { route.as_ref() };
    if let Some(route) = route {
        let countdown = route.fail_countdown.get();
        if countdown != 0 {
            route.fail_countdown.set(countdown - 1);
            if countdown == 1 {
                // SAFETY: forwarded from our caller (a routed allocation).
                return unsafe { alloc_when_spent(route, layout) };
            }
        }
    }
    // SAFETY: `layout` has a non-zero size (GlobalAlloc contract).
    let block = unsafe { heap.alloc(layout) };
    match route {
        // SAFETY: as above.
        Some(route) if block.is_null() => unsafe { alloc_when_spent(route, layout) },
        _ => block,
    }
}

/// Whether a system block freed or moved now must wait: inside a handler, or on a sealed
/// thread, nothing may call the system allocator.
#[inline]
fn system_calls_forbidden(route: *const Route) -> bool {
    !route.is_null() || current_thread_is_sealed()
}

/// The global allocator that routes a handler's allocations to its slot's arena. The final
/// binary opts in with `#[global_allocator] static A: RoutingAlloc = RoutingAlloc;`.
pub struct RoutingAlloc;

// SAFETY: every pointer handed out comes from the system allocator, a live arena or a state
// heap, and each `dealloc`/`realloc` finds which by the pointer's address (a route's arena, a
// registered state heap's range, a region's range, else the system allocator) and gives it back
// there: an arena only ever moves its own cursor back, a state heap frees under its lock, and
// a system block is freed by the system allocator (at once, or deferred).
unsafe impl GlobalAlloc for RoutingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let route = ROUTE.with(Cell::get);
        if !route.is_null() {
            // SAFETY: a non-null route is valid until `leave` (contract of `enter`).
            let routed = unsafe { &*route };
            if routed.placement.to_state.get() {
                if let Some(heap) = state::active() {
                    // SAFETY: forwarded; the route is entered.
                    return unsafe { alloc_state(heap, route, layout) };
                }
            }
            // SAFETY: as above.
            return unsafe { alloc_routed(routed, layout) };
        }
        if THREAD_PLACEMENT.with(|placement| placement.to_state.get()) {
            if let Some(heap) = state::active() {
                // SAFETY: forwarded; no route.
                return unsafe { alloc_state(heap, route, layout) };
            }
        }
        count_system_call();
        // SAFETY: forwarded unchanged; `layout` has non-zero size (GlobalAlloc contract).
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let address = ptr as usize;
        let route = ROUTE.with(Cell::get);
        if !route.is_null() {
            // SAFETY: a non-null route is valid until `leave`.
            let arena = unsafe { &*(*route).arena };
            if arena.contains(ptr) {
                arena.free(ptr);
                return;
            }
        }
        if in_any_region(address) {
            if let Some(heap) = state::owner_of(address) {
                // SAFETY: the block lies in this heap's range, so the heap made it with `layout`
                // (GlobalAlloc contract: `layout` is the one it was allocated with).
                unsafe { heap.dealloc(ptr, layout) };
            }
            return; // Arena memory: reclaimed by the slot's wipe.
        }
        if system_calls_forbidden(route) {
            crate::cmalloc::defer_system_free(ptr);
            return;
        }
        count_system_call();
        // SAFETY: not in any region, so it came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let address = ptr as usize;
        let route = ROUTE.with(Cell::get);
        if !route.is_null() {
            // SAFETY: a non-null route is valid until `leave`.
            let route = unsafe { &*route };
            // SAFETY: the route's arena is valid while the route is entered.
            let arena = unsafe { &*route.arena };
            // While the placement says state heap, an arena block is moved there instead.
            if !route.placement.to_state.get()
                && (arena.try_resize_in_place(ptr, new_size)
                    || (arena.contains(ptr) && new_size <= layout.size()))
            {
                return ptr; // Grown in place, or shrunk (an arena never gives bytes back early).
            }
        }
        let in_region = in_any_region(address);
        if in_region {
            if let Some(heap) = state::owner_of(address) {
                // SAFETY: the heap's own block with `layout`; `new_size` is non-zero.
                if unsafe { heap.resize_in_place(ptr, layout, new_size) } {
                    return ptr;
                }
            }
        } else if !system_calls_forbidden(route) && !placed_in_state() {
            count_system_call();
            // SAFETY: system memory, forwarded unchanged.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Move: allocate where the placement says, copy, free the old block where it came from
        // (a system block's free is deferred by `dealloc`).
        // SAFETY: `new_size` is non-zero and, rounded up to `align`, does not overflow (the
        // GlobalAlloc contract for realloc).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and distinct.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}
