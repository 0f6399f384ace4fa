#!/usr/bin/env python3
"""Memory per idle keep-alive connection: cella, nginx and hyper side by side (issue 9).

For each server and each connection count N (default 1,000, 10,000 and 19,000), a fresh server
is started and answers one check request; its RSS is read (RSS with 0 idle connections). A
client process (benchmarks/idle_client.py, its own process so that it has its own open-file
limit, raised to the hard limit) then opens N connections; each sends one GET / keep-alive
request, reads the whole response and stays open, idle. Once every response is in and the
server's RSS has stopped moving, its RSS is read again (RSS with N idle connections). Reported:

- RSS growth per idle connection = (RSS with N - RSS with 0) / N, where RSS is VmRSS from
  /proc/PID/status summed over the server's process tree (nginx: master and workers);
- for cella, the region: the total of the memory plan line it prints at startup (started with
  `--max-connections N`), divided by N, and the part of it that scales with N (the slope of the
  region's size between two counts);
- for cella, RSS with 0 idle connections against N (memory reserved per *configured*
  connection outside the region: the connection table and queues built at startup).

Servers are interleaved per round (cella nginx hyper, cella nginx hyper, ...); each server is
pinned to CPU 0 and the client to CPU 1. Loopback only; every wait has a deadline; every process
started is ended by its PID.

    python3 benchmarks/idle.py [--counts 1000,10000,19000] [--rounds 2] [--io-buffers 64]
                               [--cella target/release/cella] [--out benchmarks/results/idle.json]

Writes benchmarks/results/idle.json and benchmarks/results/idle.md; benchmarks/report.py
includes the latter in docs/benchmarks.md.
"""
import argparse
import json
import os
import platform
import re
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
SERVER_CPU, CLIENT_CPU = "0", "1"
HELLO = b"Hello, World!"
SETTLE_S = 1.0  # RSS must hold still this long before it is read
DEADLINE_S = 120  # for starting a server, opening all connections, or settling


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid):
    """pid and all its descendants (nginx: master and workers)."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = open(f"/proc/{parent}/task/{parent}/children").read().split()
        except OSError:
            continue
        for child in map(int, children):
            pids.append(child)
            frontier.append(child)
    return pids


def rss_kib(pid):
    total = 0
    for p in process_tree(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    def __init__(self, name, count, options):
        self.name, self.count, self.options = name, count, options
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="cella-idle-")
        self.stderr = open(os.path.join(self.tmp, "stderr"), "w+")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + self.command(), stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, stdin=subprocess.DEVNULL)
        deadline = time.time() + DEADLINE_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise SystemExit(f"{name} did not start: {self.read_stderr()}")
                time.sleep(0.02)

    def command(self):
        if self.name == "cella":
            io_buffers = ["--set", f"io_buffers={self.options.io_buffers}"] if self.options.io_buffers > 0 else []
            return [self.options.cella, "serve", "--listen", f"127.0.0.1:{self.port}", "--workers", "2",
                    "--max-connections", str(self.count)] + io_buffers
        if self.name == "nginx":
            conf = open(os.path.join(BENCH, "nginx.conf.template")).read()
            conf = conf.replace("PIDFILE", os.path.join(self.tmp, "nginx.pid")).replace("TMPDIR", self.tmp)
            conf = conf.replace("PORT", str(self.port)).replace("JSON_BODY", "{}")
            path = os.path.join(self.tmp, "nginx.conf")
            open(path, "w").write(conf)
            return ["nginx", "-c", path, "-p", self.tmp, "-e", "stderr"]
        return [os.path.join(PEERS, f"{self.name}_peer"), str(self.port)]

    def read_stderr(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def plan_bytes(self):
        """The region's total from cella's startup line `cella: memory plan: ... = X (B bytes)`."""
        m = re.search(r"memory plan: .*\((\d+) bytes\)", self.read_stderr())
        return int(m.group(1)) if m else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.read_stderr()


def get_once(port):
    """One GET / on a fresh connection; the body must be Hello, World!."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(HELLO):
        raise SystemExit(f"port {port}: unexpected answer {data[:120]!r}")


def settle(pid):
    """RSS once it has not moved for SETTLE_S (bounded by DEADLINE_S)."""
    deadline = time.time() + DEADLINE_S
    last, since = rss_kib(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.1)
        now = rss_kib(pid)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= SETTLE_S:
            break
    return last


def run_one(name, count, options):
    server = Server(name, count, options)
    client = None
    try:
        get_once(server.port)
        rss_zero = settle(server.proc.pid)
        client = subprocess.Popen(["taskset", "-c", CLIENT_CPU, sys.executable, os.path.join(BENCH, "idle_client.py"),
                                   str(server.port), str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True)
        line = client.stdout.readline()  # the client's deadline bounds this read
        if not line.startswith("held"):
            client.kill()
            _, err = client.communicate(timeout=10)
            raise SystemExit(f"{name} N={count}: client failed: {line.strip()} {err.strip()[-400:]}")
        held, seconds = int(line.split()[1]), float(line.split()[2])
        rss_n = settle(server.proc.pid)
        alive = server.proc.poll() is None
        result = {"rss_zero_kib": rss_zero, "rss_n_kib": rss_n, "held": held, "open_s": seconds, "alive": alive,
                  "bytes_per_idle": (rss_n - rss_zero) * 1024 / count}
        if name == "cella":
            result["plan_bytes"] = server.plan_bytes()
    finally:
        if client and client.poll() is None:
            client.send_signal(signal.SIGTERM)
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        stderr = server.stop()
    if name == "cella":
        m = re.search(r"system allocator calls after startup: (\d+)", stderr)
        result["system_allocations"] = int(m.group(1)) if m else None
    return result


def med(values):
    values = sorted(v for v in values if v is not None)
    return statistics.median(values) if values else float("nan"), values[0] if values else float("nan"), \
        values[-1] if values else float("nan")


def spread(values, digits=0):
    m, lo, hi = med(values)
    if lo == hi:
        return f"{m:,.{digits}f}"
    return f"{m:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def write_markdown(data, path):
    meta, results = data["meta"], data["results"]
    counts, servers = meta["counts"], meta["servers"]
    lines = ["## Idle connections: memory per idle keep-alive connection", "",
             f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}); "
             f"{meta['rounds']} rounds, servers interleaved per round, a fresh server per measurement.", "",
             "Each of N connections sends one `GET /` keep-alive request, reads the response, then stays open "
             "and idle (client: `benchmarks/idle_client.py`, its own process). RSS is VmRSS from `/proc/PID/status` "
             "summed over the server's processes, read once it has held still for 1 s; RSS with 0 is read after "
             "one check request. Medians, with min–max over rounds when they differ.", "",
             f"- cella: `cella serve --workers 2 --max-connections N --set io_buffers={meta['io_buffers']}` "
             "(release build, every other key at its default: 64 slots, 8 KiB + 8 KiB buffers, prefault on).",
             "- nginx: `benchmarks/nginx.conf.template` (one process, `worker_connections 20000`).",
             "- hyper: `benchmarks/peers` `hyper_peer` (tokio current-thread).", "",
             "| server | N | RSS with 0 (KiB) | RSS with N idle (KiB) | RSS growth per idle connection (bytes) | held |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in servers:
        for count in counts:
            runs = results.get(name, {}).get(str(count), [])
            if not runs:
                continue
            lines.append(f"| {name} | {count:,} | {spread([r['rss_zero_kib'] for r in runs])} | "
                         f"{spread([r['rss_n_kib'] for r in runs])} | {spread([r['bytes_per_idle'] for r in runs])} | "
                         f"{min(r['held'] for r in runs):,} |")
    cella = results.get("cella", {})
    if cella:
        lines += ["", "cella's region (the memory plan line printed at startup) per configured connection:", "",
                  "| connections_max = N | region bytes | region bytes ÷ N | RSS with 0 (KiB) |",
                  "| --- | --- | --- | --- |"]
        plans, zeros = {}, {}
        for count in counts:
            runs = cella.get(str(count), [])
            if not runs:
                continue
            plans[count] = med([r.get("plan_bytes") for r in runs])[0]
            zeros[count] = med([r["rss_zero_kib"] for r in runs])[0]
            lines.append(f"| {count:,} | {plans[count]:,.0f} | {plans[count] / count:,.0f} | {spread([r['rss_zero_kib'] for r in runs])} |")
        if len(plans) >= 2:
            lo, hi = min(plans), max(plans)
            slope = (plans[hi] - plans[lo]) / (hi - lo)
            rss_slope = (zeros[hi] - zeros[lo]) * 1024 / (hi - lo)
            lines += ["", f"- Part of the region that scales with connections_max: {slope:,.0f} bytes per configured "
                      f"connection (region at N = {hi:,} minus region at N = {lo:,}, ÷ {hi - lo:,}); the rest "
                      f"({plans[lo]:,.0f} bytes) is slots, {meta['io_buffers']} I/O buffer pairs, workers and the state heap.",
                      f"- RSS with 0 idle connections grows by {rss_slope:,.0f} bytes per configured connection "
                      f"(same difference, RSS at startup): the connection table and per-worker queues, outside the region."]
        allocations = [r.get("system_allocations") for runs in cella.values() for r in runs if r.get("system_allocations") is not None]
        if allocations:
            lines += [f"- cella system allocator calls after startup: {max(allocations)} (max over runs)."]
    open(path, "w").write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1000,10000,19000")
    parser.add_argument("--servers", default="cella,nginx,hyper")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--io-buffers", type=int, default=64,
                        help="cella's io_buffers; 0: do not pass it (a build from before the key existed)")
    parser.add_argument("--cella", default=os.path.join(ROOT, "target", "release", "cella"))
    parser.add_argument("--out", default=os.path.join(BENCH, "results", "idle.json"))
    options = parser.parse_args()
    counts = [int(c) for c in options.counts.split(",")]
    servers = options.servers.split(",")
    results = {}
    for round_index in range(options.rounds):
        for count in counts:
            for name in servers:
                print(f"round {round_index + 1}/{options.rounds} N={count:>6} {name:6}", end=" ", flush=True)
                r = run_one(name, count, options)
                print(f"RSS {r['rss_zero_kib']:>8} -> {r['rss_n_kib']:>8} KiB  {r['bytes_per_idle']:>8.0f} B/idle conn"
                      f"  held {r['held']}  open {r['open_s']:.1f}s" + (f"  plan {r['plan_bytes']}" if name == "cella" else ""),
                      flush=True)
                results.setdefault(name, {}).setdefault(str(count), []).append(r)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    meta = {"counts": counts, "servers": servers, "rounds": options.rounds, "io_buffers": options.io_buffers,
            "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} × {model}, Linux {platform.release()}",
            "command": "python3 benchmarks/idle.py " + " ".join(sys.argv[1:])}
    os.makedirs(os.path.dirname(options.out), exist_ok=True)
    data = {"meta": meta, "results": results}
    json.dump(data, open(options.out, "w"), indent=1)
    markdown = os.path.splitext(options.out)[0] + ".md"
    write_markdown(data, markdown)
    print(f"wrote {options.out} and {markdown}")


if __name__ == "__main__":
    main()
