//! Waking another worker when capacity it waits for comes free: each worker publishes what its
//! connections wait for (a slot, an I/O buffer pair) in its [`Nudge`], and a worker that gives
//! one back to the instance's pool wakes the workers that wait, through their `mio::Waker`
//! (an eventfd write), at once instead of at their next sweep. No lock; no syscall when nobody
//! waits (one load per worker per release); at most one eventfd write per woken worker until it
//! has run a loop turn. Must not touch connections or slots: it only says who to wake.
//!
//! Why a wake cannot be lost: the waiter stores its flag, then loads the pool's free count; the
//! releaser adds to the free count, then loads the flags; all four are `SeqCst`, so at least
//! one of the two loads sees the other side's write (and on x86 a `SeqCst` load is a plain
//! load and the pool's count is a locked add either way). Likewise for `pending`: a worker
//! clears it before it looks at the pools, so a releaser that found it still set released
//! before that look.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use mio::Waker;

use super::Worker;

/// What a worker's connections wait for, and how to wake it; one per worker in `Shared`.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Nudge {
    /// The worker's waker, set once at its start.
    waker: OnceLock<Arc<Waker>>,
    /// Some of its connections wait for a slot.
    wants_slot: AtomicBool,
    /// Some of its connections wait for an I/O buffer pair.
    wants_io: AtomicBool,
    /// Woken and has not yet run a loop turn since: another wake would add nothing.
    pending: AtomicBool,
}

/// What came free.
#[derive(Clone, Copy)]
pub(super) enum Freed {
    Slot,
    IoBuffers,
}

impl Nudge {
    pub(super) fn set_waker(&self, waker: Arc<Waker>) {
        let _ = self.waker.set(waker);
    }

    fn wants(&self, freed: Freed) -> &AtomicBool {
        match freed {
            Freed::Slot => &self.wants_slot,
            Freed::IoBuffers => &self.wants_io,
        }
    }

    fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            if let Some(waker) = self.waker.get() {
                let _ = waker.wake();
            }
        }
    }
}

impl Worker {
    fn nudge(&self) -> &Nudge {
        &self.shared.nudges[self.index]
    }

    /// This worker's connections now wait (`true`) or no longer wait for `freed`. The caller
    /// looks at the pool after saying it waits (its loop turn does), not before.
    pub(super) fn set_waiting(&self, freed: Freed, waiting: bool) {
        let flag = self.nudge().wants(freed);
        if flag.load(Ordering::Relaxed) != waiting {
            flag.store(waiting, Ordering::SeqCst);
        }
    }

    /// Something of the instance's came back to its pool: wake the other workers whose
    /// connections wait for it.
    pub(super) fn nudge_waiters(&self, freed: Freed) {
        for (worker, nudge) in self.shared.nudges.iter().enumerate() {
            if worker != self.index && nudge.wants(freed).load(Ordering::SeqCst) {
                nudge.wake();
            }
        }
    }

    /// The loop is about to look at the pools: a wake from now on must wake it again.
    pub(super) fn take_nudge(&self) {
        let pending = &self.nudge().pending;
        if pending.load(Ordering::Relaxed) {
            pending.store(false, Ordering::SeqCst);
        }
    }
}
