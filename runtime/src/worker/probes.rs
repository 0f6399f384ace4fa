//! The probes on the main listener (`liveness_path`, `readiness_path`): answered by the worker
//! itself, right after a request's head is parsed and before a slot is claimed, so a probe never
//! waits for a slot, never gets the busy 503, and allocates nothing (the answer is encoded into
//! the connection's write buffer, as errors are). Only GET and HEAD are probes; any other method
//! on those paths goes to the handler. Must not claim slots or run handlers.

use std::sync::atomic::Ordering;

use super::conn::Phase;
use super::Worker;
use crate::http::encode::{self, FixedSink, TextReply};

/// Room a probe's answer needs at most in the write buffer (its head is about 150 bytes).
const PROBE_REPLY_BYTES_MAX: usize = 256;

/// Which probe a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    Liveness,
    Readiness,
}

impl Worker {
    /// The probe `method` and `path` ask for, if any.
    pub(super) fn probe_of(&self, method: &str, path: &str) -> Option<Probe> {
        if method != "GET" && method != "HEAD" {
            return None;
        }
        let settings = &self.settings;
        if !settings.liveness_path.is_empty() && path == &*settings.liveness_path {
            Some(Probe::Liveness)
        } else if !settings.readiness_path.is_empty() && path == &*settings.readiness_path {
            Some(Probe::Readiness)
        } else {
            None
        }
    }

    /// Whether the instance takes new work: not from the first shutdown signal on (the drain
    /// delay, then the drain).
    pub(super) fn is_ready(&self) -> bool {
        // Acquire: pairs with the Release store of `RunningServer::stop_ready` (the worker may
        // not have seen it in its loop yet).
        !self.unready && !self.draining && !self.shared.unready.load(Ordering::Acquire)
    }

    /// Answers a probe whose head (`head_len` bytes, its request's `RequestMeta` already set) is
    /// at the front of the read buffer. A body is not read: its framing is lost, so the
    /// connection closes after the answer (as for the busy 503).
    pub(super) fn answer_probe(
        &mut self,
        index: usize,
        probe: Probe,
        head_len: usize,
        has_body: bool,
    ) -> bool {
        let (status, text): (u16, &[u8]) = match probe {
            Probe::Liveness => (200, b"live\n"),
            Probe::Readiness if self.is_ready() => (200, b"ready\n"),
            Probe::Readiness => (503, b"draining\n"),
        };
        self.stats().probes.fetch_add(1, Ordering::Relaxed);
        let closing = !self.is_ready();
        let conn = &mut self.conns[index];
        conn.request_started = None; // Not a request of `cella_http_requests_total`.
        conn.consume(head_len);
        conn.close_after |= has_body;
        let persistence = conn.persistence(closing);
        let reply = TextReply { status, text, persistence, head_request: conn.request.head_method };
        // Compacts the buffer first when that makes room; `start` is taken after it.
        let room = conn.write_room(PROBE_REPLY_BYTES_MAX);
        let start = conn.write_end;
        let queued = room && {
            let mut sink = FixedSink { buf: conn.write.as_mut_slice(), len: start };
            let result = encode::put_text(&mut sink, reply, &self.date);
            conn.write_end = sink.len;
            result.is_ok()
        };
        if !queued {
            // No room behind the pipelined responses already queued: close after them.
            conn.write_end = start;
            conn.close_after = true;
        }
        conn.close_after |= persistence == encode::Persistence::Close;
        conn.phase = Phase::Writing;
        self.conns[index].deadline = Some(self.now + self.settings.response_write_timeout);
        true
    }
}
