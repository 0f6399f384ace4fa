//! Waking another worker when capacity it waits for comes free: each worker publishes what its
//! connections wait for (a slot, an I/O buffer pair, a connection entry) in its [`Nudge`], and
//! a worker that gives one back to the instance's pool wakes the workers that wait, through
//! their `mio::Waker` (an eventfd write), at once instead of at their next sweep. The same
//! wake carries a full table's request to close an idle connection (`eviction.rs`). No lock; no syscall when nobody
//! waits (one load per worker per release); at most one eventfd write per woken worker until it
//! has run a loop turn. Must not touch connections or slots: it only says who to wake.
//!
//! Why a wake cannot be lost: the waiter stores its flag, then loads the pool's free count; the
//! releaser adds to the free count, then loads the flags; all four are `SeqCst`, so at least
//! one of the two loads sees the other side's write (and on x86 a `SeqCst` load is a plain
//! load and the pool's count is a locked add either way). Likewise for `pending`: a worker
//! clears it before it looks at the pools, so a releaser that found it still set released
//! before that look.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// It holds accepted connections until a connection entry frees (`eviction.rs`).
    wants_conn: AtomicBool,
    /// Its idle keep-alive connections at its last sweep, less those asked for since: a hint
    /// for a worker that must make room in a full table.
    idle: AtomicUsize,
    /// Idle connections other workers asked it to close.
    evictions: AtomicUsize,
    /// Woken and has not yet run a loop turn since: another wake would add nothing.
    pending: AtomicBool,
    /// It may keep a free I/O buffer pair for its next read (`buffers.rs`): set the first time
    /// it keeps one and never cleared (a stale flag costs a wake when the pool runs dry).
    keeps_io_spare: AtomicBool,
}

/// What came free.
#[derive(Clone, Copy)]
pub(super) enum Freed {
    Slot,
    IoBuffers,
    /// A connection entry.
    Conn,
}

impl Nudge {
    pub(super) fn set_waker(&self, waker: Arc<Waker>) {
        let _ = self.waker.set(waker);
    }

    /// Wakes the worker whatever it waits for (shutdown, escalation); a worker not started yet
    /// has no waker and reads the shutdown flag when it starts.
    pub(crate) fn wake_now(&self) {
        if let Some(waker) = self.waker.get() {
            let _ = waker.wake();
        }
    }

    fn wants(&self, freed: Freed) -> &AtomicBool {
        match freed {
            Freed::Slot => &self.wants_slot,
            Freed::IoBuffers => &self.wants_io,
            Freed::Conn => &self.wants_conn,
        }
    }

    pub(super) fn idle_hint(&self) -> usize {
        // Relaxed: a hint, up to one sweep old.
        self.idle.load(Ordering::Relaxed)
    }

    pub(super) fn publish_idle(&self, idle: usize) {
        self.idle.store(idle, Ordering::Relaxed);
    }

    /// Asks this worker to close its oldest idle keep-alive connection, and wakes it. Takes one
    /// off its hint, so that workers asking at once spread over the workers that have some.
    pub(super) fn ask_eviction(&self) {
        let _ = self.idle.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.evictions.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    /// The evictions asked of this worker since it last looked (after `take_nudge`, so an
    /// ask whose wake was skipped as pending is seen: see the module comment).
    pub(super) fn take_evictions(&self) -> usize {
        if self.evictions.load(Ordering::SeqCst) == 0 {
            0
        } else {
            self.evictions.swap(0, Ordering::SeqCst)
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

    /// This worker may keep a free I/O buffer pair; it looks at `Shared::io_waiting` next.
    /// With the waiter's increment of `io_waiting` and then load of this flag (all `SeqCst`),
    /// either the waiter sees the flag and wakes this worker, or this worker sees the waiter
    /// and keeps nothing: a kept pair is never left unwanted while a connection waits.
    pub(super) fn announce_io_spare(&self) {
        let flag = &self.nudge().keeps_io_spare;
        // Relaxed: only this worker stores the flag, and once set it stays set; the store
        // below is the one the argument above needs (SeqCst, before the count's load).
        if !flag.load(Ordering::Relaxed) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// A connection of this worker waits for an I/O buffer pair (after `io_waiting` counts
    /// it): wakes the other workers that may keep a free one.
    pub(super) fn wake_io_spare_keepers(&self) {
        for (worker, nudge) in self.shared.nudges.iter().enumerate() {
            if worker != self.index && nudge.keeps_io_spare.load(Ordering::SeqCst) {
                nudge.wake();
            }
        }
    }

    /// Whether some worker's connections wait for `freed` (a snapshot, one load per worker).
    pub(super) fn any_worker_wants(&self, freed: Freed) -> bool {
        // SeqCst: as in `nudge_waiters`.
        self.shared.nudges.iter().any(|nudge| nudge.wants(freed).load(Ordering::SeqCst))
    }

    /// The loop is about to look at the pools: a wake from now on must wake it again.
    pub(super) fn take_nudge(&self) {
        let pending = &self.nudge().pending;
        if pending.load(Ordering::Relaxed) {
            pending.store(false, Ordering::SeqCst);
        }
    }
}
