//! Limits, configuration and ids shared by every cella crate.
//!
//! This crate is the bottom of the dependency graph: it knows nothing of sockets, threads or
//! memory mappings. It names every limit cella enforces, parses and validates the configuration
//! that sets them, and computes the memory plan that the configuration implies.
#![forbid(unsafe_code)]
// (abi.rs holds `extern "C"` function-pointer types and the declaration of the plugin's entry
// symbol, for the C header: declaring them needs no unsafe block, and nothing here calls them.)

pub mod abi;
pub mod config;
pub mod limits;
pub mod plan;
pub mod size;

pub use config::{Config, ConfigError};
pub use plan::MemoryPlan;
pub use size::{format_size, parse_size};
