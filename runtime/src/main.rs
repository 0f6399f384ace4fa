//! The `cella` binary: the command line over the built-in demo app, or over a C-ABI plugin
//! (`--handler PATH.so`). The binary, not the library, decides the allocators: Rust allocations
//! made by handlers go to the slot's arena (the global allocator), and so do C allocations made
//! by plugins (the exported C allocator; build.rs exports its symbols dynamically), and
//! descriptors a handler opens are recorded in its slot (the exported fd hooks). `cella::main!`
//! sets all three up, as it does for any binary built on cella.

cella::main!(cella::demo::app);
