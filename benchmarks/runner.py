#!/usr/bin/env python3
"""Runs cella and its peers side by side and writes docs/benchmarks.md and SVG plots.

Method: each server pinned to CPU 0 (taskset), wrk and helpers to CPU 1; servers interleaved
(A B C ... A B C) over the rounds; a fresh server process per run; medians with min-max. Per run:
req/s, latency p50/p99 (wrk --latency), server CPU time per request (utime+stime from
/proc/PID/stat over the run, divided by requests), RSS after warm-up and peak (VmRSS, VmHWM),
errors. Every server's response body is checked once per workload before timing.

Traffic goes to 127.0.0.1 only; every run is bounded by its duration; every process started is
ended by its PID.
"""
import argparse
import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
PEERS = os.path.join(BENCH, "peers", "target", "release")
CELLA = os.path.join(ROOT, "target", "release", "examples", "benchapp")
# cella binaries by server name: `--cella-before PATH` adds a second build (another commit's
# benchapp) run as the peer `cella-before`, with the same arguments, to compare two versions.
CELLA_BINARIES = {"cella": CELLA}
TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CPU, CLIENT_CPU = "0", "1"
CELLA_ARGS = ["--workers", "1", "--slots", "128", "--slot-stack", "64KiB", "--slot-arena", "512KiB",
              "--set", "request_body_size_max=64KiB", "--set", "keepalive_idle_timeout_ms=120000"]

sys.path.insert(0, os.path.join(BENCH, "peers", "src"))


def json_body():
    """The /json body, computed by running the shared Rust code's logic in Python (same bytes)."""
    items = []
    for i in range(16):
        items.append('{"id":%d,"name":"item-%04d","price":%d.%02d,"tags":["a","b"]}' % (i, i, i * 7 + 3, (i * 13) % 100))
    return '{"service":"bench","items":[' + ",".join(items) + '],"ok":true}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, port, seconds, failure):
    """Waits until 127.0.0.1:`port` accepts a connection; exits with `failure()` (called only
    then) if `proc` ends first or `seconds` pass."""
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(failure())
            time.sleep(0.02)


class Server:
    def __init__(self, name, workload):
        self.name, self.workload = name, workload
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="cella-bench-")
        self.stderr = open(os.path.join(self.tmp, "stderr"), "w+")
        command = self.command()
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + command, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, stdin=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, 20, lambda: f"{name} did not start: {self.read_stderr()}")

    def command(self):
        port = str(self.port)
        if self.name in CELLA_BINARIES:
            extra = ["--max-connections", "12000"] if self.workload == "idle" else []
            # A build may carry configuration keys after `@` (as instructions.py): PATH@KEY=VALUE.
            binary, *settings = CELLA_BINARIES[self.name].split("@")
            sets = [arg for setting in settings for arg in ("--set", setting)]
            return [binary, "serve", "--listen", f"127.0.0.1:{port}"] + CELLA_ARGS + extra + sets
        if self.name == "nginx":
            conf = open(os.path.join(BENCH, "nginx.conf.template")).read()
            conf = conf.replace("PIDFILE", os.path.join(self.tmp, "nginx.pid")).replace("TMPDIR", self.tmp)
            conf = conf.replace("PORT", port).replace("JSON_BODY", json_body())
            path = os.path.join(self.tmp, "nginx.conf")
            open(path, "w").write(conf)
            return ["nginx", "-c", path, "-p", self.tmp, "-e", "stderr"]
        return [os.path.join(PEERS, f"{self.name}_peer"), port]

    def read_stderr(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def cpu_ticks(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)

    def memory_kib(self, key):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.read_stderr()


def check(server, method, path, expected, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, body=body)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if data != expected:
        raise SystemExit(f"{server.name} {method} {path}: wrong body {data[:80]!r}")


WORKLOADS = {
    # name: (description, wrk args, body check, servers that can run it)
    "plaintext": ("GET / keep-alive, 64 connections", ["-c", "64", "/"], ("GET", "/", b"Hello, World!")),
    "pipelined": ("GET / pipelined 16 deep, 64 connections", ["-c", "64", "-s", "lua/pipeline.lua", "/"], ("GET", "/", b"Hello, World!")),
    "close": ("GET / with Connection: close, 64 connections", ["-c", "64", "-s", "lua/close.lua", "/"], ("GET", "/", b"Hello, World!")),
    "alloc1": ("GET /alloc/1, 64 connections", ["-c", "64", "/alloc/1"], ("GET", "/alloc/1", b"1024")),
    "alloc10": ("GET /alloc/10, 64 connections", ["-c", "64", "/alloc/10"], ("GET", "/alloc/10", b"10240")),
    "alloc50": ("GET /alloc/50, 64 connections", ["-c", "64", "/alloc/50"], ("GET", "/alloc/50", b"51200")),
    "json": ("GET /json (build and serialise ~1 KiB of JSON), 64 connections", ["-c", "64", "/json"], ("GET", "/json", json_body().encode())),
    "sleep": ("GET /sleep/10 (waits 10 ms on a timer), 100 connections", ["-c", "100", "/sleep/10"], ("GET", "/sleep/1", b"slept 1 ms\n")),
    "idle": ("GET / keep-alive, 64 connections, with 10,000 idle connections held open", ["-c", "64", "/"], ("GET", "/", b"Hello, World!")),
    "mix": ("GET / through a Lua script, 64 connections (baseline of `overload`)", ["-c", "64", "-s", "lua/mix.lua", "/"], ("GET", "/", b"Hello, World!")),
    "overload": ("as `mix`, but 1% of requests are GET /alloc/2048 (past cella's 512 KiB arena)", ["-c", "64", "-s", "lua/mix.lua", "/"], ("GET", "/", b"Hello, World!")),
}
NOT_FOR_NGINX = {"alloc1", "alloc10", "alloc50", "sleep", "overload"}


def parse_duration_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse_wrk(output):
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    result["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    for percentile in ("50", "99"):
        m = re.search(rf"^\s+{percentile}%\s+(\S+)", output, re.M)
        result[f"p{percentile}_ms"] = parse_duration_ms(m.group(1)) if m else float("nan")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors += sum(int(x) for x in m.groups()) if m else 0
    result["errors"] = errors
    return result


def hold_idle(port, count):
    """Opens `count` idle keep-alive connections from a helper pinned to the client core."""
    code = ("import socket,sys,time\n"
            f"s=[socket.create_connection(('127.0.0.1',{port})) for _ in range({count})]\n"
            "print('held',len(s),flush=True)\ntime.sleep(3600)\n")
    helper = subprocess.Popen(["taskset", "-c", CLIENT_CPU, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = helper.stdout.readline()
    if not line.startswith("held"):
        helper.kill()
        raise SystemExit(f"could not hold {count} idle connections")
    return helper


def run_one(name, workload, duration, warmup):
    description, args, (method, path, expected) = WORKLOADS[workload]
    server = Server(name, workload)
    helper = None
    try:
        body = b"x" * 64 if method == "POST" else None
        check(server, method, path, expected, body)
        env = dict(os.environ)
        if workload == "overload":
            env["OVERRUN_EVERY"] = "100"
        wrk = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "--latency", "-d"]
        url = f"http://127.0.0.1:{server.port}"
        if warmup:
            subprocess.run(wrk + [f"{warmup}s"] + args[:-1] + [url + args[-1]], cwd=BENCH, env=env, capture_output=True, timeout=warmup + 30)
        rss_before = server.memory_kib("VmRSS")
        if workload == "idle":
            helper = hold_idle(server.port, 10000)
            time.sleep(0.5)
        rss_idle = server.memory_kib("VmRSS")
        cpu_before = server.cpu_ticks()
        out = subprocess.run(wrk + [f"{duration}s"] + args[:-1] + [url + args[-1]], cwd=BENCH, env=env,
                             capture_output=True, text=True, timeout=duration + 60)
        cpu_after = server.cpu_ticks()
        result = parse_wrk(out.stdout)
        result["cpu_us_per_request"] = (cpu_after - cpu_before) / TICKS * 1e6 / max(result["requests"], 1)
        result["rss_kib"] = rss_before
        result["rss_idle_kib"] = rss_idle
        result["hwm_kib"] = server.memory_kib("VmHWM")
        if workload == "overload":
            # Non-2xx are the intended 500s (cella) for the 1% overruns: not errors of the 99%.
            result["errors"] = 0
    finally:
        if helper:
            helper.kill()
            helper.wait()
        stderr = server.stop()
    if name in CELLA_BINARIES:
        m = re.search(r"system allocator calls after startup: (\d+)", stderr)
        result["system_allocations"] = int(m.group(1)) if m else None
    return result


def median_range(values):
    values = [v for v in values if v == v]
    if not values:
        return (float("nan"),) * 3
    return statistics.median(values), min(values), max(values)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--servers", default="cella,hyper,actix,may,nginx")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", default=os.path.join(BENCH, "results", "latest.json"))
    parser.add_argument("--cella", default=CELLA, help="the benchapp binary run as `cella`")
    parser.add_argument("--cella-before", help="a second benchapp binary, run as the server `cella-before`")
    parser.add_argument("--cella-peer", action="append", default=[], metavar="NAME=PATH",
                        help="another benchapp binary run as the server NAME (repeatable; NAME starts with cella-)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3, --quick: 1)")
    parser.add_argument("--duration", type=int, help="seconds per run (default: 8, --quick: 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per run (default: 1, --quick: 0)")
    parser.add_argument("--alternate", action="store_true",
                        help="reverse the order of the servers every other round (A B, B A, ...)")
    options = parser.parse_args()
    rounds, duration, warmup = (1, 2, 0) if options.quick else (3, 8, 1)
    rounds = options.rounds or rounds
    duration = options.duration or duration
    warmup = options.warmup if options.warmup is not None else warmup
    CELLA_BINARIES["cella"] = options.cella
    if options.cella_before:
        CELLA_BINARIES["cella-before"] = options.cella_before
    for peer in options.cella_peer:
        name, _, path = peer.partition("=")
        if not name.startswith("cella-") or not path:
            parser.error(f"--cella-peer {peer}: expected cella-NAME=PATH")
        CELLA_BINARIES[name] = path
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    servers = options.servers.split(",")
    results = {}
    for round_index in range(rounds):
        for workload in options.workloads.split(","):
            order = servers[::-1] if options.alternate and round_index % 2 else servers
            for name in order:
                if name == "nginx" and workload in NOT_FOR_NGINX:
                    continue
                print(f"round {round_index + 1}/{rounds} {workload:10} {name:12}", end=" ", flush=True)
                result = run_one(name, workload, duration, warmup)
                print(f"{result['rps']:>12.0f} req/s  {result['cpu_us_per_request']:.2f} us/req  p99 {result['p99_ms']:.2f} ms  errors {result['errors']}")
                results.setdefault(workload, {}).setdefault(name, []).append(result)
    os.makedirs(os.path.dirname(options.out), exist_ok=True)
    meta = {"quick": options.quick, "rounds": rounds, "duration_s": duration, "cella_args": CELLA_ARGS,
            "cella_binaries": CELLA_BINARIES}
    json.dump({"meta": meta, "results": results}, open(options.out, "w"), indent=1)
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
