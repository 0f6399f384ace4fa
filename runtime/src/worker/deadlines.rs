//! Deadlines: every connection phase has a total deadline, kept in a dense array and enforced
//! by a sweep every `SWEEP_INTERVAL`; the poll timeout is the next sweep or the next handler
//! wake-up. Must not do more than decide what a passed deadline means and hand it on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Phase;
use super::Worker;
use crate::http::ErrorKind;
use crate::tick::Tick;

impl Worker {
    pub(super) fn poll_timeout(&self) -> Duration {
        let mut until = self.next_sweep;
        let scanned = if self.waiting_slots > 0 { self.slots.table().len() } else { 0 };
        for slot_index in (0..scanned).filter(|&index| self.slots.owns(index)) {
            if let Some(wake_at) = self.slots[slot_index].wake_at {
                until = until.min(wake_at);
            }
        }
        until.saturating_duration_since(Tick::now())
    }

    /// Enforces connection deadlines.
    pub(super) fn sweep(&mut self) {
        self.relieve_io_pressure();
        if let Some(until) = self.accept_paused_until {
            if self.now >= until {
                self.accept_paused_until = None;
                self.accept();
            }
        }
        let mut idle = 0;
        for index in 0..self.conns.len() {
            if !self.conns.owns(index) {
                continue;
            }
            idle +=
                usize::from(self.conns[index].phase == Phase::Idle && self.conns[index].kept_alive);
            if self.conns[index].phase == Phase::Body {
                if let Err(kind) = self.check_body_rate(index) {
                    self.fail(index, kind);
                    self.drive(index);
                    continue;
                }
            }
            match self.conns[index].deadline {
                Some(deadline) if deadline <= self.now => {}
                _ => continue,
            }
            match self.conns[index].phase {
                Phase::Head if self.conns[index].body_before_slot => {
                    self.fail(index, ErrorKind::BodyTimeout);
                }
                Phase::Head => {
                    self.fail(index, ErrorKind::HeadTimeout);
                }
                Phase::Body => {
                    self.fail(index, ErrorKind::BodyTimeout);
                }
                Phase::WaitingSlot => {
                    self.conns[index].close_after = true;
                    self.stats().busy_rejections.fetch_add(1, Ordering::Relaxed);
                    self.queue_error(index, ErrorKind::NoSlot);
                }
                Phase::Idle | Phase::Writing | Phase::Linger => {
                    self.close(index);
                    continue;
                }
                Phase::Free | Phase::Running => continue,
            }
            self.drive(index);
        }
        self.publish_idle(idle);
    }
}
