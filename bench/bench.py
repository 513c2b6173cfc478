#!/usr/bin/env python3
"""Times flowtrace against tshark's HTTP pass, tcpdump's read and a bare read loop on
the same capture, in one run, and prints packets/s, MB/s, peak RSS and the ratios.

    bench/bench.py [--size 1G] [--file F] [--json OUT] [--skip-tshark]

Without --file, a deterministic capture of --size is generated into bench-data/ with
`flowtrace-bench gen` (reused when present). Each tool runs once per --runs; the
fastest wall time is reported, with the peak RSS of that run (os.wait4). The
benchmark checks it did the work: the bare loop must read every generated packet,
and flowtrace must find as many HTTP requests as tshark does. flowtrace is timed
writing its full JSON lines to /dev/null (one extra run keeps them, for the check).
"""
import argparse, json, os, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, stdout=subprocess.DEVNULL):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited {code}: {err.strip()}")
    return wall, rusage.ru_maxrss * 1024


def best(cmd, runs, stdout=subprocess.DEVNULL):
    results = [run(cmd, stdout) for _ in range(runs)]
    return min(results)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--file")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--skip-tshark", action="store_true")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bins"], cwd=ROOT, check=True)
    flowtrace = os.path.join(ROOT, "target/release/flowtrace")
    helper = os.path.join(ROOT, "target/release/flowtrace-bench")
    data = os.path.join(ROOT, "bench-data")
    os.makedirs(data, exist_ok=True)
    path = args.file or os.path.join(data, f"bench-{args.size}.pcap")
    if not os.path.exists(path):
        print(f"generating {path} ({args.size}) ...", file=sys.stderr)
        subprocess.run([helper, "gen", path, "--size", args.size], check=True, stdout=subprocess.DEVNULL)
    size = os.path.getsize(path)

    # The bare loop also tells how many packets there are.
    out = subprocess.run([helper, "read", path], check=True, capture_output=True, text=True)
    packets = json.loads(out.stdout)["frames"]

    rows = []
    wall, rss = best([helper, "read", path], args.runs)
    rows.append(("bare pcap-parser loop", wall, rss))
    if shutil.which("tcpdump"):
        wall, rss = best(["tcpdump", "-r", path, "-w", "/dev/null"], args.runs)
        rows.append(("tcpdump -r F -w /dev/null", wall, rss))
    # Timed with the full JSON lines written to /dev/null; one more run keeps them to
    # check the counts.
    wall, rss = best([flowtrace, "pcap", path, "--format", "jsonl", "-o", "/dev/null", "--no-progress"], args.runs)
    rows.append(("flowtrace pcap F --format jsonl", wall, rss))
    jsonl = os.path.join(data, "flowtrace-out.jsonl")
    run([flowtrace, "pcap", path, "--format", "jsonl", "-o", jsonl, "--no-progress"])
    with open(jsonl, "rb") as f:
        f.seek(max(0, os.path.getsize(jsonl) - 65536))
        summary = json.loads(f.read().splitlines()[-1])
    requests = summary["stats"]["http_requests"]
    assert summary["stats"]["frames"] == packets, "flowtrace did not read every packet"
    tshark_requests = None
    if shutil.which("tshark") and not args.skip_tshark:
        cmd = ["tshark", "-r", path, "-Y", "http.request", "-T", "fields", "-e", "frame.number",
               "-e", "http.request.method", "-e", "http.request.uri"]
        out_path = os.path.join(data, "tshark-out.tsv")
        with open(out_path, "wb") as out_file:
            wall, rss = run(cmd, stdout=out_file)  # once: it is slow; its output is small
        rows.append(("tshark -r F -Y http.request -T fields", wall, rss))
        with open(out_path, "rb") as f:
            tshark_requests = sum(1 for _ in f)
        assert tshark_requests == requests, f"tshark found {tshark_requests} requests, flowtrace {requests}"

    ft = next(r for r in rows if r[0].startswith("flowtrace"))
    print(f"capture: {path}: {size / 1e6:.1f} MB, {packets} packets, {requests} HTTP requests"
          + (f" (tshark: {tshark_requests})" if tshark_requests is not None else ""))
    print(f"{'tool':42} {'seconds':>9} {'packets/s':>12} {'MB/s':>9} {'peak RSS MB':>12} {'flowtrace is':>14}")
    result = {"capture": path, "bytes": size, "packets": packets, "http_requests": requests, "tools": []}
    for name, wall, rss in rows:
        ratio = wall / ft[1]
        rel = "-" if name == ft[0] else (f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower")
        print(f"{name:42} {wall:9.3f} {packets / wall:12.0f} {size / wall / 1e6:9.1f} {rss / 1e6:12.1f} {rel:>14}")
        result["tools"].append({"tool": name, "seconds": wall, "packets_per_s": packets / wall,
                                "mb_per_s": size / wall / 1e6, "peak_rss_bytes": rss,
                                "time_relative_to_flowtrace": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
