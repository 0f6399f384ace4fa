//! Counting for `/metrics` (`crate::metrics`) and the access log (`crate::access_log`): each
//! answer's status and duration, and each rejection's reason, into this worker's own counters
//! (Relaxed atomics on its cache lines; no lock, no allocation), and each answer's line into
//! this worker's access log ring (never waiting: a full ring drops the line and counts it).
//! Must not change what happens to a connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Worker;
use crate::access_log::Entry;
use crate::http::ErrorKind;
use crate::metrics::Reason;

impl Worker {
    /// An answer with `status` and `body_bytes` of body to connection `index`'s current request
    /// was queued: counts it, with the time since the request's bytes were first parsed, and
    /// logs it. The request's slot (if it has one) must not be released yet: the log reads the
    /// request's head and arena high-water mark from it.
    pub(super) fn count_response(&mut self, index: usize, status: u16, body_bytes: usize) {
        // The loop's clock, read at the start of the turn and again after every handler run
        // (`run_task`): a handler's answer is timed at its end without a clock read of its own;
        // an answer without a handler (an error, a 503) takes microseconds after the read.
        let now = self.now;
        // Taken: the next request's first parse sets it again.
        let started = self.conns[index].request_started.take().unwrap_or(now);
        let elapsed_ns = now.nanos_since(started);
        self.stats().metrics.record_response(status, elapsed_ns);
        if self.access_log.is_some() {
            self.log_access(index, status, body_bytes as u64, Duration::from_nanos(elapsed_ns));
        }
    }

    /// An error answer of `kind`, with `body_bytes` of body, to connection `index`'s current
    /// request was queued.
    pub(super) fn count_error(&mut self, index: usize, kind: ErrorKind, body_bytes: usize) {
        if let Some(reason) = Reason::of(kind) {
            self.stats().metrics.reject(reason);
        }
        self.count_response(index, kind.response().status, body_bytes);
    }

    /// A connection was turned away at accept.
    pub(super) fn count_rejected_connection(&self, reason: Reason) {
        self.stats().metrics.reject(reason);
    }

    /// Adds the access log line of an answer to this worker's ring, or counts it dropped.
    fn log_access(&mut self, index: usize, status: u16, body_bytes: u64, duration: Duration) {
        let Some(log) = self.access_log.as_mut() else { return };
        let conn = &self.conns[index];
        let slot = conn.slot.map(|slot_index| &self.slots[slot_index]);
        // A request in a slot: its head was copied into the arena (the read buffer has moved
        // on). Otherwise the head is still in the read buffer, where it was parsed.
        let (head, arena_high_water_bytes) = match slot {
            Some(slot) => match slot.request.as_ref() {
                // SAFETY: the slot holds this request and its arena is not wiped until the slot
                // is released, after this call; the bytes are used only within it.
                Some(request) => (unsafe { request.head() }, slot.arena.peak_bytes() as u64),
                None => (&[][..], slot.arena.peak_bytes() as u64),
            },
            None => (conn.parsed_head(), 0),
        };
        let entry = Entry {
            unix_time: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            remote: conn.remote,
            head,
            status,
            body_bytes,
            duration,
            arena_high_water_bytes,
        };
        let metrics = &self.shared.stats[self.index].metrics;
        // Only this worker writes its counters: `metrics::add` (no locked instruction).
        if log.log(&entry) {
            crate::metrics::add(&metrics.access_log_lines, 1);
        } else {
            crate::metrics::add(&metrics.access_log_dropped, 1);
        }
    }
}
