//! The cancellation primitive: a handler runs as a stackful coroutine on its slot's stack, and
//! can be left three ways besides returning.
//!
//! - **Clean**: the scheduler resumes a suspended handler with [`Wake::Cancel`]; the handler's
//!   suspend point starts an unwind (no panic hook runs) that drops every frame's values up to
//!   the coroutine's root, where it is caught and reported as [`Fault::Cancelled`]. A task is
//!   resumed with `Wake::Cancel` at most once: from then on every suspension point refuses
//!   ([`Refusal::Cancelled`]), so a destructor that would wait returns at once instead, and a
//!   handler that catches the unwind and returns still ends as `Fault::Cancelled`.
//! - **Never suspended while unwinding**: a suspension point reached while the thread is
//!   panicking (a panic, or a clean cancellation, is unwinding through a destructor that waits)
//!   refuses with [`Refusal::Unwinding`]. std's panic count is per thread, not per coroutine:
//!   another request resumed on this worker while one is mid-unwind would see
//!   `std::thread::panicking()` true (its next overrun would be taken for an out-of-memory
//!   panic), and a cancel delivered into that destructor would panic during cleanup (abort).
//! - **Hard, arena spent**: the routing allocator calls [`on_arena_exhausted`] on the handler's
//!   stack; it suspends with [`Yield::Overrun`] and the scheduler never resumes it, but abandons
//!   the stack with `force_reset` (no destructors run; the arena is wiped instead).
//! - **Hard, stack overflow**: the fault handler (in `sys`) sees a fault in the running slot's
//!   guard page and redirects the coroutine to return [`Fault::StackOverflow`] (`trap.rs`).
//! - **Hard, preempted**: the worker's preemption timer (in `sys`) fires past the handler's
//!   deadline ([`Task::set_deadline_ns`]) while it runs without suspending; when the interrupted
//!   code is the handler's own, the coroutine is redirected to return [`Fault::Preempted`]
//!   (`trap.rs` says what "its own" means); otherwise the timer tries again shortly.
//! - **Panic**: the panic unwinds the handler's own frames (all on the slot stack) and is caught
//!   at the root as [`Fault::Panicked`]. We unwind rather than abandon here because std keeps
//!   per-thread panic state (the panic count, "in hook") that only a completed unwind resets;
//!   abandoning the stack from inside the hook would make the next panic abort the process.
//!   Allocations made while unwinding come from the worker's reserve when the arena is spent.
//!
//! **Stack headroom.** The lowest [`STACK_HEADROOM_BYTES`] of every slot stack, just above its
//! guard page, are protected too (once, at startup: [`protect_headroom`]). A handler that
//! reaches them faults; the fault handler opens them (mprotect, read-write) and lets the faulting
//! instruction run again, so the code that was running finishes with room to spare: a panic that
//! started near the limit completes its hook and its unwind (std's per-thread panic count is
//! reset), a `println!` that overflowed inside stdout's lock returns and releases it. A handler
//! that used the headroom outside a panic answers 500 when it returns
//! ([`Fault::StackHeadroomUsed`]); one that goes on past the headroom hits the guard page (the
//! hard rung). The headroom is closed again when the task ends. Its size was measured: see
//! `STACK_HEADROOM_BYTES`.
//!
//! Invariants (docs/architecture.md): no setjmp anywhere; only frames on the slot's stack are
//! ever abandoned; between the root and the handler there are only this module's frames (no
//! locks, no `RefCell` borrows); after a hard cancel nothing on that stack is touched again.
//!
//! This module imports nothing else from the runtime.

use std::alloc::Layout;
use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::time::Instant;

use corosensei::trap::CoroutineTrapHandler;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use cella_arena::{runtime_depth, set_runtime_depth, SlotMemory};

mod stack;
mod trap;
use stack::protect_span;
pub use stack::{protect_headroom, SlotStack, STACK_HEADROOM_BYTES};
use trap::TrapContext;
pub use trap::{on_preempt_signal, on_stack_fault, Preempt, Trap};

/// What a suspended handler waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// An outbound socket of the slot (its index in the slot's socket table) and whether the
    /// handler needs it writable (else readable).
    pub socket: Option<(usize, bool)>,
    /// When to give up waiting (resumed with [`Wake::TimedOut`]).
    pub deadline: Option<Instant>,
}

/// Why a handler's coroutine gave control back without finishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yield {
    Wait(Wait),
    /// The arena is spent: never resume; abandon.
    Overrun,
}

/// What a suspended handler is resumed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Start,
    Ready,
    TimedOut,
    /// Unwind now: the handler's deadline passed or its client went away.
    Cancel,
}

/// How a handler ended other than by returning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Panicked,
    /// The guard page was hit: the stack was abandoned (hard).
    StackOverflow,
    /// The handler returned after using the stack headroom (it ran out of its stack, but the
    /// code that did finished and unwound normally): answered as an overflow, not hard.
    StackHeadroomUsed,
    Cancelled,
    /// It ran past its deadline without suspending and was cut off by the preemption timer:
    /// the stack was abandoned (hard).
    Preempted,
}

/// Bytes at the low end of every slot stack, above the guard page, that only a panic or code
/// already running when the stack ran out may use (see the module documentation). Measured on
/// Why a suspension point returned at once instead of suspending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not on a handler's stack: there is no coroutine to suspend.
    NotInHandler,
    /// The thread is unwinding (a panic or a clean cancellation runs destructors).
    Unwinding,
    /// The request was cancelled (it caught the unwind, or a destructor runs on its way out).
    Cancelled,
}

/// The unwind payload of a clean cancellation (zero-sized: boxing it allocates nothing).
struct Cancelled;

type Co<R> = Coroutine<Wake, Yield, Result<R, Fault>, SlotStack>;

thread_local! {
    /// The yielder of the coroutine running on this thread, erased; null when none runs.
    static YIELDER: Cell<*const Yielder<Wake, Yield>> = const { Cell::new(ptr::null()) };
    /// The running task's trap context; null when none runs.
    static TRAP: Cell<*const TrapContext> = const { Cell::new(ptr::null()) };
    /// Whether the running task has been resumed with `Wake::Cancel` (it never suspends again).
    static CANCELLED: Cell<bool> = const { Cell::new(false) };
    /// Called (in the preemption signal handler) at the first try past a running handler's
    /// deadline that could not cut it off: the worker notes the request for the watchdog.
    static OVERDUE_HOOK: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// Sets this thread's overdue hook (see `OVERDUE_HOOK`); it must be async-signal-safe.
pub fn set_overdue_hook(hook: fn()) {
    OVERDUE_HOOK.with(|current| current.set(Some(hook)));
}

/// One handler execution on one slot.
pub struct Task<R: 'static> {
    coroutine: Co<R>,
    trap_handler: CoroutineTrapHandler<Result<R, Fault>>,
    trap: TrapContext,
    /// Resumed with `Wake::Cancel` once already.
    cancelled: bool,
}

/// What `Task::resume` reports.
#[derive(Debug)]
pub enum Step<R> {
    Finished(Result<R, Fault>),
    Suspended(Wait),
    /// The arena was spent; the stack has already been abandoned.
    Overrun,
}

impl<R: 'static> Task<R> {
    /// Prepares `job` to run on `slot`'s stack. Nothing runs until [`Task::resume`].
    pub fn new<F: FnOnce() -> R + 'static>(slot: &SlotMemory, job: F) -> Task<R> {
        let coroutine = Co::with_stack(SlotStack::new(slot), move |yielder, _start| {
            YIELDER.with(|current| current.set(yielder));
            // The handler's own code from here (whatever an abandoned task left).
            set_runtime_depth(0);
            let result = panic::catch_unwind(AssertUnwindSafe(job));
            set_runtime_depth(1); // The runtime's frames again: not preempted.
            result.map_err(|payload: Box<dyn Any + Send>| {
                if payload.is::<Cancelled>() {
                    Fault::Cancelled
                } else {
                    Fault::Panicked
                }
            })
        });
        let trap_handler = coroutine.trap_handler();
        Task {
            coroutine,
            trap_handler,
            trap: TrapContext::new::<R>(slot.guard.ptr.as_ptr() as usize, slot.guard.end()),
            cancelled: false,
        }
    }

    /// Whether this task has been resumed with `Wake::Cancel`.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Lets the preemption timer cut the handler off once it runs past `deadline_ns`
    /// (CLOCK_MONOTONIC) without suspending. 0 (the default): never.
    pub fn set_deadline_ns(&mut self, deadline_ns: u64) {
        self.trap.deadline_ns.set(deadline_ns);
    }

    /// Runs the handler until it returns, suspends or is cancelled.
    ///
    /// The task must not move while it runs (the fault handler holds a pointer to it); the
    /// runtime keeps tasks in a table that never reallocates.
    ///
    /// A task is resumed with `Wake::Cancel` at most once (asserted): after it, it cannot
    /// suspend again, so it never reports `Step::Suspended`, and a value it returns is dropped
    /// and reported as `Fault::Cancelled` (its client gets the cancellation's answer, never a
    /// late one).
    pub fn resume(&mut self, wake: Wake) -> Step<R> {
        assert!(
            !(self.cancelled && wake == Wake::Cancel),
            "a task is cancelled at most once (it cannot suspend after its cancellation)"
        );
        self.cancelled |= wake == Wake::Cancel;
        self.trap.handler = ptr::addr_of!(self.trap_handler).cast();
        // Until the coroutine's own code runs (it sets its depth), the switch is the runtime's.
        set_runtime_depth(1);
        TRAP.with(|trap| trap.set(&self.trap));
        CANCELLED.with(|cancelled| cancelled.set(self.cancelled));
        let deadline_ns = self.trap.deadline_ns.get();
        if deadline_ns != 0 {
            // After TRAP is set: a timer signal from now on sees this task.
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            crate::sys::cover_preempt_deadline(deadline_ns);
        }
        let result = self.coroutine.resume(wake);
        set_runtime_depth(0);
        CANCELLED.with(|cancelled| cancelled.set(false));
        TRAP.with(|trap| trap.set(ptr::null()));
        YIELDER.with(|current| current.set(ptr::null()));
        if !matches!(result, CoroutineResult::Yield(Yield::Wait(_))) {
            self.close_headroom();
        }
        match result {
            CoroutineResult::Return(Ok(_)) if self.cancelled => {
                Step::Finished(Err(Fault::Cancelled))
            }
            // The timer found it past its deadline (in foreign code: a blocking call) and it
            // returned before it could be cut off: too late, answered as a timeout.
            CoroutineResult::Return(Ok(_)) if self.trap.preempt_retries.get() > 0 => {
                Step::Finished(Err(Fault::Cancelled))
            }
            CoroutineResult::Return(Ok(_)) if self.trap.headroom_used.get() => {
                Step::Finished(Err(Fault::StackHeadroomUsed))
            }
            CoroutineResult::Return(result) => Step::Finished(result),
            CoroutineResult::Yield(Yield::Wait(wait)) => Step::Suspended(wait),
            CoroutineResult::Yield(Yield::Overrun) => {
                // SAFETY: the coroutine is suspended inside the allocator and will never be
                // resumed; its frames are abandoned without running destructors, which is
                // sound because nothing outside the slot points into that stack or needs its
                // destructors for memory safety (the arena is wiped; sockets are closed from
                // the runtime's table), and no lock is held between the root and the handler.
                unsafe { self.coroutine.force_reset() };
                Step::Overrun
            }
        }
    }
}

impl<R: 'static> Task<R> {
    /// Abandons a suspended task that will not stop when cancelled (it caught the unwind).
    pub fn abandon(&mut self) {
        // SAFETY: as for `Yield::Overrun` in `resume`: the stack is never touched again, and
        // nothing outside it needs its destructors for memory safety.
        unsafe { self.coroutine.force_reset() };
        self.close_headroom();
    }

    /// Protects the headroom again once the task has ended, for the slot's next request.
    fn close_headroom(&self) {
        if self.trap.headroom_open.replace(false) {
            let start = self.trap.guard_end as *mut u8;
            if let Err(error) = protect_span(start, STACK_HEADROOM_BYTES, false) {
                // Not a request-scoped failure: the slot would run its next handler without
                // headroom. Never expected (the same call succeeded at startup).
                panic!("re-protecting a slot's stack headroom failed: {error}");
            }
        }
    }
}

/// Bytes of stack the running handler has left before its headroom (0 when it is in it);
/// `None` outside a handler.
pub fn stack_remaining_bytes() -> Option<usize> {
    let trap = TRAP.with(Cell::get);
    // SAFETY: a non-null TRAP points into the running Task, which does not move while it runs.
    let trap = unsafe { trap.as_ref() }?;
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    Some(here.saturating_sub(trap.headroom_end))
}

/// Suspends the running handler until the scheduler wakes it. Refuses, at once, outside a
/// handler's stack, while the thread is unwinding, and once the task has been cancelled.
pub fn suspend(wait: Wait) -> Result<Wake, Refusal> {
    let yielder = YIELDER.with(Cell::get);
    if yielder.is_null() {
        return Err(Refusal::NotInHandler);
    }
    if std::thread::panicking() {
        return Err(Refusal::Unwinding);
    }
    if CANCELLED.with(Cell::get) {
        return Err(Refusal::Cancelled);
    }
    // The switch is not preempted; the depth is this handler's (others ran meanwhile).
    let depth = runtime_depth();
    set_runtime_depth(depth.max(1));
    // SAFETY: a non-null YIELDER points at the running coroutine's yielder, which lives on its
    // stack for as long as the coroutine runs, and we are on that stack.
    let wake = unsafe { (*yielder).suspend(Yield::Wait(wait)) };
    // Other coroutines ran meanwhile and set their own yielder: put ours back.
    YIELDER.with(|current| current.set(yielder));
    set_runtime_depth(depth);
    Ok(wake)
}

/// Starts a clean cancellation: unwinds the handler's frames up to the coroutine's root.
pub fn unwind_cancelled() -> ! {
    panic::resume_unwind(Box::new(Cancelled))
}

/// Whether an unwind payload is a clean cancellation (as opposed to a panic).
pub fn is_cancellation(payload: &(dyn Any + Send)) -> bool {
    payload.is::<Cancelled>()
}

/// Whether a handler is running on this thread now.
pub fn in_handler() -> bool {
    !YIELDER.with(Cell::get).is_null()
}

/// The routing allocator's `on_exhausted`: leaves the handler's stack for good.
///
/// # Safety
/// Must be called on a handler's stack (the routing allocator only calls it while a route,
/// and so a handler, is active on this thread).
pub unsafe fn on_arena_exhausted(_layout: Layout) -> ! {
    let yielder = YIELDER.with(Cell::get);
    if !yielder.is_null() {
        // Never resumed: the depth is reset by the next task.
        set_runtime_depth(1);
        // SAFETY: as in `suspend`. The scheduler answers `Yield::Overrun` with `force_reset`
        // and never resumes this stack.
        unsafe { (*yielder).suspend(Yield::Overrun) };
    }
    crate::sys::write_stderr(b"cella: fatal: arena exhausted outside a handler's stack\n");
    std::process::abort()
}
