//! A panic hook that allocates nothing for panics inside handlers.
//!
//! The default hook formats the thread name, may capture a backtrace and allocates while doing
//! so; inside a handler that would happen in the slot's arena, possibly when it is full. Ours
//! writes one bounded line (location and at most [`MESSAGE_BYTES_MAX`] bytes of the message,
//! control characters replaced) with a single write(2). Panics outside handlers go to the hook
//! that was installed before.

use std::fmt::{self, Write};
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

use crate::cancel;
use crate::sys;

/// Longest part of a panic message that is logged: the message may carry client bytes.
pub const MESSAGE_BYTES_MAX: usize = 200;

static INSTALL: Once = Once::new();

/// Installs the hook once per process (before sealing: taking the previous hook allocates).
pub fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if cancel::in_handler() {
                log_handler_panic(info);
            } else {
                previous(info);
            }
        }));
    });
}

/// A fixed line buffer that drops what does not fit.
struct Line {
    bytes: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if self.len == self.bytes.len() {
                break;
            }
            self.bytes[self.len] = if byte.is_ascii_control() { b'?' } else { byte };
            self.len += 1;
        }
        Ok(())
    }
}

fn log_handler_panic(info: &PanicHookInfo<'_>) {
    let mut line = Line { bytes: [0; 512], len: 0 };
    let _ = line.write_str("cella: handler panicked");
    if let Some(location) = info.location() {
        let _ = write!(line, " at {}:{}", location.file(), location.line());
    }
    if let Some(message) = info.payload_as_str() {
        let _ = line.write_str(": ");
        let mut cut = message.len().min(MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let _ = line.write_str(&message[..cut]);
    }
    let _ = line.write_str("; answering 500");
    let end = line.len.min(line.bytes.len() - 1);
    line.bytes[end] = b'\n';
    sys::write_stderr(&line.bytes[..=end]);
}
