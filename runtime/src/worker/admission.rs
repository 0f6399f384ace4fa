//! Admission and the end of connections: accepting (with the EMFILE shed), taking a table entry
//! or turning the connection away, closing an entry, and starting the drain. Must not read
//! requests or touch a slot except to cancel the one a closing connection holds.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::conn::{BodyState, Phase, RequestMeta};
use super::nudge::Freed;
use super::{Worker, ACCEPT_PAUSE};
use crate::http::encode::{self, FixedSink, Persistence};
use crate::metrics::Reason;

impl Worker {
    pub(super) fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, remote)) => {
                    self.admit(stream, remote);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    self.shed_one_connection();
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED and friends concern one connection only: keep accepting.
                Err(_) => {
                    self.stats().connections_rejected.fetch_add(1, Ordering::Relaxed);
                }
            };
        }
    }

    /// Out of descriptors: free the spare one to accept and close the newest connection, so
    /// the client learns at once instead of waiting in the backlog, then take the spare back.
    pub(super) fn shed_one_connection(&mut self) {
        self.stats().connections_rejected.fetch_add(1, Ordering::Relaxed);
        self.count_rejected_connection(Reason::FdLimit);
        if self.spare_fd.take().is_some() {
            if let Some(listener) = self.listener.as_ref() {
                if let Ok((stream, _)) = listener.accept() {
                    drop(stream);
                }
            }
            self.spare_fd = std::fs::File::open("/dev/null").ok();
        }
    }

    pub(super) fn admit(&mut self, stream: TcpStream, remote: SocketAddr) {
        let claimed = self.conns.claim().or_else(|| {
            self.evict_oldest_idle();
            self.conns.claim()
        });
        match claimed {
            Some(index) => self.admit_into(index, stream, remote),
            // Nothing of this worker's is idle: another worker's may be (`eviction.rs`).
            None => {
                if let Err(stream) = self.hold_for_room(stream, remote) {
                    self.turn_away(stream);
                }
            }
        }
    }

    /// The table is full with nothing idle to close: say so politely, then close.
    pub(super) fn turn_away(&mut self, mut stream: TcpStream) {
        self.stats().connections_rejected.fetch_add(1, Ordering::Relaxed);
        self.count_rejected_connection(Reason::TooManyConnections);
        let mut head = [0u8; 256];
        let mut sink = FixedSink { buf: &mut head, len: 0 };
        let reply = encode::ErrorReply {
            status: 503,
            message: "too many connections",
            persistence: Persistence::Close,
            retry_after_s: Some(self.settings.retry_after_s),
            head_request: false,
        };
        if encode::put_error(&mut sink, reply, &self.date).is_ok() {
            let _ = stream.write(&sink.buf[..sink.len]);
        }
    }

    /// Connection `stream` takes the entry `index` this worker just claimed.
    pub(super) fn admit_into(&mut self, index: usize, mut stream: TcpStream, remote: SocketAddr) {
        if self
            .poll
            .registry()
            .register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.conns.release(index);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.stats().connections_accepted.fetch_add(1, Ordering::Relaxed);
        let closing = !self.is_ready();
        let conn = &mut self.conns[index];
        conn.stream = Some(stream);
        conn.remote = remote;
        conn.phase = Phase::Idle;
        conn.request = RequestMeta::UNKNOWN;
        conn.deadline = Some(self.now + self.settings.header_read_timeout);
        conn.close_after = closing;
        conn.eof = false;
        conn.readable = true;
        conn.kept_alive = false;
        conn.peer_closed = false;
        conn.request_started = None;
        self.live_conns += 1;
        self.drive(index);
    }

    /// The table is full: close the keep-alive connection idle the longest (it has no request
    /// in flight, and HTTP clients retry on a keep-alive connection the server closed), as
    /// nginx does, so that a new client is served instead of turned away. Scans the table:
    /// this runs only when it is full. Only this worker's connections can be closed here; when
    /// it has none idle, another worker is asked (`eviction.rs`). Returns whether one closed.
    pub(super) fn evict_oldest_idle(&mut self) -> bool {
        let oldest = (0..self.conns.len())
            .filter(|&index| self.conns.owns(index))
            .filter(|&index| {
                let conn = &self.conns[index];
                conn.phase == Phase::Idle
                    && conn.kept_alive
                    && conn.read_start == conn.read_end
                    && conn.write_start == conn.write_end
            })
            .min_by_key(|&index| self.conns[index].idle_order);
        let Some(index) = oldest else { return false };
        self.stats().idle_evictions.fetch_add(1, Ordering::Relaxed);
        self.close(index);
        true
    }

    pub(super) fn close(&mut self, index: usize) {
        if !self.conns.owns(index) || self.conns[index].phase == Phase::Free {
            return;
        }
        if let Some(slot) = self.conns[index].slot.take() {
            if self.slots[slot].task.is_some() {
                // The handler had not finished: its client went away.
                self.stats().metrics.client_gone.fetch_add(1, Ordering::Relaxed);
            }
            self.cancel_task(slot);
            self.release_slot(slot);
        }
        self.return_io_buffers(index);
        self.stop_waiting_for_io_buffers(index);
        self.give_back_body_slot(index);
        let conn = &mut self.conns[index];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.phase = Phase::Free;
        conn.read_start = 0;
        conn.read_end = 0;
        conn.write_start = 0;
        conn.write_end = 0;
        conn.pending = None;
        conn.deadline = None;
        conn.close_after = false;
        conn.eof = false;
        conn.body_before_slot = false;
        conn.body = BodyState::None;
        self.conns.release(index);
        self.nudge_waiters(Freed::Conn);
        self.live_conns -= 1;
    }

    /// The instance stopped being ready (the drain delay): keep accepting and serving, but
    /// close each connection after its current or next response, so clients move elsewhere
    /// before the listener closes.
    pub(super) fn become_unready(&mut self) {
        self.unready = true;
        for index in 0..self.conns.len() {
            if self.conns.owns(index) {
                self.conns[index].close_after = true;
            }
        }
    }

    pub(super) fn start_drain(&mut self) {
        self.draining = true;
        self.turn_away_held_accepts();
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for index in 0..self.conns.len() {
            if !self.conns.owns(index) {
                continue;
            }
            let conn = &mut self.conns[index];
            match conn.phase {
                Phase::Idle if conn.read_start == conn.read_end => self.close(index),
                Phase::Free => {}
                _ => conn.close_after = true,
            }
        }
        // A draining worker keeps no free pair (`may_keep_io_spare`): the workers still
        // draining after it has exited must find every free pair in the pool.
        self.release_io_spare();
    }
}
