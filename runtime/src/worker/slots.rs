//! Slots and the coroutine lifecycle: starting a handler on a slot's stack, resuming it when
//! what it waits for is ready, dealing with how it stopped (response, panic, overrun, stack
//! overflow, deadline) and cancelling it; freeing the slot is `release.rs`. Must not read from or
//! write to connections: it hands a response or an error to `respond.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cella_arena::fds::{self, FdTable};
use cella_arena::{Arena, Route, SlotMemory};

use super::Worker;
use crate::cancel::{self, Fault, Step, Task, Wait, Wake};
use crate::handler::{Handler, Response};
use crate::http::ErrorKind;
use crate::net::SlotSockets;
use crate::slot_request::RawRequest;
use crate::tick::Tick;

/// One slot of the instance: its memory, and the request and coroutine it holds while a worker
/// owns it.
pub(crate) struct Slot {
    pub(super) memory: SlotMemory,
    pub(super) arena: Arena,
    pub(super) route: Route,
    pub(super) sockets: SlotSockets,
    /// Descriptors the current request opened through libc (`cella_arena::fds`).
    pub(super) fds: FdTable,
    pub(super) task: Option<Task<Response<'static>>>,
    /// Kept until the response's bytes are written, then dropped before the wipe.
    pub(super) response: Option<Response<'static>>,
    pub(super) request: Option<RawRequest>,
    pub(super) conn: usize,
    pub(super) wait: Option<Wait>,
    pub(super) wake_at: Option<Tick>,
    pub(super) handler_deadline: Tick,
    pub(super) fail_alloc_at: u32,
    /// The task allocated from the worker's panic reserve (a panic while its arena was spent):
    /// the reserve is not wiped while any slot holding memory from it is in use.
    pub(super) holds_reserve: bool,
    /// The task ended hard (overrun, stack overflow, abandoned): its stack was never unwound.
    pub(super) ended_hard: bool,
}

// SAFETY: a slot moves between worker threads only through the instance's slot pool, and only
// while free: `release_slot` drops its task (the coroutine, whose stack is the slot's own),
// response and request, closes its sockets and wipes its arena before the index is pushed, so
// nothing in it refers to the thread that used it last. Its `Cell`s and raw pointers are used
// by one owner at a time (`pool::Owned`), with the pool's Release/Acquire between owners.
unsafe impl Send for Slot {}

impl Slot {
    pub(super) fn new(memory: SlotMemory, arena: Arena, sockets: SlotSockets) -> Slot {
        cancel::protect_headroom(&memory).expect("protecting a slot's stack headroom succeeds");
        Slot {
            memory,
            arena,
            route: Route::new(cancel::on_arena_exhausted),
            sockets,
            fds: FdTable::new(),
            task: None,
            response: None,
            request: None,
            conn: usize::MAX,
            wait: None,
            wake_at: None,
            handler_deadline: Tick::now(),
            fail_alloc_at: 0,
            holds_reserve: false,
            ended_hard: false,
        }
    }
}

impl Slot {
    /// Drops what the slot's handler returned with the slot's route entered, so the frees of
    /// its arena memory take the arena's own path instead of the address search a free outside
    /// any route makes (every region, then every state heap): the response is dropped once per
    /// request. Memory it holds elsewhere (the state heap) is found and freed either way.
    pub(super) fn drop_in_route<T>(&self, value: T) {
        // SAFETY: the route and the arenas it names (set by `run_task`, which produced `value`)
        // live in the slot and the worker, which do not move while it is used; `leave` follows
        // at once.
        unsafe { cella_arena::enter(&self.route) };
        drop(value);
        cella_arena::leave();
    }
}

impl Worker {
    pub(super) fn start_handler(&mut self, slot_index: usize) {
        let slot = &mut self.slots[slot_index];
        // By address, not by value: copied, the request (~150 bytes) is moved three times on
        // its way into the task and onto the slot's stack (~100 instructions a request).
        let request: *const RawRequest =
            slot.request.as_ref().expect("a slot starting a handler holds a request");
        let handler: *const dyn Handler = Arc::as_ptr(&self.handler);
        slot.task = Some(Task::new(&slot.memory, move || {
            // SAFETY: the worker keeps the handler alive (its Arc). The slot does not move (the
            // table never reallocates) and keeps the request, unchanged, until the task has
            // ended and its response is dropped (`release_slot` takes it): while the task runs,
            // the worker writes other fields of the slot, never `request`, so this read sees
            // what was written before the task started.
            unsafe { (*handler).handle(&(*request).to_request()) }
        }));
        // Not older than the end of the last handler run (`run_task` moves the clock on): a
        // handler that ran long earlier in this turn must not shorten the next one's deadline.
        slot.handler_deadline = self.now + self.settings.handler_timeout;
        let deadline_ns = slot.handler_deadline.ns();
        slot.task.as_mut().expect("just set").set_deadline_ns(deadline_ns);
        slot.route.fail_countdown.set(slot.fail_alloc_at);
        self.resume(slot_index, Wake::Start);
    }

    /// Runs a slot's task with its allocations routed to its arena.
    pub(super) fn run_task(&mut self, slot_index: usize, wake: Wake) -> Step<Response<'static>> {
        self.watch().beat();
        // A handler may run long: a pair this worker keeps must not wait for it (`buffers.rs`).
        self.release_io_spare_if_wanted();
        let slot = &mut self.slots[slot_index];
        // As `set_wake_at(slot_index, None)`, through the reference already taken.
        if slot.wake_at.take().is_some() {
            self.waiting_slots -= 1;
        }
        super::watchdog::running(&self.shared.watches[self.index], &slot.request);
        slot.wait = None;
        slot.route.arena = &slot.arena;
        slot.route.reserve = &self.reserve;
        slot.sockets.enter();
        // SAFETY: the table lives in the slot, which does not move; `leave` follows the resume.
        unsafe { fds::enter(&slot.fds) };
        let reserve_used_bytes = self.reserve.used_bytes();
        // SAFETY: the route and its arenas live in this worker and outlive the call; `leave`
        // runs right after the task gives control back.
        unsafe { cella_arena::enter(&slot.route) };
        let step = slot.task.as_mut().expect("a running slot has a task").resume(wake);
        super::watchdog::running_none();
        cella_arena::leave();
        fds::leave();
        SlotSockets::leave();
        // The one clock read of a request: its answer's time (`count_response`), and the start
        // of whatever this turn does next (deadlines, the next pipelined request).
        self.now = Tick::now();
        // A panic took memory from the reserve: the slot may keep it (a caught payload, a
        // response body) until it is released.
        slot.holds_reserve |= self.reserve.used_bytes() > reserve_used_bytes;
        match step {
            Step::Suspended(_) => {}
            Step::Overrun | Step::Finished(Err(Fault::StackOverflow | Fault::Preempted)) => {
                slot.task = None;
                slot.ended_hard = true;
            }
            Step::Finished(_) => slot.task = None,
        }
        if slot.ended_hard {
            self.check_after_hard_cancel(slot_index);
        }
        step
    }

    /// Resumes a slot's task and deals with how it stopped.
    pub(super) fn resume(&mut self, slot_index: usize, wake: Wake) {
        let step = self.run_task(slot_index, wake);
        let slot = &mut self.slots[slot_index];
        let index = slot.conn;
        let result = match step {
            Step::Suspended(wait) => {
                let deadline = slot.handler_deadline;
                slot.wait = Some(wait);
                self.set_wake_at(
                    slot_index,
                    Some(wait.deadline.map_or(deadline, |d| Tick::of_instant(d).min(deadline))),
                );
                // A handler that waits may wait long: with nothing buffered, its connection's
                // I/O buffer pair serves others meanwhile (it borrows one again to answer).
                self.return_io_buffers_if_empty(index);
                return;
            }
            Step::Finished(Ok(response)) => Ok(response),
            Step::Finished(Err(Fault::Panicked)) => {
                self.stats().panics.fetch_add(1, Ordering::Relaxed);
                Err(ErrorKind::HandlerPanicked)
            }
            Step::Finished(Err(Fault::StackOverflow | Fault::StackHeadroomUsed)) => {
                self.stats().stack_overflows.fetch_add(1, Ordering::Relaxed);
                Err(ErrorKind::StackOverflow)
            }
            Step::Finished(Err(Fault::Cancelled | Fault::Preempted)) => {
                self.stats().handler_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(ErrorKind::HandlerTimeout)
            }
            Step::Overrun => {
                self.stats().overruns.fetch_add(1, Ordering::Relaxed);
                Err(ErrorKind::ArenaExhausted)
            }
        };
        match result {
            Ok(response) => self.respond(index, slot_index, response),
            Err(kind) => {
                self.fail(index, kind);
            }
        }
    }

    /// Ends a task that must not finish normally (its client is gone, the server is closing):
    /// unwinds it, once. A cancelled task cannot suspend again, so it ends during that resume;
    /// should it not, its stack is abandoned rather than cancelled twice.
    pub(super) fn cancel_task(&mut self, slot_index: usize) {
        let Some(task) = self.slots[slot_index].task.as_ref() else { return };
        if !task.is_cancelled() {
            // A response it still returns is dropped with the step.
            let _ = self.run_task(slot_index, Wake::Cancel);
        }
        let slot = &mut self.slots[slot_index];
        if let Some(task) = slot.task.as_mut() {
            task.abandon();
            slot.task = None;
            slot.ended_hard = true;
            self.check_after_hard_cancel(slot_index);
        }
    }

    pub(super) fn set_wake_at(&mut self, slot_index: usize, wake_at: Option<Tick>) {
        let previous = std::mem::replace(&mut self.slots[slot_index].wake_at, wake_at);
        self.waiting_slots =
            self.waiting_slots + usize::from(wake_at.is_some()) - usize::from(previous.is_some());
    }

    /// Resumes suspended handlers whose wait is over.
    pub(super) fn wake_due_slots(&mut self) {
        if self.waiting_slots == 0 {
            return;
        }
        let now = Tick::now();
        for slot_index in 0..self.slots.table().len() {
            if !self.slots.owns(slot_index) {
                continue;
            }
            let slot = &self.slots[slot_index];
            let Some(wake_at) = slot.wake_at else { continue };
            if wake_at > now || slot.task.is_none() {
                continue;
            }
            let wake = if now >= slot.handler_deadline { Wake::Cancel } else { Wake::TimedOut };
            let index = slot.conn;
            self.resume(slot_index, wake);
            self.drive(index);
        }
    }

    pub(super) fn socket_ready(&mut self, offset: usize) {
        let sockets_max = self.settings.slot_sockets_max.max(1);
        let (slot_index, socket) = (offset / sockets_max, offset % sockets_max);
        if !self.slots.owns(slot_index) {
            return; // A stale event of a slot another worker (or nobody) holds now.
        }
        let slot = &self.slots[slot_index];
        let waiting = slot.task.is_some()
            && slot.wait.and_then(|w| w.socket).is_some_and(|(s, _)| s == socket);
        if waiting {
            let index = slot.conn;
            self.resume(slot_index, Wake::Ready);
            self.drive(index);
        }
    }
}
