#!/usr/bin/env bash
# Measures cella against hyper+tokio, actix-web, may_minihttp and nginx on this machine and
# writes docs/benchmarks.md with SVG plots. Never run by `cargo test`.
#   benchmarks/run.sh [--quick]     (--quick: 1 round of 2 s per run, a few minutes in all)
# Memory per idle connection: benchmarks/idle.py; two cella builds side by side:
# runner.py --cella-before PATH, then compare.py (see docs/benchmarks.md, "The connection engine").
# Installs wrk and nginx with apt-get when missing (as root). Loopback traffic only.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing: ${missing[*]} (run as root to install)" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "== building cella (release) and the peers"
cargo build --release -q -p cella --example benchapp --example wipe
(cd benchmarks/peers && cargo build --release -q)
mkdir -p benchmarks/results
echo "== slot wipe cost"
target/release/examples/wipe > benchmarks/results/extra.md
cat benchmarks/results/extra.md
echo "== workloads"
python3 benchmarks/runner.py "$@"
python3 benchmarks/report.py
