//! Making room in a full connection table across workers. When the table is full and this
//! worker has no idle keep-alive connection of its own to close, it asks the worker with the
//! most idle ones (a count each worker publishes at its sweep) to close its oldest, wakes it
//! (`nudge.rs`), and holds the accepted connection meanwhile; the entry that frees wakes this
//! worker back and the held connection is admitted. No lock: a counter of requests per worker
//! and the wake. Must not read requests or touch slots.

use std::net::SocketAddr;

use mio::net::TcpStream;

use super::nudge::Freed;
use super::Worker;
use crate::tick::Tick;

impl Worker {
    /// The table is full and nothing of this worker's is idle: asks the worker that reported
    /// the most idle connections to close one, and holds `stream` until an entry frees (or
    /// `full_table_wait_ms` passes: the asked worker had nothing idle after all).
    /// `Err(stream)`: there is no other worker, the wait is 0, or this one holds
    /// `full_table_held_max` already (the queue is allocated at startup with that capacity, so
    /// it never grows). How long each may be held is `full_table_wait_ms` (the asked worker
    /// closes its idle connection on its next loop turn: at once, after the wake); it is
    /// checked every loop turn, so at most one sweep later.
    pub(super) fn hold_for_room(
        &mut self,
        stream: TcpStream,
        remote: SocketAddr,
    ) -> Result<(), TcpStream> {
        if self.held_accepts.len() >= self.settings.full_table_held_max
            || self.settings.full_table_wait.is_zero()
        {
            return Err(stream);
        }
        // The worker that reported the most idle connections at its last sweep; with none
        // reported (they may have gone idle since), the next worker in turn.
        let workers = self.shared.nudges.len();
        self.eviction_cursor = (self.eviction_cursor + 1) % workers.max(1);
        let mut asked = None;
        for offset in 0..workers {
            let worker = (self.eviction_cursor + offset) % workers;
            let hint = self.shared.nudges[worker].idle_hint();
            if worker != self.index && asked.map_or(true, |(_, most)| hint > most) {
                asked = Some((worker, hint));
            }
        }
        let Some((worker, _)) = asked else { return Err(stream) };
        self.shared.nudges[worker].ask_eviction();
        self.held_accepts.push_back((stream, remote, self.now));
        // Before this turn's `admit_held_accepts` looks at the pool (`nudge.rs`).
        self.set_waiting(Freed::Conn, true);
        Ok(())
    }

    /// Admits held connections while the table has room; turns away those held too long.
    pub(super) fn admit_held_accepts(&mut self) {
        if self.held_accepts.is_empty() {
            return;
        }
        while !self.held_accepts.is_empty() {
            let Some(index) = self.conns.claim() else { break };
            if let Some((stream, remote, _)) = self.held_accepts.pop_front() {
                self.admit_into(index, stream, remote);
            }
        }
        let (now, wait) = (self.now, self.settings.full_table_wait);
        let too_old =
            |held: &(TcpStream, SocketAddr, Tick)| now.saturating_duration_since(held.2) >= wait;
        while self.held_accepts.front().is_some_and(too_old) {
            if let Some((stream, _, _)) = self.held_accepts.pop_front() {
                self.turn_away(stream);
            }
        }
        if self.held_accepts.is_empty() {
            self.set_waiting(Freed::Conn, false);
        }
    }

    /// Closes as many of this worker's idle keep-alive connections as other workers asked for
    /// (fewer when fewer are idle).
    pub(super) fn serve_evictions(&mut self) {
        for _ in 0..self.shared.nudges[self.index].take_evictions() {
            if !self.evict_oldest_idle() {
                break;
            }
        }
    }

    /// Publishes how many idle keep-alive connections this worker has (at its sweep).
    pub(super) fn publish_idle(&self, idle: usize) {
        self.shared.nudges[self.index].publish_idle(idle);
    }

    /// The drain: held connections get the 503 (the listener is closing).
    pub(super) fn turn_away_held_accepts(&mut self) {
        while let Some((stream, _, _)) = self.held_accepts.pop_front() {
            self.turn_away(stream);
        }
        self.set_waiting(Freed::Conn, false);
    }
}
