use super::*;
use crate::limits;

#[test]
fn defaults_validate() {
    let config = Config::default();
    assert_eq!(config.listen.port(), 8080);
    config.validate(4096).expect("defaults are valid");
}

#[test]
fn the_watchdog_must_be_longer_than_the_handler_timeout() {
    let mut config = Config { handler_timeout_ms: 300, watchdog_ms: 300, ..Config::default() };
    let error = config.validate(4096).unwrap_err();
    assert!(error.to_string().contains("watchdog_ms = 300 must be more than"), "{error}");
    config.watchdog_ms = 301;
    config.validate(4096).expect("one millisecond more is valid");
}

#[test]
fn unknown_keys_are_errors_in_every_source() {
    let mut config = Config::default();
    let error = config.apply_toml("slotz = 3").unwrap_err();
    assert!(matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "slotz"));
    assert!(config.set("slotz", "3", "a flag").is_err());
}

#[test]
fn unknown_cella_variables_are_ignored_and_named_but_bad_values_are_errors() {
    let mut config = Config::default();
    let ignored = config
        .apply_env([
            ("CELLA_PORT".to_string(), "tcp://10.0.0.1:80".to_string()),
            ("CELLA_SLOTS".to_string(), "8".to_string()),
            ("CELLA_SERVICE_HOST".to_string(), "10.0.0.1".to_string()),
        ])
        .unwrap();
    assert_eq!(ignored, ["CELLA_PORT", "CELLA_SERVICE_HOST"]);
    assert_eq!(config.slots, 8);
    let error = config.apply_env([("CELLA_SLOTS".to_string(), "x".to_string())]).unwrap_err();
    assert!(error.to_string().contains("slots"), "{error}");
}

#[test]
fn values_parse_the_same_from_file_and_env() {
    let mut from_file = Config::default();
    from_file.apply_toml("slot_arena_size = \"2MiB\"\nslots = 8\nprefault = false").unwrap();
    let mut from_env = Config::default();
    from_env
        .apply_env([
            ("CELLA_SLOT_ARENA_SIZE".to_string(), "2MiB".to_string()),
            ("CELLA_SLOTS".to_string(), "8".to_string()),
            ("CELLA_PREFAULT".to_string(), "false".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .unwrap();
    assert_eq!(from_file, from_env);
    assert_eq!(from_file.slot_arena_size, Size(2 << 20));
}

#[test]
fn bad_values_name_their_key() {
    let mut config = Config::default();
    let error = config.set("slot_arena_size", "1MB", "a flag").unwrap_err();
    assert!(error.to_string().contains("slot_arena_size"), "{error}");
    assert!(config.apply_toml("slots = [1]").is_err());
}

#[test]
fn the_plugin_section_is_left_for_the_plugin() {
    let text = "slots = 8\n[plugin]\ngreeting = \"hi\"\n";
    let mut config = Config::default();
    config.apply_toml(text).unwrap();
    assert_eq!(config.slots, 8);
    assert_eq!(plugin_section(text), "greeting = \"hi\"\n");
    assert!(config.apply_toml("[other]\nx = 1").is_err());
}

#[test]
fn probe_paths_are_empty_or_absolute_paths_and_differ() {
    let mut config = Config::default();
    config.apply_toml("readiness_path = \"\"\nliveness_path = \"/health/live\"").unwrap();
    config.validate(4096).expect("an empty path turns a probe off");
    for bad in ["livez", "/a b", "/a?b"] {
        config.liveness_path = bad.to_string();
        let error = config.validate(4096).unwrap_err();
        assert!(error.to_string().contains("liveness_path"), "{error}");
    }
    config.liveness_path = "/z".to_string();
    config.readiness_path = "/z".to_string();
    assert!(config.validate(4096).is_err());
}

#[test]
fn admin_and_agent_listeners_are_off_by_default_and_take_an_address() {
    let mut config = Config::default();
    assert_eq!((config.admin_listen, config.agent_listen), (None, None));
    config.apply_toml("admin_listen = \"127.0.0.1:9901\"\nagent_listen = \"\"").unwrap();
    assert_eq!(config.admin_listen, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(config.agent_listen, None);
    config.validate(4096).expect("an admin address and no agent");
    let entries = config.entries();
    assert!(entries.contains(&("admin_listen", "127.0.0.1:9901".to_string())));
    assert!(entries.contains(&("agent_listen", String::new())));
    let error = config.set("agent_listen", "9902", "a flag").unwrap_err();
    assert!(error.to_string().contains("agent_listen"), "{error}");
    config.agent_listen = config.admin_listen;
    assert!(config.validate(4096).is_err(), "admin and agent on one address");
    config.agent_listen = Some(config.listen);
    let error = config.validate(4096).unwrap_err();
    assert!(error.to_string().contains("agent_listen must differ from listen"), "{error}");
}

#[test]
fn body_limit_must_fit_in_the_arena() {
    let mut config = Config::default();
    config.request_body_size_max = Size(config.slot_arena_size.0);
    assert!(config.validate(4096).is_err());
}

#[test]
fn a_size_whose_page_rounding_would_wrap_is_refused_naming_its_key() {
    let mut config = Config::default();
    config.set("slot_stack_size", "18446744073709551615B", "a flag").unwrap();
    let error = config.validate(4096).unwrap_err();
    assert!(matches!(error, ConfigError::BadValue { ref key, .. } if key == "slot_stack_size"));
    assert_eq!(
        error.to_string(),
        "config key `slot_stack_size`: 18446744073709551615B is more than the 64GiB region \
         cella maps at most"
    );
}

#[test]
fn slots_times_an_arena_that_would_wrap_is_refused() {
    // 2^16 × (2^48 + 256KiB + a page) wraps to 16GiB + 256MiB: under the 64GiB limit.
    let mut config = Config::default();
    config.slots = limits::SLOTS_MAX;
    config.slot_arena_size = Size(1 << 48);
    let error = config.validate(4096).unwrap_err();
    assert!(error.to_string().contains("slot_arena_size"), "{error}");
}

#[test]
fn every_size_of_the_plan_is_capped_at_the_region_limit() {
    for key in [
        "slot_stack_size",
        "slot_arena_size",
        "connection_read_buffer_size",
        "connection_write_buffer_size",
        "panic_reserve_size",
        "state_heap_size",
        "access_log_buffer_size",
    ] {
        let mut config = Config::default();
        config.set(key, "65GiB", "a flag").unwrap();
        let error = config.validate(4096).unwrap_err();
        assert!(error.to_string().starts_with(&format!("config key `{key}`: 65GiB")), "{error}");
    }
}

#[test]
fn a_plan_of_exactly_the_region_limit_is_accepted_and_one_page_more_is_not() {
    let mut config = Config::default();
    config.workers = 1;
    config.slots = 1;
    config.connections_max = 1;
    config.io_buffers = 1;
    // One worker (64KiB signal stack + 64KiB reserve), one buffer pair (8KiB + 8KiB), one
    // slot (4KiB guard + 256KiB stack + arena) = 64GiB.
    // The state heap (16MiB by default) lies in the region too.
    let arena = limits::REGION_SIZE_MAX - (128 << 10) - (16 << 10) - (260 << 10) - (16 << 20);
    config.slot_arena_size = Size(arena);
    let plan = config.validate(4096).expect("exactly the limit is valid");
    assert_eq!(plan.total_bytes, limits::REGION_SIZE_MAX);
    config.slot_arena_size = Size(arena + 1);
    let error = config.validate(4096).unwrap_err();
    assert!(error.to_string().contains("the memory plan needs"), "{error}");
}

#[test]
fn a_state_heap_below_its_minimum_is_refused_and_the_minimum_is_accepted() {
    let mut config = Config::default();
    config.state_heap_size = Size(limits::STATE_HEAP_SIZE_MIN);
    config.validate(4096).expect("the minimum is valid");
    config.state_heap_size = Size(limits::STATE_HEAP_SIZE_MIN - 1);
    let error = config.validate(4096).unwrap_err();
    assert!(error.to_string().contains("state_heap_size must be at least 64KiB"), "{error}");
}

#[test]
fn log_line_size_max_allows_its_bounds_and_refuses_past_them() {
    let mut config = Config::default();
    for allowed in [limits::LOG_LINE_SIZE_MIN, limits::LOG_LINE_SIZE_MAX] {
        config.log_line_size_max = Size(allowed);
        config.validate(4096).expect("a bound is valid");
    }
    for refused in [limits::LOG_LINE_SIZE_MIN - 1, limits::LOG_LINE_SIZE_MAX + 1] {
        config.log_line_size_max = Size(refused);
        let error = config.validate(4096).unwrap_err();
        assert!(error.to_string().contains("log_line_size_max must be between 256B and 64KiB"));
    }
}

#[test]
fn log_level_takes_the_log_crate_levels_only() {
    let mut config = Config::default();
    for level in ["off", "error", "warn", "info", "debug", "trace", "WARN"] {
        config.log_level = level.to_string();
        config.validate(4096).expect("a level is valid");
    }
    config.log_level = "verbose".to_string();
    assert!(config.validate(4096).unwrap_err().to_string().contains("log_level = `verbose`"));
}

#[test]
fn every_key_has_a_default_and_a_doc() {
    let config = Config::default();
    assert_eq!(Config::KEYS.len(), config.entries().len());
    for key in Config::KEYS {
        assert!(!key.doc.trim().is_empty(), "{} has no doc", key.name);
    }
}

#[test]
fn an_access_log_buffer_of_one_line_is_accepted_and_one_byte_less_is_not() {
    let mut config = Config::default();
    config.set("access_log", "-", "a flag").unwrap();
    config.access_log_buffer_size = Size(limits::ACCESS_LOG_BUFFER_SIZE_MIN);
    config.validate(4096).expect("the minimum is valid");
    config.access_log_buffer_size = Size(limits::ACCESS_LOG_BUFFER_SIZE_MIN - 1);
    let error = config.validate(4096).unwrap_err();
    assert!(error.to_string().contains("access_log_buffer_size must be at least 4KiB"), "{error}");
}

#[test]
fn access_log_keys_parse_and_bad_values_name_the_key() {
    use crate::config::{AccessLogFormat, AccessLogTarget};
    let mut config = Config::default();
    assert_eq!(config.access_log, AccessLogTarget::Off);
    assert_eq!(config.access_log_format, AccessLogFormat::Combined);
    config.apply_toml("access_log = \"/var/log/cella.log\"\naccess_log_format = \"json\"").unwrap();
    assert_eq!(config.access_log, AccessLogTarget::File("/var/log/cella.log".into()));
    assert_eq!(config.access_log_format, AccessLogFormat::Json);
    let entries = config.entries();
    assert!(entries.contains(&("access_log", "/var/log/cella.log".to_string())));
    assert!(entries.contains(&("access_log_format", "json".to_string())));
    let error = config.set("access_log_format", "xml", "a flag").unwrap_err();
    assert_eq!(
        error.to_string(),
        "config key `access_log_format`: `xml` is not an access log format (combined or json)"
    );
    let error = config.set("access_log", "", "a flag").unwrap_err();
    assert!(error.to_string().starts_with("config key `access_log`: is empty"), "{error}");
}

#[test]
fn full_table_held_max_allows_0_to_its_bound_and_refuses_past_it() {
    let mut config = Config::default();
    for allowed in [0, limits::FULL_TABLE_HELD_MAX] {
        config.full_table_held_max = allowed;
        config.validate(4096).expect("a bound is valid");
    }
    config.full_table_held_max = limits::FULL_TABLE_HELD_MAX + 1;
    let error = config.validate(4096).unwrap_err();
    assert!(
        error.to_string().contains("full_table_held_max = 4097 must be at most 4096"),
        "{error}"
    );
}
