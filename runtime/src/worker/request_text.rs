//! "METHOD path" of a request, kept in atomic bytes so that a thread other than the worker's
//! (the watchdog) can name it in an escalation line while the request's own memory may be out
//! of reach. Written by one thread at a time (a worker, or its preemption signal handler);
//! formatted by `line.rs`, allocating nothing. Used by the watchdog's [`Watch`] and the stdio
//! probe.
//!
//! [`Watch`]: super::watchdog::Watch

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::line::Line;

/// Bytes of "METHOD path" kept for an escalation line.
const REQUEST_BYTES_MAX: usize = 120;

/// A request's "METHOD path", or nothing.
pub(super) struct RequestText {
    bytes: [AtomicU8; REQUEST_BYTES_MAX],
    /// Bytes of `bytes` that hold the text; 0: none.
    len: AtomicUsize,
}

impl RequestText {
    pub(super) const fn new() -> RequestText {
        RequestText {
            bytes: [const { AtomicU8::new(0) }; REQUEST_BYTES_MAX],
            len: AtomicUsize::new(0),
        }
    }

    /// Keeps `method` and `path` as [`Line::request`] writes them (control bytes as `?`, the
    /// path cut), cut to [`REQUEST_BYTES_MAX`] bytes. Async-signal-safe.
    pub(super) fn set(&self, method: &str, path: &str) {
        let mut line = Line::new();
        line.request(method, path);
        let text = line.finish();
        let text = &text[..text.len() - 1]; // Without the newline.
        let len = text.len().min(REQUEST_BYTES_MAX);
        for (cell, &byte) in self.bytes.iter().zip(&text[..len]) {
            cell.store(byte, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire loads in `is_set` and `write_to`.
        self.len.store(len, Ordering::Release);
    }

    /// Forgets the text.
    pub(super) fn clear(&self) {
        // Relaxed: a reader that still sees the old length reads the old (complete) text.
        self.len.store(0, Ordering::Relaxed);
    }

    pub(super) fn is_set(&self) -> bool {
        // Acquire: pairs with the Release store in `set`.
        self.len.load(Ordering::Acquire) > 0
    }

    /// Appends the text to `line` (nothing when none is kept).
    pub(super) fn write_to(&self, line: &mut Line) {
        // Acquire: pairs with the Release store in `set`.
        let len = self.len.load(Ordering::Acquire);
        for cell in &self.bytes[..len] {
            line.push_byte(cell.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &RequestText) -> Vec<u8> {
        let mut line = Line::new();
        text.write_to(&mut line);
        let bytes = line.finish();
        bytes[..bytes.len() - 1].to_vec()
    }

    #[test]
    fn keeps_method_and_path_cut_to_its_size_until_cleared() {
        let text = RequestText::new();
        assert!(!text.is_set());
        assert_eq!(written(&text), b"");
        text.set("GET", "/a\x1bb");
        assert!(text.is_set());
        assert_eq!(written(&text), b"GET /a?b");
        text.set("POST", &"x".repeat(500));
        assert_eq!(written(&text).len(), REQUEST_BYTES_MAX);
        assert!(written(&text).starts_with(b"POST xxx"));
        text.clear();
        assert!(!text.is_set());
        assert_eq!(written(&text), b"");
    }
}
