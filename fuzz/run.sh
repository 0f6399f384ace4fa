#!/usr/bin/env bash
# Builds one fuzz target with libFuzzer on stable Rust and runs it for SECONDS.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]     TARGET: head, chunked, response_headers
#
# No nightly and no cargo-fuzz: the coverage instrumentation cargo-fuzz asks rustc for is
# passed here in RUSTFLAGS (everything but -Zsanitizer=address, which needs nightly; safe
# Rust's bounds checks and the targets' own assertions stand in for it), and libfuzzer-sys
# builds libFuzzer itself with the C++ compiler. The build goes to fuzz/target/, away from
# the workspace's target/. The corpus the run grows is fuzz/target/corpus/TARGET (not
# committed); the committed seeds in fuzz/corpus/TARGET are read, never written. A crash is
# copied to fuzz/regressions/TARGET/, which `cargo test` in fuzz/ replays, and the script
# exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"

usage="usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...] (TARGET: head, chunked, response_headers)"
target=${1:?$usage}
seconds=${2:?$usage}
shift 2
case $target in
  head | chunked | response_headers) ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
  -Cdebug-assertions
  -Coverflow-checks
  -Ccodegen-units=1
  -Cdebuginfo=line-tables-only
)
case $triple in
  *-linux-*) flags+=(-Cllvm-args=-sanitizer-coverage-stack-depth) ;;
esac
# With --target, RUSTFLAGS reach the target's crates only, not build scripts.
export RUSTFLAGS="${flags[*]}"
export CARGO_TARGET_DIR="$PWD/target"
cargo build --release --features libfuzzer --target "$triple" --bin "$target"

work="target/corpus/$target"
artifacts="target/artifacts/$target"
mkdir -p "$work" "$artifacts" "regressions/$target"
status=0
"target/$triple/release/$target" \
  -max_total_time="$seconds" \
  -timeout=10 \
  -dict="dict/$target.dict" \
  -artifact_prefix="$artifacts/" \
  -print_final_stats=1 \
  "$@" \
  "$work" "corpus/$target" || status=$?

for artifact in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*; do
  [ -e "$artifact" ] || continue
  cp "$artifact" "regressions/$target/"
  rm "$artifact"
  echo "saved fuzz/regressions/$target/$(basename "$artifact"): replayed by 'cargo test' in fuzz/" >&2
done
exit "$status"
