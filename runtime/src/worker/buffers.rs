//! Lending I/O buffer pairs: a connection borrows one of the instance's pairs when it has bytes
//! to read (or, with none, an answer to write) and gives it back as soon as it holds nothing in
//! it (idle between requests, or its handler running with nothing buffered), so an idle
//! connection costs no buffer memory. When every pair is lent, a connection that must read
//! waits in `io_waiters` (its head deadline runs). Must not parse, respond or touch slots.

use super::conn::Phase;
use super::Worker;

impl Worker {
    /// Borrows a pair for connection `index` if it has none. `false`: every pair is lent.
    pub(super) fn borrow_io_buffers(&mut self, index: usize) -> bool {
        if self.conns[index].io.is_some() {
            return true;
        }
        let Some(pair) = self.bufs.claim() else { return false };
        let memory = self.bufs[pair].take().expect("a free I/O buffer pair is in its cell");
        let conn = &mut self.conns[index];
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
        if empty || conn.phase == Phase::Free {
            self.return_io_buffers(index);
        }
        self.conns[index].io.is_none()
    }

    /// Gives connection `index`'s pair back, whatever it holds (the connection is closing).
    pub(super) fn return_io_buffers(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        let Some(pair) = conn.io.take() else { return };
        let read = std::mem::replace(&mut conn.read, cella_arena::Buffer::empty());
        let write = std::mem::replace(&mut conn.write, cella_arena::Buffer::empty());
        (conn.read_start, conn.read_end, conn.write_start, conn.write_end) = (0, 0, 0, 0);
        self.bufs[pair] = Some(cella_arena::ConnectionMemory { read, write });
        self.bufs.release(pair);
        self.admit_io_waiters();
    }

    /// Lets connections waiting for a pair try again while the instance has free pairs (one per
    /// free pair). A pair freed by another worker is seen on this worker's next loop turn.
    pub(super) fn admit_io_waiters(&mut self) {
        let mut free = self.bufs.table().pool().free_count();
        while free > 0 {
            let Some(waiter) = self.io_waiters.pop_front() else { return };
            if self.conns.owns(waiter) && self.conns[waiter].waiting_io {
                self.conns[waiter].waiting_io = false;
                self.runnable.push_back(waiter);
                free -= 1;
            }
        }
    }

    /// Connection `index` has bytes to read and no pair is free: wait for one.
    pub(super) fn wait_for_io_buffers(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if !conn.waiting_io {
            conn.waiting_io = true;
            if conn.phase == Phase::Idle {
                conn.phase = Phase::Head;
                conn.deadline = Some(self.now + self.settings.header_read_timeout);
            }
            self.io_waiters.push_back(index);
            self.stats().io_buffer_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
