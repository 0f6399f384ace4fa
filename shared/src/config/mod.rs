//! The configuration: one table of keys, each with a type, a default and a meaning.
//!
//! Every source (defaults, a TOML file, `CELLA_*` environment variables, command-line flags) goes
//! through the same [`Config::set`] with the value as text, so a key parses the same way
//! wherever it is written. An unknown key is an error in a file or a flag; an unknown `CELLA_*`
//! environment variable is only reported (see [`Config::apply_env`]). Precedence is applied by
//! the caller: flag > environment > file > default.

use std::fmt;
use std::net::SocketAddr;

use crate::limits;
use crate::plan::MemoryPlan;
use crate::size::{format_size, parse_size};

/// A configuration value as text, and back.
pub trait ConfigValue: Sized {
    fn parse_text(text: &str) -> Result<Self, String>;
    fn to_text(&self) -> String;
}

impl ConfigValue for SocketAddr {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address such as 127.0.0.1:8080"))
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// An address to listen on, or nothing (an empty string): the listener is off.
impl ConfigValue for Option<SocketAddr> {
    fn parse_text(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        SocketAddr::parse_text(text)
            .map(Some)
            .map_err(|_| format!("`{text}` is not empty nor an address such as 127.0.0.1:9901"))
    }
    fn to_text(&self) -> String {
        self.map(|address| address.to_string()).unwrap_or_default()
    }
}

impl ConfigValue for u64 {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map_err(|_| format!("`{text}` is not a non-negative integer"))
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for usize {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map_err(|_| format!("`{text}` is not a non-negative integer"))
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for String {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn to_text(&self) -> String {
        self.clone()
    }
}

impl ConfigValue for bool {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("`{text}` is not a boolean (true or false)")),
        }
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// The format of access log lines (`access_log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Apache's and nginx's `combined`, followed by the request's duration in seconds and its
    /// arena high-water mark in bytes.
    Combined,
    /// One JSON object per line.
    Json,
}

impl ConfigValue for AccessLogFormat {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err(format!("`{text}` is not an access log format (combined or json)")),
        }
    }
    fn to_text(&self) -> String {
        match self {
            AccessLogFormat::Combined => "combined".to_string(),
            AccessLogFormat::Json => "json".to_string(),
        }
    }
}

/// Where the access log goes (`access_log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (no buffer, no writer thread).
    Off,
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to, reopened on SIGHUP.
    File(std::path::PathBuf),
}

impl ConfigValue for AccessLogTarget {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(AccessLogTarget::Off),
            "-" => Ok(AccessLogTarget::Stdout),
            "" => Err("is empty: write `off`, `-` (standard output) or a file path".to_string()),
            path if path.contains('\0') => Err("a file path cannot hold a NUL byte".to_string()),
            path => Ok(AccessLogTarget::File(path.into())),
        }
    }
    fn to_text(&self) -> String {
        match self {
            AccessLogTarget::Off => "off".to_string(),
            AccessLogTarget::Stdout => "-".to_string(),
            AccessLogTarget::File(path) => path.display().to_string(),
        }
    }
}

/// A byte size, written with binary units (`256KiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl ConfigValue for Size {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_size(text).map(Size)
    }
    fn to_text(&self) -> String {
        format_size(self.0)
    }
}

/// What the escape check scans when a slot is released (`escape_check`): for aligned words
/// pointing into the used part of the slot's arena, which the request left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EscapeCheck {
    /// No scan.
    Off,
    /// Every loaded object's writable data, and the releasing worker's thread-locals.
    Statics,
    /// `Statics`, plus the system heap as it was at the seal and the state heap.
    Full,
}

impl ConfigValue for EscapeCheck {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(EscapeCheck::Off),
            "statics" => Ok(EscapeCheck::Statics),
            "full" => Ok(EscapeCheck::Full),
            _ => Err(format!("`{text}` is not one of off, statics, full")),
        }
    }
    fn to_text(&self) -> String {
        match self {
            EscapeCheck::Off => "off",
            EscapeCheck::Statics => "statics",
            EscapeCheck::Full => "full",
        }
        .to_string()
    }
}

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
    /// Slots in total, shared out evenly between workers. A request holds one slot while its
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

#[cfg(test)]
mod tests;

/// The text of a config file's `[plugin]` section (empty when none), handed to a plugin's
/// `init` as it was written.
pub fn plugin_section(text: &str) -> String {
    let mut section = String::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            inside = trimmed == "[plugin]";
            continue;
        }
        if inside {
            section.push_str(line);
            section.push('\n');
        }
    }
    section
}

/// The configuration reference (docs/configuration.md), rendered from [`Config::KEYS`].
pub fn reference_markdown() -> String {
    let mut text = String::from(
        "# Configuration\n\n\
         Generated from `shared/src/config/mod.rs` (a test fails when this file drifts; regenerate with\n\
         `UPDATE_DOCS=1 cargo test -p cella-shared`).\n\n\
         Set a key in a TOML file (`key = value`, passed with `--config FILE`), as an environment\n\
         variable `CELLA_<KEY>` (upper case), or with a flag (`--set key=value`, or the named flags\n\
         `--listen`, `--workers`, `--slots`, `--slot-arena`, `--slot-stack`, `--max-connections`).\n\
         Precedence: flag > environment > file > default. Unknown keys are errors in the file and\n\
         in flags; a `CELLA_*` environment variable that is no key (such as the `CELLA_PORT` and\n\
         `CELLA_SERVICE_HOST` Kubernetes injects for a Service named `cella`) is ignored, with one\n\
         warning line on stderr each.\n\
         Sizes take binary units: `B`, `KiB`, `MiB`, `GiB`. No size of the memory plan (stack,\n\
         arena, buffers, panic reserve) may exceed the 64GiB cella maps at most, and every sum\n\
         and product of the plan is checked: a plan that would overflow is refused, naming the\n\
         keys involved.\n\n\
         | key | default | meaning |\n| --- | --- | --- |\n",
    );
    for key in Config::KEYS {
        let doc = key.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        text.push_str(&format!("| `{}` | `{}` | {} |\n", key.name, key.default, doc));
    }
    text
}

#[cfg(test)]
mod reference_tests {
    #[test]
    fn docs_configuration_md_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let expected = super::reference_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/configuration.md is stale: run UPDATE_DOCS=1 cargo test -p cella-shared"
        );
    }
}
