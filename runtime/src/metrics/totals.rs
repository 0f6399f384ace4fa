//! Summing every worker's counters at a scrape (or for `Stats`): [`Totals`], with the
//! histograms' cumulative buckets ([`HistogramTotals`]) and the rejections by reason
//! ([`Rejections`], public in `crate::Stats`). Reads counters only; never writes them.

use std::sync::atomic::Ordering;

use super::*;

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
    pub(super) bounds: &'static [u64; N],
    pub(super) counts: [u64; N],
    pub(super) above: u64,
    pub(super) sum: u64,
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

    pub(super) fn count(&self) -> u64 {
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
        let sum = |total: &mut u64, counter: &AtomicU64| {
            *total = total.wrapping_add(counter.load(Ordering::Relaxed));
        };
        for worker in stats {
            let metrics = &worker.metrics;
            for (total, counter) in totals.responses.iter_mut().zip(&metrics.responses) {
                sum(total, counter);
            }
            for (total, counter) in totals.rejected.iter_mut().zip(&metrics.rejected) {
                sum(total, counter);
            }
            totals.duration_us.add(&metrics.duration_us);
            totals.arena_high_water_bytes.add(&metrics.arena_high_water_bytes);
            sum(&mut totals.overruns, &worker.overruns);
            sum(&mut totals.panics, &worker.panics);
            sum(&mut totals.stack_overflows, &worker.stack_overflows);
            sum(&mut totals.handler_timeouts, &worker.handler_timeouts);
            sum(&mut totals.client_gone, &metrics.client_gone);
            sum(&mut totals.connections_accepted, &worker.connections_accepted);
            sum(&mut totals.idle_evictions, &worker.idle_evictions);
            sum(&mut totals.io_buffer_waits, &worker.io_buffer_waits);
            sum(&mut totals.probes, &worker.probes);
            sum(&mut totals.access_log_lines, &metrics.access_log_lines);
            sum(&mut totals.access_log_dropped, &metrics.access_log_dropped);
            sum(&mut totals.escapes, &worker.escapes);
            sum(&mut totals.slots_retired, &worker.slots_retired);
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
