//! Blocking-style I/O for handlers: the calls look blocking, but only the calling request's
//! coroutine is suspended; its worker serves other requests meanwhile.
//!
//! Sockets opened here live in a table owned by the slot, so the runtime closes them when the
//! request ends however it ends (a hard cancel never runs the handler's destructors).
//!
//! Every call here that would suspend (connect, read, write, [`sleep`]) returns at once instead
//! while the request is unwinding (a panic or a cancellation runs destructors, for instance a
//! buffered writer flushing in `drop`) or after it was cancelled: the I/O calls fail with
//! `ECANCELED` ([`is_cancelled`]) and `sleep` returns early. A suspended unwind would leave
//! std's per-thread panic state set while other requests run on the worker.

use std::cell::{Cell, UnsafeCell};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ptr;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::cancel::{self, Refusal, Wait, Wake};

/// The outbound sockets of one slot. Touched by the handler (through [`TcpStream`]) while it
/// runs and by the worker only between requests.
pub(crate) struct SlotSockets {
    entries: Box<[UnsafeCell<Option<mio::net::TcpStream>>]>,
    registry: Cell<*const Registry>,
    token_base: usize,
    /// Which request of this slot the table belongs to; a stale [`TcpStream`] is refused.
    generation: Cell<u64>,
    /// Sockets opened by the current request (closing none is then free).
    opened: Cell<usize>,
}

thread_local! {
    static CURRENT: Cell<*const SlotSockets> = const { Cell::new(ptr::null()) };
}

impl SlotSockets {
    pub(crate) fn new(count: usize, token_base: usize) -> SlotSockets {
        SlotSockets {
            entries: (0..count).map(|_| UnsafeCell::new(None)).collect(),
            registry: Cell::new(ptr::null()),
            token_base,
            generation: Cell::new(0),
            opened: Cell::new(0),
        }
    }

    pub(crate) fn set_registry(&self, registry: &Registry) {
        self.registry.set(registry);
    }

    /// Makes this table the one handler calls on this thread use, until [`SlotSockets::leave`].
    pub(crate) fn enter(&self) {
        CURRENT.with(|current| current.set(self));
    }

    pub(crate) fn leave() {
        CURRENT.with(|current| current.set(ptr::null()));
    }

    /// Closes every socket (the request is over) and starts a new generation.
    pub(crate) fn close_all(&self) {
        if self.opened.get() > 0 {
            for index in 0..self.entries.len() {
                self.close(index);
            }
            self.opened.set(0);
        }
        self.generation.set(self.generation.get() + 1);
    }

    fn close(&self, index: usize) {
        // SAFETY: no `&` into this entry is alive: the handler's accessors end before they
        // return or suspend... except `with_stream`, which is never active while the worker
        // calls `close_all` (the request's task has ended) or while the handler calls `close`.
        let entry = unsafe { &mut *self.entries[index].get() };
        if let Some(mut stream) = entry.take() {
            // SAFETY: `registry` was set at worker start and the Poll outlives the slots.
            if let Some(registry) = unsafe { self.registry.get().as_ref() } {
                let _ = registry.deregister(&mut stream);
            }
        }
    }
}

fn current() -> io::Result<&'static SlotSockets> {
    let current = CURRENT.with(Cell::get);
    // SAFETY: a non-null CURRENT points at the running slot's table, which lives in the worker's
    // slot table for the worker's whole life; the reference is only used during the call.
    unsafe { current.as_ref() }.ok_or_else(|| {
        io::Error::new(io::ErrorKind::Unsupported, "cella::net works only inside a handler")
    })
}

/// Whether `error` is the refusal of a call that would have suspended a request that is
/// unwinding or was cancelled (`ECANCELED`).
pub fn is_cancelled(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ECANCELED)
}

/// Suspends the calling request until `wait` is satisfied. `Ok(true)`: ready; `Ok(false)`: the
/// deadline passed.
fn suspend(wait: Wait) -> io::Result<bool> {
    match cancel::suspend(wait) {
        Ok(Wake::Ready | Wake::Start) => Ok(true),
        Ok(Wake::TimedOut) => Ok(false),
        Ok(Wake::Cancel) => cancel::unwind_cancelled(),
        Err(Refusal::NotInHandler) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, "not inside a handler"))
        }
        // A raw OS error: building it allocates nothing (the arena may be spent while unwinding),
        // and its kind is not `Interrupted`, which `write_all` and friends would retry forever.
        Err(Refusal::Unwinding | Refusal::Cancelled) => {
            Err(io::Error::from_raw_os_error(libc::ECANCELED))
        }
    }
}

/// Suspends the calling request for `duration`; outside a handler it sleeps the thread. Returns
/// early, without suspending, while the request unwinds or after it was cancelled.
pub fn sleep(duration: Duration) {
    if !cancel::in_handler() {
        std::thread::sleep(duration);
        return;
    }
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        // Woken early only by a cancellation, which unwinds from `suspend`.
        if suspend(Wait { socket: None, deadline: Some(deadline) }).is_err() {
            return;
        }
    }
}

/// An outbound TCP connection owned by the current request. Reads, writes and connect wait up
/// to the stream's timeout, suspending only this request.
pub struct TcpStream {
    index: usize,
    generation: u64,
    timeout: Duration,
}

impl TcpStream {
    /// Connects to `addr`, waiting at most `timeout`; later reads and writes use the same
    /// timeout (see [`TcpStream::set_timeout`]).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        // Not preempted between opening the socket and recording it in the slot's table.
        let section = cella_arena::RuntimeSection::enter();
        let table = current()?;
        let index = (0..table.entries.len())
            // SAFETY: a shared look at each entry; no `&mut` to any entry is alive now.
            .find(|&i| unsafe { (*table.entries[i].get()).is_none() })
            .ok_or_else(|| {
                io::Error::other("this request holds slot_sockets_max sockets already")
            })?;
        let mut stream = mio::net::TcpStream::connect(addr)?;
        // SAFETY: set at worker start; the Poll outlives the slots.
        let registry = unsafe { table.registry.get().as_ref() }
            .ok_or_else(|| io::Error::other("slot has no reactor"))?;
        registry.register(
            &mut stream,
            Token(table.token_base + index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // SAFETY: the entry is empty and nothing borrows it.
        unsafe { *table.entries[index].get() = Some(stream) };
        table.opened.set(table.opened.get() + 1);
        let stream = TcpStream { index, generation: table.generation.get(), timeout };
        drop(section);
        let deadline = Instant::now() + timeout;
        loop {
            let connected = stream.with_stream(|s| {
                if let Some(error) = s.take_error()? {
                    return Err(error);
                }
                match s.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                }
            })?;
            if connected {
                return Ok(stream);
            }
            if !stream.wait(true, deadline)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn with_stream<R>(
        &self,
        f: impl FnOnce(&mut mio::net::TcpStream) -> io::Result<R>,
    ) -> io::Result<R> {
        let table = current()?;
        if table.generation.get() != self.generation {
            return Err(io::Error::other("socket used outside the request that opened it"));
        }
        // SAFETY: only this handle (owned by the running request) reaches the entry, and the
        // worker does not touch the table while the request runs; the borrow ends before `f`
        // returns and `f` never suspends.
        let entry = unsafe { &mut *table.entries[self.index].get() };
        let stream = entry.as_mut().ok_or_else(|| io::Error::other("socket already closed"))?;
        f(stream)
    }

    fn wait(&self, writable: bool, deadline: Instant) -> io::Result<bool> {
        suspend(Wait { socket: Some((self.index, writable)), deadline: Some(deadline) })
    }

    fn retry<R>(
        &self,
        writable: bool,
        mut op: impl FnMut(&mut mio::net::TcpStream) -> io::Result<R>,
    ) -> io::Result<R> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.with_stream(&mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.wait(writable, deadline)? {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "socket timed out"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.retry(false, |s| s.read(buf))
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.retry(true, |s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let _section = cella_arena::RuntimeSection::enter();
        if let Ok(table) = current() {
            if table.generation.get() == self.generation {
                table.close(self.index);
            }
        }
    }
}
