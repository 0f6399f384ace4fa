//! The memory plan: what the region holds, computed from the configuration alone.
//!
//! The region is laid out as, in address order:
//! `[signal stack | panic reserve] × workers`, `[guard page | stack | arena] × slots`,
//! `[read buffer | write buffer] × connections`. Every span starts on a page boundary, so the
//! guard pages can be protected and the arenas quarantined page by page.

use std::fmt;

use crate::config::Config;
use crate::limits;
use crate::size::format_size;

/// Sizes (in bytes) of everything cella maps at startup; nothing is mapped after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub page_size: u64,
    pub workers: usize,
    pub slots: usize,
    pub guard_size: u64,
    pub slot_stack_size: u64,
    pub slot_arena_size: u64,
    pub connections: usize,
    pub read_buffer_size: u64,
    pub write_buffer_size: u64,
    pub signal_stack_size: u64,
    pub panic_reserve_size: u64,
    pub total_bytes: u64,
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

impl MemoryPlan {
    pub fn new(config: &Config, workers: usize, page_size: u64) -> MemoryPlan {
        assert!(page_size.is_power_of_two(), "page size is a power of two");
        let page = |bytes: u64| align_up(bytes, page_size);
        let mut plan = MemoryPlan {
            page_size,
            workers,
            slots: config.slots,
            guard_size: page_size,
            slot_stack_size: page(config.slot_stack_size.0),
            slot_arena_size: page(config.slot_arena_size.0),
            connections: config.connections_max,
            read_buffer_size: page(config.connection_read_buffer_size.0),
            write_buffer_size: page(config.connection_write_buffer_size.0),
            signal_stack_size: page(limits::SIGNAL_STACK_SIZE),
            panic_reserve_size: page(config.panic_reserve_size.0),
            total_bytes: 0,
        };
        plan.total_bytes = plan.workers_bytes() + plan.slots_bytes() + plan.connections_bytes();
        plan
    }

    pub fn slot_bytes(&self) -> u64 {
        self.guard_size + self.slot_stack_size + self.slot_arena_size
    }

    pub fn slots_bytes(&self) -> u64 {
        self.slots as u64 * self.slot_bytes()
    }

    pub fn connection_bytes(&self) -> u64 {
        self.read_buffer_size + self.write_buffer_size
    }

    pub fn connections_bytes(&self) -> u64 {
        self.connections as u64 * self.connection_bytes()
    }

    pub fn worker_bytes(&self) -> u64 {
        self.signal_stack_size + self.panic_reserve_size
    }

    pub fn workers_bytes(&self) -> u64 {
        self.workers as u64 * self.worker_bytes()
    }

    /// How many of `total` items worker `worker_index` gets: an even share, the remainder going
    /// to the first workers.
    pub fn share(total: usize, workers: usize, worker_index: usize) -> usize {
        total / workers + usize::from(worker_index < total % workers)
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} slots × ({} guard + {} stack + {} arena) + {} connections × ({} read + {} write) \
             + {} workers × ({} signal stack + {} panic reserve) = {} ({} bytes)",
            self.slots,
            format_size(self.guard_size),
            format_size(self.slot_stack_size),
            format_size(self.slot_arena_size),
            self.connections,
            format_size(self.read_buffer_size),
            format_size(self.write_buffer_size),
            self.workers,
            format_size(self.signal_stack_size),
            format_size(self.panic_reserve_size),
            format_size(self.total_bytes),
            self.total_bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_is_the_sum_of_its_parts() {
        let mut config = Config::default();
        config.slots = 4;
        config.connections_max = 10;
        let plan = MemoryPlan::new(&config, 2, 4096);
        let expected = 4 * (4096 + (256 << 10) + (1 << 20))
            + 10 * (8192 + 8192)
            + 2 * ((64 << 10) + (64 << 10));
        assert_eq!(plan.total_bytes, expected);
        assert!(plan.to_string().contains("4 slots"));
    }

    #[test]
    fn shares_add_up() {
        for (total, workers) in [(64, 3), (5, 5), (7, 2)] {
            let sum: usize = (0..workers).map(|w| MemoryPlan::share(total, workers, w)).sum();
            assert_eq!(sum, total);
        }
    }
}
