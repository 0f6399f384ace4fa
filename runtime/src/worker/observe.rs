//! Counting for `/metrics` (`crate::metrics`): each answer's status and duration, and each
//! rejection's reason, into this worker's own counters (Relaxed atomics on its cache lines; no
//! lock, no allocation). Must not change what happens to a connection.

use std::time::Instant;

use super::Worker;
use crate::http::ErrorKind;
use crate::metrics::Reason;

impl Worker {
    /// An answer with `status` to connection `index`'s current request was queued: counts it,
    /// with the time since the request's bytes were first parsed.
    pub(super) fn count_response(&mut self, index: usize, status: u16) {
        let now = Instant::now();
        // The loop's clock moves on too: a request parsed after this answer in the same turn
        // (pipelined) starts its duration and deadlines from here, with no clock read of its own.
        self.now = now;
        // Taken: the next request's first parse sets it again.
        let started = self.conns[index].request_started.take().unwrap_or(now);
        let elapsed = now.saturating_duration_since(started);
        self.stats().metrics.record_response(status, elapsed);
    }

    /// An error answer of `kind` to connection `index`'s current request was queued.
    pub(super) fn count_error(&mut self, index: usize, kind: ErrorKind) {
        if let Some(reason) = Reason::of(kind) {
            self.stats().metrics.reject(reason);
        }
        self.count_response(index, kind.response().status);
    }

    /// A connection was turned away at accept.
    pub(super) fn count_rejected_connection(&self, reason: Reason) {
        self.stats().metrics.reject(reason);
    }
}
