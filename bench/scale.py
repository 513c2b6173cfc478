#!/usr/bin/env python3
"""Scaling benchmark: how flowtrace's time and peak memory grow with the length of the
captures, for per-capture transactions and for correlated request paths.

    python3 bench/scale.py [--sizes 1,5,25,100] [--repeat 3] [--no-warmup]
                           [--scenario DIR] [--bin PATH] [--rebuild] [--json OUT]

    python3 bench/scale.py --sizes 1,5          # quick run, about a minute

For each size N, the captures of --scenario (default captures/highconc-2000: A, B,
client and router, 2000 requests) are built once into bench-data/scale/N/: one
uncompressed pcap per capture point holding N copies of the original, copy k shifted
in time by k * (span + 1 s), where span runs from the first to the last packet of all
the captures (the same shift in every file, so their clocks stay consistent), and with
every TCP sequence and acknowledgement number (and SACK edge) shifted by
k * 0x01000193 mod 2^32 so the copies' connections do not look like one another's
retransmissions. TCP checksums are left as they are (flowtrace checks them only with
--verify-checksums). Each `X.links.json` sidecar is copied beside `X.pcap`, where
flowtrace finds it. The built files are reused until --rebuild or until the scenario
changes.

Each size then runs `flowtrace pcap --no-progress --format jsonl` (transactions) and the
same with --paths, alternately: one warm-up run of each (unless --no-warmup), then
--repeat timed runs; the median wall time and the median peak RSS (os.wait4) are
reported. The output goes to a temporary file under bench-data/scale/ (deleted after).
The benchmark checks it did the work: the paths run must give one complete path per
request of truth.jsonl, N times over.

Targets (PASS/FAIL; "n/a" when a size they need was not run):
  (i)   peak RSS of --paths <= 256 MiB at every size
  (ii)  flat memory: RSS of --paths at 100x <= 1.10 * RSS at 5x
  (iii) --paths time <= 1.5 * transactions time at every size
  (iv)  linear time: time at 100x <= 1.2 * 4 * time at 25x (--paths; also shown for
        transactions)
  (v)   every request gives one complete path, at every size

The binary is <repo>/target/release/flowtrace (build it first with
`cargo build --release`), or --bin PATH, or $FLOWTRACE_BIN. Progress goes to stderr
when it is a terminal. The exit status is 0 even when targets fail, nonzero on errors.
"""
import argparse, gzip, io, json, os, shutil, statistics, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ_STEP = 0x01000193
RSS_LIMIT_MIB = 256
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2 = 1, 101, 113, 276
VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
IPV6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options
TCP_ACK = 0x10
TCP_OPT_END, TCP_OPT_NOP, TCP_OPT_SACK = 0, 1, 5


class BenchError(Exception):
    """A failure that makes the benchmark meaningless (exit status 1)."""


def progress(msg, end="\n"):
    """Prints `msg` on stderr when stderr is a terminal; says nothing when piped."""
    if sys.stderr.isatty():
        print(f"\r\033[K{msg}", end=end, file=sys.stderr, flush=True)


# --- pcap reading ---------------------------------------------------------------


class Pcap:
    """A classic pcap file read as a stream: `header` (the 24 raw bytes), `endian`
    (struct prefix), `resolution` (timestamp units per second), `linktype`, and
    `records()` yielding (ts_sec, ts_frac, orig_len, data) one at a time."""

    MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", 10**6), b"\x4d\x3c\xb2\xa1": ("<", 10**9),
              b"\xa1\xb2\xc3\xd4": (">", 10**6), b"\xa1\xb2\x3c\x4d": (">", 10**9)}

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        raw = gzip.open(path, "rb") if gzipped else open(path, "rb")
        self.file = io.BufferedReader(raw, 1 << 20)
        self.header = self.file.read(24)
        if len(self.header) < 24 or self.header[:4] not in self.MAGICS:
            self.file.close()
            raise BenchError(f"{path}: not a pcap file (pcapng is not supported here)")
        self.endian, self.resolution = self.MAGICS[self.header[:4]]
        self.linktype = struct.unpack(self.endian + "I", self.header[20:24])[0] & 0x0FFFFFFF
        self.record = struct.Struct(self.endian + "IIII")

    def records(self):
        """Yields (ts_sec, ts_frac, orig_len, data) for each packet record."""
        read, unpack, size = self.file.read, self.record.unpack, self.record.size
        while True:
            head = read(size)
            if not head:
                return
            if len(head) < size:
                raise BenchError(f"{self.path}: truncated record header")
            ts_sec, ts_frac, incl_len, orig_len = unpack(head)
            data = read(incl_len)
            if len(data) < incl_len:
                raise BenchError(f"{self.path}: truncated record")
            yield ts_sec, ts_frac, orig_len, data

    def close(self):
        self.file.close()


def capture_span_ns(paths):
    """First and last timestamp (ns) over all the captures."""
    first, last = None, None
    for path in paths:
        pcap = Pcap(path)
        scale = 10**9 // pcap.resolution
        for ts_sec, ts_frac, _, _ in pcap.records():
            ts = (ts_sec * pcap.resolution + ts_frac) * scale
            first = ts if first is None or ts < first else first
            last = ts if last is None or ts > last else last
        pcap.close()
    if first is None:
        raise BenchError("the scenario's captures hold no packets")
    return first, last


# --- rewriting one packet ---------------------------------------------------------


def network_offset(linktype, data):
    """(ethertype, offset of the network header) of a frame, or None if it carries
    no IP. For raw IP captures the ethertype comes from the version nibble."""
    if linktype == LINKTYPE_SLL2:
        return (int.from_bytes(data[0:2], "big"), 20) if len(data) >= 20 else None
    if linktype == LINKTYPE_SLL:
        return (int.from_bytes(data[14:16], "big"), 16) if len(data) >= 16 else None
    if linktype == LINKTYPE_ETHERNET:
        off, ethertype = 14, int.from_bytes(data[12:14], "big")
        while ethertype in VLAN_ETHERTYPES and len(data) >= off + 4:
            ethertype = int.from_bytes(data[off + 2:off + 4], "big")
            off += 4
        return (ethertype, off) if len(data) >= off else None
    if linktype == LINKTYPE_RAW and data:
        return {4: (0x0800, 0), 6: (0x86DD, 0)}.get(data[0] >> 4)
    raise BenchError(f"link type {linktype} is not supported (Ethernet, SLL, SLL2, raw IP are)")


def tcp_offset(linktype, data):
    """Offset of the TCP header in a frame, or None if it is not the first (or only)
    fragment of a TCP segment."""
    net = network_offset(linktype, data)
    if net is None:
        return None
    ethertype, off = net
    if ethertype == 0x0800:
        if len(data) < off + 20 or data[off + 9] != 6:
            return None
        if int.from_bytes(data[off + 6:off + 8], "big") & 0x1FFF:
            return None  # a later fragment: no TCP header
        return off + (data[off] & 0x0F) * 4
    if ethertype == 0x86DD:
        if len(data) < off + 40:
            return None
        next_header, off = data[off + 6], off + 40
        while True:
            if next_header == 6:
                return off
            if len(data) < off + 8:
                return None
            if next_header in IPV6_EXT_HEADERS:
                next_header, off = data[off], off + (data[off + 1] + 1) * 8
            elif next_header == 44:  # fragment
                if int.from_bytes(data[off + 2:off + 4], "big") >> 3:
                    return None
                next_header, off = data[off], off + 8
            elif next_header == 51:  # authentication header
                next_header, off = data[off], off + (data[off + 1] + 2) * 4
            else:
                return None
    return None


def shift_u32(data, at, delta):
    """Adds `delta` mod 2^32 to the big-endian 32-bit number at `at`."""
    value = (int.from_bytes(data[at:at + 4], "big") + delta) & 0xFFFFFFFF
    data[at:at + 4] = value.to_bytes(4, "big")


def shift_tcp(data, tcp, delta):
    """Shifts the sequence number, the acknowledgement number (when ACK is set) and
    the SACK edges of the TCP header at `tcp` by `delta`, in place, as far as the
    captured bytes go."""
    if len(data) < tcp + 14:
        return
    shift_u32(data, tcp + 4, delta)
    if data[tcp + 13] & TCP_ACK:
        shift_u32(data, tcp + 8, delta)
    end = min(len(data), tcp + (data[tcp + 12] >> 4) * 4)
    opt = tcp + 20
    if TCP_OPT_SACK not in data[opt:end]:
        return  # the common case: no SACK option to walk to
    while opt < end:
        kind = data[opt]
        if kind == TCP_OPT_END:
            return
        if kind == TCP_OPT_NOP:
            opt += 1
            continue
        if opt + 1 >= end or data[opt + 1] < 2:
            return  # malformed: leave the rest alone
        length = data[opt + 1]
        if kind == TCP_OPT_SACK:
            for edge in range(opt + 2, min(opt + length, end) - 3, 4):
                shift_u32(data, edge, delta)
        opt += length


# --- building the scaled captures -------------------------------------------------


def write_copies(source, target, copies, step_ns):
    """Writes `copies` shifted copies of the capture `source` into the pcap `target`,
    streaming (one packet in memory at a time)."""
    first = Pcap(source)
    header, linktype = first.header, first.linktype
    first.close()
    with open(target, "wb", buffering=1 << 20) as out:
        out.write(header)
        for k in range(copies):
            progress(f"building {copies}x: {os.path.basename(target)} copy {k + 1}/{copies}", end="")
            pcap = Pcap(source)
            res, pack = pcap.resolution, pcap.record.pack
            shift = k * step_ns // (10**9 // res)
            delta = k * SEQ_STEP & 0xFFFFFFFF
            for ts_sec, ts_frac, orig_len, data in pcap.records():
                ts_sec, ts_frac = divmod(ts_sec * res + ts_frac + shift, res)
                if delta:
                    tcp = tcp_offset(linktype, data)
                    if tcp is not None:
                        data = bytearray(data)
                        shift_tcp(data, tcp, delta)
                out.write(pack(ts_sec, ts_frac, len(data), orig_len))
                out.write(data)
            pcap.close()


def count_truth(scenario):
    """Requests in SCENARIO's truth.jsonl, or truth.jsonl.gz (how scenarios ship it)."""
    truth = os.path.join(scenario, "truth.jsonl")
    if not os.path.isfile(truth):
        truth += ".gz"
    if not os.path.isfile(truth):
        raise BenchError(f"{truth}: missing (the benchmark counts requests in it)")
    with (gzip.open if truth.endswith(".gz") else open)(truth, "rb") as f:
        return sum(1 for line in f if line.strip())


def scenario_captures(scenario):
    """The scenario's capture files (`*.pcap.gz`, `*.pcap`), sorted, as
    (source path, built name, sidecar path or None)."""
    found = []
    for name in sorted(os.listdir(scenario)):
        for suffix in (".pcap.gz", ".pcap"):
            if name.endswith(suffix):
                stem = name[:-len(suffix)]
                sidecar = os.path.join(scenario, stem + ".links.json")
                found.append((os.path.join(scenario, name), stem + ".pcap",
                              sidecar if os.path.isfile(sidecar) else None))
                break
    if not found:
        raise BenchError(f"{scenario}: no *.pcap.gz or *.pcap captures")
    return found


def build_size(scenario, captures, copies, step_ns, rebuild):
    """Makes bench-data/scale/<copies>/ hold the scaled captures and their sidecars,
    unless a finished build of the same scenario is there already. Returns the built
    capture paths."""
    directory = os.path.join(ROOT, "bench-data", "scale", str(copies))
    stamp_path = os.path.join(directory, "built.json")
    stamp = {"scenario": os.path.abspath(scenario), "copies": copies, "step_ns": step_ns,
             "seq_step": SEQ_STEP,
             "sources": {os.path.basename(src): os.path.getsize(src) for src, _, _ in captures}}
    targets = [os.path.join(directory, name) for _, name, _ in captures]
    if not rebuild and os.path.isfile(stamp_path) and all(map(os.path.isfile, targets)):
        with open(stamp_path) as f:
            if json.load(f) == stamp:
                return targets
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for (source, name, sidecar), target in zip(captures, targets):
        write_copies(source, target, copies, step_ns)
        if sidecar:
            shutil.copyfile(sidecar, os.path.join(directory, name[:-len(".pcap")] + ".links.json"))
    progress(f"built {copies}x in {directory}")
    with open(stamp_path, "w") as f:  # written last: it marks the build finished
        json.dump(stamp, f, indent=2)
    return targets


# --- running flowtrace ------------------------------------------------------------


def run_once(cmd):
    """Runs `cmd`; returns (wall seconds, peak RSS KiB). Raises BenchError if it fails."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            message = err.read().decode(errors="replace").strip()
            raise BenchError(f"{' '.join(cmd)} exited {code}: {message}")
    return wall, rusage.ru_maxrss  # KiB on Linux


def count_paths(output):
    """Counts the path records of a --paths --format jsonl output by status, and
    returns the final summary record too."""
    counts = {"complete": 0, "partial": 0, "failed": 0}
    summary = None
    with open(output, "rb") as f:
        for line in f:
            record = json.loads(line)
            if record.get("type") == "path":
                counts[record["status"]] = counts.get(record["status"], 0) + 1
            elif record.get("type") == "summary":
                summary = record
    if summary is None:
        raise BenchError(f"{output}: no summary line: the output is incomplete")
    return counts, summary


def measure_size(flowtrace, files, copies, repeat, warmup):
    """Runs the transactions and --paths modes alternately on `files`; returns a dict
    per mode (median seconds and RSS, every run) and the path counts and summary of
    the last --paths run."""
    scratch = os.path.join(ROOT, "bench-data", "scale")
    fd, output = tempfile.mkstemp(prefix="out-", suffix=".jsonl", dir=scratch)
    os.close(fd)
    modes = {"tx": [], "paths": ["--paths"]}
    runs = {mode: [] for mode in modes}
    try:
        for i in range(repeat + warmup):
            label = "warm-up" if i < warmup else f"run {i - warmup + 1}/{repeat}"
            for mode, flags in modes.items():
                progress(f"{copies}x {mode}: {label}")
                cmd = [flowtrace, "pcap", "--no-progress", *flags, "--format", "jsonl", "-o", output, *files]
                wall, rss = run_once(cmd)
                if i >= warmup:
                    runs[mode].append({"seconds": wall, "rss_kib": rss})
                if mode == "paths" and i == repeat + warmup - 1:
                    counts, summary = count_paths(output)
    finally:
        os.remove(output)
    result = {mode: {"seconds": statistics.median(r["seconds"] for r in rs),
                     "rss_mib": statistics.median(r["rss_kib"] for r in rs) / 1024,
                     "runs": rs} for mode, rs in runs.items()}
    return result, counts, summary


def warn_unnamed_interfaces(summary, copies):
    """Warns when flowtrace named interfaces by index only: the links sidecars
    beside the built captures were not picked up."""
    unnamed = sorted({f"{v['file']}:{v['interface']}" for v in summary.get("vantages", [])
                      if v["interface"].startswith("ifindex ")})
    if unnamed:
        print(f"scale: warning: {copies}x: interfaces without names (sidecar not found?): "
              + ", ".join(unnamed), file=sys.stderr)


# --- report -----------------------------------------------------------------------


def targets(rows):
    """Evaluates the targets over the measured sizes: a list of
    {"target", "status" (PASS/FAIL/n/a), "measured"}."""
    by_size = {r["copies"]: r for r in rows}
    out = []

    def add(name, ok, measured):
        out.append({"target": name, "status": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                    "measured": measured})

    worst = max(rows, key=lambda r: r["paths"]["rss_mib"])
    add(f"(i)   --paths peak RSS <= {RSS_LIMIT_MIB} MiB at every size",
        worst["paths"]["rss_mib"] <= RSS_LIMIT_MIB,
        f"max {worst['paths']['rss_mib']:.1f} MiB at {worst['copies']}x")
    if 5 in by_size and 100 in by_size:
        rss5, rss100 = by_size[5]["paths"]["rss_mib"], by_size[100]["paths"]["rss_mib"]
        add("(ii)  flat: --paths RSS(100x) <= 1.10 * RSS(5x)", rss100 <= 1.10 * rss5,
            f"{rss100:.1f} MiB vs {rss5:.1f} MiB ({rss100 / rss5:.3f}x)")
    else:
        add("(ii)  flat: --paths RSS(100x) <= 1.10 * RSS(5x)", None, "needs sizes 5 and 100")
    worst = max(rows, key=lambda r: r["ratio"])
    add("(iii) --paths time <= 1.5 * transactions time at every size", worst["ratio"] <= 1.5,
        f"max {worst['ratio']:.2f}x at {worst['copies']}x")
    for mode, label in (("paths", "--paths"), ("tx", "transactions")):
        name = f"(iv)  linear: {label} time(100x) <= 1.2 * 4 * time(25x)"
        if 25 in by_size and 100 in by_size:
            t25, t100 = by_size[25][mode]["seconds"], by_size[100][mode]["seconds"]
            add(name, t100 <= 4.8 * t25, f"{t100:.2f} s vs {t25:.2f} s ({t100 / t25:.2f}x, limit 4.8x)")
        else:
            add(name, None, "needs sizes 25 and 100")
    bad = [r for r in rows if r["counts"]["complete"] != r["expected"]]
    add("(v)   every request one complete path at every size", not bad,
        "; ".join(f"{r['copies']}x: {r['counts']['complete']}/{r['expected']} complete, "
                  f"{r['counts']['partial']} partial, {r['counts']['failed']} failed" for r in rows))
    return out


def print_report(rows, results):
    """Prints the table of sizes and the targets on stdout."""
    print(f"{'size':>5} {'requests':>9} {'input MB':>9} {'tx s':>8} {'tx MiB':>8} {'paths s':>8} "
          f"{'paths MiB':>9} {'paths/tx':>8} {'paths/s':>9} {'complete/expected':>18}")
    for r in rows:
        print(f"{str(r['copies']) + 'x':>5} {r['expected']:>9} {r['input_bytes'] / 1e6:>9.1f} "
              f"{r['tx']['seconds']:>8.2f} {r['tx']['rss_mib']:>8.1f} {r['paths']['seconds']:>8.2f} "
              f"{r['paths']['rss_mib']:>9.1f} {r['ratio']:>8.2f} {r['paths_per_s']:>9.0f} "
              f"{str(r['counts']['complete']) + '/' + str(r['expected']):>18}")
    print()
    for t in results:
        print(f"{t['status']:>4}  {t['target']}: {t['measured']}")


def parse_sizes(text):
    """`1,5,25` -> [1, 5, 25] (sorted, without repeats)."""
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text}")
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be whole numbers >= 1")
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=parse_sizes, default=[1, 5, 25, 100],
                    help="copies per size, comma-separated (default 1,5,25,100)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per mode and size (median)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    ap.add_argument("--scenario", default=os.path.join(ROOT, "captures", "highconc-2000"))
    ap.add_argument("--bin", default=os.environ.get("FLOWTRACE_BIN",
                                                    os.path.join(ROOT, "target", "release", "flowtrace")))
    ap.add_argument("--rebuild", action="store_true", help="rebuild the scaled captures")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    try:
        if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
            raise BenchError(f"{args.bin}: no flowtrace binary (cargo build --release, or --bin PATH)")
        requests = count_truth(args.scenario)
        captures = scenario_captures(args.scenario)
        progress("measuring the captures' span")
        first, last = capture_span_ns([src for src, _, _ in captures])
        step_ns = -(-(last - first) // 1000) * 1000 + 10**9  # span rounded up to 1 us, + 1 s

        rows = []
        for copies in args.sizes:
            files = build_size(args.scenario, captures, copies, step_ns, args.rebuild)
            modes, counts, summary = measure_size(args.bin, files, copies, args.repeat,
                                                  0 if args.no_warmup else 1)
            warn_unnamed_interfaces(summary, copies)
            rows.append({"copies": copies, "expected": copies * requests,
                         "files": [os.path.relpath(f, ROOT) for f in files],
                         "input_bytes": sum(map(os.path.getsize, files)), **modes,
                         "ratio": modes["paths"]["seconds"] / modes["tx"]["seconds"],
                         "paths_per_s": sum(counts.values()) / modes["paths"]["seconds"],
                         "counts": counts, "flowtrace_summary": summary.get("summary")})
    except BenchError as e:
        progress("")
        sys.exit(f"scale: {e}")

    results = targets(rows)
    print_report(rows, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"binary": args.bin, "scenario": os.path.abspath(args.scenario),
                       "requests_per_copy": requests, "span_s": (last - first) / 1e9,
                       "copy_shift_s": step_ns / 1e9, "seq_shift_per_copy": SEQ_STEP,
                       "repeat": args.repeat, "warmup": not args.no_warmup,
                       "sizes": rows, "targets": results}, f, indent=2)


if __name__ == "__main__":
    main()
