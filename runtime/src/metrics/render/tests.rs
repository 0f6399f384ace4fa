//! Tests of the Prometheus rendering (`render.rs`): counters summed over the workers, the
//! histograms, the gauges and the rendering's size bound.

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
    stats[0].metrics.record_response(200, 700_000);
    stats[1].metrics.record_response(200, 3_000_000);
    stats[1].metrics.record_response(299, 60_000_000_000);
    stats[0].metrics.record_response(503, 0);
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
