//! The few syscalls the region needs. Every raw call goes through [`syscall!`], which turns -1
//! into `io::Error`, so raw return codes never leave this module.

use std::io;

/// Runs a libc call that returns -1 on failure, as `io::Result`. Shared with the runtime's `sys`
/// (`cella_arena::syscall!`), so every raw call in cella goes through this one helper.
#[macro_export]
#[doc(hidden)]
macro_rules! syscall {
    ($call:expr) => {{
        // SAFETY: each caller states the contract of the call it wraps.
        let result = unsafe { $call };
        if result == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(result)
        }
    }};
}

/// The system's page size, from `sysconf(_SC_PAGESIZE)` (never assumed to be 4096).
pub fn page_size() -> usize {
    // sysconf(_SC_PAGESIZE) has no preconditions and cannot fail on Linux (sysconf(3)).
    let size = syscall!(libc::sysconf(libc::_SC_PAGESIZE)).expect("sysconf(_SC_PAGESIZE) succeeds");
    usize::try_from(size).expect("page size is positive")
}

/// Access allowed to a span of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    None,
    ReadWrite,
}

/// Changes the protection of whole pages. `ptr` must be page-aligned and the span must lie in a
/// mapping this process owns (mprotect(2)); `Region` only calls it on its own pages.
pub fn protect(ptr: *mut u8, len: usize, protection: Protection) -> io::Result<()> {
    let prot = match protection {
        Protection::None => libc::PROT_NONE,
        Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    };
    syscall!(libc::mprotect(ptr.cast(), len, prot)).map(drop)
}

/// Locks pages in memory (mlock(2)); they stay locked until unmapped.
pub fn lock(ptr: *mut u8, len: usize) -> io::Result<()> {
    syscall!(libc::mlock(ptr.cast(), len)).map(drop)
}

/// Faults in every page of a writable span now, and says so when the kernel cannot
/// (`madvise(MADV_POPULATE_WRITE)`, Linux 5.14+). Unlike `MAP_POPULATE`, which is best effort and
/// silent, a failure here is reported, so a process that cannot have its memory refuses to start.
/// On older kernels (EINVAL) the pages are touched one by one instead.
pub fn populate(ptr: *mut u8, len: usize) -> io::Result<()> {
    match syscall!(libc::madvise(ptr.cast(), len, libc::MADV_POPULATE_WRITE)) {
        Ok(_) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            let page = page_size();
            for offset in (0..len).step_by(page) {
                // SAFETY: `ptr + offset` is inside the writable span (caller's contract); a
                // volatile read and write of the same byte keeps its value and faults the page in.
                unsafe {
                    let byte = ptr.add(offset);
                    byte.write_volatile(byte.read_volatile());
                }
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}
