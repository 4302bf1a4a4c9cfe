#!/usr/bin/env python3
"""Markdown table of hop.sh's raw.jsonl: medians over rounds per target,
hop / holder and each / direct, and errors (wrk errors of any kind, HTTP
>= 400, failed or short 64 MiB transfers) per target over all rounds."""

import json
import statistics
import sys

TARGETS = ["direct", "holder", "hop"]
ROWS = [  # (label, test, field)
    ("GET /small c1 req/s", "small_c1", "rps"),
    ("GET /small c1 p50 µs", "small_c1", "p50_us"),
    ("GET /small c1 p99 µs", "small_c1", "p99_us"),
    ("GET /small c64 req/s", "small_c64", "rps"),
    ("GET /small c64 p50 µs", "small_c64", "p50_us"),
    ("GET /small c64 p99 µs", "small_c64", "p99_us"),
    ("POST /hook c16 req/s", "hook_c16", "rps"),
    ("POST /hook c16 p50 µs", "hook_c16", "p50_us"),
    ("POST /hook c16 p99 µs", "hook_c16", "p99_us"),
    ("GET /big 64 MiB MB/s", "big_get", "mbps"),
]


def fmt(v):
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x"


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    errors = {t: 0 for t in TARGETS}
    for r in runs:
        if r.get("failed"):
            errors[r["target"]] += 1
        errors[r["target"]] += r.get("err", 0) + sum(v for k, v in r.items() if k.startswith("err_"))

    def median(target, test, field):
        vals = [r[field] for r in runs if r["target"] == target and r["test"] == test and field in r]
        return statistics.median(vals) if vals else None

    rounds = len({r["round"] for r in runs})
    print(f"Medians over {rounds} rounds.\n")
    print("| row | direct | holder (node A) | hop (node B → A) | hop ÷ holder | holder ÷ direct | hop ÷ direct |")
    print("|---|---|---|---|---|---|---|")
    for label, test, field in ROWS:
        d, h, p = (median(t, test, field) for t in TARGETS)
        print(f"| {label} | {fmt(d)} | {fmt(h)} | {fmt(p)} | {ratio(p, h)} | {ratio(h, d)} | {ratio(p, d)} |")
    print("| errors (all rounds) | " + " | ".join(str(errors[t]) for t in TARGETS) + " | | | |")


if __name__ == "__main__":
    main(sys.argv[1])
