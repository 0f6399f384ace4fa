//! The region: one anonymous mapping made at startup, carved into spans, never remapped.

use std::fmt;
use std::io;
use std::ptr::NonNull;

use cella_shared::plan::MemoryPlan;
use memmap2::{MmapMut, MmapOptions};

use crate::arena::Arena;
use crate::route;
use crate::state;
use crate::sys::{self, Protection};

/// A span of the region: a pointer and a length. It is plain data; whoever holds it may only
/// use it while the region is alive (the runtime joins its workers before dropping the region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

// SAFETY: a Span is an address range, not an owner; the region it points into is shared
// between threads only by handing each span to exactly one worker, which alone touches it.
unsafe impl Send for Span {}

impl Span {
    pub fn new(ptr: *mut u8, len: usize) -> Span {
        Span { ptr: NonNull::new(ptr).expect("a span is never null"), len }
    }

    pub fn end(&self) -> usize {
        self.ptr.as_ptr() as usize + self.len
    }

    pub fn contains(&self, address: usize) -> bool {
        (self.ptr.as_ptr() as usize..self.end()).contains(&address)
    }

    /// Makes the span inaccessible, or accessible again. The span must be whole pages of the
    /// region (every span `Region::carve` makes is).
    pub fn protect(&self, readable_writable: bool) -> io::Result<()> {
        let protection = if readable_writable { Protection::ReadWrite } else { Protection::None };
        sys::protect(self.ptr.as_ptr(), self.len, protection)
    }
}

/// One slot: `[guard page | stack | arena]`, in address order, so that a stack (which grows
/// down) that overflows hits the guard page, never another slot.
#[derive(Clone, Copy, Debug)]
pub struct SlotMemory {
    pub guard: Span,
    pub stack: Span,
    pub arena: Span,
}

/// One I/O buffer pair, lent to a connection while it reads a request or writes a response.
pub struct ConnectionMemory {
    pub read: Buffer,
    pub write: Buffer,
}

/// Everything one worker owns in the region: each span has exactly one owner.
pub struct WorkerMemory {
    pub signal_stack: Span,
    pub panic_reserve: Arena,
    /// The worker's access log buffer (empty when the access log is off): its lines, written
    /// by the worker and read by the runtime's log writer thread.
    pub access_log: Span,
    /// Each slot's spans, and the arena over its arena span.
    pub slots: Vec<(SlotMemory, Arena)>,
    pub connections: Vec<ConnectionMemory>,
}

/// Where everything lies: plain spans, before they are handed to their owners.
#[derive(Debug)]
struct WorkerLayout {
    signal_stack: Span,
    panic_reserve: Span,
    access_log: Span,
    slots: Vec<SlotMemory>,
    connections: Vec<(Span, Span)>,
}

/// How the region is brought into memory at startup.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionOptions {
    /// Fault in every page at startup (`MADV_POPULATE_WRITE`), so the resident size is fixed at
    /// once; a failure to do so refuses startup.
    pub prefault: bool,
    /// mlock the whole region.
    pub mlock: bool,
    /// Start with every slot arena inaccessible (quarantine test mode).
    pub quarantine: bool,
}

/// Why the region could not be set up. The process refuses to start with this message.
#[derive(Debug)]
pub struct RegionError {
    pub step: &'static str,
    pub bytes: u64,
    pub source: io::Error,
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} the {}-byte region: {}", self.step, self.bytes, self.source)?;
        if self.step == "mlock" {
            write!(f, " (raise RLIMIT_MEMLOCK with `ulimit -l`, or set mlock = false)")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegionError {}

/// The one mapping. Dropping it unmaps everything: the owner drops it only after every worker
/// that holds spans of it has been joined.
pub struct Region {
    map: MmapMut,
    plan: MemoryPlan,
    registry_index: usize,
    /// The state heap installed over the region's last `state_heap_size` bytes.
    state_heap_index: Option<usize>,
    carved: bool,
}

impl Region {
    /// Maps the region for `plan`, protects its guard pages, and optionally populates and
    /// locks it.
    pub fn map(plan: &MemoryPlan, options: RegionOptions) -> Result<Region, RegionError> {
        let bytes = plan.total_bytes;
        let fail = |step, source| RegionError { step, bytes, source };
        let len =
            usize::try_from(bytes).map_err(|_| fail("map", io::ErrorKind::InvalidInput.into()))?;
        let mut map = MmapOptions::new().len(len).map_anon().map_err(|e| fail("map", e))?;
        if options.prefault {
            sys::populate(map.as_mut_ptr(), len).map_err(|e| fail("prefault", e))?;
        }
        if options.mlock {
            sys::lock(map.as_ptr().cast_mut(), len).map_err(|e| fail("mlock", e))?;
        }
        let registry_index = route::register_region(map.as_ptr() as usize, len)
            .ok_or_else(|| fail("register", io::Error::other("too many regions in one process")))?;
        let mut region =
            Region { map, plan: *plan, registry_index, state_heap_index: None, carved: false };
        for worker in region.layout() {
            for slot in &worker.slots {
                slot.guard.protect(false).map_err(|e| fail("protect the guard pages of", e))?;
                if options.quarantine {
                    slot.arena.protect(false).map_err(|e| fail("quarantine", e))?;
                }
            }
        }
        if plan.state_heap_size > 0 {
            // SAFETY: the span is the region's last `state_heap_size` bytes, which `layout`
            // never hands to another owner; `Drop` uninstalls the heap before the unmap.
            let index = unsafe { state::install(region.state_heap_span()) };
            let too_many = || io::Error::other("too many state heaps in one process");
            region.state_heap_index =
                Some(index.ok_or_else(|| fail("set up the state heap of", too_many()))?);
        }
        Ok(region)
    }

    /// The state heap's span: the region's last `state_heap_size` bytes (see
    /// [`crate::state`]).
    pub fn state_heap_span(&self) -> Span {
        let len = usize::try_from(self.plan.state_heap_size).expect("the plan fits in memory");
        let end = self.map.as_ptr() as usize + self.map.len();
        Span::new((end - len) as *mut u8, len)
    }

    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    pub fn as_span(&self) -> Span {
        Span::new(self.map.as_ptr().cast_mut(), self.map.len())
    }

    /// Hands the region out, worker by worker, each span to exactly one owner (an `Arena`, a
    /// `Buffer`, or a plain `Span` for stacks).
    ///
    /// # Panics
    /// When called a second time: a span must never have two owners.
    pub fn carve(&mut self) -> Vec<WorkerMemory> {
        assert!(!self.carved, "a region is carved once: each span has exactly one owner");
        self.carved = true;
        self.layout()
            .into_iter()
            .map(|worker| WorkerMemory {
                signal_stack: worker.signal_stack,
                // SAFETY (all three): `carved` guarantees these spans are handed out once, they
                // are valid, writable pages of the mapping, and the region outlives its workers.
                panic_reserve: unsafe { Arena::new(worker.panic_reserve) },
                access_log: worker.access_log,
                slots: worker
                    .slots
                    .into_iter()
                    .map(|slot| (slot, unsafe { Arena::new(slot.arena) }))
                    .collect(),
                connections: worker
                    .connections
                    .into_iter()
                    .map(|(read, write)| unsafe {
                        ConnectionMemory { read: Buffer::new(read), write: Buffer::new(write) }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Splits the region into the spans of each worker, following the layout in
    /// `cella_shared::plan`. Pure arithmetic: calling it twice gives the same spans.
    fn layout(&self) -> Vec<WorkerLayout> {
        let plan = &self.plan;
        let mut cursor = Carver {
            next: self.map.as_ptr() as usize,
            end: self.state_heap_span().ptr.as_ptr() as usize,
        };
        let mut workers: Vec<WorkerLayout> = (0..plan.workers)
            .map(|_| WorkerLayout {
                signal_stack: cursor.take(plan.signal_stack_size),
                panic_reserve: cursor.take(plan.panic_reserve_size),
                access_log: cursor.take(plan.access_log_buffer_size),
                slots: Vec::new(),
                connections: Vec::new(),
            })
            .collect();
        for (index, worker) in workers.iter_mut().enumerate() {
            let count = MemoryPlan::share(plan.slots, plan.workers, index);
            worker.slots = (0..count)
                .map(|_| SlotMemory {
                    guard: cursor.take(plan.guard_size),
                    stack: cursor.take(plan.slot_stack_size),
                    arena: cursor.take(plan.slot_arena_size),
                })
                .collect();
        }
        for (index, worker) in workers.iter_mut().enumerate() {
            let count = MemoryPlan::share(plan.io_buffers, plan.workers, index);
            worker.connections = (0..count)
                .map(|_| (cursor.take(plan.read_buffer_size), cursor.take(plan.write_buffer_size)))
                .collect();
        }
        assert_eq!(cursor.next, cursor.end, "the plan's total matches its parts");
        workers
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(index) = self.state_heap_index.take() {
            state::uninstall(index);
        }
        route::unregister_region(self.registry_index);
    }
}

struct Carver {
    next: usize,
    end: usize,
}

impl Carver {
    fn take(&mut self, bytes: u64) -> Span {
        let len = usize::try_from(bytes).expect("the plan fits in the address space");
        // Checked: a plan whose parts do not add up to its total is a programmer error (plans
        // come from `MemoryPlan::new`, which checks every sum), never a wrapped address.
        let next = self.next.checked_add(len).filter(|&next| next <= self.end);
        let next = next.expect("the plan's total covers every span");
        let span = Span::new(self.next as *mut u8, len);
        self.next = next;
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cella_shared::Config;

    fn small_plan() -> MemoryPlan {
        let mut config = Config::default();
        config.slots = 3;
        config.io_buffers = 5;
        config.access_log = cella_shared::config::AccessLogTarget::Stdout;
        config.slot_arena_size = cella_shared::config::Size(64 << 10);
        config.request_body_size_max = cella_shared::config::Size(16 << 10);
        config.validate(sys::page_size() as u64).unwrap();
        MemoryPlan::new(&config, 2, sys::page_size() as u64).expect("a small plan")
    }

    #[test]
    fn carving_covers_the_region_without_overlap() {
        let region =
            Region::map(&small_plan(), RegionOptions { prefault: true, ..Default::default() })
                .unwrap();
        let workers = region.layout();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers[0].slots.len() + workers[1].slots.len(), 3);
        assert_eq!(workers[0].connections.len() + workers[1].connections.len(), 5);
        let mut spans: Vec<Span> = Vec::new();
        for worker in &workers {
            spans.extend([worker.signal_stack, worker.panic_reserve, worker.access_log]);
            for slot in &worker.slots {
                assert_eq!(
                    slot.guard.end(),
                    slot.stack.ptr.as_ptr() as usize,
                    "guard sits below the stack"
                );
                assert_eq!(slot.guard.ptr.as_ptr() as usize % sys::page_size(), 0);
                spans.extend([slot.guard, slot.stack, slot.arena]);
            }
            for (read, write) in &worker.connections {
                spans.extend([*read, *write]);
            }
        }
        spans.push(region.state_heap_span());
        let total: usize = spans.iter().map(|s| s.len).sum();
        assert_eq!(total, region.as_span().len);
        spans.sort_by_key(|s| s.ptr.as_ptr() as usize);
        for pair in spans.windows(2) {
            assert!(pair[0].end() <= pair[1].ptr.as_ptr() as usize);
        }
    }

    #[test]
    fn a_failed_mapping_is_a_clear_error() {
        let mut plan = small_plan();
        plan.total_bytes = 1 << 62;
        let error = Region::map(&plan, RegionOptions::default()).err().expect("cannot map 4 EiB");
        assert!(error.to_string().contains("cannot map"), "{error}");
    }
}

/// A fixed byte buffer over a span that it alone uses (the read or write half of an I/O buffer
/// pair).
pub struct Buffer {
    span: Span,
}

impl Buffer {
    /// # Safety
    /// `span` must be valid for reads and writes while the buffer lives, and used by nothing
    /// else meanwhile (each connection span is handed to exactly one `Buffer`).
    pub unsafe fn new(span: Span) -> Buffer {
        Buffer { span }
    }

    /// A buffer of no bytes, standing in where no buffer is lent: reads into it read nothing,
    /// writes into it find no room.
    pub fn empty() -> Buffer {
        Buffer { span: Span { ptr: std::ptr::NonNull::dangling(), len: 0 } }
    }

    pub fn capacity(&self) -> usize {
        self.span.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the span is valid and exclusively ours (contract of `new`).
        unsafe { std::slice::from_raw_parts(self.span.ptr.as_ptr(), self.span.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.span.ptr.as_ptr(), self.span.len) }
    }
}

#[cfg(test)]
mod carve_tests {
    use super::*;

    #[test]
    #[should_panic(expected = "carved once")]
    fn a_region_is_carved_once() {
        let mut config = cella_shared::Config::default();
        config.slots = 1;
        config.connections_max = 1;
        let plan = MemoryPlan::new(&config, 1, crate::sys::page_size() as u64).unwrap();
        let mut region = Region::map(&plan, RegionOptions::default()).unwrap();
        let _first = region.carve();
        let _second = region.carve();
    }
}
