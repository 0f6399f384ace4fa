//! Measures what wiping a slot's arena costs for the amounts a request typically uses (run by
//! benchmarks/run.sh; prints a Markdown section for docs/benchmarks.md).

use std::time::Instant;

use cella_arena::{Region, RegionOptions};
use cella_shared::{config::Size, Config, MemoryPlan};

fn main() {
    let mut config = Config::default();
    config.slots = 1;
    config.connections_max = 1;
    config.slot_arena_size = Size(1 << 20);
    let plan = MemoryPlan::new(&config, 1, cella_arena::page_size() as u64).expect("plan fits");
    let mut region = Region::map(&plan, RegionOptions { prefault: true, ..Default::default() })
        .expect("region maps");
    let (_, mut arena) = region.carve().remove(0).slots.remove(0);
    println!("## Slot wipe cost\n\nTime to wipe an arena after a request used `used` bytes of it (1 MiB arena; `runtime/examples/wipe.rs`).\n");
    println!("| used | ns per wipe |\n| --- | --- |");
    for used in [1usize << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let rounds = 2000;
        let started = Instant::now();
        for _ in 0..rounds {
            let layout = std::alloc::Layout::array::<u8>(used).expect("layout");
            let ptr = arena.try_alloc_layout(layout).expect("the arena holds the bytes").as_ptr();
            // A request writes what it allocates; the wipe must then really clear it (black_box
            // keeps the compiler from treating one round's wipe as overwritten by the next).
            // SAFETY: `ptr` points at `used` bytes just allocated from the arena.
            unsafe { ptr.write_volatile(1) };
            arena.wipe();
            std::hint::black_box(ptr);
        }
        let ns = started.elapsed().as_nanos() as f64 / rounds as f64;
        println!("| {} KiB | {ns:.0} |", used >> 10);
    }
    println!();
}
