//! A worker: one thread with its own mio `Poll`, its own SO_REUSEPORT listener, and its own
//! share of connections. Nothing on the request path is shared with another worker except
//! relaxed statistics counters, the lock-free pools that make capacity the instance's, and the
//! flags and counts with which workers wake each other for what comes free (`nudge.rs`).
//!
//! A connection holds no slot while it is idle or sending its head. When the head is complete
//! it claims a slot (or gets 503), its body is read into the slot's arena, the handler runs on
//! the slot's stack, and the response is copied into the connection's write buffer (or written
//! straight from the arena when it does not fit). The slot is wiped and freed as soon as the
//! response no longer needs its memory.
//!
//! This file owns the event loop and its dispatch; each other file owns one concern: `tables`
//! (building the instance's slot, connection and buffer tables at startup), `admission`
//! (accepting, closing, draining), `conn` (a connection's entry), `buffers` (lending I/O buffer
//! pairs), `nudge` (waking another worker when what it waits for comes free), `eviction` (a
//! full table closing another worker's idle connection), `read` (heads and bodies), `bodies`
//! (bodies that hold a slot: their share and rate), `slots` (the coroutine lifecycle),
//! `release` (freeing slots), `escapes` (the escape check at a slot's release), `respond`
//! (errors, responses, what follows a response), `deadlines` (the sweep), `probes` (liveness
//! and readiness), `admin`, `admin_answer` and `agent` (worker 0's admin and agent-check
//! listeners), `observe` (metrics and the access log), `taint` (the last rung of the ladder),
//! `settings` and `shared` (the counters and flags the workers share). Nothing here imports the
//! top-level server; `http/` knows nothing of this module.

mod admin;
mod admin_answer;
mod admission;
mod agent;
mod bodies;
mod buffers;
mod conn;
mod deadlines;
mod escapes;
mod eviction;
mod nudge;
mod observe;
mod probes;
mod read;
mod release;
mod request_text;
mod respond;
mod settings;
mod shared;
mod slots;
mod stdio_probe;
mod tables;
mod taint;
mod watchdog;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, SystemTime};

use cella_arena::{Arena, ConnectionMemory, WorkerMemory};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::handler::Handler;
use crate::http::date::DateCache;
pub(crate) use admin::AdminSetup;
pub(crate) use admin_answer::config_text;
pub(crate) use conn::Conn;
use conn::Phase;
pub(crate) use nudge::Nudge;
pub(crate) use settings::Settings;
pub(crate) use shared::{Shared, WorkerStats};
pub(crate) use slots::Slot;
pub(crate) use stdio_probe::{start as start_stdio_probe, StdioProbe};
pub(crate) use tables::{buffer_table, conn_table, slot_table};
pub(crate) use watchdog::{start as start_watchdog, Watch};

use crate::pool::{Owned, SharedTable};
use crate::tick::Tick;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Tokens at and above this are slots' outbound sockets.
const SOCKET_TOKEN_BASE: usize = 1 << 40;
/// How often connection deadlines are checked; they are enforced to within this.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// After EMFILE/ENFILE, accepting pauses this long (the backlog waits in the kernel).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct WorkerSetup {
    /// Every slot of the instance (see [`slot_table`]).
    pub slots: Arc<SharedTable<Slot>>,
    /// Every connection entry of the instance (see [`conn_table`]).
    pub conns: Arc<SharedTable<Conn>>,
    /// Every I/O buffer pair of the instance (see [`buffer_table`]).
    pub bufs: Arc<SharedTable<Option<ConnectionMemory>>>,
    pub index: usize,
    pub memory: WorkerMemory,
    pub listener: std::net::TcpListener,
    pub handler: Arc<dyn Handler>,
    pub settings: Arc<Settings>,
    pub shared: Arc<Shared>,
    pub ready: Arc<Barrier>,
    pub setup_error: Arc<Mutex<Option<String>>>,
    /// The admin and agent listeners, for worker 0 only (`worker/admin.rs`).
    pub admin: Option<AdminSetup>,
    /// This worker's side of the access log (`None`: off).
    pub access_log: Option<crate::access_log::WorkerLog>,
}

pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    accept_paused_until: Option<Tick>,
    spare_fd: Option<std::fs::File>,
    /// The instance's connection table, of which this worker uses the entries it accepted.
    conns: Owned<Conn>,
    live_conns: usize,
    /// The instance's I/O buffer pairs, of which this worker uses those it borrowed; a
    /// borrowed pair's buffers live in its connection (`Conn::read`/`write`), its cell is
    /// empty meanwhile.
    bufs: Owned<Option<ConnectionMemory>>,
    /// How many times a connection of this worker became idle (orders `Conn::idle_order`).
    idle_count: u64,
    /// Connections with bytes to read that wait for an I/O buffer pair.
    io_waiters: std::collections::VecDeque<usize>,
    /// A free I/O buffer pair this worker keeps for its next read (`buffers.rs`).
    io_spare: Option<usize>,
    /// A wiped slot handed from a pipelined request to the next one already buffered on its
    /// connection, without the pool; given back at the end of the `drive` that kept it
    /// (`slots.rs`).
    slot_spare: Option<usize>,
    /// Set by `respond` for the release that follows: keep the slot in `slot_spare`.
    keep_freed_slot: bool,
    /// Accepted connections waiting for another worker to close an idle one (`eviction.rs`),
    /// with when they were accepted.
    held_accepts: std::collections::VecDeque<(mio::net::TcpStream, std::net::SocketAddr, Tick)>,
    /// The worker asked last when no worker reported idle connections.
    eviction_cursor: usize,
    /// The instance's slots, of which this worker uses only those it claimed.
    slots: Owned<Slot>,
    /// Slots whose task is suspended with a wake-up time (`Slot::wake_at` set): when 0, the
    /// loop skips scanning the slots.
    waiting_slots: usize,
    slot_waiters: std::collections::VecDeque<usize>,
    /// Connections to drive once the current event is handled (a slot came free for them).
    runnable: std::collections::VecDeque<usize>,
    handler: Arc<dyn Handler>,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    reserve: Arena,
    date: DateCache,
    now: Tick,
    next_sweep: Tick,
    draining: bool,
    /// This worker has seen `Shared::unready`: it still accepts, but closes after each response.
    unready: bool,
    /// This worker's copy of `WorkerStats::arena_high_water_bytes`: the atomic is written only
    /// when this rises.
    arena_high_water_bytes: usize,
    /// The admin and agent listeners and admin connections (worker 0, when configured).
    admin: Option<admin::AdminPort>,
    /// This worker's access log ring (`observe.rs`), when the access log is on.
    access_log: Option<crate::access_log::WorkerLog>,
    /// This worker's TLS blocks, which the escape check scans.
    tls: crate::escape::ThreadScope,
}

/// Runs a worker: sets up, meets the other workers at `ready` twice (once every worker is set
/// up; again once the controlling thread has found what the escape check scans), then serves
/// until shutdown.
pub(crate) fn run(setup: WorkerSetup) {
    let ready = setup.ready.clone();
    let setup_error = setup.setup_error.clone();
    let shared = setup.shared.clone();
    let stack_marker = 0u8;
    // Relaxed: read by the controlling thread after the barrier, which orders it.
    shared.stack_markers[setup.index]
        .store(std::hint::black_box(&stack_marker) as *const u8 as usize, Ordering::Relaxed);
    let worker = Worker::new(setup);
    let mut worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            if let Ok(mut slot) = setup_error.lock() {
                slot.get_or_insert(error.to_string());
            }
            ready.wait();
            ready.wait();
            shared.alive.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    ready.wait();
    ready.wait();
    cella_arena::seal_current_thread();
    worker.serve();
    cella_arena::unseal_current_thread();
    crate::sys::stop_preempt_timer();
    // Ended: not stuck, for the watchdog.
    worker.watch().set_idle(true);
    // AcqRel: pairs with the Acquire load of the controlling thread waiting for the drain.
    shared.alive.fetch_sub(1, Ordering::AcqRel);
    // This thread's teardown (dropping the worker, its thread-locals' destructors, std
    // unmapping the signal stack it mapped for this thread) frees and unmaps memory that the
    // escape check of another worker still serving may be scanning (`full` scans the heap as
    // it was at the seal): it waits until every worker has stopped serving. Bounded by the
    // drain: a worker that never stops is left behind when the process exits.
    while shared.alive.load(Ordering::Acquire) > 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(worker);
}

impl Worker {
    fn new(setup: WorkerSetup) -> io::Result<Worker> {
        crate::sys::set_signal_stack(setup.memory.signal_stack)?;
        crate::sys::start_preempt_timer()?;
        watchdog::adopt(&setup.shared.watches[setup.index]);
        setup.handler.prepare_thread();
        // std's lazy per-thread state and the log buffer, before the seal (`lazy.rs`).
        crate::lazy::prepare_worker();
        let poll = Poll::new()?;
        setup.listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(setup.listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        setup.shared.nudges[setup.index].set_waker(waker);
        let admin = setup.admin.map(|admin| admin::AdminPort::new(admin, poll.registry()));
        let settings = setup.settings;
        let memory = setup.memory;
        let conns = Owned::new(setup.conns);
        let table_len = conns.table().len();
        let now = Tick::now();
        Ok(Worker {
            index: setup.index,
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listener: Some(listener),
            accept_paused_until: None,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            slot_waiters: std::collections::VecDeque::with_capacity(table_len),
            runnable: std::collections::VecDeque::with_capacity(table_len),
            io_waiters: std::collections::VecDeque::with_capacity(table_len),
            io_spare: None,
            slot_spare: None,
            keep_freed_slot: false,
            held_accepts: std::collections::VecDeque::with_capacity(settings.full_table_held_max),
            eviction_cursor: setup.index,
            idle_count: 0,
            bufs: Owned::new(setup.bufs),
            conns,
            live_conns: 0,
            waiting_slots: 0,
            slots: Owned::new(setup.slots),
            handler: setup.handler,
            settings,
            shared: setup.shared,
            // SAFETY: the reserve span is this worker's alone and lives as long as the region,
            // which outlives the worker.
            reserve: memory.panic_reserve,
            date: DateCache::default(),
            now,
            next_sweep: now + SWEEP_INTERVAL,
            draining: false,
            unready: false,
            arena_high_water_bytes: 0,
            admin: admin.transpose()?,
            access_log: setup.access_log,
            // After `prepare_thread`, which allocates the TLS of the handler's libraries.
            tls: crate::escape::ThreadScope::of_current_thread(),
        })
    }

    pub(super) fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.index]
    }

    pub(super) fn watch(&self) -> &Watch {
        &self.shared.watches[self.index]
    }

    /// The event loop; returns once draining has closed every connection.
    pub(super) fn serve(&mut self) {
        loop {
            // Acquire: pairs with the Release store that starts the drain.
            if !self.unready && self.shared.unready.load(Ordering::Acquire) {
                self.become_unready();
            }
            if !self.draining && self.shared.shutdown.load(Ordering::Acquire) {
                self.start_drain();
            }
            if self.draining && self.live_conns == 0 {
                self.release_io_spare();
                return;
            }
            let timeout = self.poll_timeout();
            let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            // Looked up once a turn (the poll borrows another field of the worker).
            let watch = &self.shared.watches[self.index];
            watch.set_idle(true);
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    crate::sys::write_stderr(b"cella: epoll_wait failed; worker retrying\n");
                }
            }
            watch.set_idle(false);
            watch.beat();
            self.now = Tick::now();
            self.take_nudge();
            self.release_io_spare_if_wanted();
            for event in events.iter() {
                self.dispatch(event);
            }
            self.events = events;
            self.serve_evictions();
            self.admit_held_accepts();
            self.wake_due_slots();
            self.admit_slot_waiters();
            self.admit_io_waiters();
            while let Some(index) = self.runnable.pop_front() {
                self.drive(index);
            }
            // Never kept past a loop turn (`drive` gives it back already; this is the backstop).
            self.release_slot_spare();
            if self.now >= self.next_sweep {
                self.next_sweep = self.now + SWEEP_INTERVAL;
                self.date.refresh(SystemTime::now());
                self.sweep();
                self.sweep_admin();
            }
        }
    }

    pub(super) fn dispatch(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.accept(),
            WAKER => {}
            token if admin::is_admin_token(token) => self.admin_event(token),
            Token(token) if token >= SOCKET_TOKEN_BASE => {
                self.socket_ready(token - SOCKET_TOKEN_BASE)
            }
            // An event of an entry this worker does not hold (closed, and maybe taken by
            // another worker, since the poll) is stale.
            Token(index) if self.conns.owns(index) => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.conns[index].readable = true;
                }
                if event.is_read_closed() || event.is_error() {
                    self.conns[index].peer_closed = true;
                }
                if self.conns[index].phase == Phase::Running
                    && (event.is_error() || event.is_write_closed())
                {
                    self.close(index);
                    return;
                }
                self.drive(index);
            }
            Token(_) => {}
        }
    }
}
