//! Metrics in the Prometheus text exposition format (version 0.0.4), rendered into a fixed
//! buffer without allocating, so a sealed worker can answer a scrape.
//!
//! Each worker counts into its own [`WorkerMetrics`] (inside its `WorkerStats`, on their own
//! cache lines) with Relaxed atomics: nothing on the request path takes a lock or touches
//! another worker's counters. A scrape sums every worker's counters into a [`Totals`] on the
//! stack and renders it with the instance's gauges. A scrape is not a snapshot: counters are
//! read one after another while workers go on counting, so two series of one scrape may be a
//! few requests apart (a histogram's `+Inf` bucket and `_count` are the same sum, always).
//!
//! Names follow the Prometheus naming guide: base units (`_seconds`, `_bytes`), `_total` on
//! counters, `cella_` for the runtime's own series and `process_` for the standard process ones.
//! Must not import the worker's internals beyond its statistics, nor the server module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::http::encode::{Full, Sink};
use crate::http::ErrorKind;
use crate::worker::WorkerStats;

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
        // Relaxed: statistics, summed by a scrape; nothing is ordered by them.
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(bucket) => self.counts[bucket].fetch_add(1, Ordering::Relaxed),
            None => self.above.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
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
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_us: Histogram::new(&DURATION_BOUNDS_US),
            arena_high_water_bytes: Histogram::new(&ARENA_BOUNDS_BYTES),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            client_gone: AtomicU64::new(0),
        }
    }
}

impl WorkerMetrics {
    /// A response with `status` was queued `elapsed` after its request began.
    pub(crate) fn record_response(&self, status: u16, elapsed: Duration) {
        let counter = match CODES.iter().position(|&code| code == status) {
            Some(index) => index,
            None => CODES.len() + usize::from(status / 100).clamp(1, 5) - 1,
        };
        // Relaxed: statistics.
        self.responses[counter].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.duration_us.observe(micros);
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

/// The version in `cella_build_info`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The most bytes [`render`] writes (every counter at `u64::MAX`, with room to spare): the
/// admin listener's response buffer holds this much body
/// (`the_largest_rendering_fits_the_metrics_buffer`).
pub(crate) const METRICS_BYTES_MAX: usize = 16 << 10;

/// Writes every series. Fails only when the sink is full.
pub(crate) fn render(sink: &mut impl Sink, totals: &Totals, gauges: &Gauges) -> Result<(), Full> {
    let mut out = Out { sink };
    out.header(
        "cella_http_requests_total",
        "counter",
        "Responses queued to requests on the main listener, by status code (codes outside a \
         fixed set by class, as 2xx; probes are counted in cella_probes_total).",
    )?;
    for (index, &count) in totals.responses.iter().enumerate() {
        if count == 0 {
            continue; // A code appears once it has been answered.
        }
        out.put(b"cella_http_requests_total{code=\"")?;
        match CODES.get(index) {
            Some(&code) => out.decimal(u64::from(code))?,
            None => out.put(CLASSES[index - CODES.len()].as_bytes())?,
        }
        out.put(b"\"} ")?;
        out.line_value(count)?;
    }
    out.header(
        "cella_http_request_duration_seconds",
        "histogram",
        "From the first time the worker parsed a request's bytes to its answer being queued.",
    )?;
    out.histogram("cella_http_request_duration_seconds", &totals.duration_us, Unit::Micros)?;
    out.header(
        "cella_rejected_total",
        "counter",
        "Requests and connections turned away before a handler ran, by reason.",
    )?;
    for reason in Reason::ALL {
        out.labelled("cella_rejected_total", "reason", reason.label())?;
        out.line_value(totals.rejected[reason as usize])?;
    }
    render_cancellations(&mut out, totals)?;
    render_gauges(&mut out, totals, gauges)
}

fn render_cancellations(out: &mut Out<'_, impl Sink>, totals: &Totals) -> Result<(), Full> {
    out.header(
        "cella_cancellations_total",
        "counter",
        "Handlers that did not return a response, by kind.",
    )?;
    for (kind, count) in [
        ("overrun", totals.overruns),
        ("panic", totals.panics),
        ("stack_overflow", totals.stack_overflows),
        ("timeout", totals.handler_timeouts),
        ("client_gone", totals.client_gone),
    ] {
        out.labelled("cella_cancellations_total", "kind", kind)?;
        out.line_value(count)?;
    }
    Ok(())
}

fn render_gauges(
    out: &mut Out<'_, impl Sink>,
    totals: &Totals,
    gauges: &Gauges,
) -> Result<(), Full> {
    let busy = |all: u64, free: u64| all.saturating_sub(free);
    let series: [(&str, &str, &str, u64); 11] = [
        ("cella_slots", "gauge", "Slots of the instance.", gauges.slots),
        (
            "cella_slots_busy",
            "gauge",
            "Slots held by requests now.",
            busy(gauges.slots, gauges.slots_free),
        ),
        ("cella_slot_arena_bytes", "gauge", "Arena of each slot.", gauges.slot_arena_bytes),
        (
            "cella_connections_max",
            "gauge",
            "Connections the instance holds at most.",
            gauges.connections_max,
        ),
        (
            "cella_connections_open",
            "gauge",
            "Connections open now on the main listener.",
            busy(gauges.connections_max, gauges.connections_free),
        ),
        ("cella_io_buffers", "gauge", "I/O buffer pairs of the instance.", gauges.io_buffers),
        (
            "cella_io_buffers_busy",
            "gauge",
            "I/O buffer pairs lent to connections now.",
            busy(gauges.io_buffers, gauges.io_buffers_free),
        ),
        (
            "cella_ready",
            "gauge",
            "1 while the instance takes new work, 0 from the first SIGTERM on.",
            u64::from(gauges.ready),
        ),
        (
            "cella_connections_accepted_total",
            "counter",
            "Connections accepted on the main listener.",
            totals.connections_accepted,
        ),
        (
            "cella_idle_evictions_total",
            "counter",
            "Idle keep-alive connections closed to admit a new one into a full table.",
            totals.idle_evictions,
        ),
        (
            "cella_probes_total",
            "counter",
            "Probe requests on the main listener, answered without a slot.",
            totals.probes,
        ),
    ];
    for (name, kind, help, value) in series {
        out.header(name, kind, help)?;
        out.put(name.as_bytes())?;
        out.put(b" ")?;
        out.line_value(value)?;
    }
    out.header(
        "cella_io_buffer_waits_total",
        "counter",
        "Times a connection with bytes to read found every I/O buffer pair lent.",
    )?;
    out.put(b"cella_io_buffer_waits_total ")?;
    out.line_value(totals.io_buffer_waits)?;
    out.header(
        "cella_arena_high_water_bytes",
        "histogram",
        "Each request's arena high-water mark, observed when its slot is released: size \
         slot_arena_size from it.",
    )?;
    out.histogram("cella_arena_high_water_bytes", &totals.arena_high_water_bytes, Unit::Plain)?;
    out.header(
        "cella_system_allocations_after_start_total",
        "counter",
        "System allocator calls made by sealed threads (expected: 0).",
    )?;
    out.put(b"cella_system_allocations_after_start_total ")?;
    out.line_value(gauges.system_allocations_after_start)?;
    out.header("cella_build_info", "gauge", "The running build; the value is always 1.")?;
    out.labelled("cella_build_info", "version", VERSION)?;
    out.line_value(1)?;
    render_process(out, gauges)
}

fn render_process(out: &mut Out<'_, impl Sink>, gauges: &Gauges) -> Result<(), Full> {
    if let Some(bytes) = gauges.resident_memory_bytes {
        out.header("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")?;
        out.put(b"process_resident_memory_bytes ")?;
        out.line_value(bytes)?;
    }
    if let Some(fds) = gauges.open_fds {
        out.header("process_open_fds", "gauge", "Number of open file descriptors.")?;
        out.put(b"process_open_fds ")?;
        out.line_value(fds)?;
    }
    Ok(())
}

/// How a histogram's values are written.
#[derive(Clone, Copy)]
enum Unit {
    /// Microseconds, written in seconds.
    Micros,
    /// Written as they are.
    Plain,
}

struct Out<'s, S: Sink> {
    sink: &'s mut S,
}

impl<S: Sink> Out<'_, S> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Full> {
        self.sink.put(bytes)
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) -> Result<(), Full> {
        self.put(b"# HELP ")?;
        self.put(name.as_bytes())?;
        self.put(b" ")?;
        self.put(help.as_bytes())?;
        self.put(b"\n# TYPE ")?;
        self.put(name.as_bytes())?;
        self.put(b" ")?;
        self.put(kind.as_bytes())?;
        self.put(b"\n")
    }

    /// `name{label="value"} ` (the value follows). Values are static and need no escaping.
    fn labelled(&mut self, name: &str, label: &str, value: &str) -> Result<(), Full> {
        self.put(name.as_bytes())?;
        self.put(b"{")?;
        self.put(label.as_bytes())?;
        self.put(b"=\"")?;
        self.put(value.as_bytes())?;
        self.put(b"\"} ")
    }

    fn line_value(&mut self, value: u64) -> Result<(), Full> {
        self.decimal(value)?;
        self.put(b"\n")
    }

    fn decimal(&mut self, mut value: u64) -> Result<(), Full> {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.put(&digits[start..])
    }

    /// `micros` as seconds: `2500` is `0.0025`, `1000000` is `1`.
    fn seconds(&mut self, micros: u64) -> Result<(), Full> {
        self.decimal(micros / 1_000_000)?;
        let fraction = micros % 1_000_000;
        if fraction == 0 {
            return Ok(());
        }
        let mut digits = *b".000000";
        let mut rest = fraction;
        for digit in digits[1..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = digits.iter().rposition(|&digit| digit != b'0').map_or(1, |last| last + 1);
        self.put(&digits[..len])
    }

    fn value(&mut self, value: u64, unit: Unit) -> Result<(), Full> {
        match unit {
            Unit::Micros => self.seconds(value),
            Unit::Plain => self.decimal(value),
        }
    }

    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        histogram: &HistogramTotals<N>,
        unit: Unit,
    ) -> Result<(), Full> {
        let mut cumulative = 0u64;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative = cumulative.wrapping_add(*count);
            self.put(name.as_bytes())?;
            self.put(b"_bucket{le=\"")?;
            self.value(*bound, unit)?;
            self.put(b"\"} ")?;
            self.line_value(cumulative)?;
        }
        let count = histogram.count();
        self.put(name.as_bytes())?;
        self.put(b"_bucket{le=\"+Inf\"} ")?;
        self.line_value(count)?;
        self.put(name.as_bytes())?;
        self.put(b"_sum ")?;
        self.value(histogram.sum, unit)?;
        self.put(b"\n")?;
        self.put(name.as_bytes())?;
        self.put(b"_count ")?;
        self.line_value(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::encode::FixedSink;

    fn rendered(totals: &Totals, gauges: &Gauges) -> String {
        let mut buf = vec![0u8; 64 << 10];
        let mut sink = FixedSink { buf: &mut buf, len: 0 };
        render(&mut sink, totals, gauges).expect("fits");
        let len = sink.len;
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    fn value_of<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn responses_are_counted_by_exact_code_or_by_class_and_observed_in_seconds() {
        let stats = [WorkerStats::default(), WorkerStats::default()];
        stats[0].metrics.record_response(200, Duration::from_micros(700));
        stats[1].metrics.record_response(200, Duration::from_millis(3));
        stats[1].metrics.record_response(299, Duration::from_secs(60));
        stats[0].metrics.record_response(503, Duration::ZERO);
        stats[0].metrics.reject(Reason::NoSlot);
        let totals = Totals::of(&stats);
        assert_eq!(totals.responses_by_class(), [0, 3, 0, 0, 1]);
        let text = rendered(&totals, &Gauges::default());
        assert_eq!(value_of(&text, "cella_http_requests_total{code=\"200\"}"), Some("2"));
        assert_eq!(value_of(&text, "cella_http_requests_total{code=\"2xx\"}"), Some("1"));
        assert_eq!(value_of(&text, "cella_http_requests_total{code=\"404\"}"), None, "unseen");
        let bucket = "cella_http_request_duration_seconds_bucket";
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"0.001\"}}")), Some("2"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"0.005\"}}")), Some("3"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"30\"}}")), Some("3"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"+Inf\"}}")), Some("4"));
        assert_eq!(value_of(&text, "cella_http_request_duration_seconds_sum"), Some("60.0037"));
        assert_eq!(value_of(&text, "cella_http_request_duration_seconds_count"), Some("4"));
        assert_eq!(value_of(&text, "cella_rejected_total{reason=\"no_slot\"}"), Some("1"));
        assert_eq!(value_of(&text, "cella_rejected_total{reason=\"malformed\"}"), Some("0"));
    }

    #[test]
    fn arena_high_water_marks_land_in_power_of_two_buckets() {
        let stats = [WorkerStats::default()];
        for bytes in [0, 1024, 1025, 300 << 10, 2 << 30] {
            stats[0].metrics.arena_high_water_bytes.observe(bytes);
        }
        let text = rendered(&Totals::of(&stats), &Gauges::default());
        let bucket = "cella_arena_high_water_bytes_bucket";
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"1024\"}}")), Some("2"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"2048\"}}")), Some("3"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"262144\"}}")), Some("3"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"524288\"}}")), Some("4"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"1073741824\"}}")), Some("4"));
        assert_eq!(value_of(&text, &format!("{bucket}{{le=\"+Inf\"}}")), Some("5"));
    }

    #[test]
    fn seconds_are_written_without_trailing_zeros() {
        let mut buf = [0u8; 64];
        for (micros, text) in [(0, "0"), (1_000, "0.001"), (2_500, "0.0025"), (1_000_000, "1")]
            .into_iter()
            .chain([(2_500_000, "2.5"), (63_003_700, "63.0037"), (1, "0.000001")])
        {
            let mut sink = FixedSink { buf: &mut buf, len: 0 };
            Out { sink: &mut sink }.seconds(micros).unwrap();
            let len = sink.len;
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), text);
        }
    }

    #[test]
    fn errors_before_a_handler_have_a_reason_and_errors_of_handlers_do_not() {
        assert_eq!(Reason::of(ErrorKind::NoSlot), Some(Reason::NoSlot));
        assert_eq!(Reason::of(ErrorKind::UriTooLong), Some(Reason::HeadTooLarge));
        assert_eq!(Reason::of(ErrorKind::BadChunk), Some(Reason::Malformed));
        assert_eq!(Reason::of(ErrorKind::BodySlotsFull), Some(Reason::BodySlotsFull));
        assert_eq!(Reason::of(ErrorKind::ArenaExhausted), None);
        assert_eq!(Reason::of(ErrorKind::HandlerTimeout), None);
    }

    /// Every counter at its largest, every code seen, both process series: the most a scrape
    /// renders, which the admin listener's buffer must hold.
    fn largest_rendering() -> String {
        let big = u64::MAX;
        let totals = Totals {
            responses: [big; CODE_COUNTERS],
            duration_us: HistogramTotals {
                bounds: &DURATION_BOUNDS_US,
                counts: [big; DURATION_BOUNDS_US.len()],
                above: big,
                sum: big,
            },
            arena_high_water_bytes: HistogramTotals {
                bounds: &ARENA_BOUNDS_BYTES,
                counts: [big; ARENA_BOUNDS_BYTES.len()],
                above: big,
                sum: big,
            },
            rejected: [big; Reason::ALL.len()],
            overruns: big,
            panics: big,
            stack_overflows: big,
            handler_timeouts: big,
            client_gone: big,
            connections_accepted: big,
            idle_evictions: big,
            io_buffer_waits: big,
            probes: big,
        };
        let gauges = Gauges {
            slots: big,
            slot_arena_bytes: big,
            connections_max: big,
            io_buffers: big,
            system_allocations_after_start: big,
            resident_memory_bytes: Some(big),
            open_fds: Some(big),
            ..Gauges::default()
        };
        rendered(&totals, &gauges)
    }

    #[test]
    fn the_largest_rendering_fits_the_metrics_buffer() {
        let text = largest_rendering();
        assert!(
            text.len() <= METRICS_BYTES_MAX,
            "{} bytes do not fit METRICS_BYTES_MAX ({METRICS_BYTES_MAX})",
            text.len()
        );
    }
}
