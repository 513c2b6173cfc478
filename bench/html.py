#!/usr/bin/env python3
"""HTML report benchmark: the cost of `--html` on a long run, and how fast the page is
in Chromium.

    python3 bench/html.py [--copies 25] [--data DIR] [--repeat 3] [--bin PATH]
                          [--chromium PATH] [--keep] [--json OUT]

The captures are bench/scale.py's: --copies N copies of captures/highconc-2000 (2000
requests each; 25 gives 50,000 paths), built into bench-data/scale/N/ as scale.py does
(or reused from there), or the *.pcap files of --data DIR as they are.

1. flowtrace: `pcap --no-progress --paths --format jsonl -o FILE` with and without
   `--html PAGE`, alternately, --repeat times each: median wall time and median peak
   RSS (os.wait4), and the page's size. The run with --html must say it wrote one
   path per request.
2. Chromium (headless, Debian's /usr/bin/chromium): loads `PAGE#selftest&uri=q=1&
   role=backend&host=198.19.12.3:` --repeat times and reads the page's own verdict
   (src/render/html/report.js; times from performance.now()): `ready_ms` (navigation
   start to the page built: data parsed, summary, first 100 rows, timeline) and
   `laid_out_ms` (the same after a forced layout), and the time each interaction takes
   with the table redrawn and laid out: status filter, URI filter, sort by latency,
   next page, a click that opens a path's detail. Medians are reported.

Targets (PASS/FAIL): peak RSS with --html <= 256 MiB; page loaded (laid_out_ms) within
3000 ms; every filter, sort and click within 300 ms; no error in the page; the verdict
counts one row per path.
"""
import argparse, importlib.util, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RSS_LIMIT_MIB = 256
LOAD_LIMIT_MS = 3000
ACTION_LIMIT_MS = 300
PARAMS = "&uri=q=1&role=backend&host=198.19.12.3:"


def load_scale():
    spec = importlib.util.spec_from_file_location("scale", os.path.join(ROOT, "bench", "scale.py"))
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    return scale


def run(cmd):
    """Runs `cmd`; returns (wall s, peak RSS KiB, stderr)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        text = err.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"html bench: {' '.join(cmd)} failed: {text}")
        return wall, rusage.ru_maxrss, text


def chromium_verdict(chromium, page, profile):
    out = subprocess.run(
        ["timeout", "300", chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", f"--user-data-dir={profile}", "--dump-dom",
         f"file://{page}#selftest{PARAMS}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout.decode(errors="replace")
    start = out.find('<pre id="ft-selftest">')
    if start < 0:
        sys.exit("html bench: no self-test verdict in the page")
    start += len('<pre id="ft-selftest">')
    text = out[start:out.index("</pre>", start)]
    return json.loads(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=25)
    ap.add_argument("--data", help="use the *.pcap files of DIR (e.g. a scale.py build) as they are")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=os.environ.get("FLOWTRACE_BIN",
                                                    os.path.join(ROOT, "target", "release", "flowtrace")))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--keep", action="store_true", help="keep the page (bench-data/html/report.html)")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()

    scale = load_scale()
    scenario = os.path.join(ROOT, "captures", "highconc-2000")
    requests = scale.count_truth(scenario)
    if args.data:
        files = sorted(os.path.join(args.data, f) for f in os.listdir(args.data) if f.endswith(".pcap"))
    else:
        captures = scale.scenario_captures(scenario)
        first, last = scale.capture_span_ns([src for src, _, _ in captures])
        step_ns = -(-(last - first) // 1000) * 1000 + 10**9
        files = scale.build_size(scenario, captures, args.copies, step_ns, False)
    expected = args.copies * requests

    work = os.path.join(ROOT, "bench-data", "html")
    os.makedirs(work, exist_ok=True)
    page = os.path.join(work, "report.html")
    paths_out = os.path.join(work, "paths.jsonl")
    base = [args.bin, "pcap", "--no-progress", "--paths", "--format", "jsonl", "-o", paths_out]
    plain, html = [], []
    for _ in range(args.repeat):
        plain.append(run(base + files)[:2])
        wall, rss, err = run(base + ["--html", page] + files)
        if f"({expected} paths)" not in err:
            sys.exit(f"html bench: expected {expected} paths in the page: {err.strip()}")
        html.append((wall, rss))
    os.remove(paths_out)
    size = os.path.getsize(page)

    verdicts = []
    if os.path.exists(args.chromium):
        with tempfile.TemporaryDirectory() as profile:
            for _ in range(args.repeat):
                verdicts.append(chromium_verdict(args.chromium, page, profile))
    else:
        print(f"*** {args.chromium} missing: the page was not loaded ***", file=sys.stderr)
    if not args.keep:
        os.remove(page)

    med = lambda xs: statistics.median(xs)
    fig = {
        "paths": expected,
        "files": [os.path.relpath(f, ROOT) if f.startswith(ROOT) else f for f in files],
        "without_html": {"seconds": med([w for w, _ in plain]), "peak_rss_mib": med([r for _, r in plain]) / 1024},
        "with_html": {"seconds": med([w for w, _ in html]), "peak_rss_mib": med([r for _, r in html]) / 1024},
        "page_bytes": size,
    }
    keys = ["ready_ms", "laid_out_ms", "filter_failed_ms", "filter_uri_ms", "sort_latency_ms",
            "next_page_ms", "click_ms"]
    if verdicts:
        fig["chromium"] = {k: med([v[k] for v in verdicts]) for k in keys}
        fig["chromium"]["errors"] = sorted({e for v in verdicts for e in v["errors"]})
        fig["chromium"]["rows"] = verdicts[0]["paths"]
        fig["chromium"]["uri_matches"] = verdicts[0]["uri_matches"]

    print(f"{expected} paths, {len(files)} capture files, median of {args.repeat}")
    for k in ("without_html", "with_html"):
        print(f"  flowtrace {k.replace('_', ' '):13} {fig[k]['seconds']:7.2f} s   peak RSS {fig[k]['peak_rss_mib']:7.1f} MiB")
    print(f"  page size {size} bytes ({size / 2**20:.1f} MiB, {size / expected:.0f} bytes per path)")
    checks = [(f"peak RSS with --html <= {RSS_LIMIT_MIB} MiB", fig["with_html"]["peak_rss_mib"] <= RSS_LIMIT_MIB)]
    if verdicts:
        c = fig["chromium"]
        for k in keys:
            print(f"  chromium {k:18} {c[k]:8.1f} ms")
        checks.append((f"loaded within {LOAD_LIMIT_MS} ms", c["laid_out_ms"] <= LOAD_LIMIT_MS))
        checks.append((f"filters, sort, page, click within {ACTION_LIMIT_MS} ms",
                       all(c[k] <= ACTION_LIMIT_MS for k in keys[2:])))
        checks.append(("no error in the page", not c["errors"]))
        checks.append(("one row per path", c["rows"] == expected))
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**fig, "checks": dict(checks)}, f, indent=2)


if __name__ == "__main__":
    main()
