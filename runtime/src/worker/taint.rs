//! The last rung of the cancellation ladder: after a hard cancel (the handler's stack was
//! abandoned without unwinding), check what std could have been left holding on this thread. A
//! worker that fails a check is *tainted*: it cannot serve soundly any more, so the instance
//! stops being ready, stops accepting, lets the other workers finish their requests (at most
//! [`TAINTED_DRAIN_MAX`]), and exits with [`EXIT_TAINTED`] after one line on stderr naming the
//! worker, the cause and the request cancelled last. Its supervisor restarts it.
//!
//! Checked: std's per-thread panic count (a panic cut short by the guard page leaves
//! `std::thread::panicking()` true: the next overrun would be taken for an out-of-memory panic,
//! the next panic may abort), here; and stdout's and stderr's locks (a print cut short holds
//! them for ever: the other workers would block on their next print), by the probe thread
//! (`stdio_probe.rs`), which the watchdog escalates for. Not checkable from outside std: std's
//! other internal locks (backtrace, environment), locks of other libraries; those are what the
//! stack headroom (`cancel::STACK_HEADROOM_BYTES`) and the watchdog are for.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Shared, Worker};
use crate::line::Line;
use crate::slot_request::RawRequest;
use crate::sys;

/// The exit status of an instance that escalated (EX_SOFTWARE, sysexits(3)).
pub(super) const EXIT_TAINTED: i32 = 70;
/// How long the other workers get to finish their requests once a worker is tainted.
pub(super) const TAINTED_DRAIN_MAX: Duration = Duration::from_secs(3);

/// What std was left holding on this thread by an abandoned stack, if anything.
fn taint_cause() -> Option<&'static str> {
    if std::thread::panicking() {
        return Some("a panic was cut short by the guard page (std's panic count stays set)");
    }
    None
}

impl Worker {
    /// Checks the worker after the task on `slot_index` ended hard; escalates if it is tainted.
    pub(super) fn check_after_hard_cancel(&mut self, slot_index: usize) {
        // A log call cut short on the abandoned stack gives the worker's line buffer back.
        let stack = &self.slots[slot_index].memory.stack;
        crate::log::release_abandoned(stack.ptr.as_ptr() as usize, stack.end());
        if let Some(cause) = taint_cause() {
            let request = self.slots[slot_index].request;
            self.escalate(cause, request, "last request cancelled");
        }
        // stdout's and stderr's locks: checked by the probe thread, never by this worker (the
        // lock is reentrant, and another worker's abandoned request would block it for ever).
        // SAFETY: as in `escalate`: the caller still holds the slot and its request.
        let request = self.slots[slot_index].request.map(|raw| unsafe { raw.to_request() });
        let method_path =
            request.as_ref().map(|request| (request.method().as_str(), request.path()));
        self.shared.stdio_probe.ask(self.index, method_path);
    }

    /// Escalates: one line naming the worker, `cause` and `request` (`what` says which: the
    /// one cancelled last, or the one released last), then the exit described in the module
    /// comment. `request`'s memory must still be its slot's (not wiped).
    pub(super) fn escalate(&mut self, cause: &str, request: Option<RawRequest>, what: &str) -> ! {
        let mut line = Line::new();
        let _ = write!(line, "cella: fatal: worker {} is tainted: {cause}", self.index);
        if let Some(raw) = request {
            // SAFETY: the caller holds the slot, not released yet, or retired it (its arena is
            // never wiped): the request's memory is still there.
            let request = unsafe { raw.to_request() };
            let _ = write!(line, "; {what}: ");
            line.request(request.method().as_str(), request.path());
        }
        self.listener = None; // New connections go to the other workers' listeners meanwhile.
        exit_escalated(&self.shared, &mut line)
    }
}

/// Ends the instance for a tainted worker (this one, or one the watchdog found stuck): writes
/// `line` (completed), stops readiness and accepting, lets the other workers finish their
/// requests (at most [`TAINTED_DRAIN_MAX`]) and `_exit`s with [`EXIT_TAINTED`]. Once per
/// instance: a second caller waits for the first one's exit.
pub(super) fn exit_escalated(shared: &Shared, line: &mut Line) -> ! {
    // AcqRel: one escalation per instance.
    if shared.escalating.swap(true, Ordering::AcqRel) {
        loop {
            std::thread::sleep(TAINTED_DRAIN_MAX);
        }
    }
    let _ = line.write_str("; draining the other workers, then exiting");
    sys::write_stderr(line.finish());
    // Release (both): pairs with the Acquire loads at the top of every worker's loop.
    shared.unready.store(true, Ordering::Release);
    shared.shutdown.store(true, Ordering::Release);
    shared.nudges.iter().for_each(super::nudge::Nudge::wake_now);
    let deadline = Instant::now() + TAINTED_DRAIN_MAX;
    // Acquire: pairs with the AcqRel decrement at each worker's exit. The tainted worker is
    // still counted (it is the caller, or stuck).
    while shared.alive.load(Ordering::Acquire) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // _exit, not exit: std's exit flushes stdout under its lock, which may be held for ever.
    // SAFETY: _exit(2) ends the process at once; nothing is required of the caller.
    unsafe { libc::_exit(EXIT_TAINTED) }
}
