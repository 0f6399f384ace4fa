use super::*;

fn entry(head: &[u8]) -> Entry<'_> {
    Entry {
        // 2024-02-29T13:04:05.678Z
        unix_time: Duration::from_millis(1_709_211_845_678),
        remote: "127.0.0.1:40000".parse().unwrap(),
        head,
        status: 200,
        body_bytes: 12,
        duration: Duration::from_micros(1_234_567),
        arena_high_water_bytes: 4096,
    }
}

fn line(entry: &Entry<'_>, format: AccessLogFormat) -> String {
    let mut out = [0u8; LINE_BYTES_MAX];
    let len = format_line(entry, format, &mut out);
    String::from_utf8(out[..len].to_vec()).expect("a line is ASCII")
}

const HEAD: &[u8] = b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nReferer: http://r/\r\n\
                      user-agent:  curl/8.0 \r\n\r\n";

#[test]
fn combined_is_nginx_combined_then_duration_and_high_water() {
    assert_eq!(
        line(&entry(HEAD), AccessLogFormat::Combined),
        "127.0.0.1 - - [29/Feb/2024:13:04:05 +0000] \"GET /a/b?x=1 HTTP/1.1\" 200 12 \
         \"http://r/\" \"curl/8.0\" 1.234567 4096\n"
    );
}

#[test]
fn json_is_one_object_with_every_key() {
    assert_eq!(
        line(&entry(HEAD), AccessLogFormat::Json),
        "{\"time\":\"2024-02-29T13:04:05.678Z\",\"remote\":\"127.0.0.1\",\"method\":\"GET\",\
         \"path\":\"/a/b?x=1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":12,\
         \"duration_s\":1.234567,\"arena_high_water_bytes\":4096,\"referer\":\"http://r/\",\
         \"user_agent\":\"curl/8.0\"}\n"
    );
}

#[test]
fn a_missing_request_line_and_headers_are_dashes_in_combined_and_empty_in_json() {
    let mut entry = entry(b"");
    entry.remote = "[::1]:9".parse().unwrap();
    let combined = line(&entry, AccessLogFormat::Combined);
    assert!(combined.starts_with("::1 - - ["), "{combined}");
    assert!(combined.contains("] \"-\" 200 12 \"-\" \"-\" "), "{combined}");
    let json = line(&entry, AccessLogFormat::Json);
    assert!(json.contains("\"method\":\"\",\"path\":\"\",\"protocol\":\"\""), "{json}");
}

#[test]
fn quotes_backslashes_and_control_bytes_are_escaped_as_nginx_and_json_do() {
    let head = b"GET /q\"\\\x01\x7f\xff HTTP/1.1\r\nUser-Agent: a\"b\r\n\r\n";
    let combined = line(&entry(head), AccessLogFormat::Combined);
    assert!(combined.contains("\"GET /q\\x22\\x5C\\x01\\x7F\\xFF HTTP/1.1\""), "{combined}");
    assert!(combined.contains("\"a\\x22b\""), "{combined}");
    let json = line(&entry(head), AccessLogFormat::Json);
    assert!(json.contains("\"path\":\"/q\\\"\\\\\\u0001\\u007F\\u00FF\""), "{json}");
    assert!(json.contains("\"user_agent\":\"a\\\"b\""), "{json}");
}

#[test]
fn an_incomplete_head_logs_what_arrived_of_its_first_line() {
    let combined = line(&entry(b"GET /very/long"), AccessLogFormat::Combined);
    assert!(combined.contains("\"GET /very/long\" 200"), "{combined}");
    let json = line(&entry(b"GET /very/long"), AccessLogFormat::Json);
    assert!(
        json.contains("\"method\":\"GET\",\"path\":\"/very/long\",\"protocol\":\"\""),
        "{json}"
    );
}

#[test]
fn every_field_at_its_longest_keeps_the_line_whole_and_marks_the_cuts() {
    // Every byte escaped (4 or 6 output bytes each) and far past every maximum.
    let mut head = b"\x01".repeat(300);
    head.extend_from_slice(b" /");
    head.extend(std::iter::repeat_n(b'"', 9000));
    head.extend_from_slice(b" ");
    head.extend(std::iter::repeat_n(0xffu8, 300));
    head.extend_from_slice(b"\r\nReferer: ");
    head.extend(std::iter::repeat_n(b'\\', 3000));
    head.extend_from_slice(b"\r\nUser-Agent: ");
    head.extend(std::iter::repeat_n(0x0bu8, 3000));
    head.extend_from_slice(b"\r\n\r\n");
    for format in [AccessLogFormat::Combined, AccessLogFormat::Json] {
        let text = line(&entry(&head), format);
        assert!(text.len() <= LINE_BYTES_MAX, "{format:?}: {} bytes", text.len());
        assert_eq!(text.matches('\n').count(), 1, "{format:?}: one line");
        assert!(text.ends_with("4096\n") || text.ends_with("\"}\n"), "{format:?}: whole: {text}");
        let cuts = text.matches("[truncated]").count();
        let expected = if format == AccessLogFormat::Json { 5 } else { 3 };
        assert_eq!(cuts, expected, "{format:?}: {text}");
    }
}

#[test]
fn a_field_of_exactly_its_maximum_is_not_cut_and_one_byte_more_is() {
    for (len, cut) in
        [(REQUEST_BYTES_MAX - "GET  HTTP/1.1".len(), false), (REQUEST_BYTES_MAX, true)]
    {
        let mut head = b"GET ".to_vec();
        head.extend(std::iter::repeat_n(b'a', len));
        head.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let text = line(&entry(&head), AccessLogFormat::Combined);
        assert_eq!(text.contains(TRUNCATED.escape_ascii().to_string().as_str()), cut, "{len}");
    }
}

#[test]
fn times_are_utc_computed_without_libc() {
    let mut entry = entry(HEAD);
    entry.unix_time = Duration::from_millis(5);
    assert!(line(&entry, AccessLogFormat::Combined).contains("[01/Jan/1970:00:00:00 +0000]"));
    assert!(line(&entry, AccessLogFormat::Json).contains("\"time\":\"1970-01-01T00:00:00.005Z\""));
    entry.duration = Duration::from_micros(7);
    assert!(line(&entry, AccessLogFormat::Json).contains("\"duration_s\":0.000007,"));
}
