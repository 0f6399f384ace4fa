//! The committed C header (runtime/include/cella.h) is exactly what cbindgen generates from
//! shared/src/abi.rs: the ABI has one source of truth. `UPDATE_HEADER=1` regenerates it.

#[test]
fn the_committed_c_header_matches_the_rust_definitions() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(format!("{manifest}/cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(format!("{manifest}/../shared"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = format!("{manifest}/include/cella.h");
    if std::env::var_os("UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("header written");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "runtime/include/cella.h drifted from shared/src/abi.rs: run UPDATE_HEADER=1 cargo test -p cella --test c_header"
    );
}
