//! The counters a running server reports ([`Stats`]), summed over its workers.

/// Counters summed over all workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections_accepted: u64,
    pub connections_rejected: u64,
    pub requests: u64,
    pub busy_rejections: u64,
    pub overruns: u64,
    pub panics: u64,
    pub stack_overflows: u64,
    pub handler_timeouts: u64,
    pub client_errors: u64,
    /// Idle keep-alive connections closed to admit a new one when the table was full.
    pub idle_evictions: u64,
    /// Probe requests (`liveness_path`, `readiness_path`), answered without a slot.
    pub probes: u64,
    /// System allocator calls made by sealed threads in this process (expected: 0).
    pub sealed_system_calls: u64,
    /// The most any slot's arena has held, in bytes: how close handlers come to
    /// `slot_arena_size`.
    pub arena_high_water_bytes: u64,
    /// Requests and connections turned away before a handler ran, by reason.
    pub rejected: crate::metrics::Rejections,
    /// Handlers cancelled because their client closed the connection before they finished.
    pub client_gone: u64,
    /// Answers queued on the main listener by status class, `[1xx, 2xx, 3xx, 4xx, 5xx]`
    /// (probes are counted in `probes`).
    pub responses_by_class: [u64; 5],
    /// Times a connection with bytes to read found every I/O buffer pair lent.
    pub io_buffer_waits: u64,
    /// Access log lines added to the workers' buffers (`cella_access_log_lines_total`).
    pub access_log_lines: u64,
    /// Access log lines dropped because a worker's buffer was full.
    pub access_log_dropped: u64,
    /// Words the escape check (`escape_check`) found pointing into the arena of a released
    /// slot: memory a request left behind.
    pub escapes: u64,
    /// Slots retired (never reused) because of such words.
    pub slots_retired: u64,
}
