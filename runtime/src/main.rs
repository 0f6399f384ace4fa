//! The `cella` binary: the command line over the built-in demo app, or over a C-ABI plugin
//! (`--handler PATH.so`). The binary, not the library, decides the allocators: Rust allocations
//! made by handlers go to the slot's arena (the global allocator), and so do C allocations made
//! by plugins (the exported C allocator; build.rs exports its symbols dynamically), and
//! descriptors a handler opens are recorded in its slot (the exported fd hooks).

#[global_allocator]
static ALLOCATOR: cella::RoutingAlloc = cella::RoutingAlloc;

cella_arena::export_c_allocator!();
cella_arena::export_fd_hooks!();

fn main() -> std::process::ExitCode {
    cella_arena::cmalloc::resolve_next();
    cella::cli::main()
}
