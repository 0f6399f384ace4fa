#!/usr/bin/env python3
"""Compares cella builds measured side by side by runner.py (`--cella-before PATH` or
`--cella-peer cella-NAME=PATH` run other builds' benchapp as the servers `cella-before`,
`cella-NAME`): per workload and per other build, the ratio cella ÷ other of server CPU time per
request and of req/s, per round (the builds ran back to back in the same round) and over all
rounds (median and min-max of the per-round ratios).

    python3 benchmarks/compare.py [benchmarks/results/before.json]

Prints a Markdown section and writes it next to the JSON (before.md).
"""
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(values, digits):
    m = statistics.median(values)
    return f"{m:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "benchmarks", "results", "before.json")
    data = json.load(open(path))
    meta, results = data["meta"], data["results"]
    lines = [f"{meta['rounds']} rounds of {meta['duration_s']} s per build and workload, the builds back to back "
             "in each round (fresh process per run, server on CPU 0, wrk on CPU 1). Medians, min–max over rounds; "
             "a ratio is computed per round, then its median and min–max are shown.", "",
             "| workload | build | CPU µs/request | req/s | CPU ratio cella ÷ build | req/s ratio cella ÷ build |",
             "| --- | --- | --- | --- | --- | --- |"]
    per_round = ["", "Per round, CPU µs/request (cella / build = ratio):", ""]
    for workload, by_server in results.items():
        now = by_server.get("cella", [])
        if not now:
            continue
        lines.append(f"| {workload} | cella | {summary([r['cpu_us_per_request'] for r in now], 2)} | "
                     f"{summary([r['rps'] for r in now], 0)} | — | — |")
        for name, other in by_server.items():
            if name == "cella" or not name.startswith("cella-"):
                continue
            pairs = list(zip(now, other))
            cpu = [a["cpu_us_per_request"] / b["cpu_us_per_request"] for a, b in pairs]
            rps = [a["rps"] / b["rps"] for a, b in pairs]
            lines.append(f"| {workload} | {name} | {summary([b['cpu_us_per_request'] for _, b in pairs], 2)} | "
                         f"{summary([b['rps'] for _, b in pairs], 0)} | **{summary(cpu, 3)}** | {summary(rps, 3)} |")
            per_round.append(f"- {workload}, {name}: " + "; ".join(
                f"{a['cpu_us_per_request']:.2f} / {b['cpu_us_per_request']:.2f} = {a['cpu_us_per_request'] / b['cpu_us_per_request']:.3f}"
                for a, b in pairs))
        errors = sum(r["errors"] for runs in by_server.values() for r in runs)
        if errors:
            per_round.append(f"  ({workload}: {errors} errors)")
    text = "\n".join(lines + per_round) + "\n"
    out = os.path.splitext(path)[0] + ".md"
    open(out, "w").write(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
