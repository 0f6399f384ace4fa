//! The `cella` binary: the command line over the built-in demo app. The binary, not the
//! library, decides the global allocator: it routes handler allocations to slot arenas.

#[global_allocator]
static ALLOCATOR: cella::RoutingAlloc = cella::RoutingAlloc;

fn main() -> std::process::ExitCode {
    cella::cli::main()
}
