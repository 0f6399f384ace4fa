//! The `cella: escape:` line: one per hit kept, written with one write(2) from a buffer on the
//! stack. A static is named with `dladdr(3)`: its symbol when the object exports one, else the
//! object and the offset from its load address (for an executable, the address `nm` lists).
//! `dladdr` takes glibc's loader lock, which only `dlopen`, `dlclose` and `dl_iterate_phdr`
//! hold, and none of those runs after the seal; it runs only after a hit, never in the scan.

use std::ffi::CStr;
use std::fmt::Write;

use super::{Hit, Place};
use crate::line::Line;

/// Writes the line for `hit`, found when `slot`'s request `METHOD PATH` (if known) ended.
pub(crate) fn report(hit: &Hit, slot: usize, request: Option<(&str, &str)>) {
    let mut line = Line::new();
    let _ = line.write_str("cella: escape: ");
    match hit.place {
        Place::Static => write_static(&mut line, hit.at),
        Place::ThreadLocal => drop(line.write_str("thread-local")),
        Place::Heap => drop(line.write_str("heap")),
        Place::StateHeap => drop(line.write_str("state heap")),
    }
    let _ = write!(
        line,
        " at {:#x} points to {:#x}, in the arena of slot {slot} as used by ",
        hit.at, hit.value
    );
    match request {
        Some((method, path)) => line.request(method, path),
        None => drop(line.write_str("its request")),
    }
    let _ = line.write_str(
        "; the slot is retired (never reused); keep such state in the state heap \
         (cella::persist, cella::sync)",
    );
    crate::sys::write_stderr(line.finish());
}

/// `static SYMBOL+0xOFF in OBJECT`, or `static in OBJECT+0xOFF` when no symbol covers it.
fn write_static(line: &mut Line, at: usize) {
    // SAFETY: a zeroed Dl_info is a valid value for dladdr to fill in.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr(3) only reads the address (any value is allowed) and fills `info`.
    let found = unsafe { libc::dladdr(at as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        let _ = line.write_str("static");
        return;
    }
    // SAFETY: dladdr returned non-zero: `dli_fname` (checked non-null) and, when non-null,
    // `dli_sname` are NUL-terminated strings owned by the loader for as long as the object
    // stays loaded (it does: nothing is unloaded after the seal).
    let (object, symbol) = unsafe {
        let object = CStr::from_ptr(info.dli_fname).to_str().unwrap_or("?");
        let symbol = (!info.dli_sname.is_null()).then(|| CStr::from_ptr(info.dli_sname));
        (object, symbol)
    };
    let object = object.rsplit('/').next().unwrap_or("");
    match symbol {
        Some(symbol) => {
            let offset = at.wrapping_sub(info.dli_saddr as usize);
            // Not `to_string_lossy`: it would allocate for a name that is not UTF-8.
            let symbol = symbol.to_str().unwrap_or("?");
            let _ = write!(line, "static {symbol}+{offset:#x} in {object}");
        }
        None => {
            let offset = at.wrapping_sub(info.dli_fbase as usize);
            let _ = write!(line, "static in {object}+{offset:#x}");
        }
    }
}
