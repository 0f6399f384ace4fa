//! The escape check (`escape_check`): when a slot is released, look for words that point into
//! the part of its arena the request used, in memory that outlives the request. Such a word is
//! a pointer the request left behind (a lazily initialised static, a thread-local filled in a
//! handler, a `std` collection built at startup and grown in a handler): after the wipe it
//! would read zeros, or another request's bytes.
//!
//! What is scanned is fixed at the seal ([`Scope`], built by `scope.rs` once every worker is
//! set up): with `statics`, every loaded object's writable `PT_LOAD` segments and the
//! releasing worker's own TLS blocks ([`ThreadScope`]); with `full`, also the system heap as it
//! was at the seal (the anonymous writable mappings of `/proc/self/maps`, less the region,
//! thread stacks and the runtime's own tables) and the used extent of the state heap, whose
//! freed bytes are zero (`cella_arena::state`). A hit is reported by `report.rs`, and the
//! worker retires the slot (`worker/escapes.rs`).
//!
//! The scan is conservative: any aligned word whose value lies in `[arena start, peak)` is a
//! hit, whatever its type (a pointer stored unaligned, or disguised, is missed; an integer that
//! happens to equal such an address is a false positive, at 2^-64-ish odds per word). It
//! allocates nothing and takes no lock: the words are read with volatile loads, since other
//! workers may write them meanwhile (a value read while it changes is still one of the two
//! values, on x86_64, for an aligned word; and only compared, never dereferenced).

mod report;
mod scope;

use std::ptr;

pub(crate) use cella_shared::config::EscapeCheck;
pub(crate) use report::report;
pub(crate) use scope::{Scope, ThreadScope};

/// Bytes in a word: only aligned words are read.
const WORD: usize = std::mem::size_of::<usize>();
/// Words read per step of the scan before one test of whether any of them was a hit.
const WORDS_PER_STEP: usize = 8;
/// Hits kept (and reported) per release; more are only counted.
pub(crate) const HITS_KEPT_MAX: usize = 4;

/// The address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: usize,
    pub end: usize,
}

impl Range {
    pub(crate) fn contains(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }
}

/// The kind of memory a hit was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A loaded object's writable data (named through `dladdr`).
    Static,
    /// The releasing worker's TLS.
    ThreadLocal,
    /// The system heap, as it was at the seal.
    Heap,
    /// The state heap.
    StateHeap,
}

/// A word that points into the arena: where it is, and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub place: Place,
    pub at: usize,
    pub value: usize,
}

/// What one scan found: the first [`HITS_KEPT_MAX`] hits, and how many there were.
pub(crate) struct Findings {
    hits: [Hit; HITS_KEPT_MAX],
    kept: usize,
    pub count: u64,
}

impl Findings {
    fn new() -> Findings {
        let none = Hit { place: Place::Static, at: 0, value: 0 };
        Findings { hits: [none; HITS_KEPT_MAX], kept: 0, count: 0 }
    }

    fn add(&mut self, hit: Hit) {
        if self.kept < HITS_KEPT_MAX {
            self.hits[self.kept] = hit;
            self.kept += 1;
        }
        self.count += 1;
    }

    pub(crate) fn hits(&self) -> &[Hit] {
        &self.hits[..self.kept]
    }
}

/// Scans what `scope` and `thread` name for words pointing into `used` (the used part of the
/// arena of the slot being released).
pub(crate) fn scan(scope: &Scope, thread: &ThreadScope, used: Range) -> Findings {
    let mut findings = Findings::new();
    if used.start >= used.end || scope.level() == EscapeCheck::Off {
        return findings;
    }
    for &range in scope.statics() {
        scan_range(range, used, Place::Static, &[], &mut findings);
    }
    for &range in thread.blocks() {
        scan_range(range, used, Place::ThreadLocal, &[], &mut findings);
    }
    if scope.level() == EscapeCheck::Full {
        for &range in scope.heap() {
            scan_range(range, used, Place::Heap, scope.junk(), &mut findings);
        }
        if let Some((start, end)) = cella_arena::state::scan_extent() {
            scan_range(Range { start, end }, used, Place::StateHeap, &[], &mut findings);
        }
    }
    findings
}

/// Reads every aligned word of `range`, [`WORDS_PER_STEP`] at a time, and adds those pointing
/// into `used` to `findings`, but for the addresses in `junk` (sorted).
fn scan_range(range: Range, used: Range, place: Place, junk: &[usize], findings: &mut Findings) {
    let len = used.end - used.start;
    let points_in = |value: usize| value.wrapping_sub(used.start) < len;
    let read = |at: usize| {
        // SAFETY: `at` is an aligned word inside `range`, and every range of a scope is mapped
        // and readable for the process's life after the seal (`scope.rs` builds them from
        // loaded objects, this thread's TLS, the mappings at the seal, and the region's state
        // heap; nothing is unmapped after the seal). Volatile: other threads may write it.
        unsafe { ptr::read_volatile(at as *const usize) }
    };
    let mut at = range.start.next_multiple_of(WORD);
    let step = WORD * WORDS_PER_STEP;
    while range.end.saturating_sub(at) >= step {
        let mut any = false;
        for word in 0..WORDS_PER_STEP {
            any |= points_in(read(at + word * WORD));
        }
        if any {
            for word in 0..WORDS_PER_STEP {
                let value = read(at + word * WORD);
                let word_at = at + word * WORD;
                if points_in(value) && junk.binary_search(&word_at).is_err() {
                    findings.add(Hit { place, at: word_at, value });
                }
            }
        }
        at += step;
    }
    while range.end.saturating_sub(at) >= WORD {
        let value = read(at);
        if points_in(value) && junk.binary_search(&at).is_err() {
            findings.add(Hit { place, at, value });
        }
        at += WORD;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aligned_word_into_the_used_part_is_found_and_nothing_else() {
        let arena = [0u8; 256];
        let used = Range { start: arena.as_ptr() as usize, end: arena.as_ptr() as usize + 100 };
        let mut words = [0usize; 37];
        words[0] = used.start; // first byte: a hit
        words[9] = used.start + 99; // last used byte: a hit
        words[17] = used.end; // one past the used part: not a hit
        words[36] = used.start + 50; // in the tail after the unrolled steps: a hit
        words[20] = used.start - 1;
        let range = Range { start: words.as_ptr() as usize, end: words.as_ptr() as usize + 37 * 8 };
        let mut findings = Findings::new();
        scan_range(range, used, Place::Heap, &[], &mut findings);
        let found: Vec<usize> = findings.hits().iter().map(|hit| hit.value).collect();
        assert_eq!(found, vec![used.start, used.start + 99, used.start + 50]);
        assert_eq!(findings.hits()[0].at, words.as_ptr() as usize);
        assert_eq!(findings.count, 3);
    }

    #[test]
    fn hits_past_the_kept_ones_are_counted() {
        let arena = [0u8; 64];
        let used = Range { start: arena.as_ptr() as usize, end: arena.as_ptr() as usize + 64 };
        let words = [used.start + 8; 10];
        let range = Range { start: words.as_ptr() as usize, end: words.as_ptr() as usize + 80 };
        let mut findings = Findings::new();
        scan_range(range, used, Place::Static, &[], &mut findings);
        assert_eq!((findings.hits().len(), findings.count), (HITS_KEPT_MAX, 10));
        let mut findings = Findings::new();
        let junk = [words.as_ptr() as usize + 8, words.as_ptr() as usize + 72];
        scan_range(range, used, Place::Heap, &junk, &mut findings);
        assert_eq!(findings.count, 8, "the words at junk addresses are not reported");
    }
}
