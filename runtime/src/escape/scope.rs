//! What the escape check scans, found once before the seal and kept in fixed storage.
//!
//! - **Statics**: every loaded object's writable `PT_LOAD` segments (`.data`, `.bss`), from
//!   `dl_iterate_phdr(3)`, less its `PT_GNU_RELRO` part (`.got`, `.data.rel.ro`: the loader
//!   makes it read-only once relocated, so nothing can be stored there later; in a Rust
//!   binary it is most of the writable segment) and less the region.
//! - **Thread-locals** ([`ThreadScope`]): the calling worker's TLS block of every object that
//!   has a `PT_TLS` segment: `dlpi_tls_data` is this thread's copy of the object's TLS
//!   (glibc fills it in for every module whose block is allocated on this thread: the static
//!   TLS of the executable and the libraries loaded with it, which sits below the thread
//!   pointer, and a `dlopen`ed plugin's once `prepare_thread` touched it), and the segment's
//!   `p_memsz` is its size. A module whose block this thread has not allocated yet has none.
//! - **Heap** (`full` only): the anonymous writable mappings of `/proc/self/maps` at the seal
//!   (`[heap]`, glibc's per-thread malloc arenas, large blocks glibc mapped on their own), less
//!   thread stacks (the main thread's `[stack]`, and each mapping that holds a worker's stack
//!   marker), the region, the statics above (an object's `.bss` tail is anonymous too), and
//!   the runtime's own tables (`exclude`: slots, connections), whose words point into arenas
//!   on purpose. After the seal nothing maps or unmaps memory (the no-allocation check proves
//!   it with strace), so every range stays readable, with two conditions for `full`: glibc
//!   does not trim its heaps (`M_TRIM_THRESHOLD` is raised here), and no block glibc mapped on
//!   its own (128KiB and up) that was allocated before the seal is freed while workers serve:
//!   true of cella's binaries, whose main thread seals right after start; an embedding program
//!   whose main thread frees such a block meanwhile must not use `full`.

use std::ffi::{c_int, c_void};
use std::io;
use std::sync::atomic::Ordering;

use super::{EscapeCheck, Range};

/// Most TLS blocks kept per worker (one per loaded object with a `PT_TLS` segment).
pub(crate) const TLS_BLOCKS_MAX: usize = 32;

/// The process-wide part of what is scanned.
pub(crate) struct Scope {
    level: EscapeCheck,
    statics: Box<[Range]>,
    heap: Box<[Range]>,
    /// Addresses in `heap` that held a word pointing into the region when the scope was built
    /// (sorted): no request had run, so each is startup junk (see [`junk_in`]), never an
    /// escape; the scan does not report them.
    junk: Box<[usize]>,
}

impl Scope {
    /// A scope that scans nothing.
    pub(crate) fn off() -> Scope {
        Scope {
            level: EscapeCheck::Off,
            statics: Box::new([]),
            heap: Box::new([]),
            junk: Box::new([]),
        }
    }

    /// Finds what `level` scans. Called before the seal, once every worker is set up (so the
    /// heap is as it will stay): `exclude` are the region and the runtime's tables,
    /// `stack_markers` an address on each worker's stack.
    pub(crate) fn build(
        level: EscapeCheck,
        exclude: &[Range],
        stack_markers: &[usize],
    ) -> io::Result<Scope> {
        if level == EscapeCheck::Off {
            return Ok(Scope::off());
        }
        let (mut statics, mut read_only) = (Vec::new(), Vec::new());
        for_each_segment(&mut |info, header| {
            let start = info.dlpi_addr as usize + header.p_vaddr as usize;
            let range = Range { start, end: start + header.p_memsz as usize };
            if header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_W != 0 {
                statics.push(range);
            } else if header.p_type == libc::PT_GNU_RELRO {
                // Made read-only once relocated (before `main`): nothing is stored there later.
                read_only.push(range);
            }
        });
        let statics = subtract_all(subtract_all(statics, &read_only), exclude);
        let heap = if level == EscapeCheck::Full {
            // glibc gives the top of a heap back to the kernel when a free leaves more than
            // this free there (sbrk or a protection change): then a range read below would be
            // gone. The main thread may still free after this point (an embedding program's
            // main does what it likes); a block glibc mapped alone and freed later is unmapped
            // whatever this says (docs/architecture.md: what `full` assumes).
            // SAFETY: mallopt(3) takes any value; it only changes a threshold of glibc's.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) };
            let maps = std::fs::read("/proc/self/maps")?;
            let anonymous = anonymous_writable_mappings(&maps, stack_markers);
            subtract_all(subtract_all(anonymous, &statics), exclude)
        } else {
            Vec::new()
        };
        Ok(Scope { level, statics: statics.into(), heap: heap.into(), junk: Box::new([]) })
    }

    /// [`Scope::build`] for a server, between its workers' two meetings at the start barrier,
    /// given to them in `shared.escape` (they wait for it before they seal): leaves out
    /// `region`, the runtime's `tables` (slots, connections: `(start, end)`) and the workers'
    /// stacks (`shared.stack_markers`). On failure the workers get a scope that scans nothing,
    /// and the caller refuses to start.
    pub(crate) fn give(
        level: EscapeCheck,
        region: &cella_arena::Region,
        tables: [(usize, usize); 2],
        shared: &crate::worker::Shared,
    ) -> io::Result<()> {
        let region = region.as_span();
        let mut exclude = vec![Range { start: region.ptr.as_ptr() as usize, end: region.end() }];
        exclude.extend(tables.map(|(start, end)| Range { start, end }));
        // Relaxed: each worker stored its marker before the barrier the caller passed.
        let markers: Vec<usize> =
            shared.stack_markers.iter().map(|marker| marker.load(Ordering::Relaxed)).collect();
        let (scope, result) = match Scope::build(level, &exclude, &markers) {
            Ok(mut scope) => {
                scope.junk = junk_in(&scope.heap, exclude[0]).into();
                (scope, Ok(()))
            }
            Err(error) => (Scope::off(), Err(error)),
        };
        let _ = shared.escape.set(scope);
        result
    }

    pub(crate) fn level(&self) -> EscapeCheck {
        self.level
    }

    pub(crate) fn statics(&self) -> &[Range] {
        &self.statics
    }

    pub(crate) fn heap(&self) -> &[Range] {
        &self.heap
    }

    pub(crate) fn junk(&self) -> &[usize] {
        &self.junk
    }

    /// Bytes scanned per release (without the thread-locals and the state heap).
    pub(crate) fn bytes(&self) -> usize {
        let len = |ranges: &[Range]| ranges.iter().map(|r| r.end - r.start).sum::<usize>();
        len(&self.statics) + len(&self.heap)
    }
}

/// One worker's TLS blocks, found on that worker's thread before the seal.
pub(crate) struct ThreadScope {
    blocks: [Range; TLS_BLOCKS_MAX],
    len: usize,
}

impl ThreadScope {
    /// The calling thread's TLS blocks (see the module comment).
    pub(crate) fn of_current_thread() -> ThreadScope {
        let mut scope =
            ThreadScope { blocks: [Range { start: 0, end: 0 }; TLS_BLOCKS_MAX], len: 0 };
        for_each_segment(&mut |info, header| {
            let data = info.dlpi_tls_data as usize;
            if header.p_type == libc::PT_TLS && data != 0 && scope.len < TLS_BLOCKS_MAX {
                scope.blocks[scope.len] =
                    Range { start: data, end: data + header.p_memsz as usize };
                scope.len += 1;
            }
        });
        scope
    }

    pub(crate) fn blocks(&self) -> &[Range] {
        &self.blocks[..self.len]
    }
}

type Visit<'a> = &'a mut dyn FnMut(&libc::dl_phdr_info, &libc::Elf64_Phdr);

/// Calls `visit` with every program header of every loaded object.
fn for_each_segment(visit: Visit<'_>) {
    /// # Safety
    /// Called by `dl_iterate_phdr` only, with `data` the `&mut Visit` given to it below.
    unsafe extern "C" fn each_object(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `&mut Visit` passed below, alive for the whole iteration;
        // `info` and its `dlpi_phnum` headers are valid during this call (dl_iterate_phdr(3)).
        unsafe {
            let visit = &mut *data.cast::<Visit<'_>>();
            let info = &*info;
            for index in 0..usize::from(info.dlpi_phnum) {
                visit(info, &*info.dlpi_phdr.add(index));
            }
        }
        0
    }
    let mut visit = visit;
    // SAFETY: the callback only reads what the loader passes and calls `visit`, which does not
    // unwind (it pushes to a Vec or writes a fixed array; an allocation failure aborts).
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut visit as *mut Visit<'_>).cast()) };
}

/// The anonymous writable mappings of a `/proc/self/maps` text, less thread stacks: `[stack]`
/// and those holding one of `stack_markers`.
fn anonymous_writable_mappings(maps: &[u8], stack_markers: &[usize]) -> Vec<Range> {
    let mut ranges = Vec::new();
    for line in maps.split(|&byte| byte == b'\n') {
        let line = String::from_utf8_lossy(line);
        let mut fields = line.split_whitespace();
        let (Some(span), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let inode = fields.nth(2).unwrap_or("");
        let path = fields.collect::<Vec<_>>().join(" ");
        let named_anonymous = path.starts_with("[anon:") && !path.contains("stack");
        let anonymous = path.is_empty() || path == "[heap]" || named_anonymous;
        if !perms.starts_with("rw") || inode != "0" || !anonymous {
            continue;
        }
        let Some((start, end)) = span.split_once('-') else { continue };
        let (Ok(start), Ok(end)) =
            (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        else {
            continue;
        };
        let range = Range { start, end };
        if !stack_markers.iter().any(|&marker| range.contains(marker)) {
            ranges.push(range);
        }
    }
    ranges
}

/// The addresses of the words of `ranges` that point into `region`, sorted. Read before any
/// request ran, such a word is no escape but junk the heap kept from startup: a freed block
/// that held one of the runtime's region addresses (a span, a slot table moved elsewhere),
/// later partly overwritten (a string reusing the block keeps the pointer's high bytes), or
/// the free-list link glibc writes into a freed block, mangled (`PROTECT_PTR`: the link XOR
/// its own address shifted, which can fall anywhere near the region). Measured: 2 runs in 40
/// of tests/state.rs's 100 big PUTs reported such a word at `full` before this list.
fn junk_in(ranges: &[Range], region: Range) -> Vec<usize> {
    let mut junk = Vec::new();
    for range in ranges {
        let mut at = range.start.next_multiple_of(super::WORD);
        while range.end.saturating_sub(at) >= super::WORD {
            // SAFETY: as in `super::scan_range`: an aligned word of a readable range.
            let value = unsafe { std::ptr::read_volatile(at as *const usize) };
            if region.contains(value) || value == region.end {
                junk.push(at);
            }
            at += super::WORD;
        }
    }
    junk.sort_unstable();
    junk
}

/// `ranges` less every range of `holes`.
fn subtract_all(mut ranges: Vec<Range>, holes: &[Range]) -> Vec<Range> {
    for hole in holes {
        ranges = ranges
            .into_iter()
            .flat_map(|range| {
                let below = Range { start: range.start, end: range.end.min(hole.start) };
                let above = Range { start: range.start.max(hole.end), end: range.end };
                [below, above].into_iter().filter(|part| part.start < part.end)
            })
            .collect();
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_cut_out_of_ranges() {
        let ranges = vec![Range { start: 0, end: 100 }, Range { start: 200, end: 300 }];
        let holes = [Range { start: 10, end: 20 }, Range { start: 250, end: 400 }];
        let expected = [(0, 10), (20, 100), (200, 250)].map(|(start, end)| Range { start, end });
        assert_eq!(subtract_all(ranges, &holes), expected);
    }

    #[test]
    fn only_anonymous_writable_mappings_that_are_no_stack_are_kept() {
        let maps = b"55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0          [heap]\n\
            7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n\
            7f1000000000-7f1000800000 rw-p 00000000 00:00 0 \n\
            7f2000000000-7f2000001000 ---p 00000000 00:00 0 \n\
            7f3000000000-7f3000002000 rw-p 00001000 08:01 1234       /usr/lib/libc.so.6\n\
            7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0          [stack]\n\
            7f4000000000-7f4000001000 rw-p 00000000 00:00 0          [anon: glibc: malloc arena]\n";
        let marker = 0x7f1000000100; // on a worker's stack
        let found = anonymous_writable_mappings(maps, &[marker]);
        let expected = [
            (0x55d0c0000000, 0x55d0c0021000),
            (0x7f0000000000, 0x7f0000021000),
            (0x7f4000000000, 0x7f4000001000),
        ];
        assert_eq!(found, expected.map(|(start, end)| Range { start, end }));
    }

    #[test]
    fn this_threads_tls_blocks_hold_its_thread_locals() {
        thread_local! {
            static LOCAL: std::cell::Cell<usize> = const { std::cell::Cell::new(7) };
        }
        let address = LOCAL.with(|local| local as *const _ as usize);
        let scope = ThreadScope::of_current_thread();
        assert!(scope.blocks().iter().any(|block| block.contains(address)), "{address:#x}");
    }

    #[test]
    fn the_statics_hold_a_static_and_the_full_scope_holds_a_startup_box() {
        static MARK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let boxed = Box::new([3u64; 64]);
        let scope = Scope::build(EscapeCheck::Full, &[], &[&boxed as *const _ as usize]);
        let scope = scope.expect("/proc/self/maps is readable");
        let mark = &MARK as *const _ as usize;
        assert!(scope.statics().iter().any(|range| range.contains(mark)));
        let heap_address = boxed.as_ptr() as usize;
        assert!(scope.heap().iter().any(|range| range.contains(heap_address)));
        assert!(!scope.heap().iter().any(|range| range.contains(mark)), "no range twice");
    }
}
