//! Reading requests: driving a connection forward, parsing its head, claiming a slot for it,
//! and reading its body into the slot's arena. Must not write responses (it queues errors
//! through `respond.rs`) or run handlers (it hands a complete request to `slots.rs`).

use super::conn::{read_once, BodyState, Phase, RequestMeta};
use super::Worker;
use crate::http::chunked::ChunkedDecoder;
use crate::http::parse::{self, Framing};
use crate::http::ErrorKind;
use crate::slot_request::{BodyBuf, CopyError, RawRequest};

impl Worker {
    /// Moves a connection forward as far as it can go without waiting.
    pub(super) fn drive(&mut self, index: usize) {
        self.drive_connection(index);
        // A slot kept for this connection's next pipelined request that did not come whole.
        self.release_slot_spare();
    }

    fn drive_connection(&mut self, index: usize) {
        loop {
            // The entry may have been closed (and given back to the instance) since `index` was
            // queued or stored, or on the way.
            let Some(conn) = self.conns.get(index) else { return };
            let progressed = match conn.phase {
                Phase::Free | Phase::WaitingSlot | Phase::Running => false,
                Phase::Idle | Phase::Head => self.read_head(index),
                Phase::Body => self.read_body(index),
                Phase::Writing => self.write(index),
                Phase::Linger => self.linger(index),
            };
            if !progressed {
                break;
            }
        }
        // Stuck until more bytes come: send what is queued (pipelined responses go out here,
        // in one write).
        let Some(conn) = self.conns.get_mut(index) else { return }; // Closed on the way.
        if conn.phase != Phase::Free
            && conn.phase != Phase::Writing
            && conn.write_end > conn.write_start
        {
            if conn.flush().is_err() {
                self.close(index);
            }
        }
    }

    pub(super) fn read_head(&mut self, index: usize) -> bool {
        let mut conn = &mut self.conns[index];
        if conn.io.is_none() {
            // An idle connection holds no buffer: it borrows one when a readiness event says
            // bytes (or the end of the stream) may have come, and gives it back below if not.
            if !conn.readable && !conn.eof && !conn.waiting_io {
                return false;
            }
            if !self.borrow_io_buffers(index) {
                self.wait_for_io_buffers(index);
                return false;
            }
            conn = &mut self.conns[index];
        }
        if conn.read_start == conn.read_end || conn.phase == Phase::Head {
            conn.fill();
        }
        if conn.read_start == conn.read_end {
            if conn.eof {
                self.close(index);
            } else {
                // Nothing of a request has come: the pair goes back, in `Head` too (a
                // connection that waited for a pair is in `Head`, its deadline running, and
                // may find nothing once it has one: a stale readiness event of the entry's
                // previous connection). Holding it would starve the others for nothing.
                self.return_io_buffers_if_empty(index);
            }
            return false;
        }
        if conn.phase == Phase::Idle {
            self.start_head(index);
        }
        self.parse_head(index)
    }

    /// Connection `index` starts reading a request head: its deadline and its age start now.
    pub(super) fn start_head(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        conn.phase = Phase::Head;
        conn.head_range = (0, 0); // Nothing of this request is parsed yet.
        conn.head_started = self.now;
        conn.deadline = Some(self.now + self.settings.header_read_timeout);
    }

    /// Parses the buffered head; on success claims a slot and moves on to the body.
    pub(super) fn parse_head(&mut self, index: usize) -> bool {
        // The request's bytes are parsed now (or were, by an earlier call): its duration starts.
        // The loop's clock: read at the start of the turn, and again after each answer
        // (`count_response`), so it is not older than the previous request's answer.
        let now = self.now;
        let conn = &mut self.conns[index];
        conn.request_started.get_or_insert(now);
        let mut storage =
            [std::mem::MaybeUninit::uninit(); cella_shared::limits::HEADERS_COUNT_MAX];
        let headers = &mut storage[..self.settings.headers_count_max];
        // What the access log reads of a request answered without a slot: it stops at the end
        // of the head, so the body or pipelined requests after it do not matter.
        conn.head_range = (conn.read_start, conn.read_end);
        let conn = &self.conns[index];
        let buffered = conn.buffered();
        let (head, fields) = match parse::parse_head(buffered, headers, self.settings.head_limits) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                if conn.eof {
                    self.close(index);
                } else if conn.read_start > 0 && conn.read_end == conn.read.capacity() {
                    return self.conns[index].fill();
                }
                return false;
            }
            Err(kind) => {
                // Nothing of this request is known: its answer closes (every parse error
                // does) and must not inherit the previous request's HEAD or keep-alive.
                self.conns[index].request = RequestMeta::UNKNOWN;
                return self.fail(index, kind);
            }
        };
        // Every answer from here on, errors and 503 included, follows this request's own
        // method, version and Connection header.
        let meta = RequestMeta {
            keep_alive: head.keep_alive,
            minor_version: head.minor_version,
            head_method: head.method == "HEAD",
        };
        if let Some(probe) = self.probe_of(head.method, head.parts.path(head.target)) {
            let (head_len, has_body) = (head.len, head.framing != Framing::Empty);
            self.conns[index].request = meta;
            return self.answer_probe(index, probe, head_len, has_body);
        }
        if let Framing::Length(length) = head.framing {
            if length > self.settings.body_bytes_max as u64 {
                self.conns[index].request = meta;
                return self.fail(index, ErrorKind::BodyTooLarge);
            }
        }
        if let Framing::Length(length) = head.framing {
            // A body that fits the read buffer is read before a slot is claimed: a client that
            // sends a head and stalls holds a connection (until the head deadline), never a
            // slot. Not with `Expect: 100-continue`, whose client waits for our answer first.
            let whole = head.len as u64 + length;
            let capacity = conn.read.capacity() as u64;
            if !head.expect_continue && whole <= capacity && (buffered.len() as u64) < whole {
                let (eof, compact) =
                    (conn.eof, conn.read_start > 0 && conn.read_end == conn.read.capacity());
                let conn = &mut self.conns[index];
                if !conn.body_before_slot {
                    // The head is complete: from now on the body's deadline runs.
                    conn.body_before_slot = true;
                    conn.deadline = Some(self.now + self.settings.body_read_timeout);
                }
                if eof {
                    self.close(index);
                } else if compact {
                    return self.conns[index].fill();
                }
                return false;
            }
        }
        let spare = self.slot_spare.take();
        let Some(slot_index) = spare.or_else(|| self.slots.claim()) else {
            let (head_len, has_body) = (head.len, head.framing != Framing::Empty);
            self.conns[index].request = meta;
            return self.no_slot(index, head_len, has_body);
        };
        let slot = &mut self.slots[slot_index];
        slot.sockets.set_registry(self.poll.registry());
        if self.settings.quarantine {
            slot.memory.arena.protect(true).expect("lifting a slot's quarantine succeeds");
        }
        let copied =
            RawRequest::copy_in(&slot.arena, &buffered[..head.len], &head, fields, conn.remote);
        let request = match copied {
            Ok(request) => request,
            Err(error) => {
                self.release_slot(slot_index);
                self.conns[index].request = meta;
                return self.fail(
                    index,
                    match error {
                        CopyError::Alloc => ErrorKind::HeadersTooLarge,
                        CopyError::OutsideHead => ErrorKind::MalformedHead,
                    },
                );
            }
        };
        slot.fail_alloc_at =
            if self.settings.fault_injection { fail_alloc_header(fields) } else { 0 };
        slot.request = Some(request);
        slot.conn = index;
        let body = match head.framing {
            Framing::Empty => Ok(BodyState::None),
            Framing::Length(length) => {
                BodyBuf::alloc(&slot.arena, length as usize).map(BodyState::Length)
            }
            Framing::Chunked => {
                BodyBuf::alloc(&slot.arena, self.settings.body_bytes_max).map(|buf| {
                    let limits =
                        (self.settings.chunk_extension_bytes_max, self.settings.trailer_bytes_max);
                    BodyState::Chunked(buf, ChunkedDecoder::new(limits.0, limits.1))
                })
            }
        };
        let (head_len, expect_continue) = (head.len, head.expect_continue);
        // Only this worker writes its counters: no locked add (`metrics::add`).
        crate::metrics::add(&self.stats().requests, 1);
        let conn = &mut self.conns[index];
        conn.consume(head_len);
        conn.slot = Some(slot_index);
        conn.request = meta;
        let Ok(body) = body else { return self.fail(index, ErrorKind::BodyTooLarge) };
        conn.body = body;
        if expect_continue && !matches!(body, BodyState::None) && conn.read_start == conn.read_end {
            const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            if conn.write_room(CONTINUE.len()) {
                conn.write.as_mut_slice()[conn.write_end..conn.write_end + CONTINUE.len()]
                    .copy_from_slice(CONTINUE);
                conn.write_end += CONTINUE.len();
                let _ = conn.flush();
            }
        }
        conn.phase = Phase::Body;
        conn.deadline = Some(self.now + self.settings.body_read_timeout);
        true
    }

    pub(super) fn read_body(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        if matches!(conn.body, BodyState::None) {
            // No body (most requests): nothing to read, no state to copy out and back.
            return self.body_complete(index);
        }
        let mut state = conn.body;
        let done: Result<bool, ErrorKind> = match &mut state {
            BodyState::None => Ok(true),
            BodyState::Length(buf) => {
                let buffered = &conn.read.as_slice()[conn.read_start..conn.read_end];
                let take = buffered.len().min(buf.unfilled().len());
                buf.unfilled()[..take].copy_from_slice(&buffered[..take]);
                buf.filled += take;
                conn.read_start += take;
                if conn.read_start == conn.read_end {
                    (conn.read_start, conn.read_end) = (0, 0);
                }
                // Read the rest straight into the arena.
                if let Some(stream) = conn.stream.as_mut() {
                    while !buf.is_full() {
                        let n = read_once(
                            stream,
                            buf.unfilled(),
                            &mut conn.readable,
                            &mut conn.eof,
                            conn.peer_closed,
                        );
                        if n == 0 {
                            break;
                        }
                        buf.filled += n;
                    }
                }
                Ok(buf.is_full())
            }
            BodyState::Chunked(buf, decoder) => loop {
                let buffered = &conn.read.as_slice()[conn.read_start..conn.read_end];
                match decoder.decode(buffered, buf.unfilled()) {
                    Ok(progress) => {
                        buf.filled += progress.produced;
                        conn.read_start += progress.consumed;
                        if conn.read_start == conn.read_end {
                            (conn.read_start, conn.read_end) = (0, 0);
                        }
                    }
                    Err(kind) => break Err(kind),
                }
                if decoder.is_done() || !conn.fill() {
                    break Ok(decoder.is_done());
                }
            },
        };
        conn.body = state;
        let done = match done {
            Ok(done) => done,
            Err(kind) => return self.fail(index, kind),
        };
        let conn = &mut self.conns[index];
        if !done {
            if conn.eof {
                self.close(index);
            } else if !self.take_body_slot(index) {
                // Waiting for the rest would hold a slot past the instance's share for bodies.
                return self.fail(index, ErrorKind::BodySlotsFull);
            }
            return false;
        }
        self.body_complete(index)
    }

    /// Connection `index`'s request is complete (its body, if any, is in the slot's arena):
    /// starts its handler.
    fn body_complete(&mut self, index: usize) -> bool {
        let mut conn = &mut self.conns[index];
        if conn.body_slot.is_some() {
            self.give_back_body_slot(index);
            conn = &mut self.conns[index];
        }
        let slot_index = conn.slot.expect("a connection reading a body holds a slot");
        let body = match conn.body {
            BodyState::None => None,
            BodyState::Length(buf) | BodyState::Chunked(buf, _) => Some(buf),
        };
        conn.body = BodyState::None;
        conn.phase = Phase::Running;
        conn.deadline = None;
        let slot = &mut self.slots[slot_index];
        if let (Some(request), Some(body)) = (slot.request.as_mut(), body) {
            request.set_body(body, &slot.arena);
        }
        self.start_handler(slot_index);
        true
    }
}

/// The `x-cella-fail-alloc: K` test header (honoured only with `fault_injection = true`).
fn fail_alloc_header(fields: &[httparse::Header<'_>]) -> u32 {
    fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-cella-fail-alloc"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
