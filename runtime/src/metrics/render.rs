//! Rendering the summed counters and the gauges as Prometheus text (version 0.0.4) into any
//! sink, without allocating.
//! Its tests are in `render/tests.rs`.

use super::*;
use crate::http::encode::{Full, Sink};

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
    let series: [(&str, &str, &str, u64); 15] = [
        ("cella_slots", "gauge", "Slots of the instance.", gauges.slots),
        (
            "cella_slots_busy",
            "gauge",
            "Slots held by requests now.",
            busy(gauges.slots, gauges.slots_free).saturating_sub(totals.slots_retired),
        ),
        (
            "cella_slots_retired",
            "gauge",
            "Slots retired for good because the escape check found memory outside the request \
             pointing into their arena.",
            totals.slots_retired,
        ),
        (
            "cella_escapes_total",
            "counter",
            "Words the escape check found pointing into the arena of a released slot.",
            totals.escapes,
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
        (
            "cella_access_log_lines_total",
            "counter",
            "Access log lines added to the workers' buffers (written out by the log writer).",
            totals.access_log_lines,
        ),
        (
            "cella_access_log_dropped_total",
            "counter",
            "Access log lines dropped because their worker's buffer was full.",
            totals.access_log_dropped,
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

    fn decimal(&mut self, value: u64) -> Result<(), Full> {
        crate::http::encode::put_decimal(self.sink, value)
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
mod tests;
