//! Descriptors a handler opens belong to its slot.
//!
//! A hard cancel (arena overrun, stack overflow) abandons the handler's stack without running
//! its destructors, so a `std::fs::File` or a plugin's `socket` open on that stack would never
//! be closed. While a handler runs, its worker thread has an *fd table* (one per slot, a fixed
//! array of [`SLOT_FDS_MAX`] entries): every descriptor created on that thread through libc
//! (`open`, `openat`, `creat`, `socket`, `socketpair`, `accept`, `accept4`, `pipe`, `pipe2`,
//! `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`, `eventfd`, `epoll_create*`, `timerfd_create`,
//! `signalfd`, `memfd_create`, `inotify_init*`) is recorded there, and `close` forgets it. When
//! the request ends hard the runtime closes what is left ([`FdTable::close_all`]); when it ends
//! otherwise (its destructors ran) the table is only forgotten, so a descriptor a handler
//! deliberately keeps (a log file in a `static`) stays open.
//!
//! The binary opts in with [`export_fd_hooks!`](crate::export_fd_hooks), which defines those C
//! symbols in the executable: Rust's std is linked statically and its calls (`open64` for
//! `File::open`, `socket`, `accept4`, `fcntl` for `try_clone`, ...) bind to them at link time;
//! exporting them dynamically (`-Wl,--export-dynamic-symbol=...`, as `runtime/build.rs` does for
//! `cella`) makes `dlopen`ed plugins bind to them too. Each hook makes the system call glibc's
//! wrapper makes (`syscall(2)`, which sets `errno`) and returns its result unchanged: these
//! functions *are* the C interface, so `-1` and `errno` are their contract.
//!
//! Limits (docs/architecture.md): a descriptor made by a raw `syscall`, inside libc without going
//! through its exported symbol, or on another thread is not recorded; a handler that closes a
//! recorded descriptor behind libc's back (a raw `close` syscall) and whose request then ends
//! hard may have the runtime close a reused number. `dup2`/`dup3` onto a descriptor that was
//! already open (redirecting stdout, say) does not make that descriptor the slot's. When the
//! table is full the descriptor is left unrecorded and counted ([`untracked_count`]).

mod export;
pub mod hooks;

use std::cell::Cell;
use std::ffi::c_int;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The C types of the hooks' signatures, for [`export_fd_hooks!`](crate::export_fd_hooks).
pub use libc::{sigset_t, sockaddr, socklen_t};

/// Descriptors one request may have open and recorded at once: 256 bytes per slot.
pub const SLOT_FDS_MAX: usize = 64;

const FREE: c_int = -1;

/// The descriptors a slot's current request opened and has not closed.
pub struct FdTable {
    entries: [Cell<c_int>; SLOT_FDS_MAX],
    /// Entries in use: recording and forgetting skip the scan when it is 0.
    len: Cell<usize>,
}

impl Default for FdTable {
    fn default() -> FdTable {
        FdTable::new()
    }
}

thread_local! {
    /// The fd table of the handler running on this thread, or null.
    static CURRENT: Cell<*const FdTable> = const { Cell::new(ptr::null()) };
}

/// Descriptors a handler created while its table was full (never closed by the runtime).
static UNTRACKED: AtomicU64 = AtomicU64::new(0);

/// Descriptors created while a handler ran that its slot's table could not record.
pub fn untracked_count() -> u64 {
    // Relaxed: a statistic.
    UNTRACKED.load(Ordering::Relaxed)
}

/// Records this thread's descriptors in `table` until [`leave`].
///
/// # Safety
/// `table` must stay valid (and not move) until `leave` is called on this thread.
pub unsafe fn enter(table: *const FdTable) {
    CURRENT.with(|current| current.set(table));
}

/// Ends [`enter`]: descriptors are no longer recorded.
pub fn leave() {
    CURRENT.with(|current| current.set(ptr::null()));
}

fn current() -> Option<&'static FdTable> {
    // SAFETY: a non-null CURRENT is valid until `leave` on this thread (contract of `enter`),
    // and the reference does not outlive the hook that reads it.
    unsafe { CURRENT.with(Cell::get).as_ref() }
}

impl FdTable {
    pub const fn new() -> FdTable {
        FdTable { entries: [const { Cell::new(FREE) }; SLOT_FDS_MAX], len: Cell::new(0) }
    }

    /// Descriptors recorded now.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    fn contains(&self, fd: c_int) -> bool {
        self.len.get() > 0 && self.entries.iter().any(|entry| entry.get() == fd)
    }

    fn record(&self, fd: c_int) {
        if fd < 0 {
            return;
        }
        match self.entries.iter().find(|entry| entry.get() == FREE) {
            Some(entry) => {
                entry.set(fd);
                self.len.set(self.len.get() + 1);
            }
            // Relaxed: a statistic.
            None => drop(UNTRACKED.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn forget(&self, fd: c_int) {
        if self.len.get() == 0 || fd < 0 {
            return;
        }
        if let Some(entry) = self.entries.iter().find(|entry| entry.get() == fd) {
            entry.set(FREE);
            self.len.set(self.len.get() - 1);
        }
    }

    /// Forgets every descriptor without closing it (the request ended with its destructors run;
    /// what it still holds open, it keeps on purpose).
    pub fn forget_all(&self) {
        if self.len.get() > 0 {
            self.entries.iter().for_each(|entry| entry.set(FREE));
            self.len.set(0);
        }
    }

    /// Closes every recorded descriptor (the request ended hard); returns how many.
    pub fn close_all(&self) -> usize {
        let mut closed = 0;
        if self.len.get() > 0 {
            for entry in &self.entries {
                let fd = entry.replace(FREE);
                if fd != FREE {
                    // SAFETY: close(2) of a descriptor this request created and did not close
                    // through libc; its result does not matter (the number is released either way).
                    unsafe { libc::syscall(libc::SYS_close, fd) };
                    closed += 1;
                }
            }
            self.len.set(0);
        }
        closed
    }
}

#[cfg(test)]
mod tests;
