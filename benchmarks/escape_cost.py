#!/usr/bin/env python3
"""What the escape check (`escape_check`) costs per request: the benchapp binary served with
each level in turn (off, statics, full), the server pinned to CPU 0 and wrk to CPU 1, one
short keep-alive load of GET / each (wrk -t1 -c8), repeated ROUNDS times interleaved. For each,
the server's CPU time (utime + stime from /proc/PID/stat) per request answered, and req/s.
callgrind cannot run `full` (the scan would read valgrind's own mappings): use
benchmarks/instructions.py for off and statics instruction counts.

    python3 benchmarks/escape_cost.py target/release/examples/benchapp [--seconds 4] [--rounds 3]

Loopback only, every wait bounded, every process ended by its PID.
"""
import argparse
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runner import CELLA_ARGS, free_port, wait_listening  # noqa: E402

LEVELS = ["off", "statics", "full"]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(binary, level, seconds):
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--listen", f"127.0.0.1:{port}"] + CELLA_ARGS
                            + ["--set", f"escape_check={level}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_listening(proc, port, 20, lambda: f"{binary} did not start")
        before = cpu_seconds(proc.pid)
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c8", f"-d{seconds}s",
                              f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                             timeout=seconds + 30).stdout
        used = cpu_seconds(proc.pid) - before
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        return used / requests * 1e6, requests / seconds
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if b"cella: escape:" in err:
            raise SystemExit(f"{level}: the escape check reported a hit: {err.decode()[-2000:]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results = {level: [] for level in LEVELS}
    for _ in range(options.rounds):
        for level in LEVELS:
            results[level].append(one(options.binary, level, options.seconds))
            cpu, rate = results[level][-1]
            print(f"{level:8} {cpu:7.2f} us CPU/request {rate:10.0f} req/s", flush=True)
    print("\n| escape_check | server CPU per request (median) | req/s (median) |\n| --- | --- | --- |")
    for level in LEVELS:
        cpus = sorted(cpu for cpu, _ in results[level])
        rates = sorted(rate for _, rate in results[level])
        print(f"| {level} | {cpus[len(cpus) // 2]:.2f} µs | {rates[len(rates) // 2]:,.0f} |")


if __name__ == "__main__":
    main()
