//! Tables of executable text: the `[start, end)` ranges of the executable `PT_LOAD` segments of
//! chosen loaded objects, collected once with `dl_iterate_phdr(3)` and then looked up without a
//! lock, an allocation or a system call (from a signal handler or an allocator's entry).
//!
//! Two tables use it: the C allocator's (`cmalloc/libc_own.rs`: the text of libc, the loader and
//! libc's helpers, to recognise libc's own allocations by their caller) and the preemption
//! timer's (`cella`'s `sys/preempt.rs`: the program's own text, to tell the handler's code from
//! libc's or the vDSO's). It owns the walk and the table; which objects are recorded is the
//! caller's [`Pick`].

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What [`TextRanges::record`] does with one loaded object, in `dl_iterate_phdr` order (the
/// program first, with an empty name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Record its executable segments and go on to the next object.
    Record,
    /// Record its executable segments and stop.
    RecordAndStop,
    /// Leave it and go on.
    Skip,
    /// Leave it and stop.
    Stop,
}

/// Up to `N` executable ranges, recorded once before the threads that look them up start (or
/// read by them only after the Release store of the count, which [`contains`] Acquires).
///
/// [`contains`]: TextRanges::contains
pub struct TextRanges<const N: usize> {
    /// `[start, end)` of each recorded segment; only the first `count` are meaningful.
    ranges: [(AtomicUsize, AtomicUsize); N],
    /// Entries of `ranges` in use.
    count: AtomicUsize,
}

impl<const N: usize> Default for TextRanges<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TextRanges<N> {
    pub const fn new() -> Self {
        TextRanges {
            ranges: [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; N],
            count: AtomicUsize::new(0),
        }
    }

    /// Records the executable segments of the loaded objects `pick` chooses by their path (empty
    /// for the program), until it says stop or the table is full (the rest are not recorded).
    /// Does nothing when the table already holds some: one thread records, once, at startup.
    pub fn record(&self, pick: fn(&[u8]) -> Pick) {
        // Acquire: pairs with the Release store in `record_object`.
        if self.count.load(Ordering::Acquire) != 0 {
            return;
        }
        let mut walk = Walk { table: self, pick };
        // SAFETY: dl_iterate_phdr(3) with a callback whose `data` is `walk`, which outlives the
        // call; the callback only reads what it is given and does not unwind.
        unsafe {
            libc::dl_iterate_phdr(Some(record_object::<N>), (&mut walk as *mut Walk<N>).cast())
        };
    }

    /// Whether `address` lies in a recorded range. Async-signal-safe: atomic loads only.
    #[inline]
    pub fn contains(&self, address: usize) -> bool {
        // Acquire: pairs with the Release store in `record_object`.
        let count = self.count.load(Ordering::Acquire);
        self.ranges[..count].iter().any(|(start, end)| {
            address >= start.load(Ordering::Relaxed) && address < end.load(Ordering::Relaxed)
        })
    }

    /// How many ranges were recorded.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `[start, end)`; false when the table is full.
    fn push(&self, start: usize, end: usize) -> bool {
        // Relaxed: only the recording thread writes `count` (see `record`).
        let index = self.count.load(Ordering::Relaxed);
        if index == N {
            return false;
        }
        self.ranges[index].0.store(start, Ordering::Relaxed);
        self.ranges[index].1.store(end, Ordering::Relaxed);
        // Release: publishes the range to the Acquire loads of `count` in `contains`.
        self.count.store(index + 1, Ordering::Release);
        true
    }
}

/// What `record` passes to its callback through `dl_iterate_phdr`'s `data`.
struct Walk<'a, const N: usize> {
    table: &'a TextRanges<N>,
    pick: fn(&[u8]) -> Pick,
}

/// `dl_iterate_phdr`'s callback: records the object's executable segments if `pick` says so;
/// returns non-zero to stop the walk.
unsafe extern "C" fn record_object<const N: usize>(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `Walk` that `record` passed, alive for the whole walk; it is only
    // read.
    let walk = unsafe { &*data.cast::<Walk<'_, N>>() };
    // SAFETY: dl_iterate_phdr(3) passes a valid `dl_phdr_info` for the callback's duration.
    let info = unsafe { &*info };
    let name: &[u8] = if info.dlpi_name.is_null() {
        b""
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string (dl_iterate_phdr(3)).
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    let pick = (walk.pick)(name);
    let stop = matches!(pick, Pick::RecordAndStop | Pick::Stop);
    if matches!(pick, Pick::Skip | Pick::Stop) || info.dlpi_phdr.is_null() {
        return c_int::from(stop);
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers (dl_iterate_phdr(3)).
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    for header in headers {
        if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_X == 0 {
            continue;
        }
        let start = info.dlpi_addr as usize + header.p_vaddr as usize;
        if !walk.table.push(start, start + header.p_memsz as usize) {
            return 1; // Full: nothing more can be recorded.
        }
    }
    c_int::from(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program only: the first object, which has an empty name.
    fn program(name: &[u8]) -> Pick {
        if name.is_empty() {
            Pick::RecordAndStop
        } else {
            Pick::Stop
        }
    }

    fn libc_only(name: &[u8]) -> Pick {
        let file = name.rsplit(|&byte| byte == b'/').next().unwrap_or(name);
        if file.starts_with(b"libc.so") {
            Pick::Record
        } else {
            Pick::Skip
        }
    }

    #[test]
    fn the_programs_text_holds_its_functions_and_not_libcs() {
        let table = TextRanges::<8>::new();
        table.record(program);
        assert!(!table.is_empty());
        assert!(table.contains(program as *const () as usize));
        assert!(!table.contains(libc::strlen as *const () as usize));
        assert!(!table.contains(&table as *const _ as usize), "a stack address is not text");
    }

    #[test]
    fn libcs_text_holds_libc_functions_and_not_the_programs() {
        let table = TextRanges::<16>::new();
        table.record(libc_only);
        assert!(table.contains(libc::strlen as *const () as usize));
        assert!(!table.contains(libc_only as *const () as usize));
    }

    #[test]
    fn a_full_table_keeps_what_fits_and_a_second_record_changes_nothing() {
        let every = |_: &[u8]| Pick::Record;
        let table = TextRanges::<1>::new();
        table.record(every);
        assert_eq!(table.len(), 1, "more segments than room: the first is kept");
        let first = table.ranges[0].0.load(Ordering::Relaxed);
        table.record(libc_only);
        assert_eq!((table.len(), table.ranges[0].0.load(Ordering::Relaxed)), (1, first));
    }

    #[test]
    fn skip_and_stop_record_nothing() {
        for pick in [|_: &[u8]| Pick::Skip, |_: &[u8]| Pick::Stop] {
            let table = TextRanges::<16>::new();
            table.record(pick);
            assert!(table.is_empty());
        }
    }
}
