//! Metrics in the Prometheus text exposition format (version 0.0.4), rendered into a fixed
//! buffer without allocating, so a sealed worker can answer a scrape.
//!
//! Each worker counts into its own [`WorkerMetrics`] (inside its `WorkerStats`, on their own
//! cache lines): atomics, but written with a plain Relaxed load and store since only their
//! worker writes them; nothing on the request path takes a lock, a locked instruction for a
//! counter, or touches another worker's counters. A scrape sums every worker's counters into a
//! [`Totals`] on the stack (`totals.rs`) and renders it with the instance's gauges. A scrape is not a snapshot: counters are
//! read one after another while workers go on counting, so two series of one scrape may be a
//! few requests apart (a histogram's `+Inf` bucket and `_count` are the same sum, always).
//!
//! Names follow the Prometheus naming guide: base units (`_seconds`, `_bytes`), `_total` on
//! counters, `cella_` for the runtime's own series and `process_` for the standard process ones.
//! Must not import the worker's internals beyond its statistics, nor the server module.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::ErrorKind;
use crate::worker::WorkerStats;

mod render;
mod totals;

pub(crate) use render::{render, METRICS_BYTES_MAX};
pub use totals::Rejections;
pub(crate) use totals::{HistogramTotals, Totals};

/// Status codes counted under their own `code` label; any other is counted under its class
/// (`code="2xx"`), so the number of series stays fixed whatever handlers return.
const CODES: [u16; 32] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 410,
    413, 414, 415, 417, 422, 429, 431, 500, 501, 502, 503, 504, 505,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// One counter per code of [`CODES`], then one per class of [`CLASSES`].
const CODE_COUNTERS: usize = CODES.len() + CLASSES.len();

/// Upper bounds of the request duration buckets, in microseconds (rendered in seconds).
const DURATION_BOUNDS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];
/// Upper bounds of the arena high-water buckets, in bytes: every power of two from 1KiB to
/// 1GiB, so the bucket a request lands in says its arena use within a factor of two.
const ARENA_BOUNDS_BYTES: [u64; 21] = arena_bounds();
const _: () = assert!(ARENA_BOUNDS_BYTES[20] == 1 << 30, "the arena buckets end at 1GiB");

const fn arena_bounds() -> [u64; 21] {
    let mut bounds = [0u64; 21];
    let mut index = 0;
    while index < bounds.len() {
        bounds[index] = 1024 << index;
        index += 1;
    }
    bounds
}

/// Why a request (or a connection) was turned away before any handler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Every slot was busy (503).
    NoSlot,
    /// The connection table was full and no idle connection could be closed (503, close).
    TooManyConnections,
    /// Out of file descriptors: the newest connection was accepted and closed at once.
    FdLimit,
    /// The request line or the head was too long, or had too many fields (414, 431).
    HeadTooLarge,
    /// The body was larger than `request_body_size_max` (413).
    BodyTooLarge,
    /// The head did not arrive within `header_read_timeout_ms`, or too slowly (408).
    HeadTimeout,
    /// The body did not arrive within `body_read_timeout_ms` (408).
    BodyTimeout,
    /// `body_slots_max` slots were held by bodies still arriving (408).
    BodySlotsFull,
    /// The body arrived slower than `body_rate_min_bytes_per_s` (408).
    BodyTooSlow,
    /// The request broke the protocol: a malformed head, framing, chunk or target (400, 417,
    /// 501, 505).
    Malformed,
}

impl Reason {
    const ALL: [Reason; 10] = [
        Reason::NoSlot,
        Reason::TooManyConnections,
        Reason::FdLimit,
        Reason::HeadTooLarge,
        Reason::BodyTooLarge,
        Reason::HeadTimeout,
        Reason::BodyTimeout,
        Reason::BodySlotsFull,
        Reason::BodyTooSlow,
        Reason::Malformed,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::NoSlot => "no_slot",
            Reason::TooManyConnections => "too_many_connections",
            Reason::FdLimit => "fd_limit",
            Reason::HeadTooLarge => "head_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HeadTimeout => "head_timeout",
            Reason::BodyTimeout => "body_timeout",
            Reason::BodySlotsFull => "body_slots_full",
            Reason::BodyTooSlow => "body_too_slow",
            Reason::Malformed => "malformed",
        }
    }

    /// The reason an error answered before the handler ran stands for; `None` for the errors
    /// of handlers (those are cancellations, or a bad response).
    pub(crate) fn of(kind: ErrorKind) -> Option<Reason> {
        use ErrorKind::*;
        Some(match kind {
            NoSlot => Reason::NoSlot,
            UriTooLong | HeadersTooLarge => Reason::HeadTooLarge,
            BodyTooLarge => Reason::BodyTooLarge,
            HeadTimeout => Reason::HeadTimeout,
            BodyTimeout => Reason::BodyTimeout,
            BodySlotsFull => Reason::BodySlotsFull,
            BodyTooSlow => Reason::BodyTooSlow,
            HandlerTimeout | ArenaExhausted | StackOverflow | HandlerPanicked | BadResponse => {
                return None
            }
            // Every other kind answers a request before its handler ran: another 408 is a head
            // too slow, the rest break the protocol (400, 417, 501, 505).
            other if other.response().status == 408 => Reason::HeadTimeout,
            _ => Reason::Malformed,
        })
    }
}

/// Adds `value` to one of a worker's counters. Only the worker that owns the counters writes
/// them (a scrape only reads), so a plain load and store is enough: no locked read-modify-write
/// on the request path. Relaxed: statistics, summed by a scrape; nothing is ordered by them.
#[inline]
pub(crate) fn add(counter: &AtomicU64, value: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(value), Ordering::Relaxed);
}

/// A histogram with fixed buckets: one Relaxed counter per bucket (not cumulative; the
/// rendering sums them) and one past the last bound, and the sum of what was observed.
pub(crate) struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    /// `counts[i]`: observations in `(bounds[i - 1], bounds[i]]`; `counts[N]`: above them all.
    counts: [AtomicU64; N],
    above: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            above: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: u64) {
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(bucket) => add(&self.counts[bucket], 1),
            None => add(&self.above, 1),
        };
        add(&self.sum, value);
    }
}

/// The counters one worker keeps beyond the plain ones of `WorkerStats`.
pub(crate) struct WorkerMetrics {
    /// Responses by status: see [`CODES`] and [`CLASSES`].
    responses: [AtomicU64; CODE_COUNTERS],
    /// From the first time the worker parsed a request's bytes (for a request pipelined behind
    /// another: right after that one's answer) to its answer being queued, in microseconds.
    pub(crate) duration_us: Histogram<{ DURATION_BOUNDS_US.len() }>,
    /// Each request's arena high-water mark, observed when its slot is released.
    pub(crate) arena_high_water_bytes: Histogram<{ ARENA_BOUNDS_BYTES.len() }>,
    /// Requests and connections turned away, by [`Reason`].
    rejected: [AtomicU64; Reason::ALL.len()],
    /// Handlers cancelled because their connection closed (the client went away).
    pub(crate) client_gone: AtomicU64,
    /// Access log lines added to this worker's buffer.
    pub(crate) access_log_lines: AtomicU64,
    /// Access log lines dropped because this worker's buffer was full.
    pub(crate) access_log_dropped: AtomicU64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_us: Histogram::new(&DURATION_BOUNDS_US),
            arena_high_water_bytes: Histogram::new(&ARENA_BOUNDS_BYTES),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            client_gone: AtomicU64::new(0),
            access_log_lines: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
        }
    }
}

impl WorkerMetrics {
    /// A response with `status` was queued `elapsed` after its request began.
    /// An answer with `status`, `elapsed_ns` after its request's bytes were first parsed.
    pub(crate) fn record_response(&self, status: u16, elapsed_ns: u64) {
        let counter = match CODES.iter().position(|&code| code == status) {
            Some(index) => index,
            None => CODES.len() + usize::from(status / 100).clamp(1, 5) - 1,
        };
        add(&self.responses[counter], 1);
        self.duration_us.observe(elapsed_ns / 1_000);
    }

    pub(crate) fn reject(&self, reason: Reason) {
        // Relaxed: statistics.
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The instance's gauges at the time of a scrape.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) slots: u64,
    pub(crate) slots_free: u64,
    pub(crate) slot_arena_bytes: u64,
    pub(crate) connections_max: u64,
    pub(crate) connections_free: u64,
    pub(crate) io_buffers: u64,
    pub(crate) io_buffers_free: u64,
    pub(crate) ready: bool,
    pub(crate) system_allocations_after_start: u64,
    /// `None` when `/proc` could not be read (the series is left out).
    pub(crate) resident_memory_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
}
