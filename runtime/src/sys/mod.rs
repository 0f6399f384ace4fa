//! Platform layer. Every backend provides, with the same names and meaning:
//!
//! - `install_fault_handler()`: installs (once per process) a SIGSEGV/SIGBUS handler that runs
//!   on the worker's signal stack. A fault inside the guard page of the slot that is running on
//!   this thread makes that slot's coroutine return `Fault::StackOverflow`; any other fault is
//!   passed to the previous handler (the default one crashes the process), never turned into a
//!   500. It also installs the preemption timer's signal handler (`preempt.rs`) and records the
//!   program's own text for it.
//! - `start_preempt_timer()` / `stop_preempt_timer()`: the calling worker thread's preemption
//!   timer; `cover_preempt_deadline(ns)` makes it fire at or before a running handler's
//!   deadline, after which `cancel::on_preempt_signal` decides (the workers keep time as
//!   `crate::tick::Tick`, the timer's own clock in ns).
//! - `set_signal_stack(span)`: makes `span` this thread's alternate signal stack;
//!   `swap_signal_stack(span)` does too and returns the previous one, which
//!   `restore_signal_stack(previous)` puts back.
//! - `write_stderr(bytes)` (one write(2), result ignored) and `write_fd(fd, bytes)` (one
//!   write(2), its result).
//! - `block_control_signals()` / `wait_control_signal(timeout)`: SIGTERM, SIGINT and SIGHUP
//!   are blocked in every thread and taken synchronously by the thread that waits for them, as
//!   a [`ControlSignal`].
//! - `open_append(path)`: opens a file for appending (`O_APPEND | O_CREAT | O_CLOEXEC`) without
//!   allocating (the access log, reopened on SIGHUP).
//! - `open_fd_count()`: descriptors open in this process, without allocating (for tests and
//!   `process_open_fds`).
//! - `resident_memory_bytes()`: the process's resident size, without allocating.
//! - `raise_open_file_limit()`: raises the soft limit on open files to the hard one and returns
//!   the limit in force.
//! - `take_inherited_listener(fd)`: takes ownership of a descriptor passed by systemd (socket
//!   activation), refusing one that is not a listening TCP socket.
//!
//! Raw return codes never leave this module: every call goes through `syscall!`.

/// A signal the controlling thread acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlSignal {
    /// SIGTERM or SIGINT: drain and exit (a second one: exit at once).
    Stop,
    /// SIGHUP: reopen the access log file (log rotation); never stops the process.
    Reopen,
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux_x86_64;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use linux_x86_64::*;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod preempt;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use preempt::{cover_preempt_deadline, monotonic_ns, start_preempt_timer, stop_preempt_timer};

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("cella supports Linux on x86_64 only (see runtime/src/sys/mod.rs for the contract a new backend must meet)");
