//! Locks for state shared between requests.
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

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

pub use cella_arena::HELD_LOCKS_MAX;
use cella_arena::{HeldLock, Placement};

/// How often a handler waiting for a lock tries again. It is suspended in between.
pub const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(1);

/// How long a destructor running while its request unwinds (it cannot suspend) waits for a
/// lock before the process aborts: past it, the holder is a request on the same worker, which
/// can never run again while this one waits.
pub const UNWINDING_WAIT_MAX: Duration = Duration::from_secs(1);

/// Tokens of acquisitions: each `lock` takes a new one, so a release meant for an earlier
/// acquisition never releases a later one.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The part of a lock the runtime touches when it releases it for an abandoned holder: the
/// same for every `T`.
struct RawLock {
    /// 0: free; otherwise the token of the acquisition that holds it.
    holder: AtomicU64,
    poisoned: AtomicBool,
}

impl RawLock {
    const fn new() -> RawLock {
        RawLock { holder: AtomicU64::new(0), poisoned: AtomicBool::new(false) }
    }

    /// Takes the lock for a new token if it is free.
    fn try_acquire(&self) -> Option<u64> {
        // Relaxed: a unique number; nothing is ordered by it.
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        // Acquire: pairs with the Release in `release`, so the last holder's writes to the value
        // are visible to the new one.
        self.holder
            .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| token)
    }

    fn acquire(&self) -> u64 {
        if let Some(token) = self.try_acquire() {
            return token;
        }
        let since = Instant::now();
        loop {
            wait_for_release(since);
            if let Some(token) = self.try_acquire() {
                return token;
            }
        }
    }

    /// Releases the lock if `token` still holds it.
    fn release(&self, token: u64) {
        // Release: pairs with the Acquire in `try_acquire`.
        let _ = self.holder.compare_exchange(token, 0, Ordering::Release, Ordering::Relaxed);
    }

    fn is_poisoned(&self) -> bool {
        // Acquire: pairs with the Release stores that poison.
        self.poisoned.load(Ordering::Acquire)
    }
}

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

/// The runtime's release of a lock whose holder ended without releasing it (see the module
/// documentation).
///
/// # Safety
/// `lock` points at the `RawLock` of a live [`Mutex`] (its registration's contract).
unsafe fn release_poisoned(lock: *const (), token: u64) {
    // SAFETY: our contract.
    let lock = unsafe { &*lock.cast::<RawLock>() };
    if lock.holder.load(Ordering::Relaxed) == token {
        // Release: pairs with the Acquire load in `is_poisoned`.
        lock.poisoned.store(true, Ordering::Release);
        lock.release(token);
    }
}

/// A mutual-exclusion lock for state shared between requests (see the module documentation).
pub struct Mutex<T: ?Sized> {
    raw: RawLock,
    value: UnsafeCell<T>,
}

// SAFETY: as std's Mutex: the value is reached only through a guard, and one guard exists at a
// time (the `holder` exchange); the value moves between threads with the lock, so `T: Send`.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Mutex<T> {
        Mutex { raw: RawLock::new(), value: UnsafeCell::new(value) }
    }

    /// The value; `Err` (with the value) when the lock is poisoned.
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.raw.is_poisoned();
        let value = self.value.into_inner();
        if poisoned {
            Err(PoisonError::new(value))
        } else {
            Ok(value)
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Takes the lock, suspending the request (not the worker) while another holds it. `Err`
    /// when a holder panicked or was cancelled while holding it; the guard is inside
    /// (`PoisonError::into_inner`) and the lock stays poisoned until [`Mutex::clear_poison`].
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let token = self.raw.acquire();
        self.guard(token)
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        match self.raw.try_acquire() {
            Some(token) => Ok(self.guard(token)?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.raw.is_poisoned()
    }

    /// Marks the value as consistent again after a poison was handled.
    pub fn clear_poison(&self) {
        // Release: pairs with the Acquire load in `is_poisoned`.
        self.raw.poisoned.store(false, Ordering::Release);
    }

    /// The value, through `&mut self` (no locking needed).
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let poisoned = self.raw.is_poisoned();
        let value = self.value.get_mut();
        if poisoned {
            Err(PoisonError::new(value))
        } else {
            Ok(value)
        }
    }

    fn guard(&self, token: u64) -> LockResult<MutexGuard<'_, T>> {
        let held = HeldLock { lock: std::ptr::addr_of!(self.raw).cast(), token, release_poisoned };
        // SAFETY: the lock outlives the guard, which unregisters it in `drop`; if the guard is
        // never dropped (a hard cancel), the route's `end_request` uses it at the end of this
        // request, while the `&self` borrow the guard was made from is still in place (the
        // abandoned stack and the arena are untouched until after `end_request`).
        let held_index = match unsafe { cella_arena::register_held(held) } {
            Ok(index) => index,
            Err(()) => {
                self.raw.release(token);
                panic!("a request may hold at most {HELD_LOCKS_MAX} cella locks at once");
            }
        };
        let guard = MutexGuard {
            lock: self,
            token,
            held_index,
            placement: cella_arena::guard_began(),
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        };
        if self.raw.is_poisoned() {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex").field("poisoned", &self.is_poisoned()).finish_non_exhaustive()
    }
}

/// Holds a [`Mutex`]; while it lives, the holder's allocations go to the state heap.
pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a Mutex<T>,
    token: u64,
    /// The entry of the route's held-lock table, inside a handler.
    held_index: Option<usize>,
    placement: *const Placement,
    /// Whether the thread was panicking when the lock was taken (poison only for a new panic).
    panicking: bool,
    /// A guard belongs to its request's task and thread.
    _not_send: PhantomData<*const ()>,
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock (`holder == token`), so no other reference to the
        // value exists; the runtime releases it for another holder only after this request
        // ended, when the guard can no longer be used (its stack abandoned).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let ours = match self.held_index {
            Some(index) => cella_arena::unregister_held(index, self.token),
            None => true,
        };
        if !ours {
            return; // The request that took it is over; the runtime released it already.
        }
        cella_arena::guard_ended(self.placement);
        if !self.panicking && std::thread::panicking() {
            // Release: pairs with the Acquire load in `is_poisoned`.
            self.lock.raw.poisoned.store(true, Ordering::Release);
        }
        self.lock.raw.release(self.token);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
