//! Linux on x86_64: signals, the signal stack, and reading/writing a faulting thread's registers.

use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Once;
use std::time::Duration;

use cella_arena::Span;

use crate::cancel;

use cella_arena::syscall;

/// The actions that were installed before ours, to which faults we do not own are passed.
static mut PREVIOUS_SEGV: MaybeUninit<libc::sigaction> = MaybeUninit::zeroed();
static mut PREVIOUS_BUS: MaybeUninit<libc::sigaction> = MaybeUninit::zeroed();
static INSTALL: Once = Once::new();

/// Installs the fault handler once per process.
pub fn install_fault_handler() -> io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = (|| {
            // SAFETY: a zeroed sigaction is a valid value to fill in (sigaction(2)).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            // SAFETY: sa_mask is a valid sigset_t owned by `action`.
            syscall!(libc::sigemptyset(&mut action.sa_mask))?;
            // SAFETY: INSTALL runs this once, before any fault handler can read PREVIOUS_*,
            // and `addr_of_mut!` creates no reference to the mutable statics.
            syscall!(libc::sigaction(
                libc::SIGSEGV,
                &action,
                ptr::addr_of_mut!(PREVIOUS_SEGV).cast()
            ))?;
            // SAFETY: as above.
            syscall!(libc::sigaction(
                libc::SIGBUS,
                &action,
                ptr::addr_of_mut!(PREVIOUS_BUS).cast()
            ))?;
            // The preemption timer's signal: on the signal stack too, and restarting the
            // system calls it interrupts where the kernel can (a handler's blocking read).
            action.sa_sigaction = super::preempt::on_preempt_timer as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            // SAFETY: a valid action; the previous one is not needed (SIGURG is ignored by
            // default and cella never asks for it otherwise).
            syscall!(libc::sigaction(super::preempt::PREEMPT_SIGNAL, &action, ptr::null_mut()))?;
            super::preempt::record_own_text();
            Ok(())
        })();
    });
    result
}

/// Makes `span` (part of the region, owned by this worker) this thread's signal stack.
pub fn set_signal_stack(span: Span) -> io::Result<()> {
    let stack = libc::stack_t { ss_sp: span.ptr.as_ptr().cast(), ss_flags: 0, ss_size: span.len };
    // SAFETY: `span` is valid, writable memory that lives as long as the worker (sigaltstack(2)).
    syscall!(libc::sigaltstack(&stack, ptr::null_mut())).map(drop)
}

/// The signal stack a thread had before [`swap_signal_stack`], to put back.
pub struct PreviousSignalStack(libc::stack_t);

/// Makes `span` this thread's signal stack for a while (`cella::testing` runs handlers on
/// threads it does not own); [`restore_signal_stack`] puts the previous one back.
pub fn swap_signal_stack(span: Span) -> io::Result<PreviousSignalStack> {
    let stack = libc::stack_t { ss_sp: span.ptr.as_ptr().cast(), ss_flags: 0, ss_size: span.len };
    // SAFETY: a zeroed stack_t is a valid value for the kernel to overwrite.
    let mut previous: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: `span` is valid, writable memory that outlives the matching restore, and
    // `previous` is ours to write (sigaltstack(2)).
    syscall!(libc::sigaltstack(&stack, &mut previous))?;
    Ok(PreviousSignalStack(previous))
}

/// Puts back the signal stack [`swap_signal_stack`] replaced.
pub fn restore_signal_stack(previous: PreviousSignalStack) -> io::Result<()> {
    let mut stack = previous.0;
    // SS_ONSTACK is reported, never accepted (sigaltstack(2)); we are not on that stack now.
    stack.ss_flags &= !libc::SS_ONSTACK;
    // SAFETY: the stack the kernel reported for this thread, still owned by whoever set it.
    syscall!(libc::sigaltstack(&stack, ptr::null_mut())).map(drop)
}

/// Writes `message` to stderr with one write(2): safe in a signal handler.
pub fn write_stderr(message: &[u8]) {
    // SAFETY: a valid buffer; a failed write to stderr has nowhere else to be reported.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

/// One write(2) of `bytes` to `fd`: how many bytes it took.
pub fn write_fd(fd: libc::c_int, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: write(2) reads `bytes.len()` bytes of a valid slice; `fd` is the caller's.
    syscall!(libc::write(fd, bytes.as_ptr().cast(), bytes.len())).map(|n| n as usize)
}

extern "C" fn on_fault(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t and ucontext_t to an SA_SIGINFO handler
    // (sigaction(2)); we only read the fault address and the registers, and write registers.
    unsafe {
        let fault_address = (*info).si_addr() as usize;
        let context = &mut *(context as *mut libc::ucontext_t);
        let gregs = &mut context.uc_mcontext.gregs;
        let stack_pointer = gregs[libc::REG_RSP as usize] as usize;
        match cancel::on_stack_fault(fault_address, stack_pointer) {
            cancel::Trap::Redirect(regs) => {
                gregs[libc::REG_RIP as usize] = regs.rip as i64;
                gregs[libc::REG_RSP as usize] = regs.rsp as i64;
                gregs[libc::REG_RBP as usize] = regs.rbp as i64;
                gregs[libc::REG_RDI as usize] = regs.rdi as i64;
                gregs[libc::REG_RSI as usize] = regs.rsi as i64;
                return;
            }
            // The headroom is open now: the faulting instruction runs again and succeeds.
            cancel::Trap::Retry => return,
            cancel::Trap::NotOurs => {}
        }
        if crate::quarantine::report_fault(fault_address) {
            // Named: the generic line below would say less.
        } else if cancel::in_handler() {
            write_stderr(b"cella: fatal: a handler faulted outside its stack guard page (a bad pointer, not an overrun); the process cannot recover safely and crashes\n");
        }
        // Not ours: put back the previous action and return; the faulting instruction runs
        // again and faults into it (for the default action, the process dies with the signal).
        let previous = if signal == libc::SIGBUS {
            ptr::addr_of!(PREVIOUS_BUS)
        } else {
            ptr::addr_of!(PREVIOUS_SEGV)
        };
        libc::sigaction(signal, previous.cast(), ptr::null_mut());
    }
}

fn control_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own (sigsetops(3)).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it spawns afterwards.
pub fn block_control_signals() -> io::Result<()> {
    let set = control_signal_set();
    // SAFETY: a valid, initialised set (pthread_sigmask(3)).
    let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    Ok(())
}

/// Waits up to `timeout` for SIGTERM, SIGINT or SIGHUP (which must be blocked); says which came.
pub fn wait_control_signal(timeout: Duration) -> Option<super::ControlSignal> {
    let set = control_signal_set();
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; a null siginfo pointer is allowed (sigtimedwait(2)).
    match syscall!(libc::sigtimedwait(&set, ptr::null_mut(), &timeout)).ok()? {
        libc::SIGHUP => Some(super::ControlSignal::Reopen),
        _ => Some(super::ControlSignal::Stop),
    }
}

/// Opens `path` for appending (created with mode 0644 when missing, closed on exec): one
/// open(2) of a path made into a C string beforehand, so it allocates nothing (the access log
/// writer reopens its file with it on SIGHUP).
pub fn open_append(path: &std::ffi::CStr) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path, valid flags and a mode for O_CREAT (open(2)).
    let fd = syscall!(libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint))?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Number of open file descriptors in this process. Allocates nothing (a sealed worker calls it
/// for `process_open_fds`): getdents64(2) over /proc/self/fd into a buffer on the stack.
pub fn open_fd_count() -> io::Result<usize> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path and valid flags (open(2)); the descriptor is closed below.
    let dir = syscall!(libc::open(c"/proc/self/fd".as_ptr(), flags))?;
    let entries = count_directory_entries(dir);
    // SAFETY: `dir` is the descriptor opened above, closed once (close(2)).
    unsafe { libc::close(dir) };
    // The directory's own descriptor is one of the entries.
    Ok(entries?.saturating_sub(1))
}

/// Entries of the open directory `dir` other than `.` and `..`.
fn count_directory_entries(dir: libc::c_int) -> io::Result<usize> {
    /// The kernel writes 8-byte aligned `linux_dirent64` records.
    #[repr(C, align(8))]
    struct Records([u8; 4096]);
    let mut buf = Records([0; 4096]);
    let mut count = 0;
    loop {
        let (ptr, len) = (buf.0.as_mut_ptr(), buf.0.len());
        // SAFETY: the buffer is writable for `len` bytes and `dir` is an open directory
        // (getdents64(2)); the kernel writes whole records and returns their total length.
        let read = syscall!(libc::syscall(libc::SYS_getdents64, dir, ptr, len))?;
        if read == 0 {
            return Ok(count);
        }
        let records = &buf.0[..(read as usize).min(len)];
        let mut offset = 0;
        // A record: d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1), the NUL-ended name.
        while let Some(record) = records.get(offset..offset + 19) {
            let record_len = usize::from(u16::from_ne_bytes([record[16], record[17]]));
            let name = records.get(offset + 19..offset + record_len).unwrap_or(&[]);
            if !name.starts_with(b".\0") && !name.starts_with(b"..\0") {
                count += 1;
            }
            if record_len == 0 {
                break;
            }
            offset += record_len;
        }
    }
}

/// Resident memory of this process in bytes (the second field of /proc/self/statm, in pages),
/// read without allocating into a buffer on the stack.
pub fn resident_memory_bytes() -> io::Result<u64> {
    use std::io::Read;
    let mut statm = [0u8; 256];
    // A short path: std converts it to a C string on the stack, without allocating.
    let len = std::fs::File::open("/proc/self/statm")?.read(&mut statm)?;
    let resident_pages = statm[..len]
        .split(|&byte| byte == b' ')
        .nth(1)
        .and_then(|field| std::str::from_utf8(field).ok())
        .and_then(|field| field.trim().parse::<u64>().ok())
        .ok_or_else(|| io::Error::other("/proc/self/statm has no resident size"))?;
    Ok(resident_pages.saturating_mul(cella_arena::page_size() as u64))
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out-pointer to an rlimit (getrlimit(2)).
    syscall!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit))?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: a valid rlimit whose soft value does not exceed its hard one (setrlimit(2)).
        if syscall!(libc::setrlimit(libc::RLIMIT_NOFILE, &raised)).is_ok() {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// Takes ownership of descriptor `fd`, which systemd passed to this process (socket
/// activation), once it has checked that the descriptor is open and a listening TCP socket.
/// The caller makes sure each passed descriptor is taken at most once.
pub fn take_inherited_listener(fd: libc::c_int) -> io::Result<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: F_GETFD reads the flags of any descriptor number; EBADF when it is not open
    // (fcntl(2)).
    syscall!(libc::fcntl(fd, libc::F_GETFD))?;
    // SAFETY: the descriptor is open (F_GETFD succeeded), and sd_listen_fds(3) gives the
    // descriptors from 3 to 3 + LISTEN_FDS - 1 to the process named by LISTEN_PID, which the
    // caller checked is this one; nothing else in this process uses them, and the caller takes
    // each at most once, so this is their only owner.
    let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let inet = matches!(socket.domain()?, socket2::Domain::IPV4 | socket2::Domain::IPV6);
    if !inet || socket.r#type()? != socket2::Type::STREAM || !socket.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening TCP socket (cella serves on ListenStream= sockets with an address)",
        ));
    }
    // Not inherited by whatever this process might exec (sd_listen_fds(3) does the same).
    socket.set_cloexec(true)?;
    Ok(socket.into())
}
