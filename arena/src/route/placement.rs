//! Placement: where the running code asked its allocations to go (the state heap inside
//! `cella::persist` and while a `cella::sync` lock is held, the arena inside `cella::in_arena`),
//! per route inside a handler and per thread outside one.

use std::cell::Cell;
use std::ptr;

use super::current;

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
    pub(super) to_state: Cell<bool>,
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

    pub(super) fn reset(&self) {
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
    /// The placement of code that runs outside handlers (startup, a thread of the
    /// application's own).
    pub(super) static THREAD_PLACEMENT: Placement = const { Placement::new() };
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
