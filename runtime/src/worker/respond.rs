//! Writing answers: the 503 for no free slot, errors from the one status table, a handler's
//! response (into the write buffer, or from the slot's memory when it does not fit), flushing,
//! and what the connection does after a response (next request, keep-alive, linger). Must not
//! parse requests or resume handlers.

use std::net::Shutdown;
use std::sync::atomic::Ordering;

use super::conn::{BodyState, Pending, Phase};
use super::nudge::Freed;
use super::Worker;
use crate::handler::Response;
use crate::http::encode::{self, FixedSink, HeadFrame, Persistence};
use crate::http::ErrorKind;

/// Room for an error response written straight to the socket (the longest status line, the
/// runtime's headers and the longest message of the error table fit with room to spare).
const ERROR_RESPONSE_BYTES_MAX: usize = 512;

impl Worker {
    /// Every slot is busy: wait for one (when configured) or answer 503 at once.
    pub(super) fn no_slot(&mut self, index: usize, head_len: usize, has_body: bool) -> bool {
        let conn = &mut self.conns[index];
        if !self.settings.slot_wait_timeout.is_zero()
            && self.slot_waiters.len() < self.slot_waiters.capacity()
        {
            conn.phase = Phase::WaitingSlot;
            self.conns[index].deadline = Some(self.now + self.settings.slot_wait_timeout);
            self.slot_waiters.push_back(index);
            // Before this turn's `admit_slot_waiters` looks at the pool (`nudge.rs`).
            self.set_waiting(Freed::Slot, true);
            return false;
        }
        conn.consume(head_len);
        if has_body {
            // The body was not read, so the connection's framing is lost: close after the 503.
            conn.close_after = true;
        }
        self.stats().busy_rejections.fetch_add(1, Ordering::Relaxed);
        self.queue_error(index, ErrorKind::NoSlot);
        true
    }

    /// Answers the connection's current request with an error.
    pub(super) fn fail(&mut self, index: usize, kind: ErrorKind) -> bool {
        self.give_back_body_slot(index);
        self.conns[index].body = BodyState::None;
        if kind.response().status < 500 {
            self.stats().client_errors.fetch_add(1, Ordering::Relaxed);
        }
        // Queued (and logged) while the slot still holds the request's head and arena mark.
        self.queue_error(index, kind);
        if let Some(slot) = self.conns[index].slot.take() {
            self.release_slot(slot);
        }
        true
    }

    pub(super) fn queue_error(&mut self, index: usize, kind: ErrorKind) {
        let response = kind.response();
        let head_request = self.conns[index].request.head_method;
        // As `encode::put_error` writes it: the message and a newline, unless HEAD.
        let body_bytes = if encode::BodyRule::of(response.status, head_request).body {
            response.message.len() + 1
        } else {
            0
        };
        self.count_error(index, kind, body_bytes);
        let borrowed = self.borrow_io_buffers(index);
        let closing = !self.is_ready();
        let conn = &mut self.conns[index];
        conn.close_after |= response.close;
        let persistence = conn.persistence(closing);
        conn.close_after |= persistence == Persistence::Close;
        let reply = encode::ErrorReply {
            status: response.status,
            message: response.message,
            persistence,
            retry_after_s: (response.status == 503).then_some(self.settings.retry_after_s),
            head_request: conn.request.head_method,
        };
        let start = conn.write_end;
        let queued = if borrowed {
            conn.write_room(0) && {
                let mut sink = FixedSink { buf: conn.write.as_mut_slice(), len: start };
                let result = encode::put_error(&mut sink, reply, &self.date);
                conn.write_end = sink.len;
                result.is_ok()
            }
        } else {
            // Every I/O buffer pair is lent: an error is small and this connection has nothing
            // else queued, so it goes straight to the socket; if the socket will not take it
            // whole, the connection is closed instead.
            let mut scratch = [0u8; ERROR_RESPONSE_BYTES_MAX];
            let mut sink = FixedSink { buf: &mut scratch, len: 0 };
            encode::put_error(&mut sink, reply, &self.date).is_ok()
                && conn.write_directly(&sink.buf[..sink.len])
        };
        if !queued {
            conn.write_end = start;
            conn.close_after = true;
        }
        conn.phase = Phase::Writing;
        self.conns[index].deadline = Some(self.now + self.settings.response_write_timeout);
    }

    /// Queues a handler's response behind what the connection already has queued.
    pub(super) fn respond(&mut self, index: usize, slot_index: usize, response: Response<'static>) {
        // Without a pair (every one lent), the head is encoded into the slot's arena and
        // written from there with the body.
        self.borrow_io_buffers(index);
        // An interim (1xx) status cannot end a request; `101` would leave the client thinking
        // the connection changed protocol while we go on speaking HTTP.
        // One pass over the headers: each is valid, and whether one says `connection: close`
        // (the content type set by `Response::text` and its kin is a valid constant).
        let mut close = false;
        let valid = !response.status().is_informational()
            && response.added_headers().all(|(name, value)| {
                close |=
                    name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close");
                encode::header_allowed(name, value.as_bytes())
            });
        if !valid {
            drop(response);
            self.fail(index, ErrorKind::BadResponse);
            return;
        }
        let status = response.status().as_u16();
        // From the first shutdown signal on, every answer closes its connection, even one this
        // worker gives before its loop has seen the signal.
        let closing = !self.is_ready();
        let conn = &mut self.conns[index];
        conn.close_after |= close;
        let slot = &mut self.slots[slot_index];
        let body = response.body_bytes();
        let frame = HeadFrame {
            status: response.status().as_u16(),
            content_length: body.len(),
            persistence: conn.persistence(closing),
            date: &self.date,
        };
        conn.close_after |= frame.persistence == Persistence::Close;
        let rule = encode::BodyRule::of(frame.status, conn.request.head_method);
        let sent_body: &[u8] = if rule.body { body } else { &[] };
        let start = conn.write_end;
        let mut in_buffer = conn.write_room(0) && {
            let mut sink = FixedSink { buf: conn.write.as_mut_slice(), len: start };
            let encoded = put_head(&mut sink, frame, &response).is_ok();
            conn.write_end = sink.len;
            encoded
        };
        let mut head_pending = (std::ptr::null(), 0);
        if !in_buffer {
            conn.write_end = start;
            let mut head = cella_arena::ArenaVec::new_in(&slot.arena);
            if put_head(&mut head, frame, &response).is_err() {
                drop(response);
                self.fail(index, ErrorKind::BadResponse);
                return;
            }
            let head = head.into_slice();
            head_pending = (head.as_ptr(), head.len());
        }
        if in_buffer && conn.write_room(sent_body.len()) {
            conn.write.as_mut_slice()[conn.write_end..conn.write_end + sent_body.len()]
                .copy_from_slice(sent_body);
            conn.write_end += sent_body.len();
        } else {
            in_buffer = false;
            conn.pending = Some(Pending {
                head: head_pending,
                body: (sent_body.as_ptr(), sent_body.len()),
                sent: 0,
            });
        }
        conn.phase = Phase::Writing;
        conn.deadline = Some(self.now + self.settings.response_write_timeout);
        // Before the slot is released: the access log reads the request's head from it.
        self.count_response(index, status, sent_body.len());
        let slot = &mut self.slots[slot_index];
        if in_buffer {
            // Everything is copied: the slot is free for the next request at once.
            slot.drop_in_route(response);
            let conn = &mut self.conns[index];
            conn.slot = None;
            // Pipelining: the next request is already buffered and takes this slot next.
            let next_buffered = conn.read_start < conn.read_end && !conn.close_after;
            self.keep_freed_slot = next_buffered && self.may_keep_slot();
            self.release_slot(slot_index);
        } else {
            slot.response = Some(response);
        }
    }
}

fn put_head(
    sink: &mut impl encode::Sink,
    frame: HeadFrame<'_>,
    response: &Response<'_>,
) -> Result<(), encode::Full> {
    encode::put_frame(sink, frame)?;
    if let Some(content_type) = response.content_type {
        sink.put(content_type.line)?;
    }
    for (name, value) in response.added_headers() {
        if !encode::header_owned_by_runtime(name) {
            encode::put_header(sink, name, value.as_bytes())?;
        }
    }
    sink.put(b"\r\n")
}

impl Worker {
    pub(super) fn write(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        // Pipelining: while the queued responses sit in the write buffer (none is pending in
        // slot memory), go on with the next buffered request and write them all at once later.
        let batching = conn.pending.is_none()
            && !conn.close_after
            && conn.read_start < conn.read_end
            && conn.write_end < conn.write.capacity() / 2;
        if batching {
            self.start_head(index);
            return true;
        }
        match conn.flush() {
            Ok(true) => {
                if let Some(slot) = conn.slot.take() {
                    self.release_slot(slot);
                }
                self.after_response(index);
                true
            }
            Ok(false) => false,
            Err(_) => {
                self.close(index);
                false
            }
        }
    }

    pub(super) fn after_response(&mut self, index: usize) {
        // The next request starts from a clean state.
        self.conns[index].body_before_slot = false;
        let conn = &mut self.conns[index];
        if conn.close_after {
            if let Some(stream) = conn.stream.as_ref() {
                let _ = stream.shutdown(Shutdown::Write);
            }
            conn.phase = Phase::Linger;
            self.conns[index].deadline = Some(self.now + self.settings.linger_timeout);
        } else if conn.read_start < conn.read_end {
            self.start_head(index);
        } else {
            conn.phase = Phase::Idle;
            conn.kept_alive = true;
            self.idle_count += 1;
            conn.idle_order = self.idle_count;
            self.conns[index].deadline = Some(self.now + self.settings.keepalive_idle_timeout);
            // Idle between requests: the connection holds no buffer memory.
            self.return_io_buffers_if_empty(index);
        }
    }

    /// Discards input until the client closes (or the linger deadline, in the sweep).
    pub(super) fn linger(&mut self, index: usize) -> bool {
        // Everything is written; what comes now is discarded, so no buffer pair is needed.
        self.return_io_buffers(index);
        let conn = &mut self.conns[index];
        conn.discard_input();
        if conn.eof {
            self.close(index);
        }
        false
    }
}
