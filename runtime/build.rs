//! Exports the C allocator symbols of the `cella` binary dynamically, so that plugins loaded
//! with dlopen bind their malloc calls to it (see cella_arena::cmalloc), and likewise the
//! functions that create and close descriptors (cella_arena::fds).

fn main() {
    for symbol in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "memalign",
        "aligned_alloc",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        // Descriptors a handler creates are its slot's (cella_arena::fds).
        "open",
        "open64",
        "openat",
        "openat64",
        "creat",
        "creat64",
        "socket",
        "socketpair",
        "accept",
        "accept4",
        "pipe",
        "pipe2",
        "dup",
        "dup2",
        "dup3",
        "fcntl",
        "fcntl64",
        "eventfd",
        "epoll_create",
        "epoll_create1",
        "timerfd_create",
        "signalfd",
        "memfd_create",
        "inotify_init",
        "inotify_init1",
        "close",
    ] {
        println!("cargo:rustc-link-arg-bin=cella=-Wl,--export-dynamic-symbol={symbol}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
