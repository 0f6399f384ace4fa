//! The escape check on a slot being released (`escape_check`; the scan itself is
//! `crate::escape`): what the scan finds is reported, counted, and the slot is *retired*: it
//! never goes back to the pool, its arena is never wiped nor quarantined, so whatever points
//! into it goes on reading what the request left there, and no later request can be handed
//! that memory. The instance has one slot fewer; when every slot is retired it has none, and
//! it escalates like a tainted worker (one line, drain, exit 70) rather than answer 503 for
//! ever.

use std::sync::atomic::Ordering;

use super::Worker;
use crate::escape::{self, EscapeCheck, Range};

impl Worker {
    /// Scans for words pointing into the part of `slot_index`'s arena its request (`request`)
    /// used; when there are any, reports them and retires the slot. Whether it retired it.
    pub(super) fn retire_if_escaped(&mut self, slot_index: usize) -> bool {
        if self.settings.escape_check == EscapeCheck::Off {
            return false;
        }
        let Some(scope) = self.shared.escape.get() else { return false };
        let slot = &self.slots[slot_index];
        let start = slot.memory.arena.ptr.as_ptr() as usize;
        // From the arena's second byte: its first allocation is always the runtime's copy of
        // the request head (`RawRequest::copy_in`), which no handler is given the start of,
        // and the arena's base address is what the runtime's own bookkeeping holds, in the
        // slot table and in stale startup copies of it in freed heap chunks.
        let used = Range { start: start + 1, end: start + slot.arena.peak_bytes() };
        let findings = escape::scan(scope, &self.tls, used);
        if findings.count == 0 {
            return false;
        }
        let request = self.slots[slot_index].request.take();
        // SAFETY: the request's memory is the slot's arena, not wiped (and now never will be).
        let named = request.map(|raw| unsafe { raw.to_request() });
        let names = named.as_ref().map(|request| (request.method().as_str(), request.path()));
        for hit in findings.hits() {
            escape::report(hit, slot_index, names);
        }
        let stats = self.stats();
        // Relaxed (both): statistics.
        stats.escapes.fetch_add(findings.count, Ordering::Relaxed);
        stats.slots_retired.fetch_add(1, Ordering::Relaxed);
        let retired = self.slots.retire(slot_index);
        if retired == self.slots.len() {
            let cause = "every slot is retired (each held memory a static, thread-local or heap \
                         value still points to: see the `cella: escape:` lines)";
            self.escalate(cause, request, "last request");
        }
        true
    }
}
