//! cella's fixed memory.
//!
//! At startup one [`Region`] is mapped and carved into per-worker, per-slot and per-connection
//! spans ([`WorkerMemory`]). A slot's arena is an [`Arena`]: a bump allocator that never grows,
//! is reset in O(1), and wiped (only its used part) when its request ends. The
//! [`RoutingAlloc`] global allocator sends every allocation made while a handler runs to that
//! handler's arena, and counts every system allocation made by a *sealed* thread outside one.
//!
//! Memory that must outlive a request goes to the [`state`] heap, a span of the region with an
//! allocator that frees, shared by every worker.
//!
//! Values placed in an arena never have their `Drop` run by the arena: memory is reclaimed by
//! the wipe. Anything that must be released (a file descriptor, a reactor registration) is
//! released by the runtime from a table it owns, never by `Drop` of arena memory.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!(
    "cella supports Linux on x86_64 only: its slot stacks, guard pages and fault handling are \
     written and tested for that target"
);

mod arena;
pub mod cmalloc;
mod collections;
pub mod fds;
mod region;
mod route;
mod section;
pub mod state;
mod sys;
pub mod text;

pub use arena::{AllocError, Arena, QUARANTINE_FILL_BYTE};
pub use collections::{ArenaString, ArenaVec};
pub use region::{
    Buffer, ConnectionMemory, Region, RegionError, RegionOptions, SlotMemory, Span, WorkerMemory,
};
pub use route::{
    begin_target, end_target, enter, guard_began, guard_ended, leave, placed_in_state,
    register_held, seal_current_thread, sealed_system_calls, unregister_held,
    unseal_current_thread, HeldLock, Placement, Route, RoutingAlloc, SavedTarget, Target,
    HELD_LOCKS_MAX,
};
pub use section::{runtime_depth, set_runtime_depth, RuntimeSection};
pub use sys::page_size;
