//! The configuration: one table of keys, each with a type, a default and a meaning.
//!
//! Every source (defaults, a TOML file, `CELLA_*` environment variables, command-line flags) goes
//! through the same [`Config::set`] with the value as text, so a key parses the same way
//! wherever it is written. An unknown key is an error in a file or a flag; an unknown `CELLA_*`
//! environment variable is only reported (see [`Config::apply_env`]). Precedence is applied by
//! the caller: flag > environment > file > default.

use std::fmt;
use std::net::SocketAddr;

mod reference;
mod validate;
mod values;

pub use reference::{plugin_section, reference_markdown};
pub use values::{AccessLogFormat, AccessLogTarget, ConfigValue, EscapeCheck, Size};

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    UnknownKey { key: String, source: &'static str },
    BadValue { key: String, message: String },
    Invalid(String),
    File(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey { key, source } => {
                write!(f, "unknown config key `{key}` in {source} (see `cella check-config`)")
            }
            ConfigError::BadValue { key, message } => write!(f, "config key `{key}`: {message}"),
            ConfigError::Invalid(message) => write!(f, "invalid configuration: {message}"),
            ConfigError::File(message) => write!(f, "config file: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One documented key of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct KeyInfo {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

macro_rules! config_keys {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:literal ;)*) => {
        /// The effective configuration. See [`Config::KEYS`] for each key's meaning and default.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $( $name: <$ty as ConfigValue>::parse_text($default)
                        .expect("built-in default parses"), )*
                }
            }
        }

        impl Config {
            /// Every key, in the order they are documented.
            pub const KEYS: &'static [KeyInfo] = &[
                $( KeyInfo { name: stringify!($name), default: $default,
                             doc: concat!($($doc, "\n"),+) }, )*
            ];

            /// Sets `key` from its textual form, as written in any source.
            pub fn set(&mut self, key: &str, text: &str, source: &'static str)
                -> Result<(), ConfigError>
            {
                match key {
                    $( stringify!($name) => {
                        self.$name = <$ty as ConfigValue>::parse_text(text).map_err(|message| {
                            ConfigError::BadValue { key: key.to_string(), message }
                        })?;
                    } )*
                    _ => return Err(ConfigError::UnknownKey { key: key.to_string(), source }),
                }
                Ok(())
            }

            /// Every key with its effective value as text.
            pub fn entries(&self) -> Vec<(&'static str, String)> {
                vec![ $( (stringify!($name), self.$name.to_text()), )* ]
            }
        }
    };
}

config_keys! {
    /// Address the listeners bind (each worker binds it with SO_REUSEPORT). Port 0 picks a free
    /// port; the ready line prints the real one.
    listen: SocketAddr = "127.0.0.1:8080";
    /// Worker threads; 0 means one per available core.
    workers: usize = "0";
    /// Slots of the instance; any worker uses any free one. A request holds one slot while its
    /// body is read, its handler runs and its response is written.
    slots: usize = "64";
    /// Stack of each slot's handler coroutine (rounded up to whole pages). Past it: 500.
    slot_stack_size: Size = "256KiB";
    /// Bump arena of each slot: everything a handler allocates. Past it: 500.
    slot_arena_size: Size = "1MiB";
    /// Connections held at once by the whole instance, whichever worker holds each. A full
    /// table closes its oldest idle keep-alive connection to admit a new one; with none idle,
    /// the new connection gets 503 and is closed. Costs no region memory of its own (an idle
    /// connection holds no buffer), a few hundred bytes of tables each (about 340, measured in
    /// docs/benchmarks.md).
    connections_max: usize = "1024";
    /// Pairs of read and write buffers the instance lends to connections while they read a
    /// request or write a response; an idle connection, or one whose handler runs with
    /// nothing buffered, holds none. Costs `connection_read_buffer_size +
    /// connection_write_buffer_size` of the region each (the default: 1KiB per configured
    /// connection). When every pair is lent, a connection with bytes to read waits for one
    /// (its head deadline still runs).
    io_buffers: usize = "64";
    /// Read buffer of each I/O buffer pair; holds the request head, so it must be at least
    /// `request_head_size_max`.
    connection_read_buffer_size: Size = "8KiB";
    /// Write buffer of each I/O buffer pair: response heads and small bodies are copied here so
    /// that pipelined responses go out in one write.
    connection_write_buffer_size: Size = "8KiB";
    /// Longest request line (method, target, version). Past it: 414.
    request_line_size_max: Size = "4KiB";
    /// Largest request head (request line and headers). Past it: 431.
    request_head_size_max: Size = "8KiB";
    /// Most header fields in a request. Past it: 431.
    headers_count_max: usize = "64";
    /// Largest request body; it is read into the slot's arena, so it must fit there. Past it: 413.
    request_body_size_max: Size = "256KiB";
    /// Most bytes of chunk extensions (after the `;`) on one chunk of a chunked body. Past it: 400.
    chunk_extension_size_max: Size = "4KiB";
    /// Most bytes of trailer fields after a chunked body. Past it: 431.
    trailer_size_max: Size = "8KiB";
    /// Total time a client has to send a request head, from its first byte (or from the end of
    /// the previous response), and with it a Content-Length body small enough to fit the read
    /// buffer (such a body is read before a slot is claimed). Past it: 408 and close.
    header_read_timeout_ms: u64 = "10000";
    /// Total time a client has to send a request body once its head is complete. Past it: 408
    /// and close.
    body_read_timeout_ms: u64 = "30000";
    /// Slots that requests whose bodies are still arriving may hold at once, in the whole
    /// instance (a body that fits the read buffer is read before its slot is claimed and does
    /// not count). 0: half the slots, rounded up. Past it: 408 and close, so slow uploads can
    /// take at most this many slots from everyone else.
    body_slots_max: usize = "0";
    /// Slowest rate a request body holding a slot may arrive at, in bytes per second, measured
    /// over each `body_rate_window_ms` (like Apache's `mod_reqtimeout` MinRate). Past it: 408
    /// and close. 0: no minimum rate (only `body_read_timeout_ms`).
    body_rate_min_bytes_per_s: u64 = "500";
    /// The window `body_rate_min_bytes_per_s` is measured over: at the end of each, the body
    /// must have grown by at least rate × window.
    body_rate_window_ms: u64 = "5000";
    /// Total time a client has to take a response. Past it: the connection is closed.
    response_write_timeout_ms: u64 = "30000";
    /// How long an idle keep-alive connection is kept. Past it: closed quietly.
    keepalive_idle_timeout_ms: u64 = "60000";
    /// After a response that closes the connection, how long the client's remaining input is
    /// read and discarded, so that it reads the response instead of a reset. Past it: closed.
    linger_timeout_ms: u64 = "1000";
    /// Total time a handler may take, suspended or not. Past it: 504 (not the retryable 503: the
    /// request ran). Suspended, its stack is unwound; running without suspending, it is cut off
    /// by the worker's preemption timer when in its own code (docs/architecture.md, the ladder).
    handler_timeout_ms: u64 = "30000";
    /// How long a worker's event loop may go without turning while it has work (a handler
    /// running, connections to serve) before the worker is taken to be stuck (a handler blocked
    /// in a system call, a lock left held by a cut-off handler): the instance escalates (stops
    /// being ready, lets the other workers finish, exits with status 70 naming the worker, the
    /// cause and the request it ran). Must be more than `handler_timeout_ms`: a handler may run
    /// that long in one turn.
    watchdog_ms: u64 = "60000";
    /// How long a complete request may wait for a free slot before it gets 503. 0: answer 503 at
    /// once.
    slot_wait_timeout_ms: u64 = "0";
    /// With the connection table full and nothing idle on the worker that accepted a new
    /// connection, how long that connection is held while another worker closes one of its idle
    /// keep-alive connections to make room. Past it: 503 and close. 0: 503 at once when the
    /// accepting worker has nothing idle (other workers' idle connections are not closed).
    full_table_wait_ms: u64 = "100";
    /// Accepted connections each worker may hold at once while they wait
    /// (`full_table_wait_ms`) for another worker to close an idle connection; past it, the
    /// newest gets 503 and is closed at once. 0: never hold (as `full_table_wait_ms` = 0). Each
    /// held connection holds a file descriptor (counted in the open-file plan: workers × this)
    /// and the queue, a few tens of bytes each, is allocated at startup. At most 4096.
    full_table_held_max: usize = "64";
    /// After SIGTERM/SIGINT, how long the instance goes on accepting and serving before it
    /// closes its listener and drains: readiness answers 503 at once and every response carries
    /// `Connection: close`, so a load balancer sees the instance leave before its listener does
    /// (set it longer than the load balancer's check interval). 0: close the listener at once.
    drain_delay_ms: u64 = "0";
    /// After SIGTERM/SIGINT (and the drain delay), how long in-flight requests may take before
    /// the process exits anyway.
    drain_timeout_ms: u64 = "10000";
    /// Value of the Retry-After header on 503 responses, in seconds.
    retry_after_s: u64 = "1";
    /// Liveness probe on the main listener: a GET or HEAD of this path is answered 200 by the
    /// worker itself while the process serves, without a slot (so even when every slot is busy)
    /// and without reaching the handler. Empty: no probe (the path goes to the handler).
    liveness_path: String = "/livez";
    /// Readiness probe on the main listener: a GET or HEAD of this path is answered by the worker
    /// itself, without a slot: 200 while the instance accepts work (also when every slot is
    /// momentarily busy), 503 from the first SIGTERM/SIGINT on. Empty: no probe (the path goes
    /// to the handler).
    readiness_path: String = "/readyz";
    /// Admin listener, for operators and monitoring only (bind it to a private address):
    /// `GET /metrics` (Prometheus text format), `/livez`, `/readyz` (as the probes on the main
    /// listener) and `/config` (the effective configuration and memory plan). Answered by
    /// worker 0 itself, never by the handler, without a slot and without allocating; at most 4
    /// connections at once, each closed after its answer. Empty: off. Example:
    /// `127.0.0.1:9901`.
    admin_listen: Option<SocketAddr> = "";
    /// HAProxy agent-check listener: each connection gets one line and is closed:
    /// `up ready N% maxconn:SLOTS` while serving (N: the free slots as a percentage of all
    /// slots, never below 1, so that HAProxy, with `weight 100` on the server, sends fewer
    /// requests to a busier instance), and `drain` from the first SIGTERM/SIGINT on. Bound
    /// after the main listener, so it answers only once that one is bound. Empty: off. Example:
    /// `127.0.0.1:9902`.
    agent_listen: Option<SocketAddr> = "";
    /// Access log: `off`, `-` (standard output) or the path of a file (created if missing,
    /// appended to, reopened on SIGHUP for log rotation). One line per answer the runtime sends
    /// to a request on the main listener (probes are not logged); see docs/operations.md.
    /// Workers never wait for it: a line that does not fit in its worker's buffer is dropped and
    /// counted (`cella_access_log_dropped_total`).
    access_log: AccessLogTarget = "off";
    /// Format of the access log lines: `combined` (Apache's and nginx's, followed by the
    /// duration in seconds and the request's arena high-water mark in bytes) or `json` (one
    /// object per line).
    access_log_format: AccessLogFormat = "combined";
    /// Buffer of access log lines of each worker, carved from the region when `access_log` is
    /// on (costs this much region memory per worker, none when off): workers format lines into
    /// it and one writer thread writes them out. When it is full, lines are dropped and
    /// counted, never waited for. At least 4KiB (the longest line).
    access_log_buffer_size: Size = "64KiB";
    /// Touch every page of the region at startup, so the resident size is fixed from the start.
    prefault: bool = "true";
    /// mlock the region, so it is never swapped. Needs RLIMIT_MEMLOCK (or CAP_IPC_LOCK).
    mlock: bool = "false";
    /// Test mode: make each slot's arena inaccessible (mprotect) between requests, so a stale
    /// access faults at once. Costs two syscalls per request.
    quarantine: bool = "false";
    /// When a slot is released, scan for aligned words pointing into the part of its arena the
    /// request used, which the request left where they outlive it: `statics` scans every loaded
    /// object's writable data and the worker's thread-locals; `full` also scans the system heap
    /// as it was at the seal and the state heap; `off` scans nothing. A hit is one
    /// `cella: escape:` line on stderr, and the slot is retired (never reused, so what points
    /// into it stays valid); with every slot retired, the instance exits (status 70). Measured
    /// in docs/benchmarks.md: `statics` adds about 48,000 instructions (~1-2 µs) per request (it
    /// reads ~80KB in the demo binary; pipelined requests cost 3x the CPU), `full` about 15 µs
    /// (~400KB, more with a larger startup heap). Off by default so that serving costs what it
    /// costs without it; `full` for tests, CI and canary instances, `statics` where ~1-2 µs per
    /// request is affordable.
    escape_check: EscapeCheck = "off";
    /// Per-worker reserve for a panic that starts when the arena is full: the panic's own
    /// allocations come from here, so it still ends as a 500.
    panic_reserve_size: Size = "64KiB";
    /// The state heap: one span of the region, shared by every worker, with an allocator that
    /// frees, for memory that outlives a request (`cella::persist`, and everything allocated
    /// while a `cella::sync` lock is held). Running out is an allocation failure of the request
    /// that asked: 500. At least 64KiB.
    state_heap_size: Size = "16MiB";
    /// Level of the lines `cella::log` writes (the `log` facade's macros, in handlers too):
    /// `off`, `error`, `warn`, `info`, `debug` or `trace`. Lines below it cost one comparison.
    log_level: String = "info";
    /// Longest line `cella::log` writes, newline included; a longer one is cut and ends with
    /// ` …[truncated]`. Each worker (and each other thread that logs) holds one buffer of this
    /// size, allocated before it serves. Between 256B and 64KiB.
    log_line_size_max: Size = "4KiB";
    /// Outbound sockets one slot may hold at once.
    slot_sockets_max: usize = "4";
    /// Test mode: honour the `x-cella-fail-alloc: K` request header, which fails the K-th
    /// allocation of the handler. Never enable in production.
    fault_injection: bool = "false";
}

impl Config {
    /// Applies a TOML document (keys at the top level, as in `slots = 64`). A `[plugin]` table
    /// is left for the plugin (see [`plugin_section`]).
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| ConfigError::File(e.to_string()))?;
        for (key, value) in &table {
            if key == "plugin" && value.is_table() {
                continue; // The plugin's own section, handed to its `init` as text.
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(ConfigError::BadValue {
                        key: key.clone(),
                        message: "expected a string, an integer or a boolean".to_string(),
                    })
                }
            };
            self.set(key, &text, "the config file")?;
        }
        Ok(())
    }

    /// Applies `CELLA_<KEY>` variables from `vars`, and returns the names of the other `CELLA_`
    /// variables, which it ignores: the environment is shared with things cella does not control
    /// (Kubernetes injects `CELLA_PORT=tcp://...` and `CELLA_SERVICE_HOST` for a Service named
    /// `cella`), so the caller warns about each instead of refusing to start. A bad value for a
    /// real key is still an error.
    pub fn apply_env<I>(&mut self, vars: I) -> Result<Vec<String>, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut ignored = Vec::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("CELLA_") else { continue };
            let key = key.to_ascii_lowercase();
            match self.set(&key, &value, "the environment") {
                Ok(()) => {}
                Err(ConfigError::UnknownKey { .. }) => ignored.push(name),
                Err(other) => return Err(other),
            }
        }
        Ok(ignored)
    }

    /// Workers to run: `workers`, or one per available core when it is 0.
    pub fn workers_resolved(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

#[cfg(test)]
mod tests;
