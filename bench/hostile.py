#!/usr/bin/env python3
"""Issue 17's hostile captures: peak memory, time and anomalies, in one table.

    bench/hostile.py [--quick] [--keep DIR]

Builds each capture with `flowtrace-bench hostile` (a SYN flood of 5 M half-open
connections, a flood of 1 M IP fragments that never complete, one connection with
endless headers, one with an endless chunked body, a million tiny pipelined
requests, a reassembly gap that never fills; each between real requests
`GET /real/K`), runs `flowtrace pcap --format jsonl` on it under `/usr/bin/time`
(with `--svg DIR` for the diagram cases: request paths, segment journal and
diagrams), and prints a Markdown table: frames, seconds, peak RSS, how many of the
real requests were reported with their response, and the counters that show what
the attack cost, all with the default memory budget (512 MiB) unless a case says
otherwise. A case whose peak RSS passes its budget plus 64 MiB, or that loses a real
request, is named on stderr and makes the exit status 1. `--quick` uses sizes a
tenth as large. Needs the release build (`cargo build --release`).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")

FLOOD_COUNTERS = ["tcp_connections", "tcp_evicted_half_open", "tcp_evicted_established",
                  "tcp_untracked"]

FRAG_COUNTERS = ["ip_fragments", "ip_fragments_evicted", "ip_fragments_dropped", "ip_reassembled"]
SVG_COUNTERS = ["segments_evicted", "segments_not_kept", "forced_rounds"]

# kind, N (SYNs, fragments, bytes or requests), what it is, the counters worth showing, extra
# flowtrace options.
CASES = [
    ("syn-flood", 5_000_000, "5 M half-open SYNs, 30 real connections inside",
     FLOOD_COUNTERS, []),
    ("syn-flood", 5_000_000, "the same, `--memory-budget 64M`",
     FLOOD_COUNTERS, ["--memory-budget", "64M"]),
    ("syn-flood", 5_000_000, "the same, `--max-connections 100000`",
     FLOOD_COUNTERS, ["--max-connections", "100000"]),
    ("frag-flood", 1_000_000, "1 M first fragments of 64 KiB datagrams that never complete, 10 real requests inside sent in fragments",
     FRAG_COUNTERS, []),
    ("frag-flood", 1_000_000, "the same, `--memory-budget 64M`",
     FRAG_COUNTERS, ["--memory-budget", "64M"]),
    ("syn-flood", 5_000_000, "the 5 M SYN flood with `--svg DIR` (paths, segment journal, diagrams)",
     FLOOD_COUNTERS[:2] + SVG_COUNTERS, ["--svg"]),
    ("syn-flood", 5_000_000, "the same with `--svg DIR --memory-budget 64M`",
     FLOOD_COUNTERS[:2] + SVG_COUNTERS, ["--svg", "--memory-budget", "64M"]),
    ("pipelined", 1_000_000, "1 M pipelined requests with `--svg DIR`",
     ["http_requests"] + SVG_COUNTERS, ["--svg"]),
    ("endless-headers", 200 << 20, "one request whose header block never ends (200 MiB of 2 kB lines)",
     ["http_header_overflows", "http_parse_errors", "http_resyncs"], []),
    ("endless-chunked", 200 << 20, "one chunked response that never ends (200 MiB)",
     ["http_incomplete", "http_transactions"], []),
    ("pipelined", 1_000_000, "1 M tiny pipelined requests on one connection",
     ["http_requests", "http_responses", "http_unanswered"], []),
    ("gap-never-fills", 200 << 20, "a 200 MiB body behind a hole never filled nor acked",
     ["tcp_reassembly_overflows", "tcp_gaps", "tcp_gap_bytes", "http_incomplete"], []),
]


def budget_mib(extra):
    """The --memory-budget a case runs with, in MiB."""
    if "--memory-budget" in extra:
        v = extra[extra.index("--memory-budget") + 1]
        return int(v[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024}[v[-1].upper()]
    return 512


def run_case(kind, n, workdir, extra):
    pcap = os.path.join(workdir, f"{kind}.pcap")
    gen = subprocess.run([os.path.join(BIN, "flowtrace-bench"), "hostile", kind, pcap, str(n)],
                         capture_output=True, text=True, check=True)
    made = json.loads(gen.stdout)
    out = os.path.join(workdir, f"{kind}.jsonl")
    svg_dir = None
    if "--svg" in extra:
        svg_dir = os.path.join(workdir, f"{kind}-svg")
        i = extra.index("--svg")
        extra = extra[:i + 1] + [svg_dir] + extra[i + 1:]
    timed = subprocess.run(["/usr/bin/time", "-f", "%M %e", os.path.join(BIN, "flowtrace"),
                            "pcap", pcap, "--format", "jsonl", "-o", out, "--no-progress",
                            *extra],
                           capture_output=True, text=True)
    if timed.returncode != 0:
        sys.exit(f"flowtrace failed on {kind}: {timed.stderr}")
    rss_kib, secs = timed.stderr.strip().splitlines()[-1].split()
    real, stats = set(), {}
    with open(out) as f:
        for line in f:
            rec = json.loads(line)
            # Transactions (`--format jsonl`), or request paths' hops (`--svg`).
            hops = rec.get("hops", []) if rec.get("type") == "path" else [rec]
            if rec.get("type") in ("transaction", "path"):
                for h in hops:
                    uri = h.get("uri") or ""
                    if uri.startswith("/real/") and h.get("status") == 200:
                        real.add(uri)
            if rec.get("type") == "summary":
                stats = dict(rec["stats"])
                stats.update(rec.get("correlation") or {})
    if svg_dir:
        stats["svg_files"] = len(os.listdir(svg_dir))
        shutil.rmtree(svg_dir)
    os.remove(pcap)
    os.remove(out)
    return made, int(rss_kib) / 1024, float(secs), len(real), stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="sizes a tenth as large")
    ap.add_argument("--keep", help="work directory (default: a temporary one)")
    args = ap.parse_args()
    workdir = args.keep or tempfile.mkdtemp(prefix="flowtrace-hostile-")
    os.makedirs(workdir, exist_ok=True)
    print("| case | frames | capture MiB | seconds | peak RSS MiB | real requests reported | counters |")
    print("|---|---:|---:|---:|---:|---:|---|")
    failed = []
    for kind, n, what, counters, extra in CASES:
        if args.quick:
            n //= 10
        made, rss, secs, real, stats = run_case(kind, n, workdir, extra)
        shown = ", ".join(f"`{c}` {stats.get(c, 0):,}" for c in counters)
        print(f"| {kind}: {what} | {made['packets']:,} | {made['bytes'] / 2**20:,.0f} | "
              f"{secs:.2f} | {rss:,.0f} | {real} of {made['real_requests']} | {shown} |",
              flush=True)
        bound = budget_mib(extra) + 64
        if rss > bound or real != made["real_requests"]:
            failed.append(f"{kind} {' '.join(extra)}: peak RSS {rss:,.0f} MiB (bound {bound:,.0f}), "
                          f"{real} of {made['real_requests']} real requests")
    for f in failed:
        print(f"hostile.py: FAILED {f}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
