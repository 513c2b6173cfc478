#!/usr/bin/env python3
"""Helpers of live-soak.sh (stdlib only).

    livesoak.py sample PIDFILE SAMPLES.jsonl --max-seconds N
        wait (bounded) for PIDFILE ({"pid", "start"} written by lab.py), then once a
        second read /proc/<pid>/stat (utime+stime -> CPU %) and /proc/<pid>/status
        (VmRSS, VmHWM, Threads) of that PID while its kernel start time is unchanged;
        stop when it is gone or after N seconds.
    livesoak.py report RUN_DIR OUT_DIR SAMPLES.jsonl [--host A]
        one JSON object: requests/s, flowtrace CPU and RSS (min/median/max, all samples
        and those inside the traffic window), drops from the summary line.
"""
import json
import os
import statistics
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # fields after the comm: state(0) ... utime(11) stime(12) ... starttime(19)
    return rest[19], int(rest[11]) + int(rest[12])


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])        # kB
            elif k == "Threads":
                out[k] = int(v.split()[0])
    return out


def system_cpu():
    """(busy, total) jiffies of all CPUs, and procs_running, from /proc/stat."""
    busy = total = running = 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])
                busy = total - v[3] - v[4]        # minus idle and iowait
            elif line.startswith("procs_running"):
                running = int(line.split()[1])
    return busy, total, running


def threads(pid):
    """state letters of the process's threads, e.g. 'RSS'."""
    out = ""
    for t in sorted(os.listdir("/proc/%d/task" % pid)):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                out += f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            pass
    return out


def sample(pidfile, out, max_seconds):
    end = time.monotonic() + max_seconds
    info = None
    while time.monotonic() < end:
        try:
            info = json.load(open(pidfile))
            break
        except (OSError, ValueError):
            time.sleep(0.2)
    if info is None:
        sys.exit("livesoak: no pid file %s within %d s" % (pidfile, max_seconds))
    pid, start = int(info["pid"]), str(info["start"])
    n = 0
    with open(out, "w", buffering=1) as f:
        prev = None
        while time.monotonic() < end:
            try:
                st, ticks = stat(pid)
                if st != start:
                    break                      # PID reused: not ours any more
                s = status(pid)
            except (OSError, IndexError, ValueError):
                break                          # gone
            now = time.time()
            sysc = system_cpu()
            if prev is not None:
                cpu = 100.0 * (ticks - prev[1]) / HZ / (now - prev[0])
                dt = sysc[1] - prev[2][1]
                busy = 100.0 * (sysc[0] - prev[2][0]) / dt if dt > 0 else None
                f.write(json.dumps({"t": round(now, 3), "cpu_pct": round(cpu, 1),
                                    "rss_kib": s.get("VmRSS"), "hwm_kib": s.get("VmHWM"),
                                    "threads": s.get("Threads"), "thread_states": threads(pid),
                                    "system_busy_pct": None if busy is None else round(busy, 1),
                                    "procs_running": sysc[2]}) + "\n")
                n += 1
            prev = (now, ticks, sysc)
            time.sleep(1.0)
    print("livesoak: %d samples of pid %d" % (n, pid), file=sys.stderr)


def mmm(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def report(run_dir, out_dir, samples, host):
    sc = json.load(open(os.path.join(out_dir, "scenario.json")))
    ts = sc.get("traffic_summary") or {}
    t0, t1 = sc.get("t_traffic_start"), sc.get("t_traffic_end")
    rows = []
    if os.path.exists(samples):
        rows = [json.loads(l) for l in open(samples) if l.strip()]
    inside = [r for r in rows if t0 and t1 and t0 + 1 <= r["t"] <= t1]
    summ, npaths = None, 0
    jl = os.path.join(run_dir, "live-%s.jsonl" % host)
    if os.path.exists(jl):
        last = None
        with open(jl, errors="replace") as f:
            for line in f:
                if '"type":"path"' in line:
                    npaths += 1
                last = line
        try:
            summ = json.loads(last) if last else None
        except ValueError:
            summ = None
        if summ is not None and summ.get("type") != "summary":
            summ = None
    live = (summ or {}).get("live") or {}
    res = {}
    try:
        res = json.load(open(os.path.join(run_dir, "live-%s.result.json" % host)))
    except (OSError, ValueError):
        pass
    secs = ts.get("seconds") or 0
    rep = {
        "scenario": sc.get("scenario"), "date_utc": sc.get("date_utc"), "live_on": host,
        "traffic": {k: ts.get(k) for k in ("mode", "duration", "issued", "ok", "failed", "seconds")},
        "concurrency": (sc.get("traffic") or {}).get("concurrency"),
        "requests_per_s": round(ts.get("ok", 0) / secs, 1) if secs else None,
        "flowtrace": {
            "exit_code": res.get("exit_code"), "stopped_with_sigint": res.get("running_at_stop"),
            "stop_seconds": res.get("stop_seconds"), "paths_written": npaths,
            "files_bytes": res.get("files"),
            "cpu_pct_during_traffic": mmm([r["cpu_pct"] for r in inside]),
            "rss_mib_during_traffic": mmm([round(r["rss_kib"] / 1024, 1) for r in inside if r.get("rss_kib")]),
            "cpu_pct_all_samples": mmm([r["cpu_pct"] for r in rows]),
            "rss_mib_all_samples": mmm([round(r["rss_kib"] / 1024, 1) for r in rows if r.get("rss_kib")]),
            "peak_rss_mib": round(max((r.get("hwm_kib") or 0) for r in rows) / 1024, 1) if rows else None,
            "threads_max": max((r.get("threads") or 0) for r in rows) if rows else None,
        },
        # the whole machine during the traffic: all CPUs' busy % (100 = every core busy)
        # and runnable tasks; flowtrace shares the cores with the lab itself
        "machine_during_traffic": {
            "cpus": os.cpu_count(),
            "busy_pct": mmm([r.get("system_busy_pct") for r in inside]),
            "procs_running": mmm([r.get("procs_running") for r in inside]),
            "loadavg_at_report": open("/proc/loadavg").read().split()[:3],
        },
        "live_summary": {"interfaces": live.get("interfaces"),
                         "dropped_total": sum((i.get("dropped") or 0) + (i.get("if_dropped") or 0)
                                              for i in live.get("interfaces") or []) if live else None,
                         "other": {k: v for k, v in live.items() if k != "interfaces"}} if summ else None,
        "tcpdump": {h: (c or {}).get("tcpdump") for h, c in (sc.get("captures") or {}).items()},
        "lab_failures": sc.get("failures"),
        "samples_file": samples,
    }
    return rep


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "sample":
        mx = 900
        if "--max-seconds" in sys.argv:
            mx = float(sys.argv[sys.argv.index("--max-seconds") + 1])
        sample(sys.argv[2], sys.argv[3], min(mx, 900))
        return 0
    if len(sys.argv) >= 5 and sys.argv[1] == "report":
        host = sys.argv[sys.argv.index("--host") + 1] if "--host" in sys.argv else "A"
        rep = report(sys.argv[2], sys.argv[3], sys.argv[4], host)
        text = json.dumps(rep, indent=1, sort_keys=True)
        with open(os.path.join(sys.argv[2], "soak.json"), "w") as f:
            f.write(text + "\n")
        print(text)
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
