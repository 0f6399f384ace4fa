//! The event-loop watchdog, the last rung's detector for what preemption cannot cut off: a
//! handler blocked in a system call or a C library past its deadline, a lock left held by a
//! cut-off handler, a runtime bug. Each worker publishes a [`Watch`]: a beat it bumps at every
//! loop turn and every handler resume, and whether it waits in epoll (idle, or ended). A thread
//! that is not a worker, started before the seal and allocating nothing once it watches, checks
//! every worker each quarter of `watchdog_ms`; a worker whose beat has not moved for longer than
//! that while it was not idle is stuck, and the instance escalates for it (`taint.rs`): one line
//! naming the worker, the cause and the request it ran, readiness 503, the other workers finish
//! their requests, exit status 70.
//!
//! The request is named without any per-request copy: the worker keeps the running request in
//! a thread-local, and its preemption signal handler, on its first try past the deadline (on
//! the worker's own thread, so the request's memory cannot be released meanwhile), writes
//! "METHOD path" into the watch, where the watchdog thread reads it.

use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::request_text::RequestText;
use super::taint;
use super::Shared;
use crate::line::Line;
use crate::slot_request::RawRequest;

/// How often the watchdog thread looks at the workers and the stdio probe (at most).
const STDIO_PROBE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// What a worker publishes to the watchdog.
pub(crate) struct Watch {
    /// Bumped by its worker at every loop turn and handler resume (only it writes).
    beat: AtomicU64,
    /// The worker waits in epoll, or has ended: not stuck, whatever the beat.
    idle: AtomicBool,
    /// "METHOD path" of the request running past its deadline (see the module documentation).
    request: RequestText,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch { beat: AtomicU64::new(0), idle: AtomicBool::new(true), request: RequestText::new() }
    }

    /// The worker made progress. Relaxed: a single writer, and the watchdog only compares.
    #[inline]
    pub(super) fn beat(&self) {
        self.beat.store(self.beat.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// The worker enters (true) or leaves (false) its wait in epoll.
    #[inline]
    pub(super) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Relaxed);
    }
}

thread_local! {
    /// This worker's watch; null on other threads.
    static WATCH: Cell<*const Watch> = const { Cell::new(std::ptr::null()) };
    /// The request whose handler runs on this worker: its slot's field, in the slot table (not
    /// the request's arena: the escape check must not find a pointer there); null when none.
    static RUNNING: Cell<*const Option<RawRequest>> = const { Cell::new(std::ptr::null()) };
}

/// Makes `watch` this worker thread's, and lets the preemption timer describe an overdue
/// request into it. The shared state outlives the worker.
pub(super) fn adopt(watch: &Watch) {
    WATCH.with(|current| current.set(watch));
    crate::cancel::set_overdue_hook(note_overdue);
}

/// The handler of `request` is resumed on this worker (`watch` is the worker's).
#[inline]
pub(super) fn running(watch: &Watch, request: &Option<RawRequest>) {
    RUNNING.with(|running| running.set(request));
    // Only this thread's signal handler sets it again, after this.
    watch.request.clear();
}

/// The handler gave control back: no pointer into its arena stays here (the escape check
/// would find it once the slot is released).
#[inline]
pub(super) fn running_none() {
    RUNNING.with(|running| running.set(std::ptr::null()));
}

/// Called from the preemption timer's signal handler on this worker, at its first try past the
/// running handler's deadline: writes "METHOD path" into the watch. Allocates nothing.
fn note_overdue() {
    let watch = WATCH.with(Cell::get);
    // SAFETY: a non-null WATCH is this worker's, in the shared state that outlives it.
    let Some(watch) = (unsafe { watch.as_ref() }) else { return };
    // SAFETY: a non-null RUNNING points at the running handler's slot's `request`, which the
    // worker does not change while the handler runs; this runs on the worker's own thread
    // while that handler runs, so the slot cannot be released, and its request's memory lives.
    let Some(raw) = (unsafe { RUNNING.with(Cell::get).as_ref() }).copied().flatten() else {
        return;
    };
    // SAFETY: as above.
    let request = unsafe { raw.to_request() };
    watch.request.set(request.method().as_str(), request.path());
}

/// Starts the watchdog thread for `shared`'s workers (before the workers seal themselves).
pub(crate) fn start(shared: Arc<Shared>, watchdog: Duration) -> std::io::Result<()> {
    // Often enough for the stdio probe's bound too (`stdio_probe.rs`).
    let tick = (watchdog / 4).clamp(Duration::from_millis(5), STDIO_PROBE_CHECK_INTERVAL);
    crate::runtime_thread::spawn("cella-watchdog", move || {
        let mut seen: Vec<(u64, Instant)> = vec![(0, Instant::now()); shared.watches.len()];
        // Acquire: pairs with the AcqRel decrement at each worker's exit.
        while shared.alive.load(Ordering::Acquire) > 0 {
            std::thread::sleep(tick);
            let now = Instant::now();
            if let Some(mut line) = shared.stdio_probe.overdue(crate::sys::monotonic_ns()) {
                taint::exit_escalated(&shared, &mut line);
            }
            for (index, watch) in shared.watches.iter().enumerate() {
                let beat = watch.beat.load(Ordering::Relaxed);
                if watch.idle.load(Ordering::Relaxed) || beat != seen[index].0 {
                    seen[index] = (beat, now);
                } else if now.duration_since(seen[index].1) > watchdog {
                    escalate_stuck(&shared, index, now.duration_since(seen[index].1));
                }
            }
        }
    })?;
    Ok(())
}

fn escalate_stuck(shared: &Shared, index: usize, stalled: Duration) {
    let watch = &shared.watches[index];
    let mut line = Line::new();
    let _ = write!(line, "cella: fatal: worker {index} is tainted: ");
    let _ = write!(line, "its event loop has not turned for {} ms", stalled.as_millis());
    if watch.request.is_set() {
        let _ = line.write_str(": a handler is blocked past its deadline where preemption cannot cut it off (a system call, a C library, a lock)");
        let _ = line.write_str("; request running: ");
        watch.request.write_to(&mut line);
    }
    taint::exit_escalated(shared, &mut line);
}
