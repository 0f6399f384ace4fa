//! Why a server did not start: one error type whose `Display` is the line the binary prints
//! before it exits non-zero.

use std::fmt;
use std::io;

use cella_arena::RegionError;
use cella_shared::ConfigError;

use super::FDS_SPARE;

/// Why a server did not start. The binary prints it and exits non-zero.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Region(RegionError),
    Io {
        step: &'static str,
        source: io::Error,
    },
    Worker(String),
    /// The open-file limit (after raising the soft limit to the hard one) cannot hold the plan.
    FileLimit {
        needed: u64,
        limit: u64,
    },
    /// The binary's global allocator is not `RoutingAlloc`: handler allocations would go to the
    /// system heap, unbounded, and the arena limit would not hold.
    NotRoutingAlloc,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(error) => error.fmt(f),
            StartError::Region(error) => error.fmt(f),
            StartError::Io { step, source } => write!(f, "cannot {step}: {source}"),
            StartError::Worker(message) => write!(f, "a worker failed to start: {message}"),
            StartError::FileLimit { needed, limit } => write!(
                f,
                "the plan needs {needed} file descriptors (connections_max + workers x \
                 full_table_held_max + slots x slot_sockets_max + workers + {FDS_SPARE} spare) but the open-file limit is \
                 {limit}: raise it (ulimit -n, systemd LimitNOFILE=) or lower connections_max"
            ),
            StartError::NotRoutingAlloc => f.write_str(
                "this binary's global allocator is not cella::RoutingAlloc, so handler \
                 allocations would go to the system heap, unbounded: set the binary up with \
                 `cella::main!(app)`, or declare `#[global_allocator] static ALLOCATOR: \
                 cella::RoutingAlloc = cella::RoutingAlloc;`",
            ),
        }
    }
}

impl std::error::Error for StartError {}
