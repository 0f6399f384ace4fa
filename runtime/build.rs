//! Exports the C allocator symbols of the `cella` binary dynamically, so that plugins loaded
//! with dlopen bind their malloc calls to it (see cella_arena::cmalloc).

fn main() {
    for symbol in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "memalign",
        "aligned_alloc",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
    ] {
        println!("cargo:rustc-link-arg-bin=cella=-Wl,--export-dynamic-symbol={symbol}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
