//! [`RwLock`]: many readers or one writer.
//!
//! The write guard is a [`super::Mutex`] guard in all but name: while it is held, the holder's
//! allocations go to the state heap; a hard-cancelled writer is released and the lock poisoned
//! by the runtime; a panicking one poisons it as it unwinds.
//!
//! **Read guards keep the arena as the placement**: a reader cannot change the value through
//! `&T` (except through interior mutability, whose own `cella::sync` lock routes its holder to
//! the state heap, or [`crate::persist`]), so what it allocates is the request's own (the
//! response it builds from what it read) and belongs in the arena; routing it to the state heap
//! would fill that heap with request memory and put its spinlock on every read path. A reader
//! cancelled hard is released by the runtime **without poisoning** (as std does not poison on a
//! reader's panic): it cannot have left the value half-updated.
//!
//! Contention suspends the request, as for [`super::Mutex`]. A waiting writer does not hold
//! new readers back: under reads that never pause, a writer waits until its handler deadline
//! (504).

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::Instant;

use super::{
    next_token, poison, poison_checked, register_held, unregister_held, wait_for_release,
    ExclusiveHold,
};

/// In `RawRwLock::state`: a writer holds the lock (the other bits are then 0).
const WRITER: u64 = 1 << 63;

/// The part of the lock the runtime touches when it releases it for an abandoned holder.
struct RawRwLock {
    /// `WRITER`, or the number of readers (0: free).
    state: AtomicU64,
    /// The token of the writer's acquisition while one holds the lock, else 0.
    writer: AtomicU64,
    poisoned: AtomicBool,
}

/// Marks the token of a reader's acquisition in the route's held-lock table.
const READER_TOKEN: u64 = 1 << 63;

impl RawRwLock {
    const fn new() -> RawRwLock {
        RawRwLock {
            state: AtomicU64::new(0),
            writer: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    fn try_read(&self) -> bool {
        // Relaxed: a first look; the exchange decides.
        let mut state = self.state.load(Ordering::Relaxed);
        while state & WRITER == 0 {
            // Acquire: pairs with the Release in `release_write`, so the last writer's changes
            // are visible to this reader.
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    fn try_write(&self) -> Option<u64> {
        // Acquire: pairs with the Release in `release_write` and `release_read`.
        self.state.compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed).ok()?;
        let token = next_token() & !READER_TOKEN;
        // Relaxed: only read by this lock's `release_poisoned` on this thread, or after the
        // state's Release/Acquire.
        self.writer.store(token, Ordering::Relaxed);
        Some(token)
    }

    fn release_read(&self) {
        // Release: pairs with the Acquire in `try_write`.
        self.state.fetch_sub(1, Ordering::Release);
    }

    fn release_write(&self) {
        self.writer.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire in `try_read` and `try_write`.
        self.state.store(0, Ordering::Release);
    }

    fn is_poisoned(&self) -> bool {
        // Acquire: pairs with the Release store of `poison`.
        self.poisoned.load(Ordering::Acquire)
    }
}

/// The runtime's release of an abandoned holder: a reader's share is given back (no poison),
/// a writer's lock released and poisoned if `token` still holds it.
///
/// # Safety
/// `lock` points at the `RawRwLock` of a live [`RwLock`] (its registration's contract).
unsafe fn release_poisoned(lock: *const (), token: u64) {
    // SAFETY: our contract.
    let lock = unsafe { &*lock.cast::<RawRwLock>() };
    if token & READER_TOKEN != 0 {
        // The entry is removed by the guard's drop before it releases, so a registered reader
        // still holds its share.
        lock.release_read();
    } else if lock.writer.load(Ordering::Relaxed) == token {
        poison(&lock.poisoned);
        lock.release_write();
    }
}

/// A reader-writer lock for state shared between requests (see the module documentation).
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    value: UnsafeCell<T>,
}

// SAFETY: as std's RwLock: readers share `&T` (so `T: Sync`), a writer has `&mut T` alone (the
// `WRITER` state excludes readers and other writers), and the value moves between threads
// with the lock (`T: Send`).
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    pub const fn new(value: T) -> RwLock<T> {
        RwLock { raw: RawRwLock::new(), value: UnsafeCell::new(value) }
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

impl<T: ?Sized> RwLock<T> {
    /// Shares the lock with other readers, suspending the request (not the worker) while a
    /// writer holds it. `Err` when a writer panicked or was cancelled while holding it.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        // Not preempted halfway through the lock's bookkeeping (see `cella_arena::RuntimeSection`).
        let _section = cella_arena::RuntimeSection::enter();
        let since = Instant::now();
        while !self.raw.try_read() {
            wait_for_release(since);
        }
        self.read_guard()
    }

    /// Takes the lock alone, suspending the request (not the worker) while others hold it.
    /// While the guard lives, the holder's allocations go to the state heap.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let _section = cella_arena::RuntimeSection::enter();
        let since = Instant::now();
        loop {
            if let Some(token) = self.raw.try_write() {
                return self.write_guard(token);
            }
            wait_for_release(since);
        }
    }

    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        let _section = cella_arena::RuntimeSection::enter();
        if self.raw.try_read() {
            Ok(self.read_guard()?)
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        let _section = cella_arena::RuntimeSection::enter();
        match self.raw.try_write() {
            Some(token) => Ok(self.write_guard(token)?),
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

    fn read_guard(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let token = next_token() | READER_TOKEN;
        let lock = std::ptr::addr_of!(self.raw).cast();
        // SAFETY: the guard made below borrows `self`, and `release_poisoned` is `RawRwLock`'s.
        let held_index =
            unsafe { register_held(lock, token, release_poisoned, || self.raw.release_read()) };
        let guard = RwLockReadGuard { lock: self, token, held_index, _not_send: PhantomData };
        if self.raw.is_poisoned() {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    fn write_guard(&self, token: u64) -> LockResult<RwLockWriteGuard<'_, T>> {
        let lock = std::ptr::addr_of!(self.raw).cast();
        // SAFETY: as in `read_guard`.
        let held_index =
            unsafe { register_held(lock, token, release_poisoned, || self.raw.release_write()) };
        let hold = ExclusiveHold::begin(token, held_index);
        poison_checked(
            self.raw.is_poisoned(),
            RwLockWriteGuard { lock: self, hold, _not_send: PhantomData },
        )
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock").field("poisoned", &self.is_poisoned()).finish_non_exhaustive()
    }
}

/// Shares an [`RwLock`]; the holder's allocations stay where they were going (the arena in a
/// handler).
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    token: u64,
    held_index: Option<usize>,
    _not_send: PhantomData<*const ()>,
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds a reader's share (no writer can take the lock meanwhile); the
        // runtime gives the share back for an abandoned holder only after its request ended,
        // when the guard can no longer be used.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        let _section = cella_arena::RuntimeSection::enter();
        if unregister_held(self.held_index, self.token) {
            self.lock.raw.release_read();
        }
    }
}

/// Holds an [`RwLock`] alone; while it lives, the holder's allocations go to the state heap.
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    hold: ExclusiveHold,
    _not_send: PhantomData<*const ()>,
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock alone (`WRITER`); released for another holder only
        // after this request ended, when the guard can no longer be used.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        let _section = cella_arena::RuntimeSection::enter();
        if self.hold.end(&self.lock.raw.poisoned) {
            self.lock.raw.release_write();
        }
    }
}
