//! The access log (`access_log`, `access_log_format`): one line per answer to a request, written
//! without ever making a worker wait.
//!
//! Each worker formats its lines (`format`) on its own stack and adds them to its own byte ring
//! (`ring`), a span of the region of `access_log_buffer_size` bytes. One writer thread, started
//! before the workers, drains every ring with blocking write(2)s: it may wait on a slow disk or
//! a full pipe, the workers never do. A line that does not fit in its worker's ring is dropped
//! and counted (`cella_access_log_dropped_total`), never waited for; a line added to a ring is
//! counted in `cella_access_log_lines_total`.
//!
//! The writer sleeps up to [`FLUSH_INTERVAL`] between passes; a worker whose ring is more than
//! half full (or refused a line) wakes it at once (`Thread::unpark`: an atomic swap, and a futex
//! wake only when the writer sleeps). Nothing here allocates once the workers run: the rings
//! are region memory, the lines are formatted into stack buffers, and the file is reopened from
//! a path made into a C string at startup. SIGHUP (taken by the main thread, see `cli`) asks
//! the writer to reopen the file, for log rotation.
//!
//! Must not import the worker or the server: the worker hands an [`Entry`] to its [`WorkerLog`].

mod format;
mod ring;

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use cella_arena::Span;
use cella_shared::config::{AccessLogFormat, AccessLogTarget};

pub(crate) use format::Entry;
use format::{format_line, LINE_BYTES_MAX};
use ring::{Consumer, Producer};

/// Longest time a line waits in its ring before the writer writes it out, when no ring is half
/// full: what an operator tailing the log waits at most (and how often an idle writer wakes).
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// What a worker logs through: its ring's producing side, the format, and the writer to wake.
pub(crate) struct WorkerLog {
    producer: Producer,
    format: AccessLogFormat,
    writer: Thread,
}

impl WorkerLog {
    /// Formats `entry` and adds it to this worker's ring; `false` when the ring is full and the
    /// line is dropped. Never waits.
    pub(crate) fn log(&mut self, entry: &Entry<'_>) -> bool {
        let mut line = [0u8; LINE_BYTES_MAX];
        let len = format_line(entry, self.format, &mut line);
        match self.producer.push(&line[..len]) {
            Some(used) => {
                if used > self.producer.capacity() / 2 {
                    self.writer.unpark();
                }
                true
            }
            None => {
                self.writer.unpark();
                false
            }
        }
    }
}

/// Asks of the writer thread, from the thread that controls the server.
struct Control {
    reopen: AtomicBool,
    stop: AtomicBool,
    finished: AtomicBool,
}

/// The writer thread, held by the running server.
pub(crate) struct Writer {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

/// Where lines go: the file (or a duplicate of standard output) and, for a file, its path to
/// reopen.
struct Output {
    file: File,
    path: Option<CString>,
    /// A write failed and nothing was written since: said once on stderr, not at every pass.
    failing: bool,
}

impl Writer {
    /// Opens `target` and starts the writer over one ring per span of `spans` (each worker's
    /// access log span); returns `None` when the access log is off, else the writer and each
    /// worker's side.
    pub(crate) fn start(
        target: &AccessLogTarget,
        format: AccessLogFormat,
        spans: &[Span],
    ) -> io::Result<Option<(Writer, Vec<WorkerLog>)>> {
        let output = match target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Output {
                file: io::stdout().as_fd().try_clone_to_owned()?.into(),
                path: None,
                failing: false,
            },
            AccessLogTarget::File(path) => {
                let path = CString::new(path.as_os_str().as_bytes())?;
                Output { file: crate::sys::open_append(&path)?, path: Some(path), failing: false }
            }
        };
        let (producers, consumers): (Vec<Producer>, Vec<Consumer>) =
            spans.iter().map(|&span| ring::ring(span)).unzip();
        let control = Arc::new(Control {
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        });
        let thread_control = control.clone();
        // Returns once the thread runs: its start (std maps its signal stack) is startup, never
        // inside the no-allocation window that begins with the ready line.
        let thread = crate::runtime_thread::spawn("cella-access-log", move || {
            run(output, consumers, &thread_control)
        })?;
        let writer = thread.thread().clone();
        let logs = producers
            .into_iter()
            .map(|producer| WorkerLog { producer, format, writer: writer.clone() })
            .collect();
        Ok(Some((Writer { control, thread: Some(thread) }, logs)))
    }

    /// Asks the writer to reopen the file (SIGHUP); nothing for standard output.
    pub(crate) fn reopen(&self) {
        // Release: pairs with the writer's AcqRel swap.
        self.control.reopen.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    /// Once every worker has stopped: lets the writer write out what the rings hold, waiting
    /// up to `timeout` (an output that takes nothing, such as a pipe nobody reads, would
    /// otherwise hold the exit forever). `false`: the writer still runs and still reads the
    /// rings, so their memory must not be unmapped.
    pub(crate) fn stop(&mut self, timeout: Duration) -> bool {
        let Some(thread) = self.thread.take() else { return true };
        // Release: pairs with the writer's Acquire load; every line the workers added is
        // published before (they have exited).
        self.control.stop.store(true, Ordering::Release);
        thread.thread().unpark();
        let deadline = Instant::now() + timeout;
        // Acquire: pairs with the writer's Release store when it is done.
        while !self.control.finished.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                self.thread = Some(thread);
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
        true
    }
}

/// The writer thread: drains every ring until told to stop and every ring is empty.
fn run(mut output: Output, mut consumers: Vec<Consumer>, control: &Control) {
    cella_arena::seal_current_thread();
    loop {
        // Read before the pass: a stop seen here was asked after every worker exited, so the
        // pass below sees all they wrote, and a pass that finds nothing means they are done.
        // Acquire: pairs with the Release store of `Writer::stop`.
        let stopping = control.stop.load(Ordering::Acquire);
        // AcqRel: pairs with the Release store of `Writer::reopen`.
        if control.reopen.swap(false, Ordering::AcqRel) {
            output.reopen();
        }
        let mut wrote = false;
        for consumer in &mut consumers {
            let (first, second) = consumer.readable();
            let len = first.len() + second.len();
            if len == 0 {
                continue;
            }
            output.write(first, second);
            consumer.consume(len);
            wrote = true;
        }
        if !wrote {
            if stopping {
                break;
            }
            std::thread::park_timeout(FLUSH_INTERVAL);
        }
    }
    cella_arena::unseal_current_thread();
    // Release: pairs with the Acquire load of `Writer::stop`.
    control.finished.store(true, Ordering::Release);
}

impl Output {
    /// Writes whole lines; on an error they are lost (and said once on stderr) rather than
    /// retried forever while the rings fill.
    fn write(&mut self, first: &[u8], second: &[u8]) {
        match self.file.write_all(first).and_then(|()| self.file.write_all(second)) {
            Ok(()) => self.failing = false,
            Err(_) if self.failing => {}
            Err(_) => {
                self.failing = true;
                crate::sys::write_stderr(b"cella: cannot write the access log; lines are lost\n");
            }
        }
    }

    /// Opens the path again (the file was renamed for rotation) and writes there from now on;
    /// when it cannot be opened, goes on writing to the file it had.
    fn reopen(&mut self) {
        let Some(path) = &self.path else { return };
        match crate::sys::open_append(path) {
            Ok(file) => self.file = file,
            Err(_) => crate::sys::write_stderr(
                b"cella: cannot reopen the access log on SIGHUP; writing to the old file\n",
            ),
        }
    }
}
