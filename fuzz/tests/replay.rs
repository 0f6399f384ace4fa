//! Replays the seed corpus and every saved regression of each fuzz target through the
//! target's property, with neither libFuzzer nor coverage instrumentation, so that a plain
//! `cargo test` (and CI) keeps every crash the fuzzer ever found fixed. A regression is a
//! file in `fuzz/regressions/<target>/`; `fuzz/run.sh` copies each crash there.

use std::path::{Path, PathBuf};

/// Files of `fuzz/<folder>/<target>/`, sorted; dot files (`.gitkeep`) are not inputs.
fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|path| path.is_file())
        .filter(|path| !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    paths.sort();
    paths
}

/// Runs every seed and regression of `target`; fails naming each input that breaks the
/// property (all of them, not only the first).
fn replay(target: &str) {
    let (_, check) = cella_fuzz::TARGETS
        .into_iter()
        .find(|(name, _)| *name == target)
        .expect("a target of that name");
    let paths: Vec<PathBuf> =
        ["corpus", "regressions"].into_iter().flat_map(|folder| inputs(folder, target)).collect();
    assert!(!paths.is_empty(), "{target} has no seeds");
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            outcome.err().map(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                format!("{}:\n{message}", path.display())
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs break the property:\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

#[test]
fn head_seeds_and_regressions_hold() {
    replay("head");
}

#[test]
fn chunked_seeds_and_regressions_hold() {
    replay("chunked");
}

#[test]
fn response_headers_seeds_and_regressions_hold() {
    replay("response_headers");
}
