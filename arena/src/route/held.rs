//! The `cella::sync` locks a running handler holds, recorded in its route so that a request
//! that ends without releasing them (a hard cancel runs no destructor) has them released and
//! poisoned by [`super::Route::end_request`].

use super::current;

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
            route.held_touched.set(true);
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
