//! [`Mutex`]: one holder at a time (see the module documentation of `sync`).

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Instant;

use super::{next_token, poison, poison_checked, register_held, wait_for_release, ExclusiveHold};

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
        let token = next_token();
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

/// The runtime's release of a lock whose holder ended without releasing it (see the module
/// documentation).
///
/// # Safety
/// `lock` points at the `RawLock` of a live [`Mutex`] (its registration's contract).
unsafe fn release_poisoned(lock: *const (), token: u64) {
    // SAFETY: our contract.
    let lock = unsafe { &*lock.cast::<RawLock>() };
    if lock.holder.load(Ordering::Relaxed) == token {
        poison(&lock.poisoned);
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
        // Not preempted halfway through the lock's bookkeeping (see `cella_arena::RuntimeSection`).
        let _section = cella_arena::RuntimeSection::enter();
        let token = self.raw.acquire();
        self.guard(token)
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        let _section = cella_arena::RuntimeSection::enter();
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
        let lock = std::ptr::addr_of!(self.raw).cast();
        // SAFETY: the guard made below borrows `self`, and `release_poisoned` is `RawLock`'s.
        let held_index =
            unsafe { register_held(lock, token, release_poisoned, || self.raw.release(token)) };
        let hold = ExclusiveHold::begin(token, held_index);
        poison_checked(
            self.raw.is_poisoned(),
            MutexGuard { lock: self, hold, _not_send: PhantomData },
        )
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
    hold: ExclusiveHold,
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
        let _section = cella_arena::RuntimeSection::enter();
        if self.hold.end(&self.lock.raw.poisoned) {
            self.lock.raw.release(self.hold.token);
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
