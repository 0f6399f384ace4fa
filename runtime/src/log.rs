//! `cella::log`: a backend for the [`log`](https://docs.rs/log) facade that works inside
//! handlers.
//!
//! Each log call formats its line into a buffer of the calling thread (`log_line_size_max`
//! bytes; a worker's is allocated before the seal) and writes the whole line with one write(2)
//! to stderr, so it allocates nothing, takes no process-wide lock, and lines of different
//! workers never interleave mid-line. A line is `LEVEL target: message`; control characters
//! in the message are escaped (`\n`, `\r`, `\t`, `\xNN`) so a line is always one line, and a
//! line that does not fit ends with [`TRUNCATED_MARK`].
//!
//! Formatting runs the caller's `Display` code, which may overrun the arena or panic: only
//! this thread's buffer is in use meanwhile. A panic releases it as it unwinds; a hard cancel
//! (which runs no destructor) is released by the runtime ([`release_abandoned`]), so later log
//! calls on that worker keep working. A log call made while this thread's buffer is already in
//! use (a `Display` that logs) or on a thread that has none inside a handler formats into a
//! small buffer on the stack ([`FALLBACK_LINE_BYTES`]).
//!
//! The level filter is `log_level` (config key, or `CELLA_LOG_LEVEL`). [`crate::main!`],
//! `cli::main_with` and [`crate::Server::start`] install the backend; a program that logs
//! before any of them calls [`init`]. If another logger was installed first (`env_logger`),
//! it stays, and cella says so once on stderr.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub use ::log::{debug, error, info, trace, warn, Level, LevelFilter};

/// What ends a line that did not fit its buffer.
pub const TRUNCATED_MARK: &str = " …[truncated]";

/// The line buffer of a nested log call, or of a thread with no buffer inside a handler.
pub const FALLBACK_LINE_BYTES: usize = 256;

/// The line buffer's bytes before [`install`] is told `log_line_size_max`: that key's default
/// (a test in this module keeps the two equal).
const LINE_BYTES_BEFORE_INSTALL: usize = 4 << 10;

/// Bytes of each thread's line buffer (`log_line_size_max`); set by [`install`].
static LINE_BYTES: AtomicUsize = AtomicUsize::new(LINE_BYTES_BEFORE_INSTALL);

/// Whether the warning about a foreign logger was printed.
static FOREIGN_WARNED: AtomicBool = AtomicBool::new(false);

struct CellaLogger;

static LOGGER: CellaLogger = CellaLogger;

thread_local! {
    /// This thread's line buffer (start, length), null until [`prepare_thread`]; no
    /// destructor, so touching it never registers one (that would allocate).
    static BUFFER: Cell<(*mut u8, usize)> = const { Cell::new((std::ptr::null_mut(), 0)) };
    /// The address of the [`Line`] formatting into `BUFFER` now (on its caller's stack), 0
    /// when the buffer is free.
    static BUSY: Cell<usize> = const { Cell::new(0) };
    /// Owns `BUFFER`'s memory and frees it when the thread ends; touched only outside handlers.
    static OWNED: RefCell<Option<Box<[u8]>>> = const { RefCell::new(None) };
}

/// Installs cella's logger (if no logger is installed yet) with `level`: the documented call
/// for a program that logs before [`crate::main!`] or [`crate::Server::start`] would install
/// it. Returns whether cella's logger is the one installed.
pub fn init(level: LevelFilter) -> bool {
    install(level, LINE_BYTES.load(Ordering::Relaxed))
}

/// Installs cella's logger with `level` and `line_bytes` per thread buffer, and gives the
/// calling thread its buffer. Whether cella's logger is the one installed.
pub(crate) fn install(level: LevelFilter, line_bytes: usize) -> bool {
    // Relaxed: read by threads started after this (their spawn orders it) or by this one.
    LINE_BYTES.store(line_bytes.max(FALLBACK_LINE_BYTES), Ordering::Relaxed);
    let ours = ::log::set_logger(&LOGGER).is_ok()
        || std::ptr::addr_eq(::log::logger() as *const dyn ::log::Log, &LOGGER as *const _);
    if ours {
        ::log::set_max_level(level);
        prepare_thread();
    } else if !FOREIGN_WARNED.swap(true, Ordering::Relaxed) {
        crate::sys::write_stderr(
            b"cella: warning: a logger other than cella::log is installed; log calls inside \
              handlers may allocate in the arena or take a lock (see README, logging)\n",
        );
    }
    ours
}

/// The level filter a `log_level` value names (the config validates it).
pub(crate) fn level_of(text: &str) -> LevelFilter {
    text.trim().parse().unwrap_or(LevelFilter::Info)
}

/// Gives this thread its line buffer of `log_line_size_max` bytes (a worker calls it before it
/// seals, so its log calls never allocate). Outside handlers only; does nothing if it has one
/// of that size.
pub(crate) fn prepare_thread() {
    if crate::cancel::in_handler() {
        return;
    }
    let bytes = LINE_BYTES.load(Ordering::Relaxed);
    if BUFFER.with(Cell::get).1 == bytes || BUSY.with(Cell::get) != 0 {
        return;
    }
    let mut buffer = vec![0u8; bytes].into_boxed_slice();
    BUFFER.with(|cell| cell.set((buffer.as_mut_ptr(), buffer.len())));
    // The old buffer (if any) is dropped: no pointer to it is left.
    OWNED.with(|owned| *owned.borrow_mut() = Some(buffer));
}

/// Frees this thread's buffer for later log calls if a log call abandoned it: its stack (the
/// slot's stack, `[start, end)`) was abandoned by a hard cancel while it formatted.
pub(crate) fn release_abandoned(stack_start: usize, stack_end: usize) {
    BUSY.with(|busy| {
        let owner = busy.get();
        if owner >= stack_start && owner < stack_end {
            busy.set(0);
        }
    });
}

/// A line being formatted into a buffer.
struct Line<'a> {
    bytes: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl Line<'_> {
    fn push(&mut self, byte: u8) {
        // The last byte is kept for the newline.
        if self.len + 1 < self.bytes.len() {
            self.bytes[self.len] = byte;
            self.len += 1;
        } else {
            self.truncated = true;
        }
    }

    /// The finished line: the newline, and the mark when it was cut (at a character
    /// boundary, so the line stays UTF-8).
    fn finish(&mut self) -> &[u8] {
        if self.truncated {
            let mark = TRUNCATED_MARK.as_bytes();
            let mut cut = self.len.min(self.bytes.len().saturating_sub(mark.len() + 1));
            while cut > 0 && (self.bytes[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            self.bytes[cut..cut + mark.len()].copy_from_slice(mark);
            self.len = cut + mark.len();
        }
        self.bytes[self.len] = b'\n';
        &self.bytes[..=self.len]
    }
}

impl fmt::Write for Line<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.truncated {
            return Ok(()); // Keeps formatting (the caller's Display may rely on Ok), drops bytes.
        }
        for &byte in text.as_bytes() {
            match byte {
                b'\n' => self.push_escaped(b'n'),
                b'\r' => self.push_escaped(b'r'),
                b'\t' => self.push_escaped(b't'),
                0..0x20 | 0x7f => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    for escaped in
                        [b'\\', b'x', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]
                    {
                        self.push(escaped);
                    }
                }
                _ => self.push(byte),
            }
        }
        Ok(())
    }
}

impl Line<'_> {
    fn push_escaped(&mut self, letter: u8) {
        self.push(b'\\');
        self.push(letter);
    }
}

/// Frees the thread's buffer when the formatting ends, also when it unwinds.
struct Busy;

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|busy| busy.set(0));
    }
}

fn format_line(line: &mut Line<'_>, record: &::log::Record<'_>) {
    let _ = write!(line, "{} {}: ", record.level(), record.target());
    let _ = fmt::write(line, *record.args());
}

/// Writes all of `bytes` to stderr (a pipe takes a line of up to 4 KiB in one write; a
/// partial write or EINTR goes on from where it stopped).
fn write_line(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        match crate::sys::write_fd(2, rest) {
            Ok(0) => return,
            Ok(written) => rest = &rest[written..],
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn log_on_stack(record: &::log::Record<'_>) {
    let mut bytes = [0u8; FALLBACK_LINE_BYTES];
    let mut line = Line { bytes: &mut bytes, len: 0, truncated: false };
    format_line(&mut line, record);
    write_line(line.finish());
}

impl ::log::Log for CellaLogger {
    fn enabled(&self, metadata: &::log::Metadata<'_>) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &::log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if BUFFER.with(Cell::get).0.is_null() {
            prepare_thread(); // A thread of the program's own, outside handlers.
        }
        let (start, len) = BUFFER.with(Cell::get);
        if start.is_null() || BUSY.with(Cell::get) != 0 {
            return log_on_stack(record);
        }
        let mut line = Line {
            // SAFETY: `start..start + len` is this thread's buffer, owned by `OWNED` for the
            // thread's life (replaced only by `prepare_thread`, which refuses while `BUSY`);
            // `BUSY` is 0, so no other `Line` uses it (a nested call, or a hard-cancelled one
            // that `release_abandoned` has since released, never touches it again).
            bytes: unsafe { std::slice::from_raw_parts_mut(start, len) },
            len: 0,
            truncated: false,
        };
        BUSY.with(|busy| busy.set(&line as *const Line<'_> as usize));
        let busy = Busy;
        format_line(&mut line, record);
        write_line(line.finish());
        drop(busy);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(capacity: usize, message: fmt::Arguments<'_>) -> String {
        let mut bytes = vec![0u8; capacity];
        let mut line = Line { bytes: &mut bytes, len: 0, truncated: false };
        let _ = fmt::write(&mut line, message);
        String::from_utf8(line.finish().to_vec()).expect("a line is UTF-8")
    }

    #[test]
    fn a_line_that_fits_exactly_is_whole_and_one_byte_more_is_truncated_and_marked() {
        let fits = "x".repeat(63);
        assert_eq!(formatted(64, format_args!("{fits}")), format!("{fits}\n"));
        let over = "x".repeat(64);
        let line = formatted(64, format_args!("{over}"));
        assert_eq!(line.len(), 64);
        assert!(line.ends_with(" …[truncated]\n"), "{line}");
    }

    #[test]
    fn control_characters_are_escaped_and_cuts_keep_utf8() {
        assert_eq!(formatted(64, format_args!("a\nb\rc\td\u{1}")), "a\\nb\\rc\\td\\x01\n");
        let line = formatted(40, format_args!("{}", "é".repeat(40)));
        assert!(line.ends_with(" …[truncated]\n") && line.len() <= 40, "{line}");
    }

    #[test]
    fn the_line_size_before_install_is_the_keys_default() {
        let config = cella_shared::Config::default();
        assert_eq!(config.log_line_size_max.0, LINE_BYTES_BEFORE_INSTALL as u64);
    }
}
