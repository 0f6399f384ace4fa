//! One line for stderr, formatted into a fixed buffer on the stack: what a sealed worker writes
//! when it must say something (a tainted worker, an escape, a handler's panic) without
//! allocating. Control bytes become `?` (a request's path and a panic message are client
//! bytes), and what does not fit is dropped.

use std::fmt::Write;

/// Longest line, newline included: room for a handler panic's location (a path under Cargo's
/// registry can take 150 bytes) and the part of its message `panic_hook.rs` keeps.
pub(crate) const LINE_BYTES_MAX: usize = 512;
/// Longest part of a request's path that is written (client bytes).
const PATH_BYTES_MAX: usize = 120;

/// A line being written; [`Line::finish`] ends it with a newline.
pub(crate) struct Line {
    bytes: [u8; LINE_BYTES_MAX],
    len: usize,
}

impl Line {
    pub(crate) fn new() -> Line {
        Line { bytes: [0; LINE_BYTES_MAX], len: 0 }
    }

    /// Writes `METHOD PATH`, the path cut to [`PATH_BYTES_MAX`] bytes on a character boundary.
    pub(crate) fn request(&mut self, method: &str, path: &str) {
        let _ = write!(self, "{method} ");
        self.push_clipped(path, PATH_BYTES_MAX);
    }

    /// Appends at most `bytes_max` bytes of `text`, cut on a character boundary.
    pub(crate) fn push_clipped(&mut self, text: &str, bytes_max: usize) {
        let mut cut = text.len().min(bytes_max);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = self.write_str(&text[..cut]);
    }

    /// Appends one byte (a control byte becomes `?`), if it fits.
    pub(crate) fn push_byte(&mut self, byte: u8) {
        let _ = self.write_str(std::str::from_utf8(&[byte]).unwrap_or("?"));
    }

    /// The line with its newline, to write with one write(2).
    pub(crate) fn finish(&mut self) -> &[u8] {
        self.bytes[self.len] = b'\n';
        &self.bytes[..=self.len]
    }
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        for byte in text.bytes() {
            // The last byte is kept for the newline.
            if self.len == self.bytes.len() - 1 {
                break;
            }
            self.bytes[self.len] = if byte.is_ascii_control() { b'?' } else { byte };
            self.len += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_replaced_and_a_long_line_is_cut_before_its_newline() {
        let mut line = Line::new();
        let _ = write!(line, "a\nb\x1b");
        assert_eq!(line.finish(), b"a?b?\n");
        let mut line = Line::new();
        line.request("GET", &"é".repeat(400));
        let text = line.finish();
        assert_eq!(text.len(), "GET ".len() + 120 + 1, "the path is cut to 120 bytes");
        assert_eq!(text.last(), Some(&b'\n'));
        let mut line = Line::new();
        line.push_clipped(&"x".repeat(2 * LINE_BYTES_MAX), usize::MAX);
        assert_eq!(line.finish().len(), LINE_BYTES_MAX, "cut to the buffer, newline kept");
    }
}
