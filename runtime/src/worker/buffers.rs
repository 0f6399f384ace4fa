//! Lending I/O buffer pairs: a connection borrows one of the instance's pairs when it has bytes
//! to read (or, with none, an answer to write) and gives it back as soon as it holds nothing in
//! it (idle between requests, or its handler running with nothing buffered), so an idle
//! connection costs no buffer memory. When every pair is lent, a connection that must read
//! waits in `io_waiters` (its head deadline runs). Must not parse, respond or touch slots.
//!
//! A worker keeps at most one free pair for its own next read (`Worker::io_spare`) while no
//! connection of the instance waits for one: a keep-alive request then borrows and returns it
//! without the pool's atomic operations (~200 instructions a request). A connection on another
//! worker that finds the pool dry wakes every worker that may keep one (`nudge.rs`), and the
//! kept pair goes back to the pool on that worker's next loop turn. The kept pair shows as
//! lent in the admin's `io_buffers_free`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Phase;
use super::nudge::Freed;
use super::Worker;
use crate::http::ErrorKind;

/// How long a connection must have been reading its head before, with every I/O buffer pair
/// lent, its pair is taken back (408). A request sent in one go is read in microseconds.
const HEAD_PRESSURE_AGE_MIN: Duration = Duration::from_secs(1);

impl Worker {
    /// Borrows a pair for connection `index` if it has none. `false`: every pair is lent.
    pub(super) fn borrow_io_buffers(&mut self, index: usize) -> bool {
        // One reference to the entry throughout (the pools are other fields of the worker).
        let conn = &mut self.conns[index];
        if conn.io.is_some() {
            return true;
        }
        let pair = match self.io_spare.take() {
            Some(pair) => pair,
            None => match self.bufs.claim() {
                Some(pair) => pair,
                None => return false,
            },
        };
        let memory = self.bufs[pair].take().expect("a free I/O buffer pair is in its cell");
        debug_assert!(conn.read_start == conn.read_end && conn.write_start == conn.write_end);
        (conn.read, conn.write) = (memory.read, memory.write);
        (conn.read_start, conn.read_end, conn.write_start, conn.write_end) = (0, 0, 0, 0);
        conn.io = Some(pair);
        true
    }

    /// Gives connection `index`'s pair back when nothing is left in it: no buffered input, no
    /// queued output. Returns whether the connection now holds no pair.
    pub(super) fn return_io_buffers_if_empty(&mut self, index: usize) -> bool {
        let conn = &self.conns[index];
        let empty = conn.read_start == conn.read_end
            && conn.write_start == conn.write_end
            && conn.pending.is_none();
        if !empty && conn.phase != Phase::Free {
            return conn.io.is_none();
        }
        self.return_io_buffers(index);
        true
    }

    /// Gives connection `index`'s pair back, whatever it holds (the connection is closing).
    pub(super) fn return_io_buffers(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        let Some(pair) = conn.io.take() else { return };
        let read = std::mem::replace(&mut conn.read, cella_arena::Buffer::empty());
        let write = std::mem::replace(&mut conn.write, cella_arena::Buffer::empty());
        (conn.read_start, conn.read_end, conn.write_start, conn.write_end) = (0, 0, 0, 0);
        self.bufs[pair] = Some(cella_arena::ConnectionMemory { read, write });
        if self.io_spare.is_none() && self.may_keep_io_spare() {
            self.io_spare = Some(pair);
            return;
        }
        self.bufs.release(pair);
        self.nudge_waiters(Freed::IoBuffers);
        self.admit_io_waiters();
    }

    /// Whether this worker may keep a free pair: none of its connections waits for one (they
    /// would take it at once) and no other worker's does. Says it may keep one before it looks
    /// (`nudge.rs`: a worker that starts waiting after this look wakes this one).
    fn may_keep_io_spare(&self) -> bool {
        // Draining: the worker exits once its connections are closed, and a pair kept then
        // would never go back.
        if self.draining || !self.io_waiters.is_empty() {
            return false;
        }
        self.announce_io_spare();
        // SeqCst: after the announcement (see `nudge.rs`).
        self.shared.io_waiting.load(Ordering::SeqCst) == 0
    }

    /// A connection of the instance waits for a pair: the one this worker keeps goes back to
    /// the pool. Called every loop turn (after a wake) and before every handler run, so a
    /// waiter waits at most for the keeper's current handler run.
    #[inline]
    pub(super) fn release_io_spare_if_wanted(&mut self) {
        // SeqCst: pairs with the waiter's increment in `wait_for_io_buffers` (`nudge.rs`); a
        // plain load on x86.
        if self.io_spare.is_some() && self.shared.io_waiting.load(Ordering::SeqCst) > 0 {
            self.release_io_spare();
        }
    }

    /// Gives the pair this worker keeps (if any) back to the pool.
    pub(super) fn release_io_spare(&mut self) {
        if let Some(pair) = self.io_spare.take() {
            self.bufs.release(pair);
            self.nudge_waiters(Freed::IoBuffers);
        }
    }

    /// Lets connections waiting for a pair try again while the instance has free pairs (one per
    /// free pair). A pair freed by another worker wakes this one at once (`nudge.rs`).
    #[inline]
    pub(super) fn admit_io_waiters(&mut self) {
        // Inlined check, the rest out of line: called on every loop turn and every return.
        if !self.io_waiters.is_empty() {
            self.admit_io_waiters_now();
        }
    }

    #[inline(never)]
    fn admit_io_waiters_now(&mut self) {
        let mut free = self.bufs.table().pool().free_count();
        while free > 0 {
            let Some(waiter) = self.io_waiters.pop_front() else { break };
            if self.conns.owns(waiter) && self.conns[waiter].waiting_io {
                self.stop_waiting_for_io_buffers(waiter);
                self.runnable.push_back(waiter);
                free -= 1;
            }
        }
        if self.io_waiters.is_empty() {
            self.set_waiting(Freed::IoBuffers, false);
        }
    }

    /// Connection `index` has bytes to read and no pair is free: wait for one.
    pub(super) fn wait_for_io_buffers(&mut self, index: usize) {
        if self.conns[index].waiting_io {
            return;
        }
        if self.conns[index].phase == Phase::Idle {
            self.start_head(index);
        }
        self.conns[index].waiting_io = true;
        self.io_waiters.push_back(index);
        // Before this turn's `admit_io_waiters` looks at the pool (`nudge.rs`).
        self.set_waiting(Freed::IoBuffers, true);
        self.stats().io_buffer_waits.fetch_add(1, Ordering::Relaxed);
        // SeqCst: then the workers that may keep a free pair are woken to give it back
        // (`nudge.rs`); also a hint for the other workers' sweeps (`relieve_io_pressure`).
        self.shared.io_waiting.fetch_add(1, Ordering::SeqCst);
        self.wake_io_spare_keepers();
    }

    /// Connection `index` no longer waits for a pair (it got one, or it closed).
    pub(super) fn stop_waiting_for_io_buffers(&mut self, index: usize) {
        if std::mem::take(&mut self.conns[index].waiting_io) {
            // SeqCst: the count the keepers load (`may_keep_io_spare`,
            // `release_io_spare_if_wanted`); it orders nothing else.
            self.shared.io_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Some connection of the instance waits for a pair: take one back from this worker's
    /// connection that has been reading its head (or a small body) the longest, if for at least
    /// `HEAD_PRESSURE_AGE_MIN`, answering it 408. Clients that send a request in one go hold a
    /// pair for microseconds; one that trickles its head holds it for its whole head deadline,
    /// and a few such clients must not starve the instance of pairs (slowloris). Called by the
    /// sweep: at most one a turn per worker.
    pub(super) fn relieve_io_pressure(&mut self) {
        // Relaxed: a hint; a stale value costs one scan, or one sweep of delay.
        if self.shared.io_waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let oldest = (0..self.conns.len())
            .filter(|&index| self.conns.owns(index))
            .filter(|&index| {
                let conn = &self.conns[index];
                conn.phase == Phase::Head && conn.io.is_some() && !conn.waiting_io
            })
            .min_by_key(|&index| self.conns[index].head_started);
        let Some(index) = oldest else { return };
        if self.now.saturating_duration_since(self.conns[index].head_started)
            < HEAD_PRESSURE_AGE_MIN
        {
            return;
        }
        self.stats().slow_head_evictions.fetch_add(1, Ordering::Relaxed);
        self.fail(index, ErrorKind::HeadTooSlowUnderPressure);
        self.drive(index);
    }
}
