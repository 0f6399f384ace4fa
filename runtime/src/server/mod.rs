//! Starting and stopping a server: validate the configuration, map the region, bind one
//! SO_REUSEPORT listener per worker (`listeners`), start the access log writer and the workers,
//! and drain them on request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cella_arena::{Region, RegionOptions};
use cella_shared::{Config, MemoryPlan};

use crate::access_log;
use crate::escape;
use crate::handler::Handler;
use crate::worker::{self, Settings, Shared, WorkerSetup, WorkerStats};

mod error;
mod listeners;
mod stats;

pub use error::StartError;
pub use stats::Stats;

use listeners::{bind_admin, bind_listeners, share_listeners};

/// Pending connections each listener's kernel queue holds.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Descriptors kept for what is not in the plan's count: stdio, each worker's epoll and waker
/// and spare descriptor, a plugin's files, the config file, `/proc/self/fd` for stats.
pub const FDS_SPARE: u64 = 64;

/// How many file descriptors a configuration needs at most: every connection, the connections
/// each worker may hold while the table is full (`full_table_held_max`), every slot's outbound
/// sockets, one listener per worker, and [`FDS_SPARE`].
pub fn fds_needed(config: &Config, plan: &MemoryPlan) -> u64 {
    let workers = plan.workers as u64;
    let held = workers.saturating_mul(config.full_table_held_max as u64);
    let connections = (config.connections_max as u64).saturating_add(held);
    let outbound = (plan.slots as u64).saturating_mul(config.slot_sockets_max as u64);
    connections.saturating_add(outbound).saturating_add(workers + FDS_SPARE)
}

/// Raises the soft open-file limit to the hard one and refuses to start when even that cannot
/// hold the plan: otherwise the process would silently turn connections away at the limit.
fn check_open_file_limit(config: &Config, plan: &MemoryPlan) -> Result<u64, StartError> {
    let limit = crate::sys::raise_open_file_limit()
        .map_err(|source| StartError::Io { step: "read the open-file limit", source })?;
    let needed = fds_needed(config, plan);
    if limit < needed {
        return Err(StartError::FileLimit { needed, limit });
    }
    Ok(limit)
}

/// A server ready to start.
pub struct Server {
    config: Config,
    handler: Arc<dyn Handler>,
    inherited: Vec<std::net::TcpListener>,
}

impl Server {
    pub fn new(config: Config, handler: impl Handler) -> Server {
        Server { config, handler: Arc::new(handler), inherited: Vec::new() }
    }

    /// Serves on these listening sockets (socket activation: the ones systemd passed) instead
    /// of binding `listen`. Each worker gets one; with fewer sockets than workers, a socket is
    /// shared by several workers through duplicated descriptors (one accept queue, each worker
    /// accepting from it), and more sockets than workers is refused.
    pub fn with_listeners(mut self, listeners: Vec<std::net::TcpListener>) -> Server {
        self.inherited = listeners;
        self
    }

    /// Maps the memory, binds, and starts the workers. When it returns `Ok`, every worker is
    /// ready and the listeners accept connections.
    /// Refuses to start ([`StartError::NotRoutingAlloc`]) when the binary's global allocator is
    /// not [`RoutingAlloc`](crate::RoutingAlloc).
    pub fn start(self) -> Result<RunningServer, StartError> {
        if !crate::setup::routing_alloc_is_global() {
            return Err(StartError::NotRoutingAlloc);
        }
        let page_size = cella_arena::page_size() as u64;
        let plan = self.config.validate(page_size).map_err(StartError::Config)?;
        check_open_file_limit(&self.config, &plan)?;
        // Before any handler runs: std's stdio buffers, libc's text ranges, the logger.
        crate::lazy::prepare_process(&self.config);
        crate::panic_hook::install();
        crate::sys::install_fault_handler()
            .map_err(|source| StartError::Io { step: "install the fault handler", source })?;
        let options = RegionOptions {
            prefault: self.config.prefault,
            mlock: self.config.mlock,
            quarantine: self.config.quarantine,
        };
        let mut region = Region::map(&plan, options).map_err(StartError::Region)?;
        let listeners = if self.inherited.is_empty() {
            bind_listeners(self.config.listen, plan.workers)?
        } else {
            share_listeners(self.inherited, plan.workers)?
        };
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Io { step: "read the bound address", source })?;
        // After the main listener: the agent answers only once the HTTP listener is bound.
        let (mut admin, admin_addr, agent_addr) = bind_admin(&self.config, &plan)?;
        let shared = Arc::new(Shared {
            shutdown: AtomicBool::new(false),
            unready: AtomicBool::new(false),
            body_slots: AtomicUsize::new(0),
            io_waiting: AtomicUsize::new(0),
            stats: (0..plan.workers).map(|_| WorkerStats::default()).collect(),
            nudges: (0..plan.workers).map(|_| worker::Nudge::default()).collect(),
            alive: AtomicUsize::new(plan.workers),
            stack_markers: (0..plan.workers).map(|_| AtomicUsize::new(0)).collect(),
            escape: std::sync::OnceLock::new(),
            watches: (0..plan.workers).map(|_| worker::Watch::new()).collect(),
            escalating: AtomicBool::new(false),
            stdio_probe: worker::StdioProbe::new(),
        });
        worker::start_stdio_probe(shared.clone())
            .map_err(|source| StartError::Io { step: "spawn the stdio probe thread", source })?;
        let settings = Arc::new(Settings::new(&self.config));
        let ready = Arc::new(Barrier::new(plan.workers + 1));
        let setup_error = Arc::new(Mutex::new(None));
        let mut threads = Vec::with_capacity(plan.workers);
        let mut memories = region.carve();
        if self.config.quarantine {
            crate::quarantine::record(&memories, plan.slot_arena_size as usize);
        }
        let slots = worker::slot_table(&mut memories, &settings);
        let conns = worker::conn_table(self.config.connections_max);
        let bufs = worker::buffer_table(&mut memories);
        // Before the workers, which hand it their lines from their first request on.
        let (access_log, mut worker_logs) = start_access_log(&self.config, &memories)?;
        for (index, (memory, listener)) in memories.into_iter().zip(listeners).enumerate() {
            let setup = WorkerSetup {
                slots: slots.clone(),
                conns: conns.clone(),
                bufs: bufs.clone(),
                index,
                memory,
                listener,
                handler: self.handler.clone(),
                settings: settings.clone(),
                shared: shared.clone(),
                ready: ready.clone(),
                setup_error: setup_error.clone(),
                admin: if index == 0 { admin.take() } else { None },
                access_log: worker_logs.next(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("cella-worker-{index}"))
                .spawn(move || worker::run(setup))
                .map_err(|source| StartError::Io { step: "spawn a worker thread", source })?;
            threads.push(thread);
        }
        // Before the workers seal: the thread allocates nothing once it watches.
        worker::start_watchdog(shared.clone(), Duration::from_millis(self.config.watchdog_ms))
            .map_err(|source| StartError::Io { step: "spawn the watchdog thread", source })?;
        ready.wait();
        // Every worker is set up and none is sealed yet: the heap is as it will stay.
        let tables = [slots.address_range(), conns.address_range()];
        let scope_result = escape::Scope::give(self.config.escape_check, &region, tables, &shared)
            .map_err(|source| StartError::Io { step: "read /proc/self/maps", source });
        ready.wait();
        let server = RunningServer {
            local_addr,
            plan,
            shared,
            threads,
            region: Some(region),
            drain_timeout: Duration::from_millis(self.config.drain_timeout_ms),
            drain_delay: Duration::from_millis(self.config.drain_delay_ms),
            admin_addr,
            agent_addr,
            access_log,
        };
        let failed = setup_error.lock().ok().and_then(|mut error| error.take());
        if let Some(message) = failed {
            drop(server);
            return Err(StartError::Worker(message));
        }
        if let Err(error) = scope_result {
            drop(server);
            return Err(error);
        }
        crate::setup::warn_unless_c_allocator_is_exported();
        Ok(server)
    }
}

/// Opens the access log and starts its writer over each worker's access log span: the writer
/// (`None` when the log is off) and each worker's side, in worker order (none when off).
fn start_access_log(
    config: &Config,
    memories: &[cella_arena::WorkerMemory],
) -> Result<(Option<access_log::Writer>, std::vec::IntoIter<access_log::WorkerLog>), StartError> {
    let spans: Vec<_> = memories.iter().map(|memory| memory.access_log).collect();
    let started = access_log::Writer::start(&config.access_log, config.access_log_format, &spans)
        .map_err(|source| StartError::Io { step: "open access_log", source })?;
    Ok(match started {
        Some((writer, logs)) => (Some(writer), logs.into_iter()),
        None => (None, Vec::new().into_iter()),
    })
}

/// A started server. Dropping it drains it (up to its drain deadline) and unmaps its region.
pub struct RunningServer {
    local_addr: SocketAddr,
    plan: MemoryPlan,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    region: Option<Region>,
    drain_timeout: Duration,
    drain_delay: Duration,
    admin_addr: Option<SocketAddr>,
    agent_addr: Option<SocketAddr>,
    /// The access log's writer thread (`None`: off).
    access_log: Option<access_log::Writer>,
}

impl RunningServer {
    /// The address the listeners are bound to (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The address the admin listener is bound to (`admin_listen`; the real port when it said
    /// 0), or `None` when it is off.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address the HAProxy agent-check listener is bound to (`agent_listen`), or `None`.
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        self.agent_addr
    }

    /// Bytes the escape check (`escape_check`) reads when a slot is released: the statics and,
    /// with `full`, the heap as it was at the seal (each worker's thread-locals and the state
    /// heap's used extent come on top).
    pub fn escape_check_bytes(&self) -> usize {
        self.shared.escape.get().map_or(0, |scope| scope.bytes())
    }

    pub fn stats(&self) -> Stats {
        let mut stats =
            Stats { sealed_system_calls: cella_arena::sealed_system_calls(), ..Stats::default() };
        for worker in self.shared.stats.iter() {
            // Relaxed: statistics; nothing is ordered by them.
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            stats.connections_accepted += load(&worker.connections_accepted);
            stats.connections_rejected += load(&worker.connections_rejected);
            stats.requests += load(&worker.requests);
            stats.busy_rejections += load(&worker.busy_rejections);
            stats.overruns += load(&worker.overruns);
            stats.panics += load(&worker.panics);
            stats.stack_overflows += load(&worker.stack_overflows);
            stats.handler_timeouts += load(&worker.handler_timeouts);
            stats.client_errors += load(&worker.client_errors);
            stats.idle_evictions += load(&worker.idle_evictions);
            stats.probes += load(&worker.probes);
            stats.arena_high_water_bytes =
                stats.arena_high_water_bytes.max(load(&worker.arena_high_water_bytes));
        }
        let totals = crate::metrics::Totals::of(&self.shared.stats);
        stats.rejected = totals.rejections();
        stats.client_gone = totals.client_gone;
        stats.responses_by_class = totals.responses_by_class();
        stats.io_buffer_waits = totals.io_buffer_waits;
        stats.access_log_lines = totals.access_log_lines;
        stats.access_log_dropped = totals.access_log_dropped;
        stats.escapes = totals.escapes;
        stats.slots_retired = totals.slots_retired;
        stats
    }

    /// Stops accepting, closes idle connections, and lets in-flight requests finish (their
    /// responses say `Connection: close`). Returns at once; see [`RunningServer::is_drained`].
    pub fn begin_shutdown(&self) {
        // Release: pairs with the Acquire loads in each worker's loop and readiness probe.
        self.shared.unready.store(true, Ordering::Release);
        self.shared.shutdown.store(true, Ordering::Release);
        self.wake_workers();
    }

    /// Starts the drain delay: the readiness probe answers 503 and every response closes its
    /// connection, while the listener keeps accepting, until [`begin_shutdown`] closes it.
    ///
    /// [`begin_shutdown`]: RunningServer::begin_shutdown
    pub fn stop_ready(&self) {
        // Release: pairs with the Acquire loads in each worker's loop and readiness probe.
        self.shared.unready.store(true, Ordering::Release);
        self.wake_workers();
    }

    /// Reopens the access log file (after it was renamed for rotation: SIGHUP); nothing when the
    /// access log is off or goes to standard output. Returns at once; the writer thread reopens
    /// it before its next write.
    pub fn reopen_access_log(&self) {
        if let Some(writer) = &self.access_log {
            writer.reopen();
        }
    }

    /// `drain_delay_ms` from the configuration.
    pub fn drain_delay(&self) -> Duration {
        self.drain_delay
    }

    fn wake_workers(&self) {
        self.shared.nudges.iter().for_each(worker::Nudge::wake_now);
    }

    /// Whether every worker has finished.
    pub fn is_drained(&self) -> bool {
        // Acquire: pairs with the AcqRel decrement at each worker's exit.
        self.shared.alive.load(Ordering::Acquire) == 0
    }

    /// Drains and waits up to the configured drain deadline. `false`: requests were still in
    /// flight when it passed (the workers are left running; the process should exit).
    pub fn shutdown(mut self) -> bool {
        if !self.drain_delay.is_zero() {
            self.stop_ready();
            std::thread::sleep(self.drain_delay);
        }
        self.drain()
    }

    fn drain(&mut self) -> bool {
        self.begin_shutdown();
        let deadline = Instant::now() + self.drain_timeout;
        while !self.is_drained() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The workers are gone: the writer writes out what they logged, within what is left of
        // the drain deadline. A writer that cannot (its output takes nothing) still reads the
        // rings in the region, so it counts as not drained.
        let left = deadline.saturating_duration_since(Instant::now());
        self.access_log.as_mut().is_none_or(|writer| writer.stop(left))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() && !self.drain() {
            // Workers still use the region: leave it mapped rather than pull it from under them.
            std::mem::forget(self.region.take());
        }
    }
}
