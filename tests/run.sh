#!/usr/bin/env bash
# Runs every test, on a fresh machine too: installs what the tests need when it is missing
# (apt-get as root), builds, runs the workspace tests in debug, the black-box suite again with
# every slot quarantined between requests and the escape check at `full` (any `cella: escape:`
# line a test did not expect fails it), the memory-contract tests against release builds,
# the external no-allocation check (LD_PRELOAD malloc counter and strace: the demo app, a C
# plugin, and the kv example under concurrent clients with quarantine), and the fuzz targets
# (seeds and regressions replayed, then each target for FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
command -v nim >/dev/null 2>&1 || missing+=(nim)
# The load balancers of the fleet test (tests/fleet.rs), in /usr/sbin (not on every PATH).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing tools: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

# Zig, for the Zig plugin (tests/plugins.rs): the compiler ships in a PyPI package.
ZIG_VERSION=0.15.2
if ! python3 -c "import ziglang" >/dev/null 2>&1; then
  echo "== installing ziglang==$ZIG_VERSION (pip)"
  python3 -m pip install -q "ziglang==$ZIG_VERSION"
fi

# h11, the reference parser of the differential test (tests/differential.rs), at the version
# its allow-list was written against.
H11_VERSION=0.16.0
if ! python3 -c "import h11; assert h11.__version__ == '$H11_VERSION'" >/dev/null 2>&1; then
  echo "== installing h11==$H11_VERSION (pip)"
  python3 -m pip install -q "h11==$H11_VERSION"
fi

if cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check
fi

echo "== build (debug)"
cargo build --workspace --bins --examples

echo "== tests (debug)"
cargo test --workspace

echo "== black-box tests with every slot quarantined between requests and escape_check = full"
CELLA_QUARANTINE=true CELLA_ESCAPE_CHECK=full cargo test -p cella-tests

echo "== memory-contract tests (release)"
cargo build --release -p cella --bins --examples
cargo test --release -p cella-tests --test memory

echo "== no system allocation after startup (LD_PRELOAD and strace), demo app and a C plugin"
cc -shared -fPIC -O2 -I runtime/include -o target/release/libapp_c.so tests/plugins/c/app.c
# The C plugin's run also scans for escapes at every release (escape_check = full: the scan allocates nothing).
CELLA_ESCAPE_CHECK=full tests/check/no-alloc-after-startup.sh target/release/cella target/release/libapp_c.so
tests/check/no-alloc-after-startup.sh target/release/cella
echo "== no system allocation after startup, kv example: concurrent clients, overruns, escape_check = full, quarantine"
# State kept across requests (the state heap), every write read back at the end (about 5 s).
tests/check/no-alloc-after-startup.sh target/release/examples/kv

# Fuzzing (fuzz/ is its own workspace with its own target dir; docs/fuzzing.md): the seed
# corpus and every saved regression replayed under a plain cargo test, then each libFuzzer
# target for FUZZ_SECONDS (stable Rust; libfuzzer-sys builds libFuzzer with a C++ compiler).
FUZZ_SECONDS=${FUZZ_SECONDS:-50}
if ! command -v c++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing: g++"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  else
    echo "missing tools: g++ (run as root to install it)" >&2
    exit 1
  fi
fi
echo "== fuzz: seeds and regressions replayed, then each target for ${FUZZ_SECONDS}s"
cargo test --manifest-path fuzz/Cargo.toml
for fuzz_target in head chunked response_headers; do
  fuzz/run.sh "$fuzz_target" "$FUZZ_SECONDS"
done
