//! The C functions [`export_fd_hooks!`](crate::export_fd_hooks) exports. Each has the contract
//! of the libc function of the same name (its man page): the caller passes what that function
//! takes. Each system call and its record run in one runtime section: a preempted handler is
//! not cut off between the call and its record (that would leak the descriptor, or leave a
//! foreign one in the table). A hook that forwards to another (`open` and `creat` to `openat`,
//! `dup2` to `dup3`, `epoll_create` to `epoll_create1`) leaves the section to that one: what it
//! does before (an argument check, `F_GETFD`) records nothing, so a cut there loses nothing, and
//! a second, nested section would only cost two more thread-local writes per call.
//!
//! Also here: how a hook records what its call created (`track`, `track_pair`,
//! `track_dup_onto`). The table itself, and which table is current, are `mod.rs`'s.

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong};

use super::current;

/// Records `result` (a new descriptor, or -1) in the running handler's table.
fn track(result: c_long) -> c_int {
    let fd = result as c_int;
    if fd >= 0 {
        if let Some(table) = current() {
            table.record(fd);
        }
    }
    fd
}

/// Records both descriptors of a pair that `result == 0` says were written to `fds`.
///
/// # Safety
/// `fds` is the two-element array the call was given.
unsafe fn track_pair(result: c_long, fds: *mut c_int) -> c_int {
    if result == 0 {
        if let Some(table) = current() {
            // SAFETY: the call succeeded, so the kernel wrote both descriptors to `fds`.
            unsafe {
                table.record(*fds);
                table.record(*fds.add(1));
            }
        }
    }
    result as c_int
}

/// Whether `fd` is open now (`fcntl(F_GETFD)` succeeds), for `dup2`/`dup3` onto it.
pub(super) fn is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags and changes nothing (fcntl(2)).
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFD) >= 0 }
}

/// `dup2`/`dup3` made `new` a copy: it becomes the slot's unless it was already open and not
/// the slot's (then the handler replaced someone else's descriptor, which stays theirs).
fn track_dup_onto(result: c_long, new: c_int, was_open: bool) -> c_int {
    if result >= 0 {
        if let Some(table) = current() {
            if !was_open || table.contains(new) {
                table.forget(new);
                table.record(new);
            }
        }
    }
    result as c_int
}

/// # Safety
/// As open(2).
pub unsafe fn openat(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: forwarded unchanged to the system call (open(2)).
    track(unsafe { libc::syscall(libc::SYS_openat, dir, path, flags, mode) })
}

/// # Safety
/// As open(2).
pub unsafe fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: as `openat` with the current directory (which enters the section).
    unsafe { openat(libc::AT_FDCWD, path, flags, mode) }
}

/// # Safety
/// As creat(2).
pub unsafe fn creat(path: *const c_char, mode: c_uint) -> c_int {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    // SAFETY: creat(2) is open(2) with these flags (`openat` enters the section).
    unsafe { openat(libc::AT_FDCWD, path, flags, mode) }
}

/// # Safety
/// As socket(2).
pub unsafe fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: integer arguments only (socket(2)).
    track(unsafe { libc::syscall(libc::SYS_socket, domain, kind, protocol) })
}

/// # Safety
/// As socketpair(2): `fds` points at two writable ints.
pub unsafe fn socketpair(domain: c_int, kind: c_int, protocol: c_int, fds: *mut c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: forwarded unchanged (socketpair(2)).
    let result = unsafe { libc::syscall(libc::SYS_socketpair, domain, kind, protocol, fds) };
    // SAFETY: `fds` is the array the call filled.
    unsafe { track_pair(result, fds) }
}

/// # Safety
/// As accept4(2).
pub unsafe fn accept4(
    fd: c_int,
    address: *mut libc::sockaddr,
    length: *mut libc::socklen_t,
    flags: c_int,
) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: forwarded unchanged (accept4(2)).
    track(unsafe { libc::syscall(libc::SYS_accept4, fd, address, length, flags) })
}

/// # Safety
/// As pipe2(2): `fds` points at two writable ints.
pub unsafe fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: forwarded unchanged (pipe2(2)).
    let result = unsafe { libc::syscall(libc::SYS_pipe2, fds, flags) };
    // SAFETY: `fds` is the array the call filled.
    unsafe { track_pair(result, fds) }
}

/// # Safety
/// As dup(2).
pub unsafe fn dup(fd: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: an integer argument (dup(2)).
    track(unsafe { libc::syscall(libc::SYS_dup, fd) })
}

/// # Safety
/// As dup3(2) (`flags` 0 is dup2(2) for distinct descriptors).
pub unsafe fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    let was_open = is_open(new);
    // SAFETY: integer arguments (dup3(2)).
    let result = unsafe { libc::syscall(libc::SYS_dup3, old, new, flags) };
    track_dup_onto(result, new, was_open)
}

/// # Safety
/// As dup2(2).
pub unsafe fn dup2(old: c_int, new: c_int) -> c_int {
    if old == new {
        // dup2(2): returns `new` if `old` is valid and does nothing else; dup3 would refuse.
        return if is_open(old) { new } else { set_errno(libc::EBADF) };
    }
    // SAFETY: dup2 of distinct descriptors is dup3 with no flags (which enters the section).
    unsafe { dup3(old, new, 0) }
}

/// # Safety
/// As fcntl(2): `arg` is the command's third argument (an int or a pointer, both passed in
/// a general register on x86_64, so one `c_ulong` carries either).
pub unsafe fn fcntl(fd: c_int, command: c_int, arg: c_ulong) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: forwarded unchanged (fcntl(2)); the kernel reads `arg` as the command needs.
    let result = unsafe { libc::syscall(libc::SYS_fcntl, fd, command, arg) };
    if command == libc::F_DUPFD || command == libc::F_DUPFD_CLOEXEC {
        return track(result);
    }
    result as c_int
}

/// # Safety
/// As eventfd(2).
pub unsafe fn eventfd(initial: c_uint, flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: integer arguments (eventfd2(2)).
    track(unsafe { libc::syscall(libc::SYS_eventfd2, initial, flags) })
}

/// # Safety
/// As epoll_create1(2).
pub unsafe fn epoll_create1(flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: an integer argument (epoll_create1(2)).
    track(unsafe { libc::syscall(libc::SYS_epoll_create1, flags) })
}

/// # Safety
/// As epoll_create(2) (the size is ignored by the kernel but must be positive).
pub unsafe fn epoll_create(size: c_int) -> c_int {
    if size <= 0 {
        return set_errno(libc::EINVAL);
    }
    // SAFETY: as `epoll_create1` with no flags (which enters the section).
    unsafe { epoll_create1(0) }
}

/// # Safety
/// As timerfd_create(2).
pub unsafe fn timerfd_create(clock: c_int, flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: integer arguments (timerfd_create(2)).
    track(unsafe { libc::syscall(libc::SYS_timerfd_create, clock, flags) })
}

/// # Safety
/// As signalfd(2): `mask` points at a `sigset_t`.
pub unsafe fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // The kernel's sigset is 8 bytes on x86_64 (glibc passes _NSIG / 8).
    // SAFETY: forwarded unchanged (signalfd4(2)).
    let result = unsafe { libc::syscall(libc::SYS_signalfd4, fd, mask, 8usize, flags) };
    if fd == -1 {
        track(result) // Only a new descriptor is the slot's; -1 asked for one.
    } else {
        result as c_int
    }
}

/// # Safety
/// As memfd_create(2): `name` is a NUL-terminated string.
pub unsafe fn memfd_create(name: *const c_char, flags: c_uint) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: forwarded unchanged (memfd_create(2)).
    track(unsafe { libc::syscall(libc::SYS_memfd_create, name, flags) })
}

/// # Safety
/// As inotify_init1(2).
pub unsafe fn inotify_init1(flags: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    // SAFETY: an integer argument (inotify_init1(2)).
    track(unsafe { libc::syscall(libc::SYS_inotify_init1, flags) })
}

/// # Safety
/// As close(2).
pub unsafe fn close(fd: c_int) -> c_int {
    let _section = crate::RuntimeSection::enter();
    if let Some(table) = current() {
        table.forget(fd);
    }
    // SAFETY: an integer argument (close(2)).
    unsafe { libc::syscall(libc::SYS_close, fd) as c_int }
}

fn set_errno(code: c_int) -> c_int {
    // SAFETY: __errno_location(3) returns the calling thread's errno, valid for its life.
    unsafe { *libc::__errno_location() = code };
    -1
}
