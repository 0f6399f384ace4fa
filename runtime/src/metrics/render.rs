//! Rendering the summed counters and the gauges as Prometheus text (version 0.0.4) into any
//! sink, without allocating.

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
            access_log_lines: big,
            access_log_dropped: big,
            escapes: big,
            slots_retired: big,
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
