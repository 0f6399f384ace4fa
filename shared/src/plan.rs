//! The memory plan: what the region holds, computed from the configuration alone.
//!
//! The region is laid out as, in address order:
//! `[signal stack | panic reserve | access log buffer] × workers`, `[guard page | stack | arena] × slots`,
//! `[read buffer | write buffer] × connections`, then the state heap. Every span starts on a page boundary, so the
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
    /// Read/write buffer pairs lent to connections (`io_buffers`).
    pub io_buffers: usize,
    pub read_buffer_size: u64,
    pub write_buffer_size: u64,
    pub signal_stack_size: u64,
    pub panic_reserve_size: u64,
    /// Each worker's access log buffer (`access_log_buffer_size`; 0 when `access_log` is off).
    pub access_log_buffer_size: u64,
    /// The state heap, shared by every worker (`state_heap_size`); last in the region.
    pub state_heap_size: u64,
    pub total_bytes: u64,
}

/// A size in the plan that does not fit in 64 bits. A configuration that asks for this much
/// memory is a mistake, and computing it with wrapping arithmetic would print (and map) a plan
/// far smaller than the one asked for, so every sum, product and page rounding is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOverflow {
    /// The configuration keys whose values overflowed, as the user writes them.
    pub keys: &'static str,
    /// What was being computed, with the values involved.
    pub detail: String,
}

impl fmt::Display for PlanOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} overflows 64-bit arithmetic", self.keys, self.detail)
    }
}

impl std::error::Error for PlanOverflow {}

/// Rounds `value` up to a multiple of `align` (a power of two); `None` when the result does not
/// fit in a `u64`.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(sum) => Some(sum & !(align - 1)),
        None => None,
    }
}

/// `count × bytes`, or the overflow naming `keys`.
fn times(count: usize, bytes: u64, keys: &'static str) -> Result<u64, PlanOverflow> {
    u64::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(bytes))
        .ok_or_else(|| PlanOverflow { keys, detail: format!("{count} × {bytes} bytes") })
}

/// The sum of `parts`, or the overflow naming `keys`.
fn sum(parts: &[u64], keys: &'static str) -> Result<u64, PlanOverflow> {
    parts.iter().try_fold(0u64, |total, &part| total.checked_add(part)).ok_or_else(|| {
        let parts: Vec<String> = parts.iter().map(u64::to_string).collect();
        PlanOverflow { keys, detail: format!("{} bytes", parts.join(" + ")) }
    })
}

impl MemoryPlan {
    /// The plan for `config` run by `workers` workers on pages of `page_size` bytes. Every size
    /// is rounded up to whole pages; any rounding, sum or product that would overflow is an
    /// error naming the keys involved (never a wrapped, smaller plan).
    pub fn new(
        config: &Config,
        workers: usize,
        page_size: u64,
    ) -> Result<MemoryPlan, PlanOverflow> {
        assert!(page_size.is_power_of_two(), "page size is a power of two");
        let page = |keys: &'static str, bytes: u64| {
            align_up(bytes, page_size).ok_or_else(|| PlanOverflow {
                keys,
                detail: format!("{} rounded up to whole pages", format_size(bytes)),
            })
        };
        let mut plan = MemoryPlan {
            page_size,
            workers,
            slots: config.slots,
            guard_size: page_size,
            slot_stack_size: page("slot_stack_size", config.slot_stack_size.0)?,
            slot_arena_size: page("slot_arena_size", config.slot_arena_size.0)?,
            connections: config.connections_max,
            io_buffers: config.io_buffers,
            read_buffer_size: page(
                "connection_read_buffer_size",
                config.connection_read_buffer_size.0,
            )?,
            write_buffer_size: page(
                "connection_write_buffer_size",
                config.connection_write_buffer_size.0,
            )?,
            signal_stack_size: page("the signal stack", limits::SIGNAL_STACK_SIZE)?,
            panic_reserve_size: page("panic_reserve_size", config.panic_reserve_size.0)?,
            access_log_buffer_size: match config.access_log {
                crate::config::AccessLogTarget::Off => 0,
                _ => page("access_log_buffer_size", config.access_log_buffer_size.0)?,
            },
            state_heap_size: page("state_heap_size", config.state_heap_size.0)?,
            total_bytes: 0,
        };
        plan.total_bytes = plan.checked_total()?;
        Ok(plan)
    }

    /// The region's size computed from its parts, every step checked.
    fn checked_total(&self) -> Result<u64, PlanOverflow> {
        sum(
            &[
                self.workers_bytes()?,
                self.slots_bytes()?,
                self.connections_bytes()?,
                self.state_heap_size,
            ],
            "the memory plan (workers, slots, connections and the state heap together)",
        )
    }

    /// One slot: guard page, stack and arena.
    pub fn slot_bytes(&self) -> Result<u64, PlanOverflow> {
        sum(
            &[self.guard_size, self.slot_stack_size, self.slot_arena_size],
            "slot_stack_size + slot_arena_size",
        )
    }

    pub fn slots_bytes(&self) -> Result<u64, PlanOverflow> {
        times(self.slots, self.slot_bytes()?, "slots × (slot_stack_size + slot_arena_size)")
    }

    /// One I/O buffer pair: a read and a write buffer.
    pub fn connection_bytes(&self) -> Result<u64, PlanOverflow> {
        sum(
            &[self.read_buffer_size, self.write_buffer_size],
            "connection_read_buffer_size + connection_write_buffer_size",
        )
    }

    pub fn connections_bytes(&self) -> Result<u64, PlanOverflow> {
        times(
            self.io_buffers,
            self.connection_bytes()?,
            "io_buffers × (connection_read_buffer_size + connection_write_buffer_size)",
        )
    }

    /// One worker: its signal stack, panic reserve and access log buffer.
    pub fn worker_bytes(&self) -> Result<u64, PlanOverflow> {
        sum(
            &[self.signal_stack_size, self.panic_reserve_size, self.access_log_buffer_size],
            "panic_reserve_size + access_log_buffer_size",
        )
    }

    pub fn workers_bytes(&self) -> Result<u64, PlanOverflow> {
        times(
            self.workers,
            self.worker_bytes()?,
            "workers × (panic_reserve_size + access_log_buffer_size)",
        )
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
            "{} slots × ({} guard + {} stack + {} arena) + {} I/O buffer pairs × ({} read + {} \
             write) for {} connections + {} workers × ({} signal stack + {} panic reserve{}) + \
             {} state heap = {} ({} bytes)",
            self.slots,
            format_size(self.guard_size),
            format_size(self.slot_stack_size),
            format_size(self.slot_arena_size),
            self.io_buffers,
            format_size(self.read_buffer_size),
            format_size(self.write_buffer_size),
            self.connections,
            self.workers,
            format_size(self.signal_stack_size),
            format_size(self.panic_reserve_size),
            AccessLogPart(self.access_log_buffer_size),
            format_size(self.state_heap_size),
            format_size(self.total_bytes),
            self.total_bytes,
        )
    }
}

/// ` + N access log buffer` in the plan's text, or nothing when the access log is off.
struct AccessLogPart(u64);

impl fmt::Display for AccessLogPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            bytes => write!(f, " + {} access log buffer", format_size(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Size;

    #[test]
    fn total_is_the_sum_of_its_parts() {
        let mut config = Config::default();
        config.slots = 4;
        config.connections_max = 1000;
        config.io_buffers = 10;
        let plan = MemoryPlan::new(&config, 2, 4096).unwrap();
        let expected = 4 * (4096 + (256 << 10) + (1 << 20))
            + 10 * (8192 + 8192)
            + 2 * ((64 << 10) + (64 << 10))
            + (16 << 20);
        assert_eq!(plan.total_bytes, expected);
        assert!(plan.to_string().contains("4 slots"));
    }

    #[test]
    fn the_access_log_buffer_is_in_the_plan_only_when_the_access_log_is_on() {
        let mut config = Config::default();
        let off = MemoryPlan::new(&config, 2, 4096).unwrap();
        assert_eq!(off.access_log_buffer_size, 0);
        assert!(!off.to_string().contains("access log"), "{off}");
        config.access_log = crate::config::AccessLogTarget::Stdout;
        config.access_log_buffer_size = Size(10_000);
        let on = MemoryPlan::new(&config, 2, 4096).unwrap();
        assert_eq!(on.access_log_buffer_size, 12288, "rounded up to whole pages");
        assert_eq!(on.total_bytes, off.total_bytes + 2 * 12288);
        assert!(on.to_string().contains("+ 12KiB access log buffer)"), "{on}");
    }

    #[test]
    fn page_rounding_that_would_wrap_is_an_overflow_naming_the_key() {
        let mut config = Config::default();
        config.slot_stack_size = Size(u64::MAX);
        let error = MemoryPlan::new(&config, 1, 4096).unwrap_err();
        assert_eq!(error.keys, "slot_stack_size");
        assert!(error.to_string().contains("rounded up to whole pages"), "{error}");
        config.slot_stack_size = Size(u64::MAX - 4095); // already whole pages: no rounding
        let error = MemoryPlan::new(&config, 1, 4096).unwrap_err();
        assert_eq!(error.keys, "slot_stack_size + slot_arena_size", "the slot's sum overflows");
    }

    #[test]
    fn every_size_key_is_rounded_with_a_check() {
        let setters: [(&str, fn(&mut Config)); 6] = [
            ("slot_stack_size", |c| c.slot_stack_size = Size(u64::MAX)),
            ("slot_arena_size", |c| c.slot_arena_size = Size(u64::MAX)),
            ("connection_read_buffer_size", |c| c.connection_read_buffer_size = Size(u64::MAX)),
            ("connection_write_buffer_size", |c| c.connection_write_buffer_size = Size(u64::MAX)),
            ("panic_reserve_size", |c| c.panic_reserve_size = Size(u64::MAX)),
            ("state_heap_size", |c| c.state_heap_size = Size(u64::MAX)),
        ];
        for (key, set) in setters {
            let mut config = Config::default();
            set(&mut config);
            assert_eq!(MemoryPlan::new(&config, 1, 4096).unwrap_err().keys, key);
        }
    }

    #[test]
    fn a_product_that_would_wrap_to_a_small_plan_is_an_overflow() {
        // 2^16 slots × (2^48 arena + stack + guard) wraps to a few MiB in 64-bit arithmetic.
        let mut config = Config::default();
        config.slots = 1 << 16;
        config.slot_arena_size = Size(1 << 48);
        let error = MemoryPlan::new(&config, 1, 4096).unwrap_err();
        assert_eq!(error.keys, "slots × (slot_stack_size + slot_arena_size)");
        let mut config = Config::default();
        config.io_buffers = 1 << 20;
        config.connection_read_buffer_size = Size(1 << 44);
        let error = MemoryPlan::new(&config, 1, 4096).unwrap_err();
        assert!(error.keys.starts_with("io_buffers ×"), "{error}");
        let mut config = Config::default();
        config.panic_reserve_size = Size(1 << 62);
        let error = MemoryPlan::new(&config, 256, 4096).unwrap_err();
        assert_eq!(error.keys, "workers × (panic_reserve_size + access_log_buffer_size)");
    }

    #[test]
    fn a_total_that_would_wrap_is_an_overflow() {
        // Each part fits in 64 bits; together they do not.
        let mut config = Config::default();
        config.slots = 1;
        config.slot_arena_size = Size(1 << 63);
        config.io_buffers = 1;
        config.connection_read_buffer_size = Size(1 << 63);
        let error = MemoryPlan::new(&config, 1, 4096).unwrap_err();
        assert!(error.keys.starts_with("the memory plan"), "{error}");
    }

    #[test]
    fn the_largest_page_aligned_size_rounds_to_itself() {
        assert_eq!(align_up(u64::MAX - 4095, 4096), Some(u64::MAX - 4095));
        assert_eq!(align_up(u64::MAX - 4096, 4096), Some(u64::MAX - 4095));
        assert_eq!(align_up(u64::MAX - 4094, 4096), None);
        assert_eq!(align_up(0, 4096), Some(0));
    }

    #[test]
    fn shares_add_up() {
        for (total, workers) in [(64, 3), (5, 5), (7, 2)] {
            let sum: usize = (0..workers).map(|w| MemoryPlan::share(total, workers, w)).sum();
            assert_eq!(sum, total);
        }
    }
}
