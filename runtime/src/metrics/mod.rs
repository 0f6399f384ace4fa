//! Metrics in the Prometheus text exposition format (version 0.0.4), rendered into a fixed
//! buffer without allocating, so a sealed worker can answer a scrape.
//!
//! Each worker counts into its own [`WorkerMetrics`] (inside its `WorkerStats`, on their own
//! cache lines): atomics, but written with a plain Relaxed load and store since only their
//! worker writes them; nothing on the request path takes a lock, a locked instruction for a
//! counter, or touches another worker's counters. A scrape sums every worker's counters into a [`Totals`] on the
//! stack and renders it with the instance's gauges. A scrape is not a snapshot: counters are
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

pub(crate) use render::{render, METRICS_BYTES_MAX};

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

/// Requests and connections turned away before a handler ran, by reason (public in
/// [`crate::Stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Every slot was busy: 503 with `Retry-After`.
    pub no_slot: u64,
    /// The connection table was full with nothing idle to close: 503 and close.
    pub too_many_connections: u64,
    /// Out of file descriptors: the newest connection was closed at once.
    pub fd_limit: u64,
    /// Request line or head too large (414, 431).
    pub head_too_large: u64,
    /// Body larger than `request_body_size_max` (413).
    pub body_too_large: u64,
    /// Head not received within `header_read_timeout_ms` (408).
    pub head_timeout: u64,
    /// Body not received within `body_read_timeout_ms` (408).
    pub body_timeout: u64,
    /// `body_slots_max` slots held by bodies still arriving (408).
    pub body_slots_full: u64,
    /// Body slower than `body_rate_min_bytes_per_s` (408).
    pub body_too_slow: u64,
    /// Protocol errors: malformed heads, framing, chunks, targets (400, 417, 501, 505).
    pub malformed: u64,
}

impl Rejections {
    fn of(counts: &[u64; Reason::ALL.len()]) -> Rejections {
        let count = |reason: Reason| counts[reason as usize];
        Rejections {
            no_slot: count(Reason::NoSlot),
            too_many_connections: count(Reason::TooManyConnections),
            fd_limit: count(Reason::FdLimit),
            head_too_large: count(Reason::HeadTooLarge),
            body_too_large: count(Reason::BodyTooLarge),
            head_timeout: count(Reason::HeadTimeout),
            body_timeout: count(Reason::BodyTimeout),
            body_slots_full: count(Reason::BodySlotsFull),
            body_too_slow: count(Reason::BodyTooSlow),
            malformed: count(Reason::Malformed),
        }
    }
}

/// A histogram summed over the workers: per-bucket counts (not cumulative), the count above
/// the last bound, and the sum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistogramTotals<const N: usize> {
    bounds: &'static [u64; N],
    counts: [u64; N],
    above: u64,
    sum: u64,
}

impl<const N: usize> HistogramTotals<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        HistogramTotals { bounds, counts: [0; N], above: 0, sum: 0 }
    }

    fn add(&mut self, histogram: &Histogram<N>) {
        // Relaxed: statistics.
        for (total, count) in self.counts.iter_mut().zip(&histogram.counts) {
            *total = total.wrapping_add(count.load(Ordering::Relaxed));
        }
        self.above = self.above.wrapping_add(histogram.above.load(Ordering::Relaxed));
        self.sum = self.sum.wrapping_add(histogram.sum.load(Ordering::Relaxed));
    }

    fn count(&self) -> u64 {
        self.counts.iter().fold(self.above, |total, &count| total.wrapping_add(count))
    }
}

/// Every worker's counters, summed (built on the stack by a scrape or `RunningServer::stats`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Totals {
    pub(crate) responses: [u64; CODE_COUNTERS],
    pub(crate) duration_us: HistogramTotals<{ DURATION_BOUNDS_US.len() }>,
    pub(crate) arena_high_water_bytes: HistogramTotals<{ ARENA_BOUNDS_BYTES.len() }>,
    pub(crate) rejected: [u64; Reason::ALL.len()],
    pub(crate) overruns: u64,
    pub(crate) panics: u64,
    pub(crate) stack_overflows: u64,
    pub(crate) handler_timeouts: u64,
    pub(crate) client_gone: u64,
    pub(crate) connections_accepted: u64,
    pub(crate) idle_evictions: u64,
    pub(crate) io_buffer_waits: u64,
    pub(crate) probes: u64,
    pub(crate) access_log_lines: u64,
    pub(crate) access_log_dropped: u64,
    /// Words the escape check found pointing into released arenas.
    pub(crate) escapes: u64,
    /// Slots retired because of them.
    pub(crate) slots_retired: u64,
}

impl Totals {
    pub(crate) fn of(stats: &[WorkerStats]) -> Totals {
        let mut totals = Totals {
            responses: [0; CODE_COUNTERS],
            duration_us: HistogramTotals::new(&DURATION_BOUNDS_US),
            arena_high_water_bytes: HistogramTotals::new(&ARENA_BOUNDS_BYTES),
            rejected: [0; Reason::ALL.len()],
            overruns: 0,
            panics: 0,
            stack_overflows: 0,
            handler_timeouts: 0,
            client_gone: 0,
            connections_accepted: 0,
            idle_evictions: 0,
            io_buffer_waits: 0,
            probes: 0,
            access_log_lines: 0,
            access_log_dropped: 0,
            escapes: 0,
            slots_retired: 0,
        };
        // Relaxed: statistics; nothing is ordered by them.
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        for worker in stats {
            let metrics = &worker.metrics;
            for (total, counter) in totals.responses.iter_mut().zip(&metrics.responses) {
                *total = total.wrapping_add(load(counter));
            }
            for (total, counter) in totals.rejected.iter_mut().zip(&metrics.rejected) {
                *total = total.wrapping_add(load(counter));
            }
            totals.duration_us.add(&metrics.duration_us);
            totals.arena_high_water_bytes.add(&metrics.arena_high_water_bytes);
            totals.overruns = totals.overruns.wrapping_add(load(&worker.overruns));
            totals.panics = totals.panics.wrapping_add(load(&worker.panics));
            totals.stack_overflows =
                totals.stack_overflows.wrapping_add(load(&worker.stack_overflows));
            totals.handler_timeouts =
                totals.handler_timeouts.wrapping_add(load(&worker.handler_timeouts));
            totals.client_gone = totals.client_gone.wrapping_add(load(&metrics.client_gone));
            totals.connections_accepted =
                totals.connections_accepted.wrapping_add(load(&worker.connections_accepted));
            totals.idle_evictions =
                totals.idle_evictions.wrapping_add(load(&worker.idle_evictions));
            totals.io_buffer_waits =
                totals.io_buffer_waits.wrapping_add(load(&worker.io_buffer_waits));
            totals.probes = totals.probes.wrapping_add(load(&worker.probes));
            totals.access_log_lines =
                totals.access_log_lines.wrapping_add(load(&metrics.access_log_lines));
            totals.access_log_dropped =
                totals.access_log_dropped.wrapping_add(load(&metrics.access_log_dropped));
            totals.escapes = totals.escapes.wrapping_add(load(&worker.escapes));
            totals.slots_retired = totals.slots_retired.wrapping_add(load(&worker.slots_retired));
        }
        totals
    }

    pub(crate) fn rejections(&self) -> Rejections {
        Rejections::of(&self.rejected)
    }

    /// Responses by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub(crate) fn responses_by_class(&self) -> [u64; 5] {
        let mut classes = [0u64; 5];
        for (code, count) in CODES.iter().zip(&self.responses) {
            let class = &mut classes[usize::from(code / 100) - 1];
            *class = class.wrapping_add(*count);
        }
        for (class, count) in classes.iter_mut().zip(&self.responses[CODES.len()..]) {
            *class = class.wrapping_add(*count);
        }
        classes
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
