//! The differential test: the corpus of tests/differential/corpus.toml (well-formed requests,
//! malformed ones from RFC 9112 and the llhttp, h11 and nginx test suites, and the fuzz seeds
//! when fuzz/corpus exists) is sent byte for byte to a real server over a socket and parsed by
//! Python's h11, and every answer must be the one h11's reading predicts, or be listed with its
//! reason in tests/differential/allowlist.toml (argued in docs/differential.md). The server is
//! the `testapp` example (the demo app plus `/header/{name}`, which echoes a header), so the
//! path, body and header values cella saw are compared too, not only accept against reject.
//! Needs python3 with h11 (tests/run.sh installs the pinned version); skips only without
//! python3.

use std::path::Path;
use std::process::Command;

use cella_tests::{ServerProcess, SMALL};

/// The limits the allow-list's `limit` entries were argued against, pinned here so that a new
/// default does not silently change what the corpus tests.
const PINNED_LIMITS: &[&str] = &[
    "--set",
    "request_line_size_max=4KiB",
    "--set",
    "request_head_size_max=8KiB",
    "--set",
    "headers_count_max=64",
    "--set",
    "chunk_extension_size_max=4KiB",
    "--set",
    "trailer_size_max=8KiB",
    "--set",
    "request_body_size_max=64KiB",
];

fn python3_present() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|out| out.status.success())
}

#[test]
fn every_disagreement_with_h11_on_the_corpus_is_listed_and_argued() {
    if !python3_present() {
        eprintln!(
            "SKIPPED: python3 is not installed, so the differential test against h11 cannot run"
        );
        return;
    }
    let mut args = vec!["serve"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(PINNED_LIMITS);
    let mut server = ServerProcess::start_binary("testapp", &args, &[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace");
    let script = root.join("tests/differential/differential.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--addr")
        .arg(server.addr().to_string())
        // A connection the client half-closed must be closed once answered (the FIN that came
        // with the last bytes was once missed: `a_client_that_half_closes_...` in hardening.rs).
        .arg("--strict-close")
        .current_dir(root)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "differential.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(server.is_running(), "the server died during the corpus: {}", server.stderr());
}
