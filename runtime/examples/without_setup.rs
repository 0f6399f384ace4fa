//! A binary that forgot the setup: no `cella::main!`, so no `RoutingAlloc` global allocator and
//! no exported C allocator. `serve` refuses to start with a message saying what to do (handler
//! allocations would go to the system heap, unbounded), and `--handler` is not offered. Run by
//! tests/api.rs; a real binary writes `cella::main!(app)` instead.

fn main() -> std::process::ExitCode {
    cella::cli::main_with(std::env::args_os(), cella::demo::app)
}
