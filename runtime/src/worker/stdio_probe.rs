//! The stdio probe: after a hard cancel, whether stdout's and stderr's locks are free. A
//! request abandoned inside `println!` (cut off by the preemption timer, or by an overrun or a
//! guard-page fault inside its formatting) leaves stdout's lock held for ever: every print on
//! another worker would then block it for good. std has no `try_lock` for `Stdout`, and the
//! lock is reentrant, so the worker that abandoned the request would take it again itself; the
//! probe is therefore a thread of its own (started before the seal, allocating nothing once it
//! runs) that, when a worker asks, locks and unlocks stdout then stderr and says it is done. The
//! worker never waits for it: the watchdog thread, which never blocks, taints the worker that
//! asked when no answer came within [`STDIO_PROBE_TIMEOUT`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::request_text::RequestText;
use super::Shared;
use crate::line::Line;

/// How long the probe may take to lock stdout and stderr before the worker that asked is
/// tainted. A print by another request holds the lock only while it writes; one second is far
/// more than a write to a terminal, a pipe or a file that is being read takes.
pub(crate) const STDIO_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the workers, the probe thread and the watchdog share.
pub(crate) struct StdioProbe {
    /// Probes asked for (by workers) and answered (by the probe thread), counted.
    asked: AtomicU64,
    answered: AtomicU64,
    /// When the oldest unanswered probe was asked (CLOCK_MONOTONIC ns).
    asked_at_ns: AtomicU64,
    /// Which lock the probe thread is taking: 0 none, 1 stdout, 2 stderr.
    stage: AtomicU8,
    /// The worker that asked last, and "METHOD path" of the request it had cancelled.
    worker: AtomicUsize,
    request: RequestText,
    thread: OnceLock<Thread>,
}

impl StdioProbe {
    pub(crate) fn new() -> StdioProbe {
        StdioProbe {
            asked: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            asked_at_ns: AtomicU64::new(0),
            stage: AtomicU8::new(0),
            worker: AtomicUsize::new(0),
            request: RequestText::new(),
            thread: OnceLock::new(),
        }
    }

    /// Asks for a probe (worker `worker` just cancelled a request hard: its method and path, if
    /// it had got that far). Never blocks: a counter and an unpark (a futex wake).
    pub(super) fn ask(&self, worker: usize, request: Option<(&str, &str)>) {
        match request {
            Some((method, path)) => self.request.set(method, path),
            None => self.request.clear(),
        }
        self.worker.store(worker, Ordering::Relaxed);
        if self.asked.load(Ordering::Acquire) == self.answered.load(Ordering::Acquire) {
            self.asked_at_ns.store(crate::sys::monotonic_ns(), Ordering::Relaxed);
        }
        // Release: the request and the time above are visible to whoever sees the new count.
        self.asked.fetch_add(1, Ordering::Release);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// For the watchdog: the line to escalate with when a probe has gone unanswered for longer
    /// than [`STDIO_PROBE_TIMEOUT`].
    pub(super) fn overdue(&self, now_ns: u64) -> Option<Line> {
        // Acquire: pairs with the Release increment in `ask`.
        let asked = self.asked.load(Ordering::Acquire);
        if asked == self.answered.load(Ordering::Acquire) {
            return None;
        }
        let waited_ns = now_ns.saturating_sub(self.asked_at_ns.load(Ordering::Relaxed));
        if waited_ns <= STDIO_PROBE_TIMEOUT.as_nanos() as u64 {
            return None;
        }
        let lock = if self.stage.load(Ordering::Relaxed) == 2 { "stderr" } else { "stdout" };
        let mut line = Line::new();
        let _ = write!(
            line,
            "cella: fatal: worker {} is tainted: {lock} lock held by a cancelled request (a probe could not take it within {} ms)",
            self.worker.load(Ordering::Relaxed),
            STDIO_PROBE_TIMEOUT.as_millis()
        );
        let _ = line.write_str("; last request cancelled: ");
        self.request.write_to(&mut line);
        Some(line)
    }
}

/// Starts the probe thread (before the workers seal); it ends once every worker has.
pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<()> {
    let watched = shared.clone();
    let handle = crate::runtime_thread::spawn("cella-stdio-probe", move || {
        let probe = &watched.stdio_probe;
        // Acquire: pairs with the AcqRel decrement at each worker's exit.
        while watched.alive.load(Ordering::Acquire) > 0 {
            let asked = probe.asked.load(Ordering::Acquire);
            if asked == probe.answered.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_millis(100));
                continue;
            }
            probe.stage.store(1, Ordering::Relaxed);
            drop(std::io::stdout().lock());
            probe.stage.store(2, Ordering::Relaxed);
            drop(std::io::stderr().lock());
            probe.stage.store(0, Ordering::Relaxed);
            // Release: pairs with the Acquire loads in `ask` and `overdue`.
            probe.answered.store(asked, Ordering::Release);
        }
    })?;
    let _ = shared.stdio_probe.thread.set(handle.thread().clone());
    Ok(())
}
