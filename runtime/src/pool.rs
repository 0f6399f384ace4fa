//! Capacity that belongs to the instance, not to a worker: a fixed table of entries shared by
//! every worker, and a lock-free pool of the indexes that are free. A worker that pops an index
//! owns that entry until it pushes the index back; nobody else touches it meanwhile. No lock is
//! ever taken, so a worker stalled inside a handler cannot block another's claim (ADR 0003).
//!
//! The free list is a Treiber stack of indexes whose head carries a 32-bit tag bumped on every
//! change, so a pop that read a stale `next` fails its compare-exchange instead of corrupting
//! the list (the ABA problem).
//!
//! In quarantine mode the slots' pool is first-in-first-out instead ([`IndexPool::fifo`]): a
//! released slot is claimed again last, so its arena stays inaccessible as long as possible and
//! a stale access to it faults instead of landing in the same slot's next request. Each free
//! index carries the stamp of its release, and a pop takes the oldest with a compare-exchange
//! (O(capacity) per pop: a debugging mode's price; still no lock).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// `head`'s low half: the top index plus one (0 = empty); high half: the tag.
const INDEX_MASK: u64 = 0xffff_ffff;

/// A lock-free stack of the free indexes of a table of `capacity` entries.
pub(crate) struct IndexPool {
    head: AtomicU64,
    /// Per index: the index below it plus one (0 = bottom). Only read for an index on the stack.
    next: Box<[AtomicU32]>,
    free: AtomicUsize,
    /// Indexes taken and never given back ([`Owned::retire`]).
    retired: AtomicUsize,
    /// First-in-first-out mode: per index, the stamp of its release (0: taken), and the next
    /// stamp. The stack above is then unused.
    fifo: Option<(Box<[AtomicU64]>, AtomicU64)>,
}

impl IndexPool {
    /// A pool holding every index of `0..capacity`, lowest on top.
    pub(crate) fn full(capacity: usize) -> IndexPool {
        assert!(capacity < INDEX_MASK as usize, "a pool holds fewer than 2^32 - 1 indexes");
        let next = (0..capacity).map(|index| AtomicU32::new(encode_next(index + 1, capacity)));
        IndexPool {
            head: AtomicU64::new(if capacity == 0 { 0 } else { 1 }),
            next: next.collect(),
            free: AtomicUsize::new(capacity),
            retired: AtomicUsize::new(0),
            fifo: None,
        }
    }

    /// A first-in-first-out pool holding every index of `0..capacity`, lowest first.
    pub(crate) fn fifo(capacity: usize) -> IndexPool {
        let stamps = (0..capacity).map(|index| AtomicU64::new(index as u64 + 1)).collect();
        let pool = IndexPool::full(capacity);
        IndexPool { fifo: Some((stamps, AtomicU64::new(capacity as u64 + 1))), ..pool }
    }

    /// The oldest free index of a first-in-first-out pool.
    fn pop_oldest(&self, stamps: &[AtomicU64]) -> Option<usize> {
        loop {
            // Acquire: pairs with the Release store of the push that freed each index.
            let oldest = stamps
                .iter()
                .enumerate()
                .map(|(index, stamp)| (index, stamp.load(Ordering::Acquire)))
                .filter(|&(_, stamp)| stamp != 0)
                .min_by_key(|&(_, stamp)| stamp)?;
            let (index, stamp) = oldest;
            // AcqRel: acquires the entry from its pusher; fails when another pop took it first.
            let taken =
                stamps[index].compare_exchange(stamp, 0, Ordering::AcqRel, Ordering::Relaxed);
            if taken.is_ok() {
                // Relaxed: a gauge.
                self.free.fetch_sub(1, Ordering::Relaxed);
                return Some(index);
            }
        }
    }

    /// Takes a free index, or `None` when every index is taken.
    pub(crate) fn pop(&self) -> Option<usize> {
        if let Some((stamps, _)) = &self.fifo {
            return self.pop_oldest(stamps);
        }
        // Acquire: pairs with the Release of the push that put the top index there, so its
        // `next` (and the entry's contents) are visible.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let top = (head & INDEX_MASK) as usize;
            if top == 0 {
                return None;
            }
            // Relaxed: ordered by the Acquire above; if another thread popped and pushed `top`
            // meanwhile, the tag changed and the compare-exchange below fails.
            let below = u64::from(self.next[top - 1].load(Ordering::Relaxed));
            let new = (head & !INDEX_MASK).wrapping_add(1 << 32) | below;
            // AcqRel on success: acquires the entry from the pusher; Acquire on failure: as above.
            match self.head.compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // Relaxed: a gauge for metrics and admission hints, orders nothing.
                    self.free.fetch_sub(1, Ordering::Relaxed);
                    return Some(top - 1);
                }
                Err(current) => head = current,
            }
        }
    }

    /// Gives `index` back. The caller must own it (it popped it and has not pushed it since).
    pub(crate) fn push(&self, index: usize) {
        assert!(index < self.next.len(), "index {index} is not in the pool");
        if let Some((stamps, clock)) = &self.fifo {
            // Relaxed: the stamps only need to be distinct and increasing.
            let stamp = clock.fetch_add(1, Ordering::Relaxed);
            // Release: publishes the entry to the pop that takes it (its AcqRel exchange).
            stamps[index].store(stamp, Ordering::Release);
            // SeqCst: as on the stack path below, a waiter on another worker must see this
            // count or be seen by the releaser's load of its flag (`worker/nudge.rs`).
            self.free.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Relaxed: the value is only used as the expected value of the compare-exchange.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release compare-exchange below.
            self.next[index].store((head & INDEX_MASK) as u32, Ordering::Relaxed);
            let new = (head & !INDEX_MASK).wrapping_add(1 << 32) | (index as u64 + 1);
            // Release: publishes `next` and everything the owner wrote to the entry to the
            // next pop (its Acquire).
            match self.head.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => {
                    // SeqCst: a waiter on another worker stores its flag then loads this
                    // count; the releaser loads the flags after this (`worker/nudge.rs`).
                    self.free.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Err(current) => head = current,
            }
        }
    }

    /// How many indexes are free now (a snapshot: other workers may change it at once).
    pub(crate) fn free_count(&self) -> usize {
        // SeqCst: pairs with the push's, for waiters (`worker/nudge.rs`); a plain load on x86.
        self.free.load(Ordering::SeqCst)
    }
}

/// `next` of the entry at `index - 1` in a full pool: the index after it, plus one.
fn encode_next(successor: usize, capacity: usize) -> u32 {
    if successor < capacity {
        (successor + 1) as u32
    } else {
        0
    }
}

/// A fixed table of entries shared by every worker; an entry belongs to the worker that popped
/// its index from the pool, until that worker gives it back.
pub(crate) struct SharedTable<T> {
    cells: Box<[UnsafeCell<T>]>,
    pool: IndexPool,
}

// SAFETY: an entry is only reached through `Owned`, which exists only for an index popped from
// the pool and not yet pushed back, so one thread at a time uses each entry; the pool's
// Release push / Acquire pop hand the entry's memory from one owner to the next. `T: Send`
// because the entry moves between threads that way.
unsafe impl<T: Send> Sync for SharedTable<T> {}

impl<T> SharedTable<T> {
    pub(crate) fn new(entries: Vec<T>) -> SharedTable<T> {
        let pool = IndexPool::full(entries.len());
        SharedTable { cells: entries.into_iter().map(UnsafeCell::new).collect(), pool }
    }

    /// A table whose free entries are claimed first-in-first-out (quarantine mode's slots).
    pub(crate) fn new_fifo(entries: Vec<T>) -> SharedTable<T> {
        let pool = IndexPool::fifo(entries.len());
        SharedTable { cells: entries.into_iter().map(UnsafeCell::new).collect(), pool }
    }

    pub(crate) fn pool(&self) -> &IndexPool {
        &self.pool
    }

    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    /// The addresses of the entries, `(start, end)`: the escape check leaves the runtime's own
    /// tables out of the heap it scans (their entries point into the region on purpose).
    pub(crate) fn address_range(&self) -> (usize, usize) {
        let start = self.cells.as_ptr() as usize;
        (start, start + std::mem::size_of_val::<[UnsafeCell<T>]>(&self.cells))
    }
}

/// One worker's view of a [`SharedTable`]: which entries it owns, and access to those only.
pub(crate) struct Owned<T: 'static> {
    table: std::sync::Arc<SharedTable<T>>,
    /// `table.cells`' first cell: every access goes through the ownership check, then straight
    /// here (not through the `Arc` and a second bounds check: it runs ~25 times a request).
    cells: *const UnsafeCell<T>,
    /// As long as `table.cells`, so an index `owned` accepts is in bounds of `cells` too.
    owned: Box<[bool]>,
}

// SAFETY: `cells` points into the table the `Arc` keeps alive, and is only dereferenced for
// an index this view owns (see `SharedTable`'s Sync argument), as `table` would be.
unsafe impl<T: Send> Send for Owned<T> {}

impl<T> Owned<T> {
    pub(crate) fn new(table: std::sync::Arc<SharedTable<T>>) -> Owned<T> {
        let owned = vec![false; table.len()].into_boxed_slice();
        let cells = table.cells.as_ptr();
        Owned { table, cells, owned }
    }

    /// The cell of an entry this worker owns; panics otherwise (what makes the access sound).
    #[inline(always)]
    fn cell(&self, index: usize) -> *mut T {
        assert!(self.owned[index], "entry {index} is not this worker's");
        // SAFETY: `index < owned.len() == cells.len()` (the indexing above checked it), so the
        // pointer stays inside the table's cells.
        unsafe { (*self.cells.add(index)).get() }
    }

    /// Takes a free entry of the instance, wherever its memory lies.
    pub(crate) fn claim(&mut self) -> Option<usize> {
        let index = self.table.pool.pop()?;
        debug_assert!(!self.owned[index], "a free index is owned by nobody");
        self.owned[index] = true;
        Some(index)
    }

    /// Gives an owned entry back to the instance. Everything the entry must not carry to its
    /// next owner (a task, borrowed memory) must be gone before.
    pub(crate) fn release(&mut self, index: usize) {
        assert!(self.owned[index], "only an owned entry is released");
        self.owned[index] = false;
        self.table.pool.push(index);
    }

    /// Keeps an owned entry out of the pool for good (a slot whose memory something still
    /// points to); returns how many entries of the table are retired now.
    pub(crate) fn retire(&mut self, index: usize) -> usize {
        assert!(self.owned[index], "only an owned entry is retired");
        self.owned[index] = false;
        // AcqRel: each retirement gets its own count, so exactly one worker sees the last.
        self.table.pool.retired.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Entries in the whole table (owned by this worker or not).
    pub(crate) fn len(&self) -> usize {
        self.owned.len()
    }

    pub(crate) fn owns(&self, index: usize) -> bool {
        self.owned.get(index).copied().unwrap_or(false)
    }

    /// The entry at `index` if this worker owns it (one check for "is it still mine?" and the
    /// access that follows).
    #[inline(always)]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        // SAFETY: as in `Index::index`, for an index `owns` accepted (so in bounds).
        self.owns(index).then(|| unsafe { &*(*self.cells.add(index)).get() })
    }

    /// As [`Owned::get`], mutable.
    #[inline(always)]
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        // SAFETY: as in `IndexMut::index_mut`, for an index `owns` accepted (so in bounds).
        self.owns(index).then(|| unsafe { &mut *(*self.cells.add(index)).get() })
    }

    pub(crate) fn table(&self) -> &SharedTable<T> {
        &self.table
    }
}

impl<T> std::ops::Index<usize> for Owned<T> {
    type Output = T;

    #[inline(always)]
    fn index(&self, index: usize) -> &T {
        // SAFETY: this worker popped `index` and has not pushed it back (checked by `cell`), so
        // no other thread accesses the cell (see `SharedTable`'s Sync argument).
        unsafe { &*self.cell(index) }
    }
}

impl<T> std::ops::IndexMut<usize> for Owned<T> {
    #[inline(always)]
    fn index_mut(&mut self, index: usize) -> &mut T {
        // SAFETY: as in `index`; `&mut self` makes this the only reference this worker holds.
        unsafe { &mut *self.cell(index) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_pool_gives_every_index_once_then_none() {
        let pool = IndexPool::full(5);
        let mut taken: Vec<usize> = std::iter::from_fn(|| pool.pop()).collect();
        taken.sort_unstable();
        assert_eq!(taken, vec![0, 1, 2, 3, 4]);
        assert_eq!(pool.free_count(), 0);
        pool.push(3);
        assert_eq!((pool.pop(), pool.pop()), (Some(3), None));
    }

    #[test]
    fn a_fifo_pool_gives_back_the_index_released_longest_ago() {
        let pool = IndexPool::fifo(3);
        assert_eq!((pool.pop(), pool.pop()), (Some(0), Some(1)));
        pool.push(1);
        pool.push(0);
        assert_eq!((pool.pop(), pool.pop(), pool.pop()), (Some(2), Some(1), Some(0)));
        assert_eq!((pool.pop(), pool.free_count()), (None, 0));
        pool.push(0);
        assert_eq!((pool.pop(), pool.free_count()), (Some(0), 0));
    }

    #[test]
    fn threads_never_hold_the_same_index_at_once() {
        for fifo in [false, true] {
            threads_never_hold_the_same_index_at_once_in(fifo);
        }
    }

    fn threads_never_hold_the_same_index_at_once_in(fifo: bool) {
        let entries = (0..8).map(|_| AtomicUsize::new(0)).collect();
        let table =
            Arc::new(if fifo { SharedTable::new_fifo(entries) } else { SharedTable::new(entries) });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let table = table.clone();
                std::thread::spawn(move || {
                    let mut view = Owned::new(table);
                    for _ in 0..20_000 {
                        if let Some(index) = view.claim() {
                            let holders = view[index].fetch_add(1, Ordering::Relaxed);
                            assert_eq!(holders, 0, "entry {index} held twice");
                            view[index].fetch_sub(1, Ordering::Relaxed);
                            view.release(index);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(table.pool().free_count(), 8);
    }
}
