//! Locks for state shared between requests: [`Mutex`] and [`RwLock`].
//!
//! [`Mutex`] is `std::sync::Mutex`'s shape (`lock` returns a [`LockResult`], poisoning, `into_inner`)
//! with three differences that make it safe to use from handlers:
//!
//! - **Allocations go to the state heap while the guard is held**, so what the holder inserts
//!   into the protected value survives the request (see [`crate::persist`]; [`crate::in_arena`]
//!   sends scratch allocations back to the arena).
//! - **Contention suspends the request, not the worker**: a handler that finds the lock taken
//!   is suspended and tries again every [`LOCK_RETRY_INTERVAL`] (its worker serves other
//!   requests meanwhile, including, on the same worker, the holder); its handler deadline
//!   still applies (504). Outside handlers the thread sleeps as long and retries. A destructor
//!   that takes a lock while its request unwinds cannot suspend: it retries at once, and aborts
//!   the process after [`UNWINDING_WAIT_MAX`] (the holder is then on the same worker and could
//!   never release it).
//! - **A holder that ends without releasing is released and poisoned by the runtime.** A hard
//!   cancellation (the arena or the state heap spent, a stack overflow) abandons the handler's
//!   stack without running destructors; the lock is recorded in the slot's route
//!   ([`cella_arena::Route::end_request`]) and released and poisoned when the slot is released,
//!   so the next `lock` gets `Err(PoisonError)` (recover with
//!   [`PoisonError::into_inner`](std::sync::PoisonError::into_inner)) and never deadlocks. A panic
//!   or a clean cancellation (deadline) unwinds through the guard, which poisons as std does.
//!
//! What the abandoned holder had allocated in the state heap and not yet linked into the
//! protected value is leaked (its destructors never run); the poison tells the next holder that
//! the value may be half-updated. One request may hold at most [`HELD_LOCKS_MAX`] locks at once
//! (more panics: 500).

//!
//! [`RwLock`] is `std::sync::RwLock`'s shape, with the same three differences for its write
//! guard; see its documentation for the read guard's.
//!
//! Files: `mod.rs` (the acquisition tokens, waiting, and the runtime's release), `mutex.rs`,
//! `rwlock.rs`.

mod mutex;
mod rwlock;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use cella_arena::HELD_LOCKS_MAX;
use cella_arena::{HeldLock, Placement};
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How often a handler waiting for a lock tries again. It is suspended in between.
pub const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(1);

/// How long a destructor running while its request unwinds (it cannot suspend) waits for a
/// lock before the process aborts: past it, the holder is a request on the same worker, which
/// can never run again while this one waits.
pub const UNWINDING_WAIT_MAX: Duration = Duration::from_secs(1);

/// Tokens of acquisitions: each `lock` takes a new one, so a release meant for an earlier
/// acquisition never releases a later one.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Waits a little for a lock to be released: suspends the request for [`LOCK_RETRY_INTERVAL`]
/// inside a handler (`cella::net::sleep`, which unwinds the request if it is cancelled
/// meanwhile), sleeps the thread as long outside one.
fn wait_for_release(since: Instant) {
    if std::thread::panicking() && since.elapsed() > UNWINDING_WAIT_MAX {
        // A destructor takes the lock while its request unwinds: it cannot suspend, so it
        // spins; the holder may run on another worker, but on this one it never will again.
        crate::sys::write_stderr(
            b"cella: fatal: a destructor waited for a cella::sync lock while its request \
              unwound, and the holder never released it; aborting\n",
        );
        std::process::abort();
    }
    crate::net::sleep(LOCK_RETRY_INTERVAL);
}

/// Records a lock the running request now holds, so the runtime releases it if the request
/// ends without doing so; the entry's index inside a handler. Panics (a 500) when the request
/// already holds [`HELD_LOCKS_MAX`] locks, after `undo` gave the lock back.
///
/// # Safety
/// `lock` is a lock the caller's new guard borrows, and `release_poisoned` is that lock's
/// own release function.
unsafe fn register_held(
    lock: *const (),
    token: u64,
    release_poisoned: unsafe fn(*const (), u64),
    undo: impl FnOnce(),
) -> Option<usize> {
    let held = HeldLock { lock, token, release_poisoned };
    // SAFETY: our contract: the lock outlives the guard, which
    // unregisters it in `drop`; if the guard is never dropped (a hard cancel), the route's
    // `end_request` uses it at the end of this request, while the borrow the guard was made
    // from is still in place (the abandoned stack and the arena are untouched until after
    // `end_request`).
    match unsafe { cella_arena::register_held(held) } {
        Ok(index) => index,
        Err(()) => {
            undo();
            panic!("a request may hold at most {HELD_LOCKS_MAX} cella locks at once");
        }
    }
}

/// Forgets a guard's entry; whether the guard still owns its lock (false: the request that
/// took it is over, and the runtime released it then).
fn unregister_held(held_index: Option<usize>, token: u64) -> bool {
    match held_index {
        Some(index) => cella_arena::unregister_held(index, token),
        None => true,
    }
}

/// What an exclusive guard (a [`Mutex`]'s, an [`RwLock`]'s write guard) holds besides its lock:
/// its acquisition, its entry in the route's held-lock table, and the state-heap placement its
/// holder's allocations follow while it lives.
struct ExclusiveHold {
    token: u64,
    /// The entry of the route's held-lock table, inside a handler.
    held_index: Option<usize>,
    placement: *const Placement,
    /// Whether the thread was panicking when the lock was taken (poison only for a new panic).
    panicking: bool,
}

impl ExclusiveHold {
    /// Starts holding the acquisition `token`, registered as `held_index`.
    fn begin(token: u64, held_index: Option<usize>) -> ExclusiveHold {
        let placement = cella_arena::guard_began();
        ExclusiveHold { token, held_index, placement, panicking: std::thread::panicking() }
    }

    /// Ends the hold as its guard drops: forgets its entry, ends the placement, and poisons
    /// `poisoned` when a panic began while it was held. `false`: the request that took it is
    /// over and the runtime released the lock then, so the caller must not release it.
    fn end(&self, poisoned: &AtomicBool) -> bool {
        if !unregister_held(self.held_index, self.token) {
            return false;
        }
        cella_arena::guard_ended(self.placement);
        if !self.panicking && std::thread::panicking() {
            poison(poisoned);
        }
        true
    }
}

/// `guard`, as an error when its lock is poisoned (std's `LockResult` convention).
fn poison_checked<G>(poisoned: bool, guard: G) -> std::sync::LockResult<G> {
    if poisoned {
        Err(std::sync::PoisonError::new(guard))
    } else {
        Ok(guard)
    }
}

/// A new acquisition token.
fn next_token() -> u64 {
    // Relaxed: a unique number; nothing is ordered by it.
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
}

/// Poisons `poisoned`; pairs with the Acquire loads of `is_poisoned`.
fn poison(poisoned: &AtomicBool) {
    // Release: pairs with the Acquire loads in `is_poisoned`.
    poisoned.store(true, Ordering::Release);
}
