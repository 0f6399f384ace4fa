//! A connection's table entry: its phase, its buffers, and moving bytes between them and its
//! socket. Owns reading into and writing out of the buffers and the state an answer depends
//! on (`RequestMeta`). Must not touch slots, parse HTTP or decide responses: the worker's other
//! files do that.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use cella_arena::Buffer;
use mio::net::TcpStream;

use crate::http::chunked::ChunkedDecoder;
use crate::http::encode::Persistence;
use crate::slot_request::BodyBuf;
use crate::tick::Tick;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Free,
    /// Waiting for the first byte of a request.
    Idle,
    /// Some bytes of a head have arrived.
    Head,
    /// The head is complete and a slot holds it; the body is being read into the arena.
    Body,
    /// The head is complete but every slot is busy (only with `slot_wait_timeout_ms` > 0).
    WaitingSlot,
    /// The handler runs or is suspended.
    Running,
    /// A response is being written.
    Writing,
    /// After a response that closes the connection: input is drained until EOF or a deadline.
    Linger,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum BodyState {
    None,
    Length(BodyBuf),
    Chunked(BodyBuf, ChunkedDecoder),
}

/// The part of a response that is written straight from the slot's memory (a head that did
/// not fit in the write buffer, a body larger than its free room), after the write buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub(super) head: (*const u8, usize),
    pub(super) body: (*const u8, usize),
    pub(super) sent: usize,
}

impl Pending {
    /// The unsent part of `(ptr, len)`, which starts `offset` bytes into the pending bytes.
    fn rest(&self, part: (*const u8, usize), offset: usize) -> &[u8] {
        let skip = self.sent.saturating_sub(offset).min(part.1);
        if skip == part.1 {
            return &[]; // Nothing left (or an absent part, whose pointer may be null).
        }
        // SAFETY: pending bytes are in the slot's arena (or static), which the slot keeps until
        // the connection clears `pending`; `skip < len`, so the pointer is a real one.
        unsafe { std::slice::from_raw_parts(part.0.add(skip), part.1 - skip) }
    }
}

/// One connection of the instance's table. It belongs to the worker that accepted it, for life;
/// the entry goes back to the instance's pool when the connection closes (ADR 0003).
pub(crate) struct Conn {
    pub(super) phase: Phase,
    /// When the current phase times out (see `deadlines.rs`).
    pub(super) deadline: Option<Tick>,
    /// The instance's I/O buffer pair this connection borrows while it reads a request or
    /// writes a response (`read` and `write` are that pair's buffers), or `None` with both
    /// empty: an idle connection holds no buffer memory.
    pub(super) io: Option<usize>,
    pub(super) stream: Option<TcpStream>,
    pub(super) remote: SocketAddr,
    pub(super) read: Buffer,
    pub(super) read_start: usize,
    pub(super) read_end: usize,
    pub(super) write: Buffer,
    pub(super) write_start: usize,
    pub(super) write_end: usize,
    pub(super) pending: Option<Pending>,
    pub(super) slot: Option<usize>,
    /// Close once everything queued is written.
    pub(super) close_after: bool,
    /// The peer closed its side: nothing more will be read.
    pub(super) eof: bool,
    /// A readiness event came and the socket has not been read dry since. Edge-triggered: a
    /// short read means no more bytes until the next event, so asking again would only cost a
    /// read(2) that returns EAGAIN.
    pub(super) readable: bool,
    /// Idle after a response (not a connection that has yet to send anything): may be closed
    /// to make room when the table is full.
    pub(super) kept_alive: bool,
    /// When it last became idle, as the worker's count of connections that became idle (a
    /// count, not a time: several connections go idle within one loop turn, whose clock is
    /// read once, and the oldest must still be told apart).
    pub(super) idle_order: u64,
    /// A readiness event reported the peer's FIN (or an error): read until end of stream.
    pub(super) peer_closed: bool,
    /// In the worker's `io_waiters`: bytes came, no I/O buffer pair was free.
    pub(super) waiting_io: bool,
    /// When the current head started (or its wait for a buffer pair): its age under pressure.
    pub(super) head_started: Tick,
    /// The head is complete and its small body is being read into the read buffer before a
    /// slot is claimed: the body deadline runs.
    pub(super) body_before_slot: bool,
    /// Holds one of the instance's `body_slots_max` (its body is arriving into its slot), and
    /// the current rate window: when it started, and the body's length then.
    pub(super) body_slot: Option<(Tick, usize)>,
    pub(super) body: BodyState,
    /// Of the request being served.
    pub(super) request: RequestMeta,
    /// When the worker first parsed the current request's bytes (for its duration metric);
    /// taken when its answer is counted (`observe.rs`).
    pub(super) request_started: Option<Tick>,
    /// Where the current request's head (or what has arrived of it) lies in the read buffer,
    /// as of its last parse: what the access log shows of a request answered without a slot.
    /// Nothing moves those bytes between the parse and the answer (the buffer is compacted
    /// only by `fill`, after which the head is parsed again).
    pub(super) head_range: (usize, usize),
}

/// What the answer to the current request depends on, from its head.
#[derive(Clone, Copy, Debug)]
pub(super) struct RequestMeta {
    pub(super) keep_alive: bool,
    pub(super) minor_version: u8,
    pub(super) head_method: bool,
}

// SAFETY: an entry changes owner only while free (no stream, no buffers, no pending response,
// no body: `close` clears them all before the index goes back to the pool); while owned, only
// the owning worker touches it (`pool::Owned`).
unsafe impl Send for Conn {}

impl RequestMeta {
    /// Before a head is parsed, or when it could not be: close, HTTP/1.1, with a body.
    pub(super) const UNKNOWN: RequestMeta =
        RequestMeta { keep_alive: false, minor_version: 1, head_method: false };
}

impl Conn {
    pub(super) fn new() -> Conn {
        Conn {
            phase: Phase::Free,
            deadline: None,
            io: None,
            stream: None,
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
            read: Buffer::empty(),
            read_start: 0,
            read_end: 0,
            write: Buffer::empty(),
            write_start: 0,
            write_end: 0,
            pending: None,
            slot: None,
            close_after: false,
            eof: false,
            readable: false,
            kept_alive: false,
            idle_order: 0,
            peer_closed: false,
            waiting_io: false,
            head_started: Tick::now(),
            body_before_slot: false,
            body_slot: None,
            body: BodyState::None,
            request: RequestMeta::UNKNOWN,
            request_started: None,
            head_range: (0, 0),
        }
    }

    /// The bytes of `head_range`, or nothing if the buffer no longer holds them.
    pub(super) fn parsed_head(&self) -> &[u8] {
        let (start, end) = self.head_range;
        self.read.as_slice().get(start..end).unwrap_or_default()
    }

    pub(super) fn buffered(&self) -> &[u8] {
        &self.read.as_slice()[self.read_start..self.read_end]
    }

    /// Reads until the buffer is full or the socket would block. Returns whether bytes came.
    pub(super) fn fill(&mut self) -> bool {
        if self.read_start > 0 && self.read_end == self.read.capacity() {
            self.read.as_mut_slice().copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        let mut got = false;
        let Some(stream) = self.stream.as_mut() else { return false };
        while self.read_end < self.read.capacity() {
            let buf = &mut self.read.as_mut_slice()[self.read_end..];
            let n = read_once(stream, buf, &mut self.readable, &mut self.eof, self.peer_closed);
            if n == 0 {
                break;
            }
            self.read_end += n;
            got = true;
        }
        got
    }

    /// Reads and drops everything the socket has (lingering after a response that closes).
    pub(super) fn discard_input(&mut self) {
        let mut scratch = [0u8; 4096];
        let Some(stream) = self.stream.as_mut() else { return };
        while read_once(stream, &mut scratch, &mut self.readable, &mut self.eof, self.peer_closed)
            > 0
        {}
    }

    /// Writes `bytes` at once, for a connection with nothing else queued; `false` when the
    /// socket did not take them all (the caller closes the connection).
    pub(super) fn write_directly(&mut self, bytes: &[u8]) -> bool {
        let Some(stream) = self.stream.as_mut() else { return false };
        let mut sent = 0;
        while sent < bytes.len() {
            match stream.write(&bytes[sent..]) {
                Ok(0) => return false,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    pub(super) fn consume(&mut self, count: usize) {
        self.read_start += count;
        if self.read_start == self.read_end {
            self.read_start = 0;
            self.read_end = 0;
        }
    }

    /// Writes queued bytes: the write buffer, then any pending bytes in slot memory, in one
    /// `writev`. Returns `Ok(true)` when everything is written.
    pub(super) fn flush(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else { return Ok(true) };
        loop {
            let buffered = &self.write.as_slice()[self.write_start..self.write_end];
            let (head, body) = match &self.pending {
                Some(p) => (p.rest(p.head, 0), p.rest(p.body, p.head.1)),
                None => (&[][..], &[][..]),
            };
            if buffered.is_empty() && head.is_empty() && body.is_empty() {
                self.write_start = 0;
                self.write_end = 0;
                self.pending = None;
                return Ok(true);
            }
            let slices = [IoSlice::new(buffered), IoSlice::new(head), IoSlice::new(body)];
            let written = match stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            let from_buffer = written.min(buffered.len());
            self.write_start += from_buffer;
            if let Some(p) = self.pending.as_mut() {
                p.sent += written - from_buffer;
            }
        }
    }

    /// Room for `bytes` more in the write buffer, compacting it if that helps.
    pub(super) fn write_room(&mut self, bytes: usize) -> bool {
        if self.pending.is_some() {
            return false;
        }
        if self.write_end + bytes > self.write.capacity() && self.write_start > 0 {
            self.write.as_mut_slice().copy_within(self.write_start..self.write_end, 0);
            self.write_end -= self.write_start;
            self.write_start = 0;
        }
        self.write_end + bytes <= self.write.capacity()
    }

    pub(super) fn persistence(&self, draining: bool) -> Persistence {
        // After the client's FIN, requests it sent before are still answered (in order); the
        // answer to the last one closes.
        let input_over = self.eof && self.read_start == self.read_end;
        if !self.request.keep_alive || self.close_after || draining || input_over {
            Persistence::Close
        } else if self.request.minor_version == 0 {
            Persistence::KeepAliveHttp10
        } else {
            Persistence::KeepAlive
        }
    }
}

/// One read(2), edge-triggered style: returns 0 when nothing can be read until the next
/// readiness event (a short read or EAGAIN clears `readable`), or at end of stream (`eof`).
///
/// `peer_closed`: the readiness event said the peer shut down its side. Its FIN came with the
/// same edge as the last bytes, so a short read must not end reading: only the next read, which
/// returns 0, tells the end of the stream, and no other event will come to ask for it.
pub(super) fn read_once(
    stream: &mut TcpStream,
    buf: &mut [u8],
    readable: &mut bool,
    eof: &mut bool,
    peer_closed: bool,
) -> usize {
    if !*readable || *eof || buf.is_empty() {
        return 0;
    }
    loop {
        match stream.read(buf) {
            Ok(0) => *eof = true,
            Ok(n) => {
                *readable = n == buf.len() || peer_closed;
                return n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
            Err(_) => *eof = true,
        }
        return 0;
    }
}
