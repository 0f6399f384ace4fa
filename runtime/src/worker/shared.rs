//! What a worker shares with the others and with the thread that controls them: its counters
//! ([`WorkerStats`], written by their worker only) and the instance's flags, gauges and
//! per-worker handles ([`Shared`]). Must hold no behaviour beyond plain data.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use super::{Nudge, StdioProbe, Watch};

/// Counters of one worker, on their own cache lines.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct WorkerStats {
    pub connections_accepted: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub requests: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub overruns: AtomicU64,
    pub panics: AtomicU64,
    pub stack_overflows: AtomicU64,
    pub handler_timeouts: AtomicU64,
    pub client_errors: AtomicU64,
    /// Idle keep-alive connections closed to make room in a full table.
    pub idle_evictions: AtomicU64,
    /// Requests turned away (408) because `body_slots_max` slots were held by bodies arriving.
    pub body_slots_full: AtomicU64,
    /// Requests cut off (408) because their body arrived slower than the minimum rate.
    pub body_too_slow: AtomicU64,
    /// Words found pointing into a released slot's arena by the escape check.
    pub escapes: AtomicU64,
    /// Slots this worker retired after the escape check found such words.
    pub slots_retired: AtomicU64,
    /// Slow heads answered 408 to give their I/O buffer pair to a waiting connection.
    pub slow_head_evictions: AtomicU64,
    /// Times a connection with bytes to read found every I/O buffer pair lent.
    pub io_buffer_waits: AtomicU64,
    /// Probe requests (`liveness_path`, `readiness_path`) the worker answered itself.
    pub probes: AtomicU64,
    /// The most any of this worker's arenas has held (bytes), for sizing `slot_arena_size`.
    pub arena_high_water_bytes: AtomicU64,
    /// Responses by status, durations, arena high-water marks, rejections by reason, handlers
    /// cancelled because their client went away (`/metrics`).
    pub metrics: crate::metrics::WorkerMetrics,
}

/// What the workers and the thread that controls them share.
pub(crate) struct Shared {
    pub shutdown: AtomicBool,
    /// Set at the first shutdown signal, before `shutdown` (the drain delay lies between): the
    /// readiness probe answers 503 and every response closes its connection.
    pub unready: AtomicBool,
    /// Slots held by requests whose bodies are still arriving, in the whole instance.
    pub body_slots: AtomicUsize,
    /// Connections of the instance waiting for an I/O buffer pair.
    pub io_waiting: AtomicUsize,
    pub stats: Box<[WorkerStats]>,
    /// Per worker: what its connections wait for, and its waker (`worker/nudge.rs`).
    pub nudges: Box<[Nudge]>,
    pub alive: AtomicUsize,
    /// An address on each worker's stack, stored before the seal: the escape check leaves the
    /// stacks out of the heap it scans.
    pub stack_markers: Box<[AtomicUsize]>,
    /// What the escape check scans, set by the controlling thread between the two meetings at
    /// `ready` (every worker set up, none sealed yet), and never changed.
    pub escape: std::sync::OnceLock<crate::escape::Scope>,
    /// One per worker, for the watchdog (`watchdog.rs`).
    pub watches: Box<[Watch]>,
    /// A worker is being escalated for (`taint.rs`): the instance is exiting.
    pub escalating: AtomicBool,
    /// Checks stdout's and stderr's locks after hard cancels (`stdio_probe.rs`).
    pub stdio_probe: StdioProbe,
}
