//! Memory that outlives a request: where a handler's allocations go when it asks.
//!
//! By default everything a handler allocates lands in its slot's arena and is wiped when the
//! request ends. [`persist`] sends the allocations of a closure to the *state heap* (a span of
//! the region shared by every worker, with an allocator that frees), so what it builds survives
//! the request; [`in_arena`] sends them back to the arena (for scratch memory while a
//! [`crate::sync`] lock is held). Both nest, and work outside handlers too: before the server
//! starts (no state heap yet) `persist` allocates from the system heap, which is fine at
//! startup; a block made there and freed or grown later from a handler never makes the process
//! call the system allocator after the seal (the routing allocator defers the free).
//!
//! Blocks are freed where they came from, whoever frees them: dropping a persisted `String`
//! inside a later request frees it in the state heap.

use cella_arena::{begin_target, end_target, SavedTarget, Target};

/// Restores the previous placement when dropped, also when the closure unwinds.
struct Placed(SavedTarget);

impl Drop for Placed {
    fn drop(&mut self) {
        end_target(self.0);
    }
}

/// Runs `f` with every allocation it makes (on this thread, Rust's global allocator) going to
/// the state heap, and returns its result, so that what it builds outlives the request:
///
/// ```no_run
/// static GREETING: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// // In a handler: the String outlives the request.
/// GREETING.get_or_init(|| cella::persist(|| String::from("hello")));
/// ```
///
/// Values moved *into* persisted state must have been built inside `persist` (or while a
/// [`crate::sync`] lock is held): a `String` made before is arena memory and is wiped when the
/// request ends. When the state heap is full, the request ends with 500 as when its arena is
/// spent. C code's `malloc` is not affected (it stays in the arena).
pub fn persist<R>(f: impl FnOnce() -> R) -> R {
    let _placed = Placed(begin_target(Target::State));
    f()
}

/// Runs `f` with its allocations going to the request's arena even while a [`crate::sync`] lock
/// is held (scratch buffers, a response body built under the lock). A lock taken inside `f`
/// sends its holder's allocations to the state heap again. Outside handlers it allocates from
/// the system heap.
pub fn in_arena<R>(f: impl FnOnce() -> R) -> R {
    let _placed = Placed(begin_target(Target::Arena));
    f()
}

/// Whether the calling code's allocations go to the state heap now (inside [`persist`] or while
/// holding a [`crate::sync`] lock, once a server has started).
pub fn allocations_persist() -> bool {
    cella_arena::placed_in_state()
}

/// What the active state heap holds and has refused.
pub use cella_arena::state::StateHeapStats;

/// The active state heap's statistics.
pub fn state_heap_stats() -> StateHeapStats {
    cella_arena::state::stats()
}
