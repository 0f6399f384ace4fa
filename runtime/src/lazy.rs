//! std's lazy state, set up before the seal.
//!
//! std allocates some of its process-wide and per-thread state the first time it is used: the
//! buffers of stdout (a 1 KiB `LineWriter`) and stdin, and a thread's handle. Set up first
//! inside a handler, that memory would come from the request's arena and be wiped with it,
//! while std keeps pointing at it: a `println!` would then write into whatever the slot holds
//! next, another request's data. So the runtime sets them up before any handler runs:
//! [`prepare_process`] in `Server::start`, [`prepare_worker`] on each worker before it seals.
//!
//! What libc sets up lazily (NSS, `tzset`, stdio's `FILE` buffers, the list of thread-local
//! destructors `__cxa_thread_atexit_impl` builds) comes through the exported C allocator, which
//! sends allocations whose caller is libc itself to the state heap (`cella_arena::cmalloc`);
//! [`prepare_process`] makes sure the table of libc's text ranges it checks is filled.

/// Sets up std's process-wide lazy state (stdout, stderr, stdin) on the calling thread, before
/// the workers start, and installs the logger (each worker then gives itself a line buffer of
/// `log_line_size_max` before it seals).
pub(crate) fn prepare_process(config: &cella_shared::Config) {
    crate::log::install(
        crate::log::level_of(&config.log_level),
        config.log_line_size_max.0 as usize,
    );
    // Each call initialises its `OnceLock` (stdout's and stdin's buffers are allocated then).
    let _ = std::io::stdout();
    let _ = std::io::stderr();
    let _ = std::io::stdin();
    // `cella::main!` did it first thing; a binary that exports the C allocator by hand may not.
    cella_arena::cmalloc::collect_libc_text();
}

/// Sets up a worker's own lazy state before it seals: its thread handle and its log buffer.
pub(crate) fn prepare_worker() {
    let _ = std::thread::current();
    crate::log::prepare_thread();
}
