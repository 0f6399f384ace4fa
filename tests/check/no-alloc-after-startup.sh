#!/usr/bin/env bash
# Proves, from outside the process, that cella makes no malloc-family call and no
# mmap/munmap/brk/mprotect/madvise/mremap syscall between its ready line and its shutdown, while
# serving successes, overruns, panics and stack overflows (but the stack headroom's mprotect
# pair of each overflow, below), and answering the admin listener (/metrics, /config, /readyz,
# /livez) and the agent-check listener, with the access log on (a file, renamed and reopened
# on SIGHUP in the first run), and no `cella: escape:` line.
#   1. under an LD_PRELOAD malloc counter (window marked with SIGUSR1/SIGUSR2);
#   2. under strace -f (window: the ready line's write to the "draining" line's write).
# Usage: tests/check/no-alloc-after-startup.sh [path/to/cella [plugin.so]]   (loopback only; bounded)
# With a plugin, the server runs `--handler plugin.so` (a C handler that uses malloc).
# With the `kv` example (path/to/examples/kv: state kept across requests, in the state heap) the
# server runs with escape_check = full and quarantine on, under tests/check/kv_load.py (concurrent
# clients, overruns while holding the store's lock, every write read back at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
CELLA=${1:-target/debug/cella}
PLUGIN=${2:-}
APP=demo
REQUESTS=${REQUESTS:-2000}
WORK=$(mktemp -d)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
ARGS=(serve --listen 127.0.0.1:0 --workers 2 --slots 8 --slot-arena 256KiB --set request_body_size_max=64KiB --max-connections 64
  --set admin_listen=127.0.0.1:0 --set agent_listen=127.0.0.1:0 --set "access_log=$WORK/access.log")
if [ -n "$PLUGIN" ]; then ARGS+=(--handler "$PLUGIN"); APP=plugin; fi
ARENA_BYTES=262144   # --slot-arena 256KiB
if [ "$(basename "$CELLA")" = kv ]; then
  APP=kv
  ARGS+=(--set escape_check=full --set quarantine=true)
fi

load() { # $1: address, $2: requests
  if [ "$APP" = kv ]; then python3 tests/check/kv_load.py "$1" "$2"; else python3 tests/check/load.py "$1" "$2" "$APP"; fi
}
no_escape_line() { # $1: the server's stderr file
  if grep -q '^cella: escape:' "$1"; then grep '^cella: escape:' "$1" | head; echo "FAIL: escape reported"; exit 1; fi
}

wait_ready() { # $1: stdout file; prints the address
  for _ in $(seq 1 200); do
    if grep -q '^listening on http://' "$1" 2>/dev/null; then sed -n 's|^listening on http://||p' "$1"; return; fi
    sleep 0.05
  done
  echo "server did not print its ready line" >&2; cat "$WORK"/*.err >&2 || true; exit 1
}
admin_traffic() { # $1: the server's stderr file (its admin and agent lines come before the ready line)
  python3 - "$(sed -n 's|^cella: admin listener on http://\([^ ]*\).*|\1|p' "$1")" \
    "$(sed -n 's|^cella: agent-check listener on ||p' "$1")" <<'PY'
import socket, sys
def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)
for _ in range(20):
    for path in ("/metrics", "/config", "/readyz", "/livez"):
        admin = connect(sys.argv[1])
        admin.sendall(f"GET {path} HTTP/1.1\r\nhost: a\r\n\r\n".encode())
        answer = b""
        while chunk := admin.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert connect(sys.argv[2]).recv(64).startswith(b"up ready ")
PY
}
wait_exit() { for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done; echo "server did not exit" >&2; exit 1; }

echo "== LD_PRELOAD malloc counter"
cc -O2 -shared -fPIC -o "$WORK/malloc_counter.so" tests/check/malloc_counter.c
LD_PRELOAD="$WORK/malloc_counter.so" "$CELLA" "${ARGS[@]}" >"$WORK/a.out" 2>"$WORK/a.err" &
PID=$!
ADDR=$(wait_ready "$WORK/a.out")
kill -USR1 "$PID"
load "$ADDR" "$REQUESTS"
# Log rotation inside the window: rename, SIGHUP, and the writer reopens (creates) the path.
mv "$WORK/access.log" "$WORK/access.log.1"
kill -HUP "$PID"
for _ in $(seq 1 100); do [ -e "$WORK/access.log" ] && break; sleep 0.05; done
[ -e "$WORK/access.log" ] || { echo "FAIL: SIGHUP did not reopen the access log"; exit 1; }
load "$ADDR" 100
admin_traffic "$WORK/a.err"
kill -USR2 "$PID"
for _ in $(seq 1 100); do grep -q 'malloc-counter:' "$WORK/a.err" && break; sleep 0.05; done
kill -TERM "$PID"; wait_exit "$PID"
LINE=$(grep 'malloc-counter:' "$WORK/a.err")
echo "$LINE"
[ "$LINE" = "malloc-counter: 0 calls in window" ] || { echo "FAIL: malloc-family calls after startup"; cat "$WORK/a.err"; exit 1; }
no_escape_line "$WORK/a.err"
[ -s "$WORK/access.log.1" ] && [ -s "$WORK/access.log" ] || { echo "FAIL: no access log lines before and after the reopen"; exit 1; }
echo "access log lines: $(wc -l <"$WORK/access.log.1") before the reopen, $(wc -l <"$WORK/access.log") after"
rm -f "$WORK/access.log" "$WORK/access.log.1"

echo "== strace -f"
strace -f -qq -o "$WORK/trace" -e trace=mmap,munmap,brk,mprotect,madvise,mremap,write \
  "$CELLA" "${ARGS[@]}" >"$WORK/b.out" 2>"$WORK/b.err" &
PID=$!
ADDR=$(wait_ready "$WORK/b.out")
load "$ADDR" "$((REQUESTS / 4))"
admin_traffic "$WORK/b.err"
SERVER=$(pgrep -P "$PID" | head -1)   # strace's child is the server; signal it, not strace
kill -TERM "$SERVER"; wait_exit "$PID"
WINDOW=$(awk '/write\(1, "listening on http/ {on=1; next} /write\(2, "cella: draining/ {on=0} on' "$WORK/trace")
grep -q 'write(1, "listening on http' "$WORK/trace" || { echo "FAIL: ready line not in trace"; exit 1; }
grep -q 'write(2, "cella: draining' "$WORK/trace" || { echo "FAIL: drain line not in trace"; exit 1; }
# Except one pair per stack overflow: the fault handler opens the slot's 16 KiB stack headroom
# (PROT_READ|PROT_WRITE) and the runtime closes it again (PROT_NONE) when the task ends
# (runtime/src/cancel.rs, STACK_HEADROOM_BYTES). No memory is mapped, unmapped or grown.
# strace -f splits a call that another thread's traced call interrupts into `... <unfinished ...>`
# and `<... mprotect resumed>) = 0` (which names no `mprotect(`): the access log writer's
# write(2)s make that common, so the headroom pair is recognised in its split form too.
WINDOW=$(printf '%s\n' "$WINDOW" | grep -vE 'mprotect\(0x[0-9a-f]+, 16384, PROT_(NONE|READ\|PROT_WRITE)(\) = 0| <unfinished \.\.\.>)' || true)
if [ "$APP" = kv ]; then
  # Quarantine mode's pair per request: the arena made inaccessible at release (PROT_NONE) and
  # accessible again when the slot is claimed (runtime/src/worker/slots.rs, read.rs). Counted.
  QUARANTINE_PAIR="mprotect\(0x[0-9a-f]+, $ARENA_BYTES, PROT_(NONE|READ\|PROT_WRITE)(\) = 0| <unfinished \.\.\.>)"
  echo "quarantine mprotect calls (arena, $ARENA_BYTES bytes): $(printf '%s\n' "$WINDOW" | grep -cE "$QUARANTINE_PAIR" || true)"
  WINDOW=$(printf '%s\n' "$WINDOW" | grep -vE "$QUARANTINE_PAIR" || true)
fi
MEMORY_CALLS=$(printf '%s\n' "$WINDOW" | grep -cE '(mmap|munmap|brk|mprotect|madvise|mremap)\(' || true)
echo "memory syscalls between ready and shutdown: $MEMORY_CALLS"
no_escape_line "$WORK/b.err"
[ "$MEMORY_CALLS" = 0 ] || { printf '%s\n' "$WINDOW" | grep -E '(mmap|munmap|brk|mprotect|madvise|mremap)\(' | head; echo "FAIL"; exit 1; }
echo "no-alloc-after-startup: 2 passed, 0 failed"
