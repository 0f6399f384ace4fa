//! The preemption timer (Linux): one POSIX timer per worker thread (`timer_create` with
//! `SIGEV_THREAD_ID`, CLOCK_MONOTONIC, absolute times) whose signal, [`PREEMPT_SIGNAL`], is
//! handled on the worker's signal stack by [`on_preempt_timer`]; what the handler decides is
//! `cancel::on_preempt_signal`'s.
//!
//! **Per-request cost.** The timer is one-shot and armed lazily: a handler that starts checks
//! (two thread-local reads) whether the timer is already set to fire at or before its deadline,
//! and only otherwise calls `timer_settime`. Handlers start in deadline order, so under load the
//! timer stays armed for the earliest one; when it fires for a handler that has already ended,
//! the signal handler re-arms it for the running handler's deadline (or leaves it disarmed when
//! none runs). So a worker makes about one `timer_settime` and takes about one signal per
//! `handler_timeout_ms`, not one per request.

use std::io;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};

use cella_arena::syscall;
use cella_arena::text::{Pick, TextRanges};

use crate::cancel;

/// The timer's signal. SIGURG: its default action is to ignore it, nothing in cella uses
/// out-of-band TCP data, and the timer sends it to its worker thread only.
pub const PREEMPT_SIGNAL: libc::c_int = libc::SIGURG;

/// How long after a timer signal that found foreign code running (a C library call, the
/// runtime, an unwinding panic) the timer fires again. A handler that calls into libc often
/// (`/spin` reads the clock in a loop: most of its time is in libc and the vDSO) needs tens of
/// tries: 1 ms apart, it ended up to 175 ms past its deadline on a loaded machine; 100 us
/// apart, within 8 ms (docs/architecture.md, the ladder).
pub const PREEMPT_RETRY_NS: u64 = 100_000;
/// After this many tries the handler is taken to be blocked in foreign code (a system call)
/// rather than passing through it, and the timer tries every [`PREEMPT_RETRY_SLOW_NS`]
/// instead, until the watchdog's bound.
pub const PREEMPT_RETRIES_FAST: u32 = 1000;
/// The interval of the tries after the first [`PREEMPT_RETRIES_FAST`].
pub const PREEMPT_RETRY_SLOW_NS: u64 = 1_000_000;

/// Most executable segments of the program recorded as its own text.
const TEXT_RANGES_MAX: usize = 8;

/// The program's own executable segments (not those of shared libraries, the vDSO or plugins),
/// recorded once before the workers start.
static OWN_TEXT: TextRanges<TEXT_RANGES_MAX> = TextRanges::new();

thread_local! {
    /// This worker's kernel timer id; -1 when it has none (not a worker).
    static TIMER: AtomicU64 = const { AtomicU64::new(u64::MAX) };
    /// When the timer is set to fire (CLOCK_MONOTONIC ns); 0: disarmed.
    static ARMED_NS: AtomicU64 = const { AtomicU64::new(0) };
}

/// Records the program's own text, for [`in_own_text`]. Once, before the workers start.
pub(super) fn record_own_text() {
    // The program is the first object dl_iterate_phdr(3) reports, with an empty name; only it.
    OWN_TEXT.record(|name| if name.is_empty() { Pick::RecordAndStop } else { Pick::Stop });
}

/// Whether `address` is in the program's own text. Async-signal-safe.
fn in_own_text(address: usize) -> bool {
    OWN_TEXT.contains(address)
}

/// CLOCK_MONOTONIC in ns (the clock `Instant` reads). Async-signal-safe.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer (clock_gettime(2)); CLOCK_MONOTONIC cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Creates this worker thread's preemption timer (before the seal: it may allocate nothing,
/// but it is a system call the request path should not need).
pub fn start_preempt_timer() -> io::Result<()> {
    // SAFETY: a zeroed sigevent is a valid value to fill in (sigevent(7)).
    let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_signo = PREEMPT_SIGNAL;
    // SAFETY: gettid(2) takes no arguments and cannot fail.
    event.sigev_notify_thread_id = unsafe { libc::gettid() };
    let mut id: libc::c_int = -1;
    // SAFETY: the raw timer_create(2) system call with a valid sigevent naming this thread
    // and an out-pointer to the kernel's timer id (an int).
    syscall!(libc::syscall(libc::SYS_timer_create, libc::CLOCK_MONOTONIC, &event, &mut id))?;
    TIMER.with(|timer| timer.store(id as u64, Ordering::Relaxed));
    ARMED_NS.with(|armed| armed.store(0, Ordering::Relaxed));
    Ok(())
}

/// Deletes this thread's timer (the worker is ending).
pub fn stop_preempt_timer() {
    let id = TIMER.with(|timer| timer.swap(u64::MAX, Ordering::Relaxed));
    if id != u64::MAX {
        // SAFETY: timer_delete(2) of this thread's own timer id.
        unsafe { libc::syscall(libc::SYS_timer_delete, id as libc::c_int) };
    }
}

/// Sets this thread's timer to fire at `at_ns` (absolute). Async-signal-safe.
fn arm(at_ns: u64) {
    let id = TIMER.with(|timer| timer.load(Ordering::Relaxed));
    if id == u64::MAX {
        return;
    }
    let value = libc::timespec {
        tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
    };
    let spec =
        libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
    ARMED_NS.with(|armed| armed.store(at_ns, Ordering::Relaxed));
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the raw timer_settime(2) system call on this thread's timer with a valid
    // itimerspec; it cannot fail for a live timer and a valid time.
    unsafe {
        libc::syscall(libc::SYS_timer_settime, id as libc::c_int, libc::TIMER_ABSTIME, &spec, 0)
    };
}

/// Makes sure this thread's timer fires at or before `deadline_ns`: a system call only when it
/// is disarmed or set later (see the module documentation).
#[inline]
pub fn cover_preempt_deadline(deadline_ns: u64) {
    let armed = ARMED_NS.with(|armed| armed.load(Ordering::Relaxed));
    if armed == 0 || armed > deadline_ns {
        arm(deadline_ns);
    }
}

/// The preemption timer's signal handler.
pub(super) extern "C" fn on_preempt_timer(
    _signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: __errno_location(3) is this thread's errno; restored before returning, since the
    // interrupted code may be between a call and its errno check.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler (sigaction(2)); we
    // read the stack and instruction pointers and, to redirect, write registers.
    let gregs = unsafe { &mut (*(context as *mut libc::ucontext_t)).uc_mcontext.gregs };
    let stack_pointer = gregs[libc::REG_RSP as usize] as usize;
    let own_code = in_own_text(gregs[libc::REG_RIP as usize] as usize);
    let now_ns = monotonic_ns();
    match cancel::on_preempt_signal(now_ns, stack_pointer, own_code) {
        cancel::Preempt::Redirect(regs) => {
            ARMED_NS.with(|armed| armed.store(0, Ordering::Relaxed));
            gregs[libc::REG_RIP as usize] = regs.rip as i64;
            gregs[libc::REG_RSP as usize] = regs.rsp as i64;
            gregs[libc::REG_RBP as usize] = regs.rbp as i64;
            gregs[libc::REG_RDI as usize] = regs.rdi as i64;
            gregs[libc::REG_RSI as usize] = regs.rsi as i64;
        }
        cancel::Preempt::Idle => ARMED_NS.with(|armed| armed.store(0, Ordering::Relaxed)),
        cancel::Preempt::Until(deadline_ns) => arm(deadline_ns),
        cancel::Preempt::Retry(retries) if retries < PREEMPT_RETRIES_FAST => {
            arm(now_ns + PREEMPT_RETRY_NS)
        }
        cancel::Preempt::Retry(_) => arm(now_ns + PREEMPT_RETRY_SLOW_NS),
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}
