//! The macro that defines the descriptor hooks in the final binary (a `#[macro_export]`
//! macro: it is used as `cella_arena::export_fd_hooks!()`).

/// Defines, in the final binary, the libc functions that create and close descriptors as
/// [`fds::hooks`](crate::fds::hooks), so that descriptors a handler opens are recorded in its
/// slot (see the module documentation). Use once, at the binary's top level.
#[macro_export]
macro_rules! export_fd_hooks {
    () => {
        mod fd_hooks {
            use std::ffi::{c_char, c_int, c_uint, c_ulong};
            use $crate::fds::hooks;
            // SAFETY (all below): each forwards the C contract unchanged to `hooks`.
            #[no_mangle]
            pub unsafe extern "C" fn open(p: *const c_char, f: c_int, m: c_uint) -> c_int {
                unsafe { hooks::open(p, f, m) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn open64(p: *const c_char, f: c_int, m: c_uint) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::open(p, f, m) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn openat(
                d: c_int,
                p: *const c_char,
                f: c_int,
                m: c_uint,
            ) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::openat(d, p, f, m) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn openat64(
                d: c_int,
                p: *const c_char,
                f: c_int,
                m: c_uint,
            ) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::openat(d, p, f, m) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn creat(p: *const c_char, m: c_uint) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::creat(p, m) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn creat64(p: *const c_char, m: c_uint) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::creat(p, m) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn socket(d: c_int, k: c_int, p: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::socket(d, k, p) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn socketpair(
                d: c_int,
                k: c_int,
                p: c_int,
                s: *mut c_int,
            ) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::socketpair(d, k, p, s) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn accept(
                s: c_int,
                a: *mut $crate::fds::sockaddr,
                l: *mut $crate::fds::socklen_t,
            ) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::accept4(s, a, l, 0) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn accept4(
                s: c_int,
                a: *mut $crate::fds::sockaddr,
                l: *mut $crate::fds::socklen_t,
                f: c_int,
            ) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::accept4(s, a, l, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::pipe2(fds, 0) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn pipe2(fds: *mut c_int, f: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::pipe2(fds, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::dup(fd) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn dup2(o: c_int, n: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::dup2(o, n) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn dup3(o: c_int, n: c_int, f: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::dup3(o, n, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn fcntl(fd: c_int, c: c_int, a: c_ulong) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::fcntl(fd, c, a) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn fcntl64(fd: c_int, c: c_int, a: c_ulong) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::fcntl(fd, c, a) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn eventfd(i: c_uint, f: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::eventfd(i, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn epoll_create(s: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::epoll_create(s) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn epoll_create1(f: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::epoll_create1(f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn timerfd_create(c: c_int, f: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::timerfd_create(c, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn signalfd(
                fd: c_int,
                m: *const $crate::fds::sigset_t,
                f: c_int,
            ) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::signalfd(fd, m, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn memfd_create(n: *const c_char, f: c_uint) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::memfd_create(n, f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn inotify_init() -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::inotify_init1(0) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn inotify_init1(f: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::inotify_init1(f) }
            }
            #[no_mangle]
            pub unsafe extern "C" fn close(fd: c_int) -> c_int {
                // SAFETY: the caller keeps the C contract of this libc function, which `hooks` keeps unchanged.
                unsafe { hooks::close(fd) }
            }
        }
    };
}
