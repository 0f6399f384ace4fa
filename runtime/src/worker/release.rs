//! Freeing slots: a slot whose task has ended is released (its sockets and descriptors closed,
//! its held locks poisoned, the escape check, the wipe) and goes back to the instance's pool,
//! or, freed by a pipelined request, straight to the next request of its connection; the
//! connections waiting for a slot are let in; the panic reserve is wiped once nothing holds it.
//! Must not run or resume handlers (`slots.rs`) or touch connections beyond their waiting.

use std::sync::atomic::Ordering;

use cella_arena::fds;

use super::conn::Phase;
use super::nudge::Freed;
use super::Worker;

impl Worker {
    /// Wipes the worker's panic reserve once no slot of this worker holds memory from it. A
    /// panic never suspends (see `cancel`), so only ended or suspended tasks can hold it.
    fn wipe_reserve_if_unheld(&mut self) {
        if self.reserve.used_bytes() == 0 {
            return;
        }
        let held = (0..self.slots.table().len())
            .any(|index| self.slots.owns(index) && self.slots[index].holds_reserve);
        if !held {
            self.reserve.wipe();
        }
    }

    /// Wipes a slot whose task has ended and puts it back in the pool, or retires it when the
    /// escape check finds something still pointing into its arena.
    pub(super) fn release_slot(&mut self, slot_index: usize) {
        let slot = &mut self.slots[slot_index];
        // As `set_wake_at(slot_index, None)`, through the reference already taken.
        if slot.wake_at.take().is_some() {
            self.waiting_slots -= 1;
        }
        debug_assert!(slot.task.is_none(), "a slot is released only after its task ended");
        if let Some(response) = slot.response.take() {
            slot.drop_in_route(response);
        }
        // The sockets' descriptors are in the fd table too: closed with it entered, they leave
        // it, so nothing is closed twice (a number closed twice may be another worker's by then).
        // SAFETY: the table lives in the slot; `leave` follows at once.
        unsafe { fds::enter(&slot.fds) };
        slot.sockets.close_all();
        fds::leave();
        if slot.ended_hard {
            slot.fds.close_all(); // The handler's destructors never ran.
        } else {
            slot.fds.forget_all(); // What it left open, it kept on purpose.
        }
        slot.wait = None;
        slot.route.fail_countdown.set(0);
        // Before the wipe: a lock the request still holds (a hard cancel ran no destructor) is
        // released and poisoned, and it may live in the arena or on the abandoned stack.
        slot.route.end_request();
        slot.conn = usize::MAX;
        slot.holds_reserve = false;
        slot.ended_hard = false;
        // Before the wipe, which resets the request's peak.
        let request_peak = slot.arena.peak_bytes() as u64;
        self.shared.stats[self.index].metrics.arena_high_water_bytes.observe(request_peak);
        // The request stays until the escape check has named it (its bytes are in the arena,
        // not wiped yet).
        // Taken here, whatever happens to the slot, so it never applies to a later release.
        let keep = std::mem::take(&mut self.keep_freed_slot);
        if !self.retire_if_escaped(slot_index) {
            self.wipe_and_free(slot_index, keep);
        }
        self.wipe_reserve_if_unheld();
        self.admit_slot_waiters();
    }

    /// The end of a slot's release: wipes its arena and gives it back to the pool, or keeps it
    /// for the next pipelined request (`keep`, see `may_keep_slot`).
    fn wipe_and_free(&mut self, slot_index: usize, keep: bool) {
        let slot = &mut self.slots[slot_index];
        slot.request = None;
        if self.settings.quarantine {
            slot.arena.wipe_with(cella_arena::QUARANTINE_FILL_BYTE);
        } else {
            slot.arena.wipe();
        }
        let high_water = slot.arena.high_water_bytes();
        if high_water > self.arena_high_water_bytes {
            self.arena_high_water_bytes = high_water;
            // Relaxed: a statistic, read by `RunningServer::stats`.
            self.shared.stats[self.index]
                .arena_high_water_bytes
                .store(high_water as u64, Ordering::Relaxed);
        }
        if self.settings.quarantine {
            slot.memory.arena.protect(false).expect("quarantining a slot succeeds");
        }
        if keep && self.slot_spare.is_none() {
            self.slot_spare = Some(slot_index);
            return;
        }
        self.slots.release(slot_index);
        self.nudge_waiters(Freed::Slot);
    }

    /// Whether a slot freed by a pipelined request may go straight to the next request of the
    /// same connection (already buffered, parsed in the same `drive`) instead of through the
    /// pool: it is busy again at once either way, so no request of the instance could have had
    /// it. Not in quarantine (a freed slot must rest), not while draining, and not while a
    /// connection of the instance waits for a slot (it goes to the pool and wakes them).
    pub(super) fn may_keep_slot(&self) -> bool {
        !self.settings.quarantine
            && !self.draining
            && self.slot_waiters.is_empty()
            && (self.settings.slot_wait_timeout.is_zero() || !self.any_worker_wants(Freed::Slot))
    }

    /// Gives the slot kept for a pipelined request back to the pool (the request did not come
    /// whole, or the `drive` that kept it is over).
    #[inline]
    pub(super) fn release_slot_spare(&mut self) {
        if let Some(slot_index) = self.slot_spare.take() {
            self.slots.release(slot_index);
            self.nudge_waiters(Freed::Slot);
            self.admit_slot_waiters();
        }
    }

    /// Lets connections waiting for a slot try again while the instance has free slots (one
    /// per free slot: the others keep their place). A slot freed by another worker wakes this
    /// one at once (`nudge.rs`).
    #[inline]
    pub(super) fn admit_slot_waiters(&mut self) {
        // Inlined check, the rest out of line: called on every loop turn and every release.
        if !self.slot_waiters.is_empty() {
            self.admit_slot_waiters_now();
        }
    }

    #[inline(never)]
    fn admit_slot_waiters_now(&mut self) {
        let mut free = self.slots.table().pool().free_count();
        while free > 0 {
            let Some(waiter) = self.slot_waiters.pop_front() else { break };
            if self.conns.owns(waiter) && self.conns[waiter].phase == Phase::WaitingSlot {
                self.conns[waiter].phase = Phase::Head;
                self.runnable.push_back(waiter);
                free -= 1;
            }
        }
        if self.slot_waiters.is_empty() {
            self.set_waiting(Freed::Slot, false);
        }
    }
}
