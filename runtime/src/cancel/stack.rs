//! A slot's stack as the coroutine sees it ([`SlotStack`]: its base, and its limit at the guard
//! page) and the protection of its headroom (the lowest [`STACK_HEADROOM_BYTES`] above the
//! guard page, closed at startup and after each task that opened it: see the module comment of
//! `cancel`). Must not run or switch coroutines.

use corosensei::stack::{Stack, StackPointer};

use cella_arena::SlotMemory;

/// x86_64 Linux with the release build (the testapp's `/panic-at-stack-limit/{0..4096}` and
/// `/println-at-stack-limit/{0..4096}`, lowest non-zero byte of a zeroed headroom after each): a
/// panic started with 0 to 4 KiB left (our hook, the message formatted into the reserve,
/// `_Unwind_RaiseException`, the landing pads, `catch_unwind`) used at most 5,352 bytes of it,
/// and a `println!` of a formatted value at most 2,216; 16 KiB is three times the larger.
pub const STACK_HEADROOM_BYTES: usize = 16 << 10;

/// A slot's stack as corosensei sees it: `limit` includes the guard page.
#[derive(Clone, Copy, Debug)]
pub struct SlotStack {
    base: StackPointer,
    limit: StackPointer,
}

impl SlotStack {
    pub fn new(slot: &SlotMemory) -> SlotStack {
        let base = slot.stack.end() & !15;
        SlotStack {
            base: StackPointer::new(base).expect("the stack is not at address 0"),
            limit: StackPointer::new(slot.guard.ptr.as_ptr() as usize).expect("not at address 0"),
        }
    }
}

// SAFETY: base and limit are 16-byte aligned (the stack span is page-aligned and we align the
// end down), the span between them is owned by this slot alone, and the lowest page of it is a
// PROT_NONE guard page, as corosensei requires of a `Stack`.
unsafe impl Stack for SlotStack {
    fn base(&self) -> StackPointer {
        self.base
    }
    fn limit(&self) -> StackPointer {
        self.limit
    }
}

/// `mprotect(2)` of whole pages of a slot stack; `Err` with the OS error.
pub(super) fn protect_span(start: *mut u8, len: usize, read_write: bool) -> std::io::Result<()> {
    let protection = if read_write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
    // SAFETY: mprotect(2) on page-aligned pages of our own mapping (a slot's stack span: the
    // guard page's end is page-aligned and the headroom is whole pages); async-signal-safe, so
    // the fault handler may call it too.
    let result = unsafe { libc::mprotect(start.cast(), len, protection) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Protects `slot`'s stack headroom (once, at startup). The stack must be larger than twice
/// the headroom.
pub fn protect_headroom(slot: &SlotMemory) -> std::io::Result<()> {
    assert!(slot.stack.len >= 2 * STACK_HEADROOM_BYTES, "the slot stack holds its headroom");
    protect_span(slot.guard.end() as *mut u8, STACK_HEADROOM_BYTES, false)
}
