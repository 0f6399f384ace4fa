use super::*;
use std::alloc::GlobalAlloc;

use cella_shared::{Config, MemoryPlan};

use crate::region::{Region, RegionOptions};
use crate::route::{self, Route, Target};
use crate::{cmalloc, RoutingAlloc};

/// A heap of its own over leaked memory; uninstalled when dropped.
struct TestHeap(usize);

impl TestHeap {
    fn new(bytes: usize) -> TestHeap {
        let memory: &'static mut [u8] = Vec::leak(vec![0u8; bytes]);
        // SAFETY: leaked memory, used by this heap alone, never freed.
        let index = unsafe { install(Span::new(memory.as_mut_ptr(), memory.len())) };
        TestHeap(index.expect("a free heap entry"))
    }

    fn heap(&self) -> &'static StateHeap {
        &HEAPS[self.0]
    }
}

impl Drop for TestHeap {
    fn drop(&mut self) {
        uninstall(self.0);
    }
}

#[test]
fn state_heap_blocks_never_overlap_stay_in_bounds_and_are_reused_after_free() {
    let test_heap = TestHeap::new(256 << 10);
    let heap = test_heap.heap();
    let mut blocks: Vec<(usize, Layout)> = Vec::new();
    for round in 0..2 {
        for size in (1..200).map(|i| i * 37 % 1500 + 1) {
            let layout = Layout::from_size_align(size, 1 << (size % 6)).unwrap();
            // SAFETY: non-zero size.
            let block = unsafe { heap.alloc(layout) };
            assert!(!block.is_null(), "round {round}: {size} bytes fit");
            assert!(heap.contains(block as usize) && heap.contains(block as usize + size - 1));
            assert_eq!(block as usize % layout.align(), 0);
            blocks.push((block as usize, layout));
        }
        let mut sorted = blocks.clone();
        sorted.sort_by_key(|(start, _)| *start);
        for pair in sorted.windows(2) {
            assert!(pair[0].0 + pair[0].1.size() <= pair[1].0, "blocks overlap");
        }
        for (block, layout) in blocks.drain(..) {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { heap.dealloc(block as *mut u8, layout) };
        }
        assert_eq!(heap.used_bytes.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn freed_and_shrunk_away_bytes_are_zeroed_and_the_scan_extent_covers_every_block() {
    let test_heap = TestHeap::new(256 << 10);
    let heap = test_heap.heap();
    let layout = Layout::from_size_align(512, 8).unwrap();
    // SAFETY: non-zero sizes; each block is written within its size and freed once.
    unsafe {
        let kept = heap.alloc(layout);
        let freed = heap.alloc(layout);
        ptr::write_bytes(kept, 0xAB, 512);
        ptr::write_bytes(freed, 0xCD, 512);
        let (low, high) = (heap.low.load(Ordering::Relaxed), heap.high.load(Ordering::Relaxed));
        for block in [kept as usize, freed as usize] {
            assert!(low <= block && block + 512 <= high, "the extent covers {block:#x}");
        }
        // No word the request wrote survives where it gave the bytes up (talc writes its own
        // links and sizes into a free chunk, so it is not all zero).
        let words = |block: *mut u8, from: usize, to: usize| {
            std::slice::from_raw_parts(block.add(from).cast::<u64>(), (to - from) / 8).to_vec()
        };
        assert!(heap.resize_in_place(kept, layout, 128));
        assert!(!words(kept, 128, 512).contains(&0xABAB_ABAB_ABAB_ABAB), "the tail is zeroed");
        assert!(words(kept, 0, 128).iter().all(|&w| w == 0xABAB_ABAB_ABAB_ABAB), "kept as is");
        heap.dealloc(freed, layout);
        assert!(!words(freed, 0, 512).contains(&0xCDCD_CDCD_CDCD_CDCD), "a freed block is zeroed");
        heap.dealloc(kept, Layout::from_size_align(128, 8).unwrap());
    }
}

#[test]
fn a_full_state_heap_refuses_with_null_and_counts_it() {
    let test_heap = TestHeap::new(64 << 10);
    let heap = test_heap.heap();
    let layout = Layout::from_size_align(128 << 10, 8).unwrap();
    // SAFETY: non-zero size.
    assert!(unsafe { heap.alloc(layout) }.is_null());
    assert_eq!(heap.failures.load(Ordering::Relaxed), 1);
    let small = Layout::from_size_align(1024, 8).unwrap();
    // SAFETY: non-zero size; freed once.
    unsafe {
        let block = heap.alloc(small);
        assert!(!block.is_null(), "a refusal leaves the heap usable");
        heap.dealloc(block, small);
    }
}

#[test]
fn a_heap_too_small_for_talc_is_not_installed() {
    let memory: &'static mut [u8] = Vec::leak(vec![0u8; 64]);
    // SAFETY: leaked memory.
    assert!(unsafe { install(Span::new(memory.as_mut_ptr(), memory.len())) }.is_none());
}

unsafe fn spent(_: Layout) -> ! {
    std::process::abort()
}

/// A one-slot region (which installs a state heap) and a route over its arena.
fn with_route(f: impl FnOnce(&Route)) {
    let mut config = Config::default();
    config.slots = 1;
    config.connections_max = 1;
    config.state_heap_size = cella_shared::config::Size(256 << 10);
    let plan = MemoryPlan::new(&config, 1, crate::page_size() as u64).unwrap();
    let mut region = Region::map(&plan, RegionOptions::default()).unwrap();
    let worker = region.carve().remove(0);
    let mut route = Route::new(spent);
    route.arena = &worker.slots[0].1;
    route.reserve = &worker.panic_reserve;
    // SAFETY: the route and its arenas outlive the `leave` below.
    unsafe { route::enter(&route) };
    f(&route);
    route::leave();
}

const SMALL: Layout = match Layout::from_size_align(100, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};

#[test]
fn persisted_allocations_land_in_a_state_heap_and_are_freed_there_from_anywhere() {
    with_route(|route| {
        let arena = || route.arena;
        // SAFETY (all): non-zero sizes; each block freed once with its layout; the route is
        // entered again before `with_route` leaves it.
        unsafe {
            let in_arena = RoutingAlloc.alloc(SMALL);
            assert!((*arena()).contains(in_arena));
            let saved = route::begin_target(Target::State);
            let mut persisted = RoutingAlloc.alloc(SMALL);
            let nested = route::begin_target(Target::Arena);
            let scratch = RoutingAlloc.alloc(SMALL);
            route::end_target(nested);
            route::end_target(saved);
            assert!(is_state_heap_memory(persisted as usize));
            assert!((*arena()).contains(scratch), "in_arena nests");
            let again = RoutingAlloc.alloc(SMALL);
            assert!((*arena()).contains(again), "persist ended");
            // Grown by a handler outside `persist`: it stays a state-heap block.
            persisted = RoutingAlloc.realloc(persisted, SMALL, 4000);
            assert!(is_state_heap_memory(persisted as usize));
            let heap = owner_of(persisted as usize).expect("a state heap block");
            let used = heap.used_bytes.load(Ordering::Relaxed);
            // Freed outside any handler, with no route: back to its heap.
            route::leave();
            RoutingAlloc.dealloc(persisted, Layout::from_size_align(4000, 8).unwrap());
            assert_eq!(heap.used_bytes.load(Ordering::Relaxed), used - 4000);
            route::enter(route);
        }
    });
}

#[test]
fn a_guard_taken_inside_in_arena_wins_and_a_closure_inside_a_guard_wins() {
    // This thread's own placement (no route): pure bookkeeping.
    let outer = route::begin_target(Target::Arena);
    assert!(!route::placed_in_state());
    let guard = route::guard_began();
    assert!(route::placed_in_state(), "a lock taken inside in_arena persists");
    let inner = route::begin_target(Target::Arena);
    assert!(!route::placed_in_state(), "in_arena inside a guard");
    route::end_target(inner);
    assert!(route::placed_in_state());
    route::guard_ended(guard);
    assert!(!route::placed_in_state());
    route::end_target(outer);
    let first = route::guard_began();
    let second = route::guard_began();
    route::guard_ended(first);
    assert!(route::placed_in_state(), "guards may be dropped in any order");
    route::guard_ended(second);
    assert!(!route::placed_in_state());
}

#[test]
fn a_held_lock_is_released_by_end_request_and_not_after_it_was_unregistered() {
    static RELEASED: AtomicU64 = AtomicU64::new(0);
    unsafe fn release(_lock: *const (), token: u64) {
        RELEASED.fetch_add(token, Ordering::Relaxed);
    }
    with_route(|route| {
        let held = |token| route::HeldLock { lock: ptr::null(), token, release_poisoned: release };
        // SAFETY: the fake lock is never dereferenced.
        let first = unsafe { route::register_held(held(1)) }.unwrap().unwrap();
        // SAFETY: as above.
        unsafe { route::register_held(held(10)) }.unwrap().unwrap();
        assert!(route::unregister_held(first, 1));
        assert!(!route::unregister_held(first, 1), "once");
        route::guard_began();
        route.end_request();
        assert_eq!(RELEASED.load(Ordering::Relaxed), 10, "only the lock still held");
        assert!(!route::placed_in_state(), "the placement is reset");
    });
}

#[test]
fn a_system_block_freed_or_grown_in_a_handler_never_reaches_the_system_allocator() {
    // SAFETY (all): non-zero sizes; each block freed once.
    let (freed, grown) = unsafe { (RoutingAlloc.alloc(SMALL), RoutingAlloc.alloc(SMALL)) };
    let before = cmalloc::deferred_free_counts().deferred;
    with_route(|route| {
        route::seal_current_thread();
        let calls = route::sealed_system_calls();
        // SAFETY: system blocks made above with SMALL.
        unsafe {
            RoutingAlloc.dealloc(freed, SMALL);
            let moved = RoutingAlloc.realloc(grown, SMALL, 1000);
            assert!(route.arena.as_ref().unwrap().contains(moved), "moved into the arena");
        }
        assert_eq!(route::sealed_system_calls(), calls, "no system call in a handler");
        route::unseal_current_thread();
    });
    // Both frees wait in the table (released at drain, or by a later test's release).
    assert!(cmalloc::deferred_free_counts().deferred >= before + 2, "both frees deferred");
}
