//! A worker: one thread with its own mio `Poll`, its own SO_REUSEPORT listener, and its own
//! share of connections and slots. Nothing on the request path is shared with another worker
//! except relaxed statistics counters.
//!
//! A connection holds no slot while it is idle or sending its head. When the head is complete
//! it claims a slot (or gets 503), its body is read into the slot's arena, the handler runs on
//! the slot's stack, and the response is copied into the connection's write buffer (or written
//! straight from the arena when it does not fit). The slot is wiped and freed as soon as the
//! response no longer needs its memory.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cella_arena::{Arena, Buffer, ConnectionMemory, Route, SlotMemory, WorkerMemory};
use cella_shared::Config;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::cancel::{self, Fault, Step, Task, Wait, Wake};
use crate::handler::{Handler, Response};
use crate::http::chunked::ChunkedDecoder;
use crate::http::date::DateCache;
use crate::http::encode::{self, FixedSink, HeadFrame, Persistence};
use crate::http::parse::{self, Framing, HeadLimits};
use crate::http::ErrorKind;
use crate::net::SlotSockets;
use crate::slot_request::{BodyBuf, CopyError, RawRequest};

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
/// How often a handler that catches cancellation's unwind is asked again before its stack is
/// abandoned.
const CANCEL_ATTEMPTS_MAX: usize = 3;

/// The configuration, in the units the worker uses.
pub(crate) struct Settings {
    pub head_limits: HeadLimits,
    pub headers_count_max: usize,
    pub body_bytes_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub response_write_timeout: Duration,
    pub keepalive_idle_timeout: Duration,
    pub linger_timeout: Duration,
    pub chunk_extension_bytes_max: usize,
    pub trailer_bytes_max: usize,
    pub handler_timeout: Duration,
    pub slot_wait_timeout: Duration,
    pub retry_after_s: u64,
    pub quarantine: bool,
    pub fault_injection: bool,
    pub slot_sockets_max: usize,
}

impl Settings {
    pub(crate) fn new(config: &Config) -> Settings {
        let ms = Duration::from_millis;
        Settings {
            head_limits: HeadLimits {
                line_bytes_max: config.request_line_size_max.0 as usize,
                head_bytes_max: config.request_head_size_max.0 as usize,
            },
            headers_count_max: config.headers_count_max,
            body_bytes_max: config.request_body_size_max.0 as usize,
            header_read_timeout: ms(config.header_read_timeout_ms),
            body_read_timeout: ms(config.body_read_timeout_ms),
            response_write_timeout: ms(config.response_write_timeout_ms),
            keepalive_idle_timeout: ms(config.keepalive_idle_timeout_ms),
            linger_timeout: ms(config.linger_timeout_ms),
            chunk_extension_bytes_max: config.chunk_extension_size_max.0 as usize,
            trailer_bytes_max: config.trailer_size_max.0 as usize,
            handler_timeout: ms(config.handler_timeout_ms),
            slot_wait_timeout: ms(config.slot_wait_timeout_ms),
            retry_after_s: config.retry_after_s,
            quarantine: config.quarantine,
            fault_injection: config.fault_injection,
            slot_sockets_max: config.slot_sockets_max,
        }
    }
}

/// Counters of one worker, on their own cache lines.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct WorkerStats {
    pub connections_accepted: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub requests: AtomicU64,
    pub busy_rejections: AtomicU64,
    pub overruns: AtomicU64,
    pub panics: AtomicU64,
    pub stack_overflows: AtomicU64,
    pub handler_timeouts: AtomicU64,
    pub client_errors: AtomicU64,
    /// The most any of this worker's arenas has held (bytes), for sizing `slot_arena_size`.
    pub arena_high_water_bytes: AtomicU64,
}

/// What the workers and the thread that controls them share.
pub(crate) struct Shared {
    pub shutdown: AtomicBool,
    pub stats: Box<[WorkerStats]>,
    pub wakers: Mutex<Vec<Arc<Waker>>>,
    pub alive: AtomicUsize,
}

pub(crate) struct WorkerSetup {
    pub index: usize,
    pub memory: WorkerMemory,
    pub listener: std::net::TcpListener,
    pub handler: Arc<dyn Handler>,
    pub settings: Arc<Settings>,
    pub shared: Arc<Shared>,
    pub ready: Arc<Barrier>,
    pub setup_error: Arc<Mutex<Option<String>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Free,
    /// Waiting for the first byte of a request.
    Idle,
    /// Some bytes of a head have arrived.
    Head,
    /// The head is complete and a slot holds it; the body is being read into the arena.
    Body,
    /// The head is complete but every slot is busy (only with `slot_wait_timeout_ms` > 0).
    WaitingSlot,
    /// The handler runs or is suspended.
    Running,
    /// A response is being written.
    Writing,
    /// After a response that closes the connection: input is drained until EOF or a deadline.
    Linger,
}

#[derive(Clone, Copy, Debug)]
enum BodyState {
    None,
    Length(BodyBuf),
    Chunked(BodyBuf, ChunkedDecoder),
}

/// The part of a response that is written straight from the slot's memory (a head that did
/// not fit in the write buffer, a body larger than its free room), after the write buffer.
#[derive(Clone, Copy, Debug)]
struct Pending {
    head: (*const u8, usize),
    body: (*const u8, usize),
    sent: usize,
}

impl Pending {
    /// The unsent part of `(ptr, len)`, which starts `offset` bytes into the pending bytes.
    fn rest(&self, part: (*const u8, usize), offset: usize) -> &[u8] {
        let skip = self.sent.saturating_sub(offset).min(part.1);
        if skip == part.1 {
            return &[]; // Nothing left (or an absent part, whose pointer may be null).
        }
        // SAFETY: pending bytes are in the slot's arena (or static), which the slot keeps until
        // the connection clears `pending`; `skip < len`, so the pointer is a real one.
        unsafe { std::slice::from_raw_parts(part.0.add(skip), part.1 - skip) }
    }
}

struct Conn {
    phase: Phase,
    stream: Option<TcpStream>,
    remote: SocketAddr,
    read: Buffer,
    read_start: usize,
    read_end: usize,
    write: Buffer,
    write_start: usize,
    write_end: usize,
    pending: Option<Pending>,
    slot: Option<usize>,
    /// Close once everything queued is written.
    close_after: bool,
    /// The peer closed its side: nothing more will be read.
    eof: bool,
    /// A readiness event came and the socket has not been read dry since. Edge-triggered: a
    /// short read means no more bytes until the next event, so asking again would only cost a
    /// read(2) that returns EAGAIN.
    readable: bool,
    body: BodyState,
    /// Of the request being served.
    request: RequestMeta,
}

/// What the answer to the current request depends on, from its head.
#[derive(Clone, Copy, Debug)]
struct RequestMeta {
    keep_alive: bool,
    minor_version: u8,
    head_method: bool,
}

impl RequestMeta {
    /// Before a head is parsed, or when it could not be: close, HTTP/1.1, with a body.
    const UNKNOWN: RequestMeta =
        RequestMeta { keep_alive: false, minor_version: 1, head_method: false };
}

struct Slot {
    memory: SlotMemory,
    arena: Arena,
    route: Route,
    sockets: SlotSockets,
    task: Option<Task<Response<'static>>>,
    /// Kept until the response's bytes are written, then dropped before the wipe.
    response: Option<Response<'static>>,
    request: Option<RawRequest>,
    conn: usize,
    wait: Option<Wait>,
    wake_at: Option<Instant>,
    handler_deadline: Instant,
    fail_alloc_at: u32,
}

pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    accept_paused_until: Option<Instant>,
    spare_fd: Option<std::fs::File>,
    conns: Box<[Conn]>,
    /// Each connection's current deadline, in a dense array of its own: the sweep reads 16
    /// bytes per connection, not a whole connection, so 10,000 idle connections cost little.
    deadlines: Box<[Option<Instant>]>,
    free_conns: Vec<usize>,
    live_conns: usize,
    slots: Box<[Slot]>,
    free_slots: Vec<usize>,
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
    now: Instant,
    next_sweep: Instant,
    draining: bool,
    /// This worker's copy of `WorkerStats::arena_high_water_bytes`: the atomic is written only
    /// when this rises.
    arena_high_water_bytes: usize,
}

/// Runs a worker: sets up, meets the other workers at `ready`, then serves until shutdown.
pub(crate) fn run(setup: WorkerSetup) {
    let ready = setup.ready.clone();
    let setup_error = setup.setup_error.clone();
    let shared = setup.shared.clone();
    let worker = Worker::new(setup);
    let mut worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            if let Ok(mut slot) = setup_error.lock() {
                slot.get_or_insert(error.to_string());
            }
            ready.wait();
            shared.alive.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    ready.wait();
    cella_arena::seal_current_thread();
    worker.serve();
    cella_arena::unseal_current_thread();
    // AcqRel: pairs with the Acquire load of the controlling thread waiting for the drain.
    shared.alive.fetch_sub(1, Ordering::AcqRel);
}

impl Worker {
    fn new(setup: WorkerSetup) -> io::Result<Worker> {
        crate::sys::set_signal_stack(setup.memory.signal_stack)?;
        setup.handler.prepare_thread();
        let poll = Poll::new()?;
        setup.listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(setup.listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        setup.shared.wakers.lock().map_err(|_| io::Error::other("poisoned"))?.push(waker);
        let settings = setup.settings;
        let memory = setup.memory;
        let conns: Box<[Conn]> = memory.connections.into_iter().map(Conn::new).collect();
        let sockets_max = settings.slot_sockets_max;
        let slots: Box<[Slot]> = memory
            .slots
            .into_iter()
            .enumerate()
            .map(|(index, (memory, arena))| {
                let token_base = SOCKET_TOKEN_BASE + index * sockets_max.max(1);
                Slot::new(memory, arena, SlotSockets::new(sockets_max, token_base))
            })
            .collect();
        for slot in slots.iter() {
            slot.sockets.set_registry(poll.registry());
        }
        let now = Instant::now();
        Ok(Worker {
            index: setup.index,
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listener: Some(listener),
            accept_paused_until: None,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            free_conns: (0..conns.len()).rev().collect(),
            deadlines: vec![None; conns.len()].into_boxed_slice(),
            slot_waiters: std::collections::VecDeque::with_capacity(conns.len()),
            runnable: std::collections::VecDeque::with_capacity(conns.len()),
            conns,
            live_conns: 0,
            free_slots: (0..slots.len()).rev().collect(),
            waiting_slots: 0,
            slots,
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
            arena_high_water_bytes: 0,
        })
    }

    fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.index]
    }

    /// The event loop; returns once draining has closed every connection.
    fn serve(&mut self) {
        loop {
            // Acquire: pairs with the Release store that starts the drain.
            if !self.draining && self.shared.shutdown.load(Ordering::Acquire) {
                self.start_drain();
            }
            if self.draining && self.live_conns == 0 {
                return;
            }
            let timeout = self.poll_timeout();
            let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    crate::sys::write_stderr(b"cella: epoll_wait failed; worker retrying\n");
                }
            }
            self.now = Instant::now();
            for event in events.iter() {
                self.dispatch(event);
            }
            self.events = events;
            self.wake_due_slots();
            while let Some(index) = self.runnable.pop_front() {
                self.drive(index);
            }
            if self.now >= self.next_sweep {
                self.next_sweep = self.now + SWEEP_INTERVAL;
                self.date.refresh(SystemTime::now());
                self.sweep();
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        let mut until = self.next_sweep;
        for slot in self.slots.iter().filter(|_| self.waiting_slots > 0) {
            if let Some(wake_at) = slot.wake_at {
                until = until.min(wake_at);
            }
        }
        until.saturating_duration_since(Instant::now())
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match event.token() {
            LISTENER => self.accept(),
            WAKER => {}
            Token(token) if token >= SOCKET_TOKEN_BASE => {
                self.socket_ready(token - SOCKET_TOKEN_BASE)
            }
            Token(index) if index < self.conns.len() => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.conns[index].readable = true;
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

    fn start_drain(&mut self) {
        self.draining = true;
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for index in 0..self.conns.len() {
            let conn = &mut self.conns[index];
            match conn.phase {
                Phase::Idle if conn.read_start == conn.read_end => self.close(index),
                Phase::Free => {}
                _ => conn.close_after = true,
            }
        }
    }
}

impl Conn {
    fn new(memory: ConnectionMemory) -> Conn {
        Conn {
            phase: Phase::Free,
            stream: None,
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
            read: memory.read,
            read_start: 0,
            read_end: 0,
            write: memory.write,
            write_start: 0,
            write_end: 0,
            pending: None,
            slot: None,
            close_after: false,
            eof: false,
            readable: false,
            body: BodyState::None,
            request: RequestMeta::UNKNOWN,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.read.as_slice()[self.read_start..self.read_end]
    }

    /// Reads until the buffer is full or the socket would block. Returns whether bytes came.
    fn fill(&mut self) -> bool {
        if self.read_start > 0 && self.read_end == self.read.capacity() {
            self.read.as_mut_slice().copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        let mut got = false;
        let Some(stream) = self.stream.as_mut() else { return false };
        while self.read_end < self.read.capacity() {
            let buf = &mut self.read.as_mut_slice()[self.read_end..];
            let n = read_once(stream, buf, &mut self.readable, &mut self.eof);
            if n == 0 {
                break;
            }
            self.read_end += n;
            got = true;
        }
        got
    }

    fn consume(&mut self, count: usize) {
        self.read_start += count;
        if self.read_start == self.read_end {
            self.read_start = 0;
            self.read_end = 0;
        }
    }

    /// Writes queued bytes: the write buffer, then any pending bytes in slot memory, in one
    /// `writev`. Returns `Ok(true)` when everything is written.
    fn flush(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else { return Ok(true) };
        loop {
            let buffered = &self.write.as_slice()[self.write_start..self.write_end];
            let (head, body) = match &self.pending {
                Some(p) => (p.rest(p.head, 0), p.rest(p.body, p.head.1)),
                None => (&[][..], &[][..]),
            };
            if buffered.is_empty() && head.is_empty() && body.is_empty() {
                self.write_start = 0;
                self.write_end = 0;
                self.pending = None;
                return Ok(true);
            }
            let slices = [IoSlice::new(buffered), IoSlice::new(head), IoSlice::new(body)];
            let written = match stream.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            let from_buffer = written.min(buffered.len());
            self.write_start += from_buffer;
            if let Some(p) = self.pending.as_mut() {
                p.sent += written - from_buffer;
            }
        }
    }

    /// Room for `bytes` more in the write buffer, compacting it if that helps.
    fn write_room(&mut self, bytes: usize) -> bool {
        if self.pending.is_some() {
            return false;
        }
        if self.write_end + bytes > self.write.capacity() && self.write_start > 0 {
            self.write.as_mut_slice().copy_within(self.write_start..self.write_end, 0);
            self.write_end -= self.write_start;
            self.write_start = 0;
        }
        self.write_end + bytes <= self.write.capacity()
    }

    fn persistence(&self, draining: bool) -> Persistence {
        if !self.request.keep_alive || self.close_after || draining || self.eof {
            Persistence::Close
        } else if self.request.minor_version == 0 {
            Persistence::KeepAliveHttp10
        } else {
            Persistence::KeepAlive
        }
    }
}

impl Slot {
    fn new(memory: SlotMemory, arena: Arena, sockets: SlotSockets) -> Slot {
        Slot {
            memory,
            arena,
            route: Route {
                arena: std::ptr::null(),
                reserve: std::ptr::null(),
                on_exhausted: cancel::on_arena_exhausted,
                fail_countdown: std::cell::Cell::new(0),
            },
            sockets,
            task: None,
            response: None,
            request: None,
            conn: usize::MAX,
            wait: None,
            wake_at: None,
            handler_deadline: Instant::now(),
            fail_alloc_at: 0,
        }
    }
}

impl Worker {
    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, remote)) => {
                    self.admit(stream, remote);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    self.shed_one_connection();
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
                // ECONNABORTED and friends concern one connection only: keep accepting.
                Err(_) => {
                    self.stats().connections_rejected.fetch_add(1, Ordering::Relaxed);
                }
            };
        }
    }

    /// Out of descriptors: free the spare one to accept and close the newest connection, so
    /// the client learns at once instead of waiting in the backlog, then take the spare back.
    fn shed_one_connection(&mut self) {
        self.stats().connections_rejected.fetch_add(1, Ordering::Relaxed);
        if self.spare_fd.take().is_some() {
            if let Some(listener) = self.listener.as_ref() {
                if let Ok((stream, _)) = listener.accept() {
                    drop(stream);
                }
            }
            self.spare_fd = std::fs::File::open("/dev/null").ok();
        }
    }

    fn admit(&mut self, mut stream: TcpStream, remote: SocketAddr) {
        let Some(index) = self.free_conns.pop() else {
            // The table is full: say so politely, then close.
            self.stats().connections_rejected.fetch_add(1, Ordering::Relaxed);
            let mut head = [0u8; 256];
            let mut sink = FixedSink { buf: &mut head, len: 0 };
            let reply = encode::ErrorReply {
                status: 503,
                message: "too many connections",
                persistence: Persistence::Close,
                retry_after_s: Some(self.settings.retry_after_s),
                head_request: false,
            };
            if encode::put_error(&mut sink, reply, &self.date).is_ok() {
                let _ = stream.write(&sink.buf[..sink.len]);
            }
            return;
        };
        if self
            .poll
            .registry()
            .register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            self.free_conns.push(index);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.stats().connections_accepted.fetch_add(1, Ordering::Relaxed);
        let conn = &mut self.conns[index];
        conn.stream = Some(stream);
        conn.remote = remote;
        conn.phase = Phase::Idle;
        conn.request = RequestMeta::UNKNOWN;
        self.deadlines[index] = Some(self.now + self.settings.header_read_timeout);
        conn.close_after = self.draining;
        conn.eof = false;
        conn.readable = true;
        self.live_conns += 1;
        self.drive(index);
    }

    /// Moves a connection forward as far as it can go without waiting.
    fn drive(&mut self, index: usize) {
        loop {
            let progressed = match self.conns[index].phase {
                Phase::Free | Phase::WaitingSlot | Phase::Running => false,
                Phase::Idle | Phase::Head => self.read_head(index),
                Phase::Body => self.read_body(index),
                Phase::Writing => self.write(index),
                Phase::Linger => self.linger(index),
            };
            if !progressed {
                break;
            }
        }
        // Stuck until more bytes come: send what is queued (pipelined responses go out here,
        // in one write).
        let conn = &mut self.conns[index];
        if conn.phase != Phase::Free
            && conn.phase != Phase::Writing
            && conn.write_end > conn.write_start
        {
            if conn.flush().is_err() {
                self.close(index);
            }
        }
    }

    fn read_head(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        if conn.read_start == conn.read_end || conn.phase == Phase::Head {
            conn.fill();
        }
        if conn.read_start == conn.read_end {
            if conn.eof {
                self.close(index);
            }
            return false;
        }
        if conn.phase == Phase::Idle {
            conn.phase = Phase::Head;
            self.deadlines[index] = Some(self.now + self.settings.header_read_timeout);
        }
        self.parse_head(index)
    }

    /// Parses the buffered head; on success claims a slot and moves on to the body.
    fn parse_head(&mut self, index: usize) -> bool {
        let mut storage =
            [std::mem::MaybeUninit::uninit(); cella_shared::limits::HEADERS_COUNT_MAX];
        let headers = &mut storage[..self.settings.headers_count_max];
        let conn = &self.conns[index];
        let buffered = conn.buffered();
        let (head, fields) = match parse::parse_head(buffered, headers, self.settings.head_limits) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                if conn.eof {
                    self.close(index);
                } else if conn.read_start > 0 && conn.read_end == conn.read.capacity() {
                    return self.conns[index].fill();
                }
                return false;
            }
            Err(kind) => {
                // Nothing of this request is known: its answer closes (every parse error
                // does) and must not inherit the previous request's HEAD or keep-alive.
                self.conns[index].request = RequestMeta::UNKNOWN;
                return self.fail(index, kind);
            }
        };
        // Every answer from here on, errors and 503 included, follows this request's own
        // method, version and Connection header.
        let meta = RequestMeta {
            keep_alive: head.keep_alive,
            minor_version: head.minor_version,
            head_method: head.method == "HEAD",
        };
        if let Framing::Length(length) = head.framing {
            if length > self.settings.body_bytes_max as u64 {
                self.conns[index].request = meta;
                return self.fail(index, ErrorKind::BodyTooLarge);
            }
        }
        let Some(slot_index) = self.free_slots.pop() else {
            let (head_len, has_body) = (head.len, head.framing != Framing::Empty);
            self.conns[index].request = meta;
            return self.no_slot(index, head_len, has_body);
        };
        let slot = &mut self.slots[slot_index];
        if self.settings.quarantine {
            slot.memory.arena.protect(true).expect("lifting a slot's quarantine succeeds");
        }
        let copied =
            RawRequest::copy_in(&slot.arena, &buffered[..head.len], &head, fields, conn.remote);
        let request = match copied {
            Ok(request) => request,
            Err(error) => {
                self.release_slot(slot_index);
                self.conns[index].request = meta;
                return self.fail(
                    index,
                    match error {
                        CopyError::Alloc => ErrorKind::HeadersTooLarge,
                        CopyError::OutsideHead => ErrorKind::MalformedHead,
                    },
                );
            }
        };
        slot.fail_alloc_at =
            if self.settings.fault_injection { fail_alloc_header(fields) } else { 0 };
        slot.request = Some(request);
        slot.conn = index;
        let body = match head.framing {
            Framing::Empty => Ok(BodyState::None),
            Framing::Length(length) => {
                BodyBuf::alloc(&slot.arena, length as usize).map(BodyState::Length)
            }
            Framing::Chunked => {
                BodyBuf::alloc(&slot.arena, self.settings.body_bytes_max).map(|buf| {
                    let limits =
                        (self.settings.chunk_extension_bytes_max, self.settings.trailer_bytes_max);
                    BodyState::Chunked(buf, ChunkedDecoder::new(limits.0, limits.1))
                })
            }
        };
        let (head_len, expect_continue) = (head.len, head.expect_continue);
        self.stats().requests.fetch_add(1, Ordering::Relaxed);
        let conn = &mut self.conns[index];
        conn.consume(head_len);
        conn.slot = Some(slot_index);
        conn.request = meta;
        let Ok(body) = body else { return self.fail(index, ErrorKind::BodyTooLarge) };
        conn.body = body;
        if expect_continue && !matches!(body, BodyState::None) && conn.read_start == conn.read_end {
            const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            if conn.write_room(CONTINUE.len()) {
                conn.write.as_mut_slice()[conn.write_end..conn.write_end + CONTINUE.len()]
                    .copy_from_slice(CONTINUE);
                conn.write_end += CONTINUE.len();
                let _ = conn.flush();
            }
        }
        conn.phase = Phase::Body;
        self.deadlines[index] = Some(self.now + self.settings.body_read_timeout);
        true
    }

    fn read_body(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        let mut state = conn.body;
        let done: Result<bool, ErrorKind> = match &mut state {
            BodyState::None => Ok(true),
            BodyState::Length(buf) => {
                let buffered = &conn.read.as_slice()[conn.read_start..conn.read_end];
                let take = buffered.len().min(buf.unfilled().len());
                buf.unfilled()[..take].copy_from_slice(&buffered[..take]);
                buf.filled += take;
                conn.read_start += take;
                if conn.read_start == conn.read_end {
                    (conn.read_start, conn.read_end) = (0, 0);
                }
                // Read the rest straight into the arena.
                if let Some(stream) = conn.stream.as_mut() {
                    while !buf.is_full() {
                        let n =
                            read_once(stream, buf.unfilled(), &mut conn.readable, &mut conn.eof);
                        if n == 0 {
                            break;
                        }
                        buf.filled += n;
                    }
                }
                Ok(buf.is_full())
            }
            BodyState::Chunked(buf, decoder) => loop {
                let buffered = &conn.read.as_slice()[conn.read_start..conn.read_end];
                match decoder.decode(buffered, buf.unfilled()) {
                    Ok(progress) => {
                        buf.filled += progress.produced;
                        conn.read_start += progress.consumed;
                        if conn.read_start == conn.read_end {
                            (conn.read_start, conn.read_end) = (0, 0);
                        }
                    }
                    Err(kind) => break Err(kind),
                }
                if decoder.is_done() || !conn.fill() {
                    break Ok(decoder.is_done());
                }
            },
        };
        conn.body = state;
        let done = match done {
            Ok(done) => done,
            Err(kind) => return self.fail(index, kind),
        };
        let conn = &mut self.conns[index];
        if !done {
            if conn.eof {
                self.close(index);
            }
            return false;
        }
        let slot_index = conn.slot.expect("a connection reading a body holds a slot");
        let body = match conn.body {
            BodyState::None => None,
            BodyState::Length(buf) | BodyState::Chunked(buf, _) => Some(buf),
        };
        conn.body = BodyState::None;
        conn.phase = Phase::Running;
        self.deadlines[index] = None;
        let slot = &mut self.slots[slot_index];
        if let (Some(request), Some(body)) = (slot.request.as_mut(), body) {
            request.set_body(body, &slot.arena);
        }
        self.start_handler(slot_index);
        true
    }
}

/// One read(2), edge-triggered style: returns 0 when nothing can be read until the next
/// readiness event (a short read or EAGAIN clears `readable`), or at end of stream (`eof`).
fn read_once(stream: &mut TcpStream, buf: &mut [u8], readable: &mut bool, eof: &mut bool) -> usize {
    if !*readable || *eof || buf.is_empty() {
        return 0;
    }
    loop {
        match stream.read(buf) {
            Ok(0) => *eof = true,
            Ok(n) => {
                *readable = n == buf.len();
                return n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
            Err(_) => *eof = true,
        }
        return 0;
    }
}

/// The `x-cella-fail-alloc: K` test header (honoured only with `fault_injection = true`).
fn fail_alloc_header(fields: &[httparse::Header<'_>]) -> u32 {
    fields
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-cella-fail-alloc"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Worker {
    /// Every slot is busy: wait for one (when configured) or answer 503 at once.
    fn no_slot(&mut self, index: usize, head_len: usize, has_body: bool) -> bool {
        let conn = &mut self.conns[index];
        if !self.settings.slot_wait_timeout.is_zero()
            && self.slot_waiters.len() < self.slot_waiters.capacity()
        {
            conn.phase = Phase::WaitingSlot;
            self.deadlines[index] = Some(self.now + self.settings.slot_wait_timeout);
            self.slot_waiters.push_back(index);
            return false;
        }
        conn.consume(head_len);
        if has_body {
            // The body was not read, so the connection's framing is lost: close after the 503.
            conn.close_after = true;
        }
        self.stats().busy_rejections.fetch_add(1, Ordering::Relaxed);
        self.queue_error(index, ErrorKind::NoSlot);
        true
    }

    /// Answers the connection's current request with an error.
    fn fail(&mut self, index: usize, kind: ErrorKind) -> bool {
        if let Some(slot) = self.conns[index].slot.take() {
            self.release_slot(slot);
        }
        self.conns[index].body = BodyState::None;
        if kind.response().status < 500 {
            self.stats().client_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.queue_error(index, kind);
        true
    }

    fn queue_error(&mut self, index: usize, kind: ErrorKind) {
        let response = kind.response();
        let conn = &mut self.conns[index];
        conn.close_after |= response.close;
        let persistence = conn.persistence(self.draining);
        conn.close_after |= persistence == Persistence::Close;
        let reply = encode::ErrorReply {
            status: response.status,
            message: response.message,
            persistence,
            retry_after_s: (response.status == 503).then_some(self.settings.retry_after_s),
            head_request: conn.request.head_method,
        };
        let start = conn.write_end;
        let queued = conn.write_room(0) && {
            let mut sink = FixedSink { buf: conn.write.as_mut_slice(), len: start };
            let result = encode::put_error(&mut sink, reply, &self.date);
            conn.write_end = sink.len;
            result.is_ok()
        };
        if !queued {
            conn.write_end = start;
            conn.close_after = true;
        }
        conn.phase = Phase::Writing;
        self.deadlines[index] = Some(self.now + self.settings.response_write_timeout);
    }

    fn start_handler(&mut self, slot_index: usize) {
        let slot = &mut self.slots[slot_index];
        let request = slot.request.expect("a slot starting a handler holds a request");
        let handler: *const dyn Handler = Arc::as_ptr(&self.handler);
        slot.task = Some(Task::new(&slot.memory, move || {
            // SAFETY: the worker keeps the handler alive (its Arc) and the slot keeps the
            // request's memory until the task has ended and its response is dropped.
            unsafe { (*handler).handle(&request.to_request()) }
        }));
        slot.handler_deadline = self.now + self.settings.handler_timeout;
        slot.route.fail_countdown.set(slot.fail_alloc_at);
        self.resume(slot_index, Wake::Start);
    }

    /// Runs a slot's task with its allocations routed to its arena.
    fn run_task(&mut self, slot_index: usize, wake: Wake) -> Step<Response<'static>> {
        self.set_wake_at(slot_index, None);
        let slot = &mut self.slots[slot_index];
        slot.wait = None;
        slot.route.arena = &slot.arena;
        slot.route.reserve = &self.reserve;
        slot.sockets.enter();
        // SAFETY: the route and its arenas live in this worker and outlive the call; `leave`
        // runs right after the task gives control back.
        unsafe { cella_arena::enter(&slot.route) };
        let step = slot.task.as_mut().expect("a running slot has a task").resume(wake);
        cella_arena::leave();
        SlotSockets::leave();
        if !matches!(step, Step::Suspended(_)) {
            slot.task = None;
            // Whatever a panic took from the reserve is no longer referenced.
            self.reserve.wipe();
        }
        step
    }

    /// Resumes a slot's task and deals with how it stopped.
    fn resume(&mut self, slot_index: usize, wake: Wake) {
        let step = self.run_task(slot_index, wake);
        let slot = &mut self.slots[slot_index];
        let index = slot.conn;
        let result = match step {
            Step::Suspended(wait) => {
                let deadline = slot.handler_deadline;
                slot.wait = Some(wait);
                self.set_wake_at(
                    slot_index,
                    Some(wait.deadline.map_or(deadline, |d| d.min(deadline))),
                );
                return;
            }
            Step::Finished(Ok(response)) => Ok(response),
            Step::Finished(Err(Fault::Panicked)) => {
                self.stats().panics.fetch_add(1, Ordering::Relaxed);
                Err(ErrorKind::HandlerPanicked)
            }
            Step::Finished(Err(Fault::StackOverflow)) => {
                self.stats().stack_overflows.fetch_add(1, Ordering::Relaxed);
                Err(ErrorKind::StackOverflow)
            }
            Step::Finished(Err(Fault::Cancelled)) => {
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
    /// unwinds it, and abandons it if it will not stop.
    fn cancel_task(&mut self, slot_index: usize) {
        for _ in 0..CANCEL_ATTEMPTS_MAX {
            if self.slots[slot_index].task.is_none() {
                return;
            }
            // A response it still returns is dropped with the step.
            let _ = self.run_task(slot_index, Wake::Cancel);
        }
        if let Some(task) = self.slots[slot_index].task.as_mut() {
            task.abandon();
            self.slots[slot_index].task = None;
            self.reserve.wipe();
        }
    }

    /// Queues a handler's response behind what the connection already has queued.
    fn respond(&mut self, index: usize, slot_index: usize, response: Response<'static>) {
        // An interim (1xx) status cannot end a request; `101` would leave the client thinking
        // the connection changed protocol while we go on speaking HTTP.
        let valid = !response.status().is_informational()
            && response
                .headers()
                .all(|(name, value)| encode::header_allowed(name, value.as_bytes()));
        if !valid {
            drop(response);
            self.fail(index, ErrorKind::BadResponse);
            return;
        }
        let close = response.headers().any(|(name, value)| {
            name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
        });
        let conn = &mut self.conns[index];
        conn.close_after |= close;
        let slot = &mut self.slots[slot_index];
        let body = response.body_bytes();
        let frame = HeadFrame {
            status: response.status().as_u16(),
            content_length: body.len(),
            persistence: conn.persistence(self.draining),
            date: &self.date,
        };
        conn.close_after |= frame.persistence == Persistence::Close;
        let rule = encode::BodyRule::of(frame.status, conn.request.head_method);
        let sent_body: &[u8] = if rule.body { body } else { &[] };
        let start = conn.write_end;
        let mut in_buffer = conn.write_room(0) && {
            let mut sink = FixedSink { buf: conn.write.as_mut_slice(), len: start };
            let encoded = put_head(&mut sink, frame, &response).is_ok();
            conn.write_end = sink.len;
            encoded
        };
        let mut head_pending = (std::ptr::null(), 0);
        if !in_buffer {
            conn.write_end = start;
            let mut head = cella_arena::ArenaVec::new_in(&slot.arena);
            if put_head(&mut head, frame, &response).is_err() {
                drop(response);
                self.fail(index, ErrorKind::BadResponse);
                return;
            }
            let head = head.into_slice();
            head_pending = (head.as_ptr(), head.len());
        }
        if in_buffer && conn.write_room(sent_body.len()) {
            conn.write.as_mut_slice()[conn.write_end..conn.write_end + sent_body.len()]
                .copy_from_slice(sent_body);
            conn.write_end += sent_body.len();
        } else {
            in_buffer = false;
            conn.pending = Some(Pending {
                head: head_pending,
                body: (sent_body.as_ptr(), sent_body.len()),
                sent: 0,
            });
        }
        conn.phase = Phase::Writing;
        self.deadlines[index] = Some(self.now + self.settings.response_write_timeout);
        if in_buffer {
            // Everything is copied: the slot is free for the next request at once.
            drop(response);
            conn.slot = None;
            self.release_slot(slot_index);
        } else {
            slot.response = Some(response);
        }
    }
}

fn put_head(
    sink: &mut impl encode::Sink,
    frame: HeadFrame<'_>,
    response: &Response<'_>,
) -> Result<(), encode::Full> {
    encode::put_frame(sink, frame)?;
    for (name, value) in response.headers() {
        if !encode::header_owned_by_runtime(name) {
            encode::put_header(sink, name, value.as_bytes())?;
        }
    }
    sink.put(b"\r\n")
}

impl Worker {
    fn write(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        // Pipelining: while the queued responses sit in the write buffer (none is pending in
        // slot memory), go on with the next buffered request and write them all at once later.
        let batching = conn.pending.is_none()
            && !conn.close_after
            && conn.read_start < conn.read_end
            && conn.write_end < conn.write.capacity() / 2;
        if batching {
            conn.phase = Phase::Head;
            self.deadlines[index] = Some(self.now + self.settings.header_read_timeout);
            return true;
        }
        match conn.flush() {
            Ok(true) => {
                if let Some(slot) = conn.slot.take() {
                    self.release_slot(slot);
                }
                self.after_response(index);
                true
            }
            Ok(false) => false,
            Err(_) => {
                self.close(index);
                false
            }
        }
    }

    fn after_response(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if conn.close_after {
            if let Some(stream) = conn.stream.as_ref() {
                let _ = stream.shutdown(Shutdown::Write);
            }
            conn.phase = Phase::Linger;
            self.deadlines[index] = Some(self.now + self.settings.linger_timeout);
        } else if conn.read_start < conn.read_end {
            conn.phase = Phase::Head;
            self.deadlines[index] = Some(self.now + self.settings.header_read_timeout);
        } else {
            conn.phase = Phase::Idle;
            self.deadlines[index] = Some(self.now + self.settings.keepalive_idle_timeout);
        }
    }

    /// Discards input until the client closes (or the linger deadline, in the sweep).
    fn linger(&mut self, index: usize) -> bool {
        let conn = &mut self.conns[index];
        (conn.read_start, conn.read_end) = (0, 0);
        while conn.fill() {
            (conn.read_start, conn.read_end) = (0, 0);
        }
        if conn.eof {
            self.close(index);
        }
        false
    }

    fn close(&mut self, index: usize) {
        if self.conns[index].phase == Phase::Free {
            return;
        }
        if let Some(slot) = self.conns[index].slot.take() {
            self.cancel_task(slot);
            self.release_slot(slot);
        }
        let conn = &mut self.conns[index];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.phase = Phase::Free;
        conn.read_start = 0;
        conn.read_end = 0;
        conn.write_start = 0;
        conn.write_end = 0;
        conn.pending = None;
        self.deadlines[index] = None;
        conn.close_after = false;
        conn.eof = false;
        conn.body = BodyState::None;
        self.free_conns.push(index);
        self.live_conns -= 1;
    }

    fn set_wake_at(&mut self, slot_index: usize, wake_at: Option<Instant>) {
        let previous = std::mem::replace(&mut self.slots[slot_index].wake_at, wake_at);
        self.waiting_slots =
            self.waiting_slots + usize::from(wake_at.is_some()) - usize::from(previous.is_some());
    }

    /// Wipes a slot whose task has ended and puts it back in the pool.
    fn release_slot(&mut self, slot_index: usize) {
        self.set_wake_at(slot_index, None);
        let slot = &mut self.slots[slot_index];
        debug_assert!(slot.task.is_none(), "a slot is released only after its task ended");
        slot.response = None;
        slot.request = None;
        slot.sockets.close_all();
        slot.wait = None;
        slot.route.fail_countdown.set(0);
        slot.conn = usize::MAX;
        slot.arena.wipe();
        let high_water = slot.arena.high_water_bytes();
        if high_water > self.arena_high_water_bytes {
            self.arena_high_water_bytes = high_water;
            // Relaxed: a statistic, read by `RunningServer::stats`.
            self.shared.stats[self.index]
                .arena_high_water_bytes
                .store(high_water as u64, Ordering::Relaxed);
        }
        if self.settings.quarantine {
            slot.memory.arena.protect(false).expect("quarantining a slot succeeds");
        }
        self.free_slots.push(slot_index);
        while let Some(waiter) = self.slot_waiters.pop_front() {
            if self.conns[waiter].phase == Phase::WaitingSlot {
                self.conns[waiter].phase = Phase::Head;
                self.runnable.push_back(waiter);
                break;
            }
        }
    }

    /// Resumes suspended handlers whose wait is over.
    fn wake_due_slots(&mut self) {
        if self.waiting_slots == 0 {
            return;
        }
        let now = Instant::now();
        for slot_index in 0..self.slots.len() {
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

    fn socket_ready(&mut self, offset: usize) {
        let sockets_max = self.settings.slot_sockets_max.max(1);
        let (slot_index, socket) = (offset / sockets_max, offset % sockets_max);
        let Some(slot) = self.slots.get(slot_index) else { return };
        let waiting = slot.task.is_some()
            && slot.wait.and_then(|w| w.socket).is_some_and(|(s, _)| s == socket);
        if waiting {
            let index = slot.conn;
            self.resume(slot_index, Wake::Ready);
            self.drive(index);
        }
    }

    /// Enforces connection deadlines.
    fn sweep(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if self.now >= until {
                self.accept_paused_until = None;
                self.accept();
            }
        }
        for index in 0..self.conns.len() {
            match self.deadlines[index] {
                Some(deadline) if deadline <= self.now => {}
                _ => continue,
            }
            match self.conns[index].phase {
                Phase::Head => {
                    self.fail(index, ErrorKind::HeadTimeout);
                }
                Phase::Body => {
                    self.fail(index, ErrorKind::BodyTimeout);
                }
                Phase::WaitingSlot => {
                    self.conns[index].close_after = true;
                    self.stats().busy_rejections.fetch_add(1, Ordering::Relaxed);
                    self.queue_error(index, ErrorKind::NoSlot);
                }
                Phase::Idle | Phase::Writing | Phase::Linger => {
                    self.close(index);
                    continue;
                }
                Phase::Free | Phase::Running => continue,
            }
            self.drive(index);
        }
    }
}
