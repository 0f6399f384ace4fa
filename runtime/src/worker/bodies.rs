//! Bodies that arrive while holding a slot: at most `body_slots_max` in the whole instance, and
//! each at a minimum rate, so that slow uploads can take only a bounded share of the slots
//! (issue: a head announcing a body and no body used to pin a slot for the whole body
//! deadline). Must not read or parse: `read.rs` asks here before it waits for body bytes.

use std::sync::atomic::Ordering;

use super::conn::BodyState;
use super::Worker;
use crate::http::ErrorKind;

impl Worker {
    /// Connection `index` must wait for more of its body while holding its slot: take one of
    /// the instance's body slots (once). `false`: they are all taken.
    pub(super) fn take_body_slot(&mut self, index: usize) -> bool {
        if self.conns[index].body_slot.is_some() {
            return true;
        }
        let max = self.settings.body_slots_max;
        // AcqRel/Acquire: a count shared by the workers; the update pairs with the release in
        // `give_back_body_slot` so the count never exceeds `max`.
        let taken = self
            .shared
            .body_slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        if taken.is_err() {
            self.stats().body_slots_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let filled = body_filled(&self.conns[index].body);
        self.conns[index].body_slot = Some((self.now, filled));
        true
    }

    /// The body is complete, or the request ends: give its body slot back.
    pub(super) fn give_back_body_slot(&mut self, index: usize) {
        if self.conns[index].body_slot.take().is_some() {
            // AcqRel: pairs with the update in `take_body_slot`.
            self.shared.body_slots.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Checks the rate of connection `index`'s body at the end of its window; `Err` when it
    /// arrived slower than `body_rate_min_bytes_per_s`.
    pub(super) fn check_body_rate(&mut self, index: usize) -> Result<(), ErrorKind> {
        let min = self.settings.body_window_bytes_min;
        let conn = &mut self.conns[index];
        let Some((since, filled_then)) = conn.body_slot else { return Ok(()) };
        if min == 0 || self.now < since + self.settings.body_rate_window {
            return Ok(());
        }
        let filled = body_filled(&conn.body);
        if ((filled - filled_then) as u64) < min {
            self.stats().body_too_slow.fetch_add(1, Ordering::Relaxed);
            return Err(ErrorKind::BodyTooSlow);
        }
        conn.body_slot = Some((self.now, filled));
        Ok(())
    }
}

/// Bytes of the body read so far.
fn body_filled(body: &BodyState) -> usize {
    match body {
        BodyState::None => 0,
        BodyState::Length(buf) | BodyState::Chunked(buf, _) => buf.filled,
    }
}
