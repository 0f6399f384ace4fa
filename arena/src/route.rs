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
}

/// Most `cella::sync` locks one request may hold at once.
pub const HELD_LOCKS_MAX: usize = 8;

/// A lock a handler holds: how to release and poison it when the handler ends without
/// releasing it.
#[derive(Clone, Copy, Debug)]
pub struct HeldLock {
    /// The lock, erased.
    pub lock: *const (),
    /// Which acquisition this is: `release_poisoned` does nothing if the lock has been released
    /// since (and perhaps taken by someone else).
    pub token: u64,
    /// Releases `lock` if `token` still holds it, and marks it poisoned.
    pub release_poisoned: unsafe fn(lock: *const (), token: u64),
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
        }
    }

    /// The request that used this route is over, however it ended: releases and poisons every
    /// lock it still holds and resets its placement. Call it before the arena is wiped (a lock
    /// may live in the arena or on the abandoned stack).
    pub fn end_request(&self) {
        for entry in &self.held {
            if let Some(held) = entry.take() {
                // SAFETY: `register_held`'s contract: the lock outlives its registration, and
                // the function is the lock's own.
                unsafe { (held.release_poisoned)(held.lock, held.token) };
            }
        }
        self.placement.reset();
    }
}

/// Records `held` in the running handler's route; the index to pass to [`unregister_held`].
/// `Ok(None)` outside a handler (nothing to record: no hard cancel can happen there); `Err` when
/// the handler already holds [`HELD_LOCKS_MAX`] locks.
///
/// # Safety
/// The lock behind `held.lock` must stay valid until it is unregistered or the request ends.
pub unsafe fn register_held(held: HeldLock) -> Result<Option<usize>, ()> {
    let route = current();
    if route.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-null route is valid until `leave` (contract of `enter`).
    let route = unsafe { &*route };
    for (index, entry) in route.held.iter().enumerate() {
        if entry.get().is_none() {
            entry.set(Some(held));
            return Ok(Some(index));
        }
    }
    Err(())
}

/// Forgets entry `index` of the running handler's route if it still records `token`; whether
/// it did (false: the request that took the lock is over, and its lock was released for it).
pub fn unregister_held(index: usize, token: u64) -> bool {
    let route = current();
    // SAFETY: a non-null route is valid until `leave`.
    let Some(route) = (unsafe { route.as_ref() }) else { return false };
    let Some(entry) = route.held.get(index) else { return false };
    if entry.get().is_some_and(|held| held.token == token) {
        entry.set(None);
        return true;
    }
    false
}

/// Where allocations go when no one asked otherwise, or what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The route's arena; the system allocator outside handlers.
    Default,
    /// The state heap.
    State,
    /// The route's arena even while a lock is held.
    Arena,
}

/// What the running code asked about where its allocations go. Closures (`persist`,
/// `in_arena`) nest strictly and save and restore `closure`; lock guards may be dropped in any
/// order and are counted. A guard taken inside a closure wins over it; a closure entered while
/// guards are held wins over them.
pub struct Placement {
    closure: Cell<Target>,
    /// `guards` when the innermost closure began.
    closure_guards: Cell<u32>,
    guards: Cell<u32>,
    /// Derived from the three above on every change: the allocator's fast path reads only this.
    to_state: Cell<bool>,
}

/// What [`begin_target`] replaced, for [`end_target`].
#[derive(Clone, Copy, Debug)]
pub struct SavedTarget {
    placement: *const Placement,
    closure: Target,
    closure_guards: u32,
}

impl Placement {
    pub const fn new() -> Placement {
        Placement {
            closure: Cell::new(Target::Default),
            closure_guards: Cell::new(0),
            guards: Cell::new(0),
            to_state: Cell::new(false),
        }
    }

    fn update(&self) {
        let guards = self.guards.get();
        let to_state = guards > self.closure_guards.get()
            || match self.closure.get() {
                Target::State => true,
                Target::Arena => false,
                Target::Default => guards > 0,
            };
        self.to_state.set(to_state);
    }

    fn reset(&self) {
        self.closure.set(Target::Default);
        self.closure_guards.set(0);
        self.guards.set(0);
        self.to_state.set(false);
    }
}

impl Default for Placement {
    fn default() -> Placement {
        Placement::new()
    }
}

thread_local! {
    static ROUTE: Cell<*const Route> = const { Cell::new(ptr::null()) };
    static SEALED: Cell<bool> = const { Cell::new(false) };
    /// The placement of code that runs outside handlers (startup, a thread of the
    /// application's own).
    static THREAD_PLACEMENT: Placement = const { Placement::new() };
}

/// The placement of the running code: its route's, or its thread's outside handlers.
fn current_placement() -> *const Placement {
    let route = current();
    if route.is_null() {
        THREAD_PLACEMENT.with(|placement| placement as *const Placement)
    } else {
        // SAFETY: a non-null route is valid until `leave`.
        unsafe { ptr::addr_of!((*route).placement) }
    }
}

/// Sends the running code's allocations to `target` until [`end_target`], which must be
/// called with the returned value in the same task (closures nest strictly).
pub fn begin_target(target: Target) -> SavedTarget {
    let placement = current_placement();
    // SAFETY: the placement is the running route's or this thread's, valid now.
    let p = unsafe { &*placement };
    let saved =
        SavedTarget { placement, closure: p.closure.get(), closure_guards: p.closure_guards.get() };
    p.closure.set(target);
    p.closure_guards.set(p.guards.get());
    p.update();
    saved
}

/// Ends what [`begin_target`] began. Does nothing if the running code's placement is not the
/// one it changed (the request ended and another runs).
pub fn end_target(saved: SavedTarget) {
    let placement = current_placement();
    if placement != saved.placement {
        return;
    }
    // SAFETY: it is the running code's placement, valid now.
    let p = unsafe { &*placement };
    p.closure.set(saved.closure);
    p.closure_guards.set(saved.closure_guards.min(p.guards.get()));
    p.update();
}

/// A lock guard begins: its holder's allocations go to the state heap. Returns the placement
/// to pass to [`guard_ended`].
pub fn guard_began() -> *const Placement {
    let placement = current_placement();
    // SAFETY: the running code's placement, valid now.
    let p = unsafe { &*placement };
    p.guards.set(p.guards.get().saturating_add(1));
    p.update();
    placement
}

/// A lock guard ended. Does nothing if the running code's placement is not `placement` (the
/// guard outlived its request).
pub fn guard_ended(placement: *const Placement) {
    if current_placement() != placement {
        return;
    }
    // SAFETY: it is the running code's placement, valid now.
    let p = unsafe { &*placement };
    let guards = p.guards.get().saturating_sub(1);
    p.guards.set(guards);
    if p.closure_guards.get() > guards {
        p.closure_guards.set(guards);
    }
    p.update();
}

/// Whether the running code's allocations go to the state heap now.
pub fn placed_in_state() -> bool {
    // SAFETY: the running code's placement, valid now.
    unsafe { (*current_placement()).to_state.get() }
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
