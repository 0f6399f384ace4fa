#!/usr/bin/env python3
"""Instructions per request of one or more cella builds under callgrind: a count that does not
depend on how busy the machine is (unlike CPU time), to tell a real change from noise.

For each build (benchapp binary) and workload, the server runs under
`valgrind --tool=callgrind` with the arguments runner.py uses; after WARMUP requests the counters
are zeroed (`callgrind_control -z`), REQUESTS more requests are sent and the counters dumped
(`callgrind_control -d`): instructions per request = Ir of the dump / REQUESTS. This counts the
server's user-space instructions only (no kernel time); a client on one connection:

- keepalive: one GET / at a time (request, whole response, next request);
- pipelined: 16 GET / written at once, then the 16 responses read.

    python3 benchmarks/instructions.py NAME=BENCHAPP[@KEY=VALUE...] [...] [--requests 20000]

A build may carry configuration keys after `@` (each passed as `--set KEY=VALUE`), to compare
settings of one binary: `off=target/release/examples/benchapp@escape_check=off`.

Loopback only, every wait bounded, every process ended by its PID.
"""
import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runner import CELLA_ARGS, free_port, wait_listening  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, World!"
DEPTH = 16


def responses(s, count, buffer):
    """Reads `count` whole responses from `s`; returns the bytes left over."""
    for _ in range(count):
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?i)content-length:\s*(\d+)", buffer[:end])
                total = end + 4 + int(m.group(1))
                if len(buffer) >= total:
                    if not buffer[:total].endswith(BODY):
                        raise SystemExit(f"unexpected response {buffer[:total]!r}")
                    buffer = buffer[total:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("server closed the connection")
            buffer += chunk
    return buffer


def send(port, workload, count):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        left = b""
        if workload == "keepalive":
            for _ in range(count):
                s.sendall(REQUEST)
                left = responses(s, 1, left)
        else:
            for _ in range(count // DEPTH):
                s.sendall(REQUEST * DEPTH)
                left = responses(s, DEPTH, left)


def measure(build, workload, warmup, requests):
    binary, *settings = build.split("@")
    sets = [arg for setting in settings for arg in ("--set", setting)]
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="cella-ir-")
    out = os.path.join(tmp, "callgrind.out")
    log = open(os.path.join(tmp, "log"), "w+")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve",
                             "--listen", f"127.0.0.1:{port}"] + CELLA_ARGS + sets, stdout=subprocess.DEVNULL, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        def failure():
            log.seek(0)
            return f"{binary} did not start under valgrind: {log.read()[-2000:]}"

        wait_listening(proc, port, 180, failure)
        send(port, workload, warmup)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True, timeout=120)
        send(port, workload, requests)
        before = set(glob.glob(out + "*"))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=120)
        dumps = sorted(set(glob.glob(out + "*")) - before) or sorted(glob.glob(out + ".*"))
        total = 0
        for dump in dumps:
            for line in open(dump):
                if line.startswith("summary:") or line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
        return total / requests
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("builds", nargs="+", metavar="NAME=BENCHAPP")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--workloads", default="keepalive,pipelined")
    options = parser.parse_args()
    builds = [b.partition("=")[::2] for b in options.builds]
    table = {}
    for workload in options.workloads.split(","):
        for name, binary in builds:
            table[(workload, name)] = measure(binary, workload, options.warmup, options.requests)
            print(f"{workload:10} {name:14} {table[(workload, name)]:>8.0f} instructions/request", flush=True)
    first = builds[0][0]
    print(f"\n| workload | " + " | ".join(name for name, _ in builds) + " | " +
          " | ".join(f"{first} ÷ {name}" for name, _ in builds[1:]) + " |")
    print("| --- " * (1 + 2 * len(builds) - 1) + "|")
    for workload in options.workloads.split(","):
        values = [table[(workload, name)] for name, _ in builds]
        print(f"| {workload} | " + " | ".join(f"{v:,.0f}" for v in values) + " | " +
              " | ".join(f"{values[0] / v:.3f}" for v in values[1:]) + " |")


if __name__ == "__main__":
    main()
