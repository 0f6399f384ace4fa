//! Hard limits that hold whatever the configuration says.
//!
//! Configurable limits (with their defaults) live in [`crate::config`]; the constants here bound
//! the configuration itself, so that a typo cannot ask for a terabyte or a million threads.

/// Most workers (threads) a server may run. Each costs one OS thread, one epoll instance, and its
/// share of the region.
pub const WORKERS_MAX: usize = 256;

/// Most slots a server may run. Each slot costs `slot_stack_size + slot_arena_size + one page`.
pub const SLOTS_MAX: usize = 1 << 16;

/// Most connections a server may hold. Each costs its read and write buffer plus about 200 bytes
/// of bookkeeping.
pub const CONNECTIONS_MAX: usize = 1 << 20;

/// Smallest slot stack: room for the coroutine's entry frame, the handler, and a panic unwinding
/// through both.
pub const SLOT_STACK_SIZE_MIN: u64 = 32 << 10;

/// Smallest slot arena that still holds a parsed request and a small response.
pub const SLOT_ARENA_SIZE_MIN: u64 = 16 << 10;

/// Largest region cella will map (64 GiB): anything bigger is a configuration mistake.
pub const REGION_SIZE_MAX: u64 = 64 << 30;

/// Most regions one process may map at once. The routing allocator checks a pointer against
/// each of them on `dealloc`, so this is kept small.
pub const REGIONS_MAX: usize = 16;

/// Smallest state heap: its allocator's tables (a few hundred bytes, checked against talc's own
/// minimum in `cella_arena::state`) and room for some state.
pub const STATE_HEAP_SIZE_MIN: u64 = 64 << 10;

/// Smallest connection buffer: a request line, a few headers, and a response head must fit.
pub const CONNECTION_BUFFER_SIZE_MIN: u64 = 1 << 10;

/// Most outbound sockets one slot may hold at once (the table the runtime closes on cancel).
pub const SLOT_SOCKETS_MAX: usize = 64;

/// Most accepted connections one worker may hold while the table is full
/// (`full_table_held_max`): each holds a descriptor beyond `connections_max` while it waits, so
/// the bound keeps the open-file plan (which counts them) within reach of an ordinary limit.
pub const FULL_TABLE_HELD_MAX: usize = 4096;

/// Most headers a request may carry whatever the configuration says: the parse array lives on
/// the worker's stack (32 bytes each).
pub const HEADERS_COUNT_MAX: usize = 1024;

/// Signal stack of each worker (one per worker, carved from the region): the SIGSEGV handler
/// that turns a slot's stack overflow into a 500 runs here, because the faulting stack is full.
pub const SIGNAL_STACK_SIZE: u64 = 64 << 10;

/// Shortest `log_line_size_max`: a level, a target and some message.
pub const LOG_LINE_SIZE_MIN: u64 = 256;

/// Longest `log_line_size_max`: a line is written with one write(2), and each thread that logs
/// holds one buffer of this size.
pub const LOG_LINE_SIZE_MAX: u64 = 64 << 10;

/// Smallest per-worker access log buffer (`access_log_buffer_size`): one line of the longest
/// kind the runtime formats (its fields are truncated to fit in this) must fit.
pub const ACCESS_LOG_BUFFER_SIZE_MIN: u64 = 4 << 10;

/// Longest access log line, in bytes, newline included: the request line, referer and user
/// agent are truncated (and marked) so that a line never exceeds it.
pub const ACCESS_LOG_LINE_BYTES_MAX: usize = 4 << 10;

const _: () = assert!(ACCESS_LOG_LINE_BYTES_MAX as u64 <= ACCESS_LOG_BUFFER_SIZE_MIN);
