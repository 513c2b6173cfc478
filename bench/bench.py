#!/usr/bin/env python3
"""Times flowtrace against tshark's HTTP pass, tcpdump's read and a bare read loop on
two capture shapes, in one run, and prints seconds, packets/s, peak RSS and the ratios.

    bench/bench.py [--shape large|small|both] [--runs 3] [--json OUT]
                   [--baseline-bin OLD_FLOWTRACE] [--skip-tshark] [--threads N]
                   [--no-pgo] [--page-cache reread|as-is]

Shapes (both by default):
- large: a deterministic 1 GiB capture written by `flowtrace-bench gen` (512
  keep-alive connections at a time, bodies of 100 B to 12 kB cut at the MSS);
- small: small-packet API traffic, `../shared/bench/genpcap.py OUT --size-mb 300
  --seed 1` (1.41 M packets, 441,078 keep-alive transactions on 13,880 connections),
  when that script exists (it is a benchmark input, not a test input).

Each tool runs once as a warm-up, then the tools take turns, --runs rounds of one
run each (so that a drift in the machine's speed falls on all of them alike); the
median wall time is reported, with the peak RSS (os.wait4) of the median run. flowtrace writes its JSON
lines to a real file in bench-data/ (as a user would), and the benchmark checks the
work from that file: every frame read (the bare loop counts them) and, for the small
shape, exactly the generated transaction count; tshark's requests must equal
flowtrace's. --baseline-bin times an older flowtrace build the same way (e.g. the
commit before a change), so that a change is judged against it in the same session.

The capture is first dropped from the page cache and read back once, whole
(--page-cache reread, the default), so that every session times it cached the same
way: as a read from disk brings it in. How a file sits in the page cache depends on
how it got there: a capture the generator has just written is held in 4 KiB pages,
the same file read back from disk in large folios (Linux 6.x readahead), which map
with a twelfth of the page faults; the tools' times moved by 1-3 % between the two
(docs/PERFORMANCE.md, session 36). --page-cache as-is leaves the cache as it finds it.

Two builds of this source are timed: the profile-guided one of scripts/build-pgo.sh
(trained on the capture sets in captures/, never on the benchmark's own captures; the
ratios are against it) and the plain `cargo build --release`; --no-pgo times the
plain one only.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENPCAP = os.path.join(os.path.dirname(ROOT), "shared", "bench", "genpcap.py")
TSHARK = ["tshark", "-Y", "http", "-T", "fields", "-e", "frame.time_epoch",
          "-e", "http.request.method", "-e", "http.response.code"]


def run(cmd, stdout=subprocess.DEVNULL):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited {code}: {err.strip()}")
    return wall, rusage.ru_maxrss * 1024, rusage.ru_utime + rusage.ru_stime


def interleaved_runs(tools, runs):
    """A warm-up run of every tool, then `runs` rounds of one run of each in turn;
    per tool, the median run by wall time and the walls of all. Taking turns keeps
    the ratios fair when the machine's speed drifts during a session (on the 2-core
    VM the benchmark was written on, one build's median moved between 0.35 and 0.60 s
    within minutes, docs/PERFORMANCE.md). A tool's `output` (the file it writes) is
    removed before each run, untimed: overwriting the previous run's file made the
    filesystem free its blocks when it was truncated and write the new one back when
    it was closed (ext4's auto_da_alloc), about 0.08 s of a 0.65 s run on the small
    capture (docs/PERFORMANCE.md, session 29), work a first run into a new file does
    not do."""
    def once(tool):
        for path in (tool.get("stdout"), tool.get("output")):
            if path and os.path.exists(path):
                os.remove(path)
        if tool.get("stdout"):
            with open(tool["stdout"], "wb") as out:
                return run(tool["cmd"], stdout=out)
        return run(tool["cmd"])
    for tool in tools:
        print(f"  warm-up: {tool['name']}", file=sys.stderr)
        once(tool)
    results = [[] for _ in tools]
    for i in range(runs):
        for tool, res in zip(tools, results):
            res.append(once(tool))
            print(f"  run {i + 1}/{runs}: {tool['name']}: {res[-1][0]:.3f} s", file=sys.stderr)
    out = []
    for res in results:
        by_wall = sorted(res, key=lambda r: r[0])
        out.append((by_wall[len(by_wall) // 2], [round(r[0], 3) for r in by_wall]))
    return out


def reread(path):
    """Drops `path` from the page cache and reads it back, whole, in large reads.
    A file still being written back is synced first: dirty pages are not dropped."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while f.read(8 << 20):
            pass


def flowtrace_cmd(binary, path, out, threads):
    cmd = [binary, "pcap", path, "--format", "jsonl", "-o", out, "--no-progress"]
    if threads is not None and "--threads" in subprocess.run(
            [binary, "pcap", "--help"], capture_output=True, text=True).stdout:
        cmd += ["--threads", str(threads)]
    return cmd


def count_jsonl(out):
    """Transactions and the summary of a `--format jsonl` file."""
    transactions = 0
    summary = None
    with open(out, "rb") as f:
        for line in f:
            if line.startswith(b'{"type":"transaction"'):
                transactions += 1
            elif b'"type":"summary"' in line:
                summary = json.loads(line)
    return transactions, summary


def prepare(shape, args, helper, data):
    """The capture of `shape`, generated once; (path, expected transactions or None)."""
    if shape == "large":
        path = os.path.join(data, f"bench-{args.size}.pcap")
        if not os.path.exists(path):
            print(f"generating {path} ({args.size}) ...", file=sys.stderr)
            subprocess.run([helper, "gen", path, "--size", args.size], check=True,
                           stdout=subprocess.DEVNULL)
        return path, None
    path = os.path.join(data, "small-300.pcap")
    meta = path + ".meta.json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        print(f"generating {path} with {GENPCAP} ...", file=sys.stderr)
        subprocess.run([sys.executable, GENPCAP, path, "--size-mb", "300", "--seed", "1"],
                       check=True, stdout=subprocess.DEVNULL)
    with open(meta) as f:
        return path, json.load(f)["transactions"]


def bench_shape(shape, args, flowtrace, helper, data):
    path, expected = prepare(shape, args, helper, data)
    if args.page_cache == "reread":
        reread(path)
    size = os.path.getsize(path)
    out = subprocess.run([helper, "read", path], check=True, capture_output=True, text=True)
    packets = json.loads(out.stdout)["frames"]
    tools = [{"name": "bare pcap-parser loop", "cmd": [helper, "read", path]}]
    if shutil.which("tcpdump"):
        tools.append({"name": "tcpdump -r F -w /dev/null", "cmd": ["tcpdump", "-r", path, "-w", "/dev/null"]})
    for build, binary in flowtrace:
        jsonl = os.path.join(data, f"flowtrace-{shape}-{build}.jsonl")
        tools.append({"name": f"flowtrace pcap F --format jsonl -o FILE ({build} build)", "build": build,
                      "cmd": flowtrace_cmd(binary, path, jsonl, args.threads), "output": jsonl})
    if args.baseline_bin:
        tools.append({"name": "baseline flowtrace (--baseline-bin)", "build": "baseline",
                      "cmd": flowtrace_cmd(args.baseline_bin, path,
                                           os.path.join(data, f"baseline-{shape}.jsonl"), None),
                      "output": os.path.join(data, f"baseline-{shape}.jsonl")})
    tsv = os.path.join(data, f"tshark-{shape}.tsv")
    if shutil.which("tshark") and not args.skip_tshark:
        tools.append({"name": "tshark -r F -Y http -T fields (3 fields)",
                      "cmd": TSHARK[:1] + ["-r", path] + TSHARK[1:], "stdout": tsv})

    print(f"{shape}: {path}", file=sys.stderr)
    rows = []
    for tool, ((wall, rss, cpu), walls) in zip(tools, interleaved_runs(tools, args.runs)):
        row = {"tool": tool["name"], "seconds": wall, "cpu_seconds": cpu, "peak_rss_bytes": rss,
               "runs": walls, "packets_per_s": packets / wall, "mb_per_s": size / wall / 1e6}
        if "build" in tool:
            row["build"] = tool["build"]
        rows.append(row)
        print(f"  {tool['name']}: {wall:.3f} s (runs {walls})", file=sys.stderr)

    # The work checked from what the last runs wrote.
    counts = []
    for tool in tools:
        if "output" not in tool:
            continue
        transactions, summary = count_jsonl(tool["output"])
        name = tool["name"]
        if tool["build"] == "baseline":
            # An older build: only the transactions it wrote are compared.
            baseline_transactions = transactions
            continue
        assert summary is not None, f"{name}: no summary line in {tool['output']}"
        assert summary["stats"]["frames"] == packets, f"{name} did not read every packet"
        if expected is not None:
            assert transactions == expected, \
                f"{name} wrote {transactions} transactions, the generator made {expected}"
        counts.append((transactions, summary["stats"]["http_requests"]))
    assert len(set(counts)) == 1, f"the flowtrace builds disagree (transactions, requests): {counts}"
    transactions, requests = counts[0]
    if args.baseline_bin:
        assert baseline_transactions == transactions, \
            f"baseline wrote {baseline_transactions} transactions, this build {transactions}"
    tshark_requests = None
    if any(t.get("stdout") == tsv for t in tools):
        with open(tsv, "rb") as f:
            tshark_requests = sum(1 for line in f if line.split(b"\t")[1].strip())
        assert tshark_requests == requests, f"tshark found {tshark_requests} requests, flowtrace {requests}"

    # Ratios against the first build timed: the PGO one unless --no-pgo.
    ft = next(r for r in rows if r["tool"].startswith("flowtrace"))
    print(f"\n{shape}: {path}: {size / 1e6:.1f} MB, {packets} packets, {transactions} transactions "
          f"({requests} requests" + (f"; tshark: {tshark_requests}" if tshark_requests is not None else "")
          + (f"; generated: {expected}" if expected is not None else "") + ")")
    print(f"{'tool':42} {'seconds':>8} {'cpu s':>7} {'packets/s':>11} {'MB/s':>8} {'peak RSS MiB':>13} {'flowtrace is':>16}")
    for r in rows:
        ratio = r["seconds"] / ft["seconds"]
        r["time_relative_to_flowtrace"] = ratio
        rel = "-" if r is ft else (f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower")
        print(f"{r['tool']:42} {r['seconds']:8.3f} {r['cpu_seconds']:7.2f} {r['packets_per_s']:11.0f} "
              f"{r['mb_per_s']:8.1f} {r['peak_rss_bytes'] / 2**20:13.1f} {rel:>16}")
    return {"shape": shape, "capture": path, "page_cache": args.page_cache, "bytes": size, "packets": packets,
            "transactions": transactions, "http_requests": requests,
            "generated_transactions": expected, "tshark_requests": tshark_requests, "tools": rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["large", "small", "both"], default="both")
    ap.add_argument("--size", default="1G", help="size of the large shape's capture")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--baseline-bin", help="an older flowtrace binary to time the same way")
    ap.add_argument("--threads", type=int, help="flowtrace --threads (default: its own)")
    ap.add_argument("--skip-tshark", action="store_true")
    ap.add_argument("--no-pgo", action="store_true",
                    help="time the plain release build only (no scripts/build-pgo.sh)")
    ap.add_argument("--page-cache", choices=["reread", "as-is"], default="reread",
                    help="drop each capture from the page cache and read it back before "
                         "the runs (default), or leave the cache as it is")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    # Where cargo just built them (CARGO_TARGET_DIR when set, as cargo does).
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    flowtrace = [("plain", os.path.join(target, "release/flowtrace"))]
    if not args.no_pgo:
        # The profile-guided build, trained on captures/ (not on these captures).
        out = subprocess.run([os.path.join(ROOT, "scripts", "build-pgo.sh")], cwd=ROOT,
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        flowtrace.insert(0, ("pgo", out.strip().splitlines()[-1]))
    helper = os.path.join(target, "release/flowtrace-bench")
    data = os.path.join(ROOT, "bench-data")
    os.makedirs(data, exist_ok=True)
    shapes = ["large", "small"] if args.shape == "both" else [args.shape]
    if "small" in shapes and not os.path.exists(GENPCAP) \
            and not os.path.exists(os.path.join(data, "small-300.pcap.meta.json")):
        print(f"bench: {GENPCAP} not found: skipping the small-packet shape", file=sys.stderr)
        shapes.remove("small")
    results = {"cores": os.cpu_count(), "runs": args.runs,
               "shapes": [bench_shape(s, args, flowtrace, helper, data) for s in shapes]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
