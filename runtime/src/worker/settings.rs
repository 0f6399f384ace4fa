//! The configuration in the units the worker uses (durations, resolved defaults), made once
//! at startup and shared by every worker.

use std::time::Duration;

use cella_shared::Config;

use crate::http::parse::HeadLimits;

/// The configuration, in the units the worker uses.
pub(crate) struct Settings {
    pub head_limits: HeadLimits,
    pub headers_count_max: usize,
    pub body_bytes_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub response_write_timeout: Duration,
    pub keepalive_idle_timeout: Duration,
    pub linger_timeout: Duration,
    pub chunk_extension_bytes_max: usize,
    pub trailer_bytes_max: usize,
    pub handler_timeout: Duration,
    pub slot_wait_timeout: Duration,
    pub full_table_wait: Duration,
    /// Accepted connections this worker may hold while the table is full (`eviction.rs`).
    pub full_table_held_max: usize,
    pub retry_after_s: u64,
    pub quarantine: bool,
    /// What a released slot's escape check scans (`worker/escapes.rs`).
    pub escape_check: crate::escape::EscapeCheck,
    pub fault_injection: bool,
    pub slot_sockets_max: usize,
    /// Slots that bodies still arriving may hold at once (`body_slots_max`, resolved).
    pub body_slots_max: usize,
    /// Bytes a slot-holding body must grow by in each `body_rate_window` (0: no check).
    pub body_window_bytes_min: u64,
    pub body_rate_window: Duration,
    /// The probe paths; empty: that probe is off.
    pub liveness_path: Box<str>,
    pub readiness_path: Box<str>,
}

impl Settings {
    pub(crate) fn new(config: &Config) -> Settings {
        let ms = Duration::from_millis;
        Settings {
            head_limits: HeadLimits {
                line_bytes_max: config.request_line_size_max.0 as usize,
                head_bytes_max: config.request_head_size_max.0 as usize,
            },
            headers_count_max: config.headers_count_max,
            body_bytes_max: config.request_body_size_max.0 as usize,
            header_read_timeout: ms(config.header_read_timeout_ms),
            body_read_timeout: ms(config.body_read_timeout_ms),
            body_slots_max: match config.body_slots_max {
                0 => config.slots.div_ceil(2),
                max => max,
            },
            body_window_bytes_min: config
                .body_rate_min_bytes_per_s
                .saturating_mul(config.body_rate_window_ms)
                / 1000,
            body_rate_window: ms(config.body_rate_window_ms.max(1)),
            response_write_timeout: ms(config.response_write_timeout_ms),
            keepalive_idle_timeout: ms(config.keepalive_idle_timeout_ms),
            linger_timeout: ms(config.linger_timeout_ms),
            chunk_extension_bytes_max: config.chunk_extension_size_max.0 as usize,
            trailer_bytes_max: config.trailer_size_max.0 as usize,
            handler_timeout: ms(config.handler_timeout_ms),
            slot_wait_timeout: ms(config.slot_wait_timeout_ms),
            full_table_wait: ms(config.full_table_wait_ms),
            full_table_held_max: config.full_table_held_max,
            retry_after_s: config.retry_after_s,
            quarantine: config.quarantine,
            escape_check: config.escape_check,
            fault_injection: config.fault_injection,
            slot_sockets_max: config.slot_sockets_max,
            liveness_path: config.liveness_path.as_str().into(),
            readiness_path: config.readiness_path.as_str().into(),
        }
    }
}
