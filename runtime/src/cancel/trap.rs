//! The two asynchronous ways out of a running handler, both taken from a signal handler on the
//! worker's signal stack with corosensei's trap redirection (the interrupted registers are
//! replaced so that the coroutine returns a [`Fault`] to the worker, abandoning its stack):
//!
//! - a fault in the running slot's stack guard page ([`on_stack_fault`]; its headroom is opened
//!   instead, once) returns `Fault::StackOverflow`;
//! - the preemption timer ([`on_preempt_signal`]), past the running handler's deadline, returns
//!   `Fault::Preempted`, but only when the interrupted code is the handler's own: its stack
//!   pointer in the slot's stack, its instruction in the program's own text (not a C library,
//!   the vDSO, or a plugin), no runtime section open (`cella_arena::RuntimeSection`: the state
//!   heap, the descriptor hooks, a `cella::sync` lock's bookkeeping, a host function, a
//!   coroutine switch) and no panic unwinding. Otherwise the caller retries shortly; the
//!   watchdog bounds how long.

use std::cell::Cell;

use corosensei::trap::{CoroutineTrapHandler, TrapHandlerRegs};

use super::stack::protect_span;
use super::{Fault, STACK_HEADROOM_BYTES, TRAP};

/// Everything the signal handlers need to turn an overflow or a preemption into a return;
/// lives in the `Task`.
pub(super) struct TrapContext {
    pub(super) guard_start: usize,
    pub(super) guard_end: usize,
    /// The stack headroom: `[guard_end, headroom_end)`.
    pub(super) headroom_end: usize,
    /// The fault handler opened the headroom (it is read-write until the task ends).
    pub(super) headroom_open: Cell<bool>,
    /// The headroom was opened while no panic was unwinding: the handler ran out of stack.
    pub(super) headroom_used: Cell<bool>,
    /// When the handler may be preempted (CLOCK_MONOTONIC, ns); 0: never.
    pub(super) deadline_ns: Cell<u64>,
    /// Timer signals past the deadline that found foreign code running (not preempted).
    pub(super) preempt_retries: Cell<u32>,
    pub(super) handler: *const (),
    pub(super) redirect: unsafe fn(*const (), Fault) -> TrapHandlerRegs,
    pub(super) stack_ptr_in_bounds: unsafe fn(*const (), usize) -> bool,
}

impl TrapContext {
    pub(super) fn new<R: 'static>(guard_start: usize, guard_end: usize) -> TrapContext {
        TrapContext {
            guard_start,
            guard_end,
            headroom_end: guard_end + STACK_HEADROOM_BYTES,
            headroom_open: Cell::new(false),
            headroom_used: Cell::new(false),
            deadline_ns: Cell::new(0),
            preempt_retries: Cell::new(0),
            handler: std::ptr::null(),
            redirect: redirect::<R>,
            stack_ptr_in_bounds: stack_ptr_in_bounds::<R>,
        }
    }
}

unsafe fn redirect<R: 'static>(handler: *const (), fault: Fault) -> TrapHandlerRegs {
    // SAFETY: `handler` is the `trap_handler` of the running `Task<R>` (set in `resume`).
    let handler = unsafe { &*(handler as *const CoroutineTrapHandler<Result<R, Fault>>) };
    // SAFETY: we are in a signal handler for this coroutine, with its stack pointer in bounds
    // (checked by the caller); the caller writes the returned registers into the context.
    unsafe { handler.setup_trap_handler(move || Err(fault)) }
}

unsafe fn stack_ptr_in_bounds<R: 'static>(handler: *const (), stack_pointer: usize) -> bool {
    // SAFETY: as in `redirect`.
    let handler = unsafe { &*(handler as *const CoroutineTrapHandler<Result<R, Fault>>) };
    handler.stack_ptr_in_bounds(stack_pointer)
}

/// The running task's trap context, if a task runs on this thread.
fn running() -> Option<&'static TrapContext> {
    let trap = TRAP.with(Cell::get);
    // SAFETY: a non-null TRAP points into the running Task, which does not move while it runs;
    // the reference does not outlive the signal handler that asked for it.
    unsafe { trap.as_ref() }
}

/// What the fault handler does about a fault.
pub enum Trap {
    /// The running slot overflowed into its guard page: write these registers (the coroutine
    /// returns `Fault::StackOverflow`).
    Redirect(TrapHandlerRegs),
    /// The running slot reached its stack headroom, which is now open: return and let the
    /// faulting instruction run again.
    Retry,
    /// Not a fault of the running slot's stack.
    NotOurs,
}

/// Called by the fault handler: a fault in the running slot's headroom opens it; a fault in its
/// guard page (with the faulting stack that slot's) sets the coroutine up to return
/// `Fault::StackOverflow`.
pub fn on_stack_fault(fault_address: usize, stack_pointer: usize) -> Trap {
    let Some(trap) = running() else { return Trap::NotOurs };
    if fault_address < trap.guard_start || fault_address >= trap.headroom_end {
        return Trap::NotOurs;
    }
    // SAFETY: `trap.handler` matches the functions' type parameter (both set by `Task::new`
    // and `Task::resume` of the same Task).
    if !unsafe { (trap.stack_ptr_in_bounds)(trap.handler, stack_pointer) } {
        return Trap::NotOurs;
    }
    if fault_address >= trap.guard_end && !trap.headroom_open.get() {
        let start = trap.guard_end as *mut u8;
        if protect_span(start, STACK_HEADROOM_BYTES, true).is_ok() {
            trap.headroom_open.set(true);
            // `panicking` reads a thread-local with no lazy initialisation: safe here.
            trap.headroom_used.set(!std::thread::panicking());
            return Trap::Retry;
        }
    }
    // SAFETY: as above; we are in the fault handler for this coroutine, with its stack pointer
    // in bounds.
    Trap::Redirect(unsafe { (trap.redirect)(trap.handler, Fault::StackOverflow) })
}

/// What the preemption timer's signal handler does.
pub enum Preempt {
    /// The running handler is past its deadline, in its own code: write these registers (the
    /// coroutine returns `Fault::Preempted`).
    Redirect(TrapHandlerRegs),
    /// No handler that can be preempted runs: leave the timer disarmed.
    Idle,
    /// The running handler's deadline is later: arm the timer for it (ns).
    Until(u64),
    /// Past the deadline, but foreign code runs: try again shortly (this many tries so far).
    Retry(u32),
}

/// Called by the preemption timer's signal handler with the clock and the interrupted stack
/// pointer; `own_code` says whether the interrupted instruction is in the program's own text.
pub fn on_preempt_signal(now_ns: u64, stack_pointer: usize, own_code: bool) -> Preempt {
    let Some(trap) = running() else { return Preempt::Idle };
    let deadline_ns = trap.deadline_ns.get();
    if deadline_ns == 0 {
        return Preempt::Idle;
    }
    if now_ns < deadline_ns {
        return Preempt::Until(deadline_ns);
    }
    // SAFETY: `trap.handler` matches the function's type parameter (see `on_stack_fault`).
    let on_slot_stack = unsafe { (trap.stack_ptr_in_bounds)(trap.handler, stack_pointer) };
    // `panicking` and the depth read thread-locals with no lazy initialisation: safe here.
    let handlers_own =
        own_code && on_slot_stack && cella_arena::runtime_depth() == 0 && !std::thread::panicking();
    if !handlers_own {
        let retries = trap.preempt_retries.get().saturating_add(1);
        trap.preempt_retries.set(retries);
        if retries == 1 {
            if let Some(hook) = super::OVERDUE_HOOK.with(Cell::get) {
                hook();
            }
        }
        return Preempt::Retry(retries);
    }
    trap.deadline_ns.set(0); // Once: the coroutine returns before this handler can run again.
                             // SAFETY: as above; we are in a signal handler for this coroutine, with its stack pointer
                             // in bounds.
    Preempt::Redirect(unsafe { (trap.redirect)(trap.handler, Fault::Preempted) })
}
