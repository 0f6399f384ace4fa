use cella_shared::{Config, MemoryPlan};

use super::*;
use crate::{Arena, Region, RegionOptions};

/// The deferred-free table is one per process: the tests that fill or empty it take turns.
static DEFERRED_TABLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn deferred_table() -> std::sync::MutexGuard<'static, ()> {
    DEFERRED_TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

unsafe fn spent(_: Layout) -> ! {
    // These tests never spend the arena; an attempt (the old overflow path did) aborts.
    std::process::abort()
}

fn errno() -> i32 {
    // SAFETY: __errno_location(3) is the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(code: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = code };
}

fn is_deferred(block: *mut c_void) -> bool {
    DEFERRED_FREES.iter().any(|entry| entry.load(Ordering::Acquire) == block as usize)
}

/// Leaves the route and unseals the thread even when an assertion fails inside.
struct Handler;

impl Drop for Handler {
    fn drop(&mut self) {
        route::leave();
        route::unseal_current_thread();
    }
}

/// Runs `f` as a handler would: this thread sealed and routed to the arena of a fresh
/// one-slot region. Returns the system allocator calls `f` made (none is allowed).
fn in_handler(f: impl FnOnce(&Arena)) -> u64 {
    resolve_next();
    let mut config = Config::default();
    config.slots = 1;
    config.connections_max = 1;
    let plan = MemoryPlan::new(&config, 1, crate::page_size() as u64).unwrap();
    let mut region = Region::map(&plan, RegionOptions::default()).unwrap();
    let worker = region.carve().remove(0);
    let arena = &worker.slots[0].1;
    let mut route = Route::new(spent);
    route.arena = arena;
    route.reserve = &worker.panic_reserve;
    let before = route::sealed_system_calls();
    route::seal_current_thread();
    // SAFETY: `route` and its arenas outlive the `leave` in `Handler::drop` below.
    unsafe { route::enter(&route) };
    let handler = Handler;
    f(arena);
    drop(handler);
    route::sealed_system_calls() - before
}

#[test]
fn pvalloc_whose_page_rounding_overflows_returns_null_with_enomem() {
    // SAFETY (all below): C allocator functions called as C would call them, and reads and
    // writes only within the bytes a non-NULL block holds.
    set_errno(0);
    assert!(unsafe { pvalloc(usize::MAX - 100) }.is_null(), "outside a handler");
    assert_eq!(errno(), libc::ENOMEM);
    let calls = in_handler(|_| {
        set_errno(0);
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert!(unsafe { pvalloc(usize::MAX - 100) }.is_null(), "inside a handler");
        assert_eq!(errno(), libc::ENOMEM);
        let page = crate::page_size();
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        let block = unsafe { pvalloc(1) };
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert_eq!((block as usize % page, unsafe { malloc_usable_size(block) }), (0, page));
    });
    assert_eq!(calls, 0);
}

#[test]
fn calloc_and_reallocarray_whose_product_overflows_return_null_with_enomem() {
    let calls = in_handler(|_| {
        // SAFETY (all below): C allocator functions called as C would call them, and reads and
        // writes only within the bytes a non-NULL block holds.
        set_errno(0);
        assert!(unsafe { calloc(usize::MAX / 2, 3) }.is_null());
        assert_eq!(errno(), libc::ENOMEM);
        let block = unsafe { malloc(8) }.cast::<u8>();
        unsafe { block.write(42) };
        set_errno(0);
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert!(unsafe { reallocarray(block.cast(), 1 << 33, 1 << 31) }.is_null());
        assert_eq!(errno(), libc::ENOMEM);
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert_eq!(unsafe { block.read() }, 42, "the block is left as it was");
    });
    assert_eq!(calls, 0);
    // SAFETY: as above; glibc checks the product itself outside handlers.
    assert!(unsafe { calloc(usize::MAX / 2, 3) }.is_null());
}

#[test]
fn sizes_past_ptrdiff_max_return_null_in_a_handler_instead_of_cancelling_it() {
    let calls = in_handler(|arena| {
        let used = arena.used_bytes();
        // SAFETY (all below): C allocator functions called as C would call them, and reads and
        // writes only within the bytes a non-NULL block holds.
        for (what, block) in [
            ("malloc(SIZE_MAX)", unsafe { malloc(usize::MAX) }),
            ("malloc(PTRDIFF_MAX)", unsafe { malloc(isize::MAX as usize) }),
            ("memalign", unsafe { memalign(4096, usize::MAX - 100) }),
            ("memalign with a 2^63 alignment", unsafe { memalign(1 << 63, 1) }),
            // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
            ("valloc", unsafe { valloc(usize::MAX) }),
            // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
            ("pvalloc", unsafe { pvalloc(usize::MAX - 4096) }),
        ] {
            assert!(block.is_null(), "{what}");
            assert_eq!(errno(), libc::ENOMEM, "{what}");
        }
        set_errno(libc::EINTR);
        let mut out = ptr::null_mut();
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert_eq!(unsafe { posix_memalign(&mut out, 64, usize::MAX - 10) }, libc::ENOMEM);
        assert_eq!((out, errno()), (ptr::null_mut(), libc::EINTR), "errno is left alone");
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert!(unsafe { memalign(48, 16) }.is_null(), "not a power of two");
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(arena.used_bytes(), used, "nothing was taken from the arena");
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        let block = unsafe { malloc(16) }.cast::<u8>();
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        unsafe { block.write(7) };
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert!(unsafe { realloc(block.cast(), usize::MAX) }.is_null());
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert!(unsafe { realloc(block.cast(), isize::MAX as usize - 8) }.is_null());
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert_eq!(unsafe { (block.read(), malloc_usable_size(block.cast())) }, (7, 16));
    });
    assert_eq!(calls, 0);
}

#[test]
fn a_system_block_realloced_in_a_handler_is_copied_into_the_arena_and_freed_after_it() {
    let _turn = deferred_table();
    // SAFETY (all below): C allocator functions called as C would call them; the
    // block is written within the 100 bytes asked for.
    let block = unsafe { malloc(100) }.cast::<u8>();
    unsafe { ptr::write_bytes(block, 0x5a, 100) };
    let mut moved = ptr::null_mut::<u8>();
    let calls = in_handler(|arena| {
        moved = unsafe { realloc(block.cast(), 4096) }.cast();
        assert!(arena.contains(moved), "the new block is the request's");
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        let copied = unsafe { std::slice::from_raw_parts(moved, 100) };
        assert!(copied.iter().all(|&b| b == 0x5a), "the contents moved with it");
        assert!(is_deferred(block.cast()), "the old block waits for its free");
        // SAFETY: a test of the exported allocator: valid arguments, or the overflow the test is about; blocks used only while live.
        assert_eq!(unsafe { malloc_usable_size(moved.cast()) }, 4096);
    });
    assert_eq!(calls, 0, "no system allocator call while the handler ran");
    release_deferred_frees();
    assert!(!is_deferred(block.cast()), "freed once the handler is over");
}

#[test]
fn a_system_block_freed_in_a_handler_is_freed_after_it() {
    let _turn = deferred_table();
    // SAFETY (all below): C allocator functions called as C would call them, and reads and
    // writes only within the bytes a non-NULL block holds.
    let blocks: Vec<*mut c_void> = (0..8).map(|_| unsafe { malloc(32) }).collect();
    let deferred_before = deferred_free_counts().deferred;
    let calls = in_handler(|_| {
        for &block in &blocks {
            unsafe { free(block) };
            assert!(is_deferred(block));
        }
        assert_eq!(release_deferred_frees(), 0, "never inside a handler");
        assert!(blocks.iter().all(|&block| is_deferred(block)));
    });
    assert_eq!(calls, 0, "no system allocator call while the handler ran");
    assert!(deferred_free_counts().deferred >= deferred_before + 8);
    // Any malloc-family call on an unsealed thread outside a handler frees them.
    // SAFETY: as above.
    unsafe { free(malloc(1)) };
    assert!(blocks.iter().all(|&block| !is_deferred(block)));
}

/// A return address inside libc's text: the start of `strlen`, resolved by the loader.
fn libc_caller() -> usize {
    libc::strlen as *const () as usize + 1
}

#[test]
fn libc_allocations_in_a_handler_go_to_the_state_heap_and_are_freed_and_grown_by_address() {
    resolve_next();
    assert!(libc_text_ranges() > 0, "libc's text was found");
    assert!(libc_own::is_libc(libc_caller()));
    assert!(!libc_own::is_libc(libc_caller as *const () as usize), "this test binary is not libc");
    let calls = in_handler(|arena| {
        // SAFETY (all below): C allocator functions called as C would call them, and reads
        // and writes only within the bytes a non-NULL block holds.
        unsafe {
            let own = malloc_from(100, libc_caller());
            assert!(crate::state::is_state_heap_memory(own as usize), "libc's: state heap");
            let plugin = malloc_from(100, 0);
            assert!(arena.contains(plugin.cast()), "a plugin's: the arena");
            ptr::write_bytes(own.cast::<u8>(), 7, 100);
            let zeroed = calloc_from(4, 50, libc_caller()).cast::<u8>();
            assert!(crate::state::is_state_heap_memory(zeroed as usize));
            assert!((0..200).all(|i| *zeroed.add(i) == 0));
            // Grown by anyone: it stays in the state heap, its bytes with it.
            let grown = realloc_from(own, 100_000, 0).cast::<u8>();
            assert!(crate::state::is_state_heap_memory(grown as usize));
            assert!((0..100).all(|i| *grown.add(i) == 7));
            assert_eq!(malloc_usable_size(grown.cast()), 100_000);
            let aligned = memalign_from(4096, 10, libc_caller());
            assert_eq!(aligned as usize % 4096, 0);
            assert!(crate::state::is_state_heap_memory(aligned as usize));
            // Freed by address, whoever frees it: the state heap gets them back.
            free(grown.cast());
            free(zeroed.cast());
            free(aligned);
            free(plugin);
        }
    });
    assert_eq!(calls, 0, "no system allocator call");
}

#[test]
fn outside_handlers_on_an_unsealed_thread_libc_allocations_go_to_the_system_allocator() {
    resolve_next();
    // SAFETY: as the C functions.
    unsafe {
        let block = malloc_from(64, libc_caller());
        assert!(!route::in_any_region(block as usize));
        free(block);
    }
}

/// Measures the C allocator's cost per call, best of 5 runs of 2 million pairs each:
/// `cargo test --release -p cella-arena -- --ignored --nocapture c_allocator_cost`.
/// docs/benchmarks.md has the figures.
#[test]
#[ignore]
fn c_allocator_cost_per_call() {
    const CALLS: usize = 2_000_000;
    resolve_next();
    let best = |pair: &dyn Fn(&Route)| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            in_handler(|_| {
                let route = routed().expect("in a handler");
                let started = std::time::Instant::now();
                for _ in 0..CALLS {
                    pair(route);
                }
                best = best.min(started.elapsed().as_nanos() as f64 / CALLS as f64);
            });
        }
        best
    };
    // SAFETY (the three below): as the C functions; each block is freed at once.
    let alone = best(&|route| unsafe {
        free(std::hint::black_box(arena_block(route, 32, HEADER)));
    });
    let plugin = best(&|_| unsafe { free(std::hint::black_box(malloc_from(32, 0))) });
    let own = best(&|_| unsafe { free(std::hint::black_box(malloc_from(32, libc_caller()))) });
    println!("malloc+free of 32 bytes in a handler, ns per pair (best of 5 x {CALLS}):");
    println!("  arena block without the caller check: {alone:.1}");
    println!("  plugin caller (checked, arena):        {plugin:.1}");
    println!("  libc caller (state heap, talc):        {own:.1}");
}
