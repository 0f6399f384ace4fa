//! A panic hook that allocates nothing for panics inside handlers.
//!
//! The default hook formats the thread name, may capture a backtrace and allocates while doing
//! so; inside a handler that would happen in the slot's arena, possibly when it is full. Ours
//! writes one bounded line on the stack (`line.rs`: location and at most [`MESSAGE_BYTES_MAX`]
//! bytes of the message, control characters replaced) with a single write(2). Panics outside
//! handlers go to the hook that was installed before.

use std::fmt::Write;
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

use crate::cancel;
use crate::line::Line;
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

fn log_handler_panic(info: &PanicHookInfo<'_>) {
    // On the stack: this may run with the handler's arena full.
    let mut line = Line::new();
    let _ = line.write_str("cella: handler panicked");
    if let Some(location) = info.location() {
        let _ = write!(line, " at {}:{}", location.file(), location.line());
    }
    if let Some(message) = info.payload_as_str() {
        let _ = line.write_str(": ");
        line.push_clipped(message, MESSAGE_BYTES_MAX);
    }
    let _ = line.write_str("; answering 500");
    sys::write_stderr(line.finish());
}
