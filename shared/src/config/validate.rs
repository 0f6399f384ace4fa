//! The relations between keys, checked once every source has been applied, and the memory
//! plan they imply.

use std::net::SocketAddr;

use super::{Config, ConfigError};
use crate::limits;
use crate::plan::MemoryPlan;
use crate::size::format_size;

impl Config {
    /// Checks the relations between keys, and computes the memory plan they imply.
    pub fn validate(&self, page_size: u64) -> Result<MemoryPlan, ConfigError> {
        let fail = |message: String| Err(ConfigError::Invalid(message));
        let workers = self.workers_resolved();
        if workers > limits::WORKERS_MAX {
            return fail(format!("workers = {workers} exceeds {}", limits::WORKERS_MAX));
        }
        if self.slots < workers || self.slots > limits::SLOTS_MAX {
            return fail(format!(
                "slots = {} must be at least workers ({workers}) and at most {}",
                self.slots,
                limits::SLOTS_MAX
            ));
        }
        if self.io_buffers == 0 || self.io_buffers > limits::CONNECTIONS_MAX {
            return fail(format!(
                "io_buffers = {} must be at least 1 and at most {}",
                self.io_buffers,
                limits::CONNECTIONS_MAX
            ));
        }
        if self.connections_max < workers || self.connections_max > limits::CONNECTIONS_MAX {
            return fail(format!(
                "connections_max = {} must be at least workers ({workers}) and at most {}",
                self.connections_max,
                limits::CONNECTIONS_MAX
            ));
        }
        // Each size of the plan alone must fit in the largest region: this names the key at
        // fault, and bounds the plan's arithmetic (which is checked as well) far from overflow.
        for (key, size) in [
            ("slot_stack_size", self.slot_stack_size),
            ("slot_arena_size", self.slot_arena_size),
            ("connection_read_buffer_size", self.connection_read_buffer_size),
            ("connection_write_buffer_size", self.connection_write_buffer_size),
            ("panic_reserve_size", self.panic_reserve_size),
            ("state_heap_size", self.state_heap_size),
            ("access_log_buffer_size", self.access_log_buffer_size),
        ] {
            if size.0 > limits::REGION_SIZE_MAX {
                return Err(ConfigError::BadValue {
                    key: key.to_string(),
                    message: format!(
                        "{} is more than the {} region cella maps at most",
                        format_size(size.0),
                        format_size(limits::REGION_SIZE_MAX)
                    ),
                });
            }
        }
        if self.slot_stack_size.0 < limits::SLOT_STACK_SIZE_MIN {
            return fail(format!(
                "slot_stack_size must be at least {}",
                format_size(limits::SLOT_STACK_SIZE_MIN)
            ));
        }
        if self.state_heap_size.0 < limits::STATE_HEAP_SIZE_MIN {
            return fail(format!(
                "state_heap_size must be at least {}",
                format_size(limits::STATE_HEAP_SIZE_MIN)
            ));
        }
        if !(limits::LOG_LINE_SIZE_MIN..=limits::LOG_LINE_SIZE_MAX)
            .contains(&self.log_line_size_max.0)
        {
            return fail(format!(
                "log_line_size_max must be between {} and {}",
                format_size(limits::LOG_LINE_SIZE_MIN),
                format_size(limits::LOG_LINE_SIZE_MAX)
            ));
        }
        if !["off", "error", "warn", "info", "debug", "trace"]
            .contains(&self.log_level.trim().to_ascii_lowercase().as_str())
        {
            return fail(format!(
                "log_level = `{}` is not one of off, error, warn, info, debug, trace",
                self.log_level
            ));
        }
        if self.access_log_buffer_size.0 < limits::ACCESS_LOG_BUFFER_SIZE_MIN {
            return fail(format!(
                "access_log_buffer_size must be at least {} (the longest access log line)",
                format_size(limits::ACCESS_LOG_BUFFER_SIZE_MIN)
            ));
        }
        if self.slot_arena_size.0 < limits::SLOT_ARENA_SIZE_MIN {
            return fail(format!(
                "slot_arena_size must be at least {}",
                format_size(limits::SLOT_ARENA_SIZE_MIN)
            ));
        }
        for (key, size) in [
            ("connection_read_buffer_size", self.connection_read_buffer_size),
            ("connection_write_buffer_size", self.connection_write_buffer_size),
        ] {
            if size.0 < limits::CONNECTION_BUFFER_SIZE_MIN {
                return fail(format!(
                    "{key} must be at least {}",
                    format_size(limits::CONNECTION_BUFFER_SIZE_MIN)
                ));
            }
        }
        if self.request_head_size_max > self.connection_read_buffer_size {
            return fail(
                "request_head_size_max must not exceed connection_read_buffer_size".into(),
            );
        }
        if self.watchdog_ms <= self.handler_timeout_ms {
            return fail(format!(
                "watchdog_ms = {} must be more than handler_timeout_ms = {} (a handler may run that long without its loop turning)",
                self.watchdog_ms, self.handler_timeout_ms
            ));
        }
        if self.request_line_size_max > self.request_head_size_max {
            return fail("request_line_size_max must not exceed request_head_size_max".into());
        }
        if self.request_body_size_max.0 > self.slot_arena_size.0 / 2 {
            return fail("request_body_size_max must be at most half of slot_arena_size (the body is read into the arena)".into());
        }
        if self.headers_count_max == 0 || self.headers_count_max > limits::HEADERS_COUNT_MAX {
            return fail(format!(
                "headers_count_max must be between 1 and {}",
                limits::HEADERS_COUNT_MAX
            ));
        }
        for (key, path) in
            [("liveness_path", &self.liveness_path), ("readiness_path", &self.readiness_path)]
        {
            let clean = path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
            let valid = path.is_empty() || (path.starts_with('/') && clean);
            if !valid {
                return Err(ConfigError::BadValue {
                    key: key.to_string(),
                    message: format!("`{path}` is not empty nor a path such as /livez"),
                });
            }
        }
        if !self.liveness_path.is_empty() && self.liveness_path == self.readiness_path {
            return fail("liveness_path and readiness_path must differ (or be empty)".into());
        }
        for (key, address) in
            [("admin_listen", self.admin_listen), ("agent_listen", self.agent_listen)]
        {
            let shares_a_port = |other: SocketAddr| {
                address.is_some_and(|address| address.port() != 0 && address == other)
            };
            if shares_a_port(self.listen) {
                return fail(format!("{key} must differ from listen"));
            }
        }
        if self
            .agent_listen
            .is_some_and(|agent| agent.port() != 0 && self.admin_listen == Some(agent))
        {
            return fail("admin_listen and agent_listen must differ".into());
        }
        if self.full_table_held_max > limits::FULL_TABLE_HELD_MAX {
            return fail(format!(
                "full_table_held_max = {} must be at most {}",
                self.full_table_held_max,
                limits::FULL_TABLE_HELD_MAX
            ));
        }
        if self.slot_sockets_max > limits::SLOT_SOCKETS_MAX {
            return fail(format!("slot_sockets_max must be at most {}", limits::SLOT_SOCKETS_MAX));
        }
        let plan = MemoryPlan::new(self, workers, page_size)
            .map_err(|overflow| ConfigError::Invalid(format!("the memory plan: {overflow}")))?;
        if plan.total_bytes > limits::REGION_SIZE_MAX {
            return fail(format!(
                "the memory plan needs {}, more than the {} cella maps at most",
                format_size(plan.total_bytes),
                format_size(limits::REGION_SIZE_MAX)
            ));
        }
        Ok(plan)
    }
}
