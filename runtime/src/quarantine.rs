//! Quarantine mode's fault report (`quarantine = true`): when a fault lands in a released slot's
//! arena (made inaccessible at release), say which slot and which address in one line before
//! the process crashes as it does for any wild access. The touch comes from a pointer that
//! outlived its request (a static, a thread-local, state built at startup): without quarantine
//! it would have read zeros or another request's bytes.
//!
//! The table is written once at startup and read by the fault handler, so it is a `OnceLock`
//! (an atomic load to read) holding each slot's arena *end*, in slot order: an end is the next
//! slot's guard page, never inside an arena, so the table itself never reads as a pointer into
//! one to the escape check. With several servers in one process (tests), the first one's slots
//! are named.

use std::fmt::Write;
use std::sync::OnceLock;

use crate::line::Line;

/// Each slot's arena end, in slot order, and the arenas' size.
static ARENAS: OnceLock<(Box<[usize]>, usize)> = OnceLock::new();

/// Records the slots' arenas, in the order of the instance's slot table (`worker::slot_table`:
/// each worker's carve in turn), each `bytes` long.
pub(crate) fn record(memories: &[cella_arena::WorkerMemory], bytes: usize) {
    let arenas = memories.iter().flat_map(|memory| &memory.slots);
    let ends = arenas.map(|(slot, _)| slot.arena.end()).collect();
    let _ = ARENAS.set((ends, bytes));
}

/// When `address` lies in a slot's arena, writes the line naming them and returns true.
/// Called by the fault handler: allocates nothing, takes no lock.
pub(crate) fn report_fault(address: usize) -> bool {
    let Some((ends, bytes)) = ARENAS.get() else { return false };
    let Some(slot) = ends.iter().position(|&end| address < end && address >= end - bytes) else {
        return false;
    };
    let mut line = Line::new();
    let _ = write!(
        line,
        "cella: fatal: quarantine: the arena of slot {slot} was touched at {address:#x} while the \
         slot was released: a pointer into a finished request's memory outlived it (a static, a \
         thread-local, state built at startup); crashing"
    );
    crate::sys::write_stderr(line.finish());
    true
}
