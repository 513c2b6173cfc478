#!/usr/bin/env python3
"""Issue 15's figures in the lab at its maximum rate: `flowtrace agent` in server A's and
B's namespaces, nats-server and `flowtrace collect` in the router's (lab.py run soak
--agents --agents-steady: no restarts), unpaced keep-alive traffic (concurrency 64) for
--seconds.

While the run goes, the collector's output file (<run>/collect.jsonl) is read as it
grows (a file: nothing is sent to a lab address); a path's delay is the time its line
appeared less its `end_ts` (the response's last byte on the wire, captured in a lab
namespace: the same kernel clock). Prints one JSON object: requests and rate (the
client's), paths, delay p50/p99/max, bytes the stream stored per request, each agent's
CPU over its whole run per 1,000 requests/s and per captured packet, the collector's
summary line, the 1-minute
load average's range during the run, and, with FLOWTRACE_DELAY_STATS=1 in the
environment, the collector's per-stage delays and its loop's figures (time on a CPU and
waiting for one: docs/live.md).

Every process the lab starts leads a session, hence a scheduler autogroup, of its own:
the CPUs are shared between autogroups, and nice(1) counts only within one.
--collector-nice/--agent-nice set those processes' autogroup nice value (e.g. -10 for a
collector standing for a machine of its own); by default each has the same share as
every other session on the machine, other users' builds included.

Then the collector's limit: nats-server on a free loopback port of the root namespace
over a copy of the run's store, and `flowtrace collect` reading the whole stream
again (--exit-when-idle 2): paths per second of CPU and of wall time.

Root; lab.py cleans up its namespaces and processes also on failure.
usage: bench/nats_lab.py [--seconds 30] [--rate R] [--collector-nice N] [--agent-nice N] [--flowtrace target/release/flowtrace]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "..", "captures", "lab", "lab.py")


# A path line begins {"type":"path",...,"end_ts":T,...: its first end_ts is the path's.
# Found with a regular expression rather than by parsing the whole line (4.5 KB): the
# parse cost this reader 1.8 CPU s of the lab's two cores in an unpaced 30 s run, taken
# from the processes it measures.
PATH_END = re.compile(rb'^\{"type":"path",[^\[]*?"end_ts":([0-9.eE+-]+)')


def tail_paths(path, stop, delays):
    """Reads `path` as it grows; appends (arrival - end_ts) per path line."""
    buf, pos = b"", 0
    while not stop.is_set() or os.path.exists(path) and os.path.getsize(path) > pos:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
        except OSError:
            chunk = b""
        now = time.time()
        if chunk:
            pos += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = PATH_END.match(line)
                if m:
                    delays.append(now - float(m.group(1)))
        elif stop.is_set():
            break
        time.sleep(0.02)


def sample_load(stop, loads):
    """The 1-minute load average every 5 s of the run."""
    while not stop.wait(5.0):
        with open("/proc/loadavg") as f:
            loads.append(float(f.read().split()[0]))


def pct(d, q):
    return round(d[min(len(d) - 1, int(q * len(d)))], 3) if d else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collector_limit(flowtrace, store):
    """Replays the run's stream into one collector on loopback; paths/s."""
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = free_port()
    nats = subprocess.Popen([nats_bin, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.02)
        import resource
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        c = subprocess.run([flowtrace, "collect", "--nats", "nats://127.0.0.1:%d" % port,
                            "--format", "jsonl", "-o", os.devnull, "--exit-when-idle", "2"],
                           capture_output=True, text=True, timeout=600)
        wall = time.time() - t0 - 2.0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        line = [l for l in c.stderr.splitlines() if "paths from" in l]
        paths = int(line[-1].split()[1]) if line else 0
        return {"paths": paths, "wall_s_less_idle": round(wall, 2), "cpu_s": round(cpu, 2),
                "paths_per_cpu_s": round(paths / cpu) if cpu > 0 else None,
                "paths_per_s_wall": round(paths / wall) if wall > 0 else None,
                "summary": line[-1] if line else c.stderr[-300:]}
    finally:
        nats.send_signal(signal.SIGTERM)
        try:
            nats.wait(10)
        except subprocess.TimeoutExpired:
            nats.kill()
            nats.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rate", type=float, help="paced rate (req/s over all workers); default unpaced (the lab's maximum)")
    ap.add_argument("--collector-nice", type=int, metavar="N",
                    help="the collector's autogroup nice value (lab.py --collector-nice; "
                         "default: an equal share with every other session)")
    ap.add_argument("--agent-nice", type=int, metavar="N",
                    help="the agents' autogroup nice value (lab.py --agent-nice)")
    ap.add_argument("--flowtrace", default=os.path.join(HERE, "..", "target", "release", "flowtrace"))
    a = ap.parse_args()
    flowtrace = os.path.abspath(a.flowtrace)
    tmp = tempfile.mkdtemp(prefix="flowtrace-natslab-")
    run = os.path.join(tmp, "run")
    env = dict(os.environ, FLOWTRACE_BIN=flowtrace)
    delays, stop = [], threading.Event()
    reader = threading.Thread(target=tail_paths, args=(os.path.join(run, "collect.jsonl"), stop, delays))
    reader.start()
    loads = []
    sampler = threading.Thread(target=sample_load, args=(stop, loads))
    sampler.start()
    try:
        lab = subprocess.run([sys.executable, LAB, "run", "soak", "--agents", "--agents-steady",
                              "--duration", str(a.seconds), "--no-truth", "--out", os.path.join(tmp, "out"),
                              "--run-dir", run] + (["--worker-rate", str(a.rate)] if a.rate else [])
                             + (["--collector-nice", str(a.collector_nice)] if a.collector_nice is not None else [])
                             + (["--agent-nice", str(a.agent_nice)] if a.agent_nice is not None else []),
                             env=env, capture_output=True, text=True, timeout=a.seconds + 300)
        stop.set()
        reader.join()
        sampler.join()
        if lab.returncode != 0:
            print("lab run failed: " + lab.stderr[-1500:], file=sys.stderr)
            return 1
        sent = sum(1 for _ in open(os.path.join(run, "client.jsonl")))
        traffic = open(os.path.join(run, "traffic.out")).read().strip()
        events = json.load(open(os.path.join(run, "agents.json")))
        starts = {e["name"]: e["t"] for e in events if e["event"] == "start"}
        stops = {e["name"]: e["t"] for e in events if e["event"] == "stop"}
        cpu = {e["name"]: e["cpu_s"] for e in events if e["event"] == "cpu"}
        store = os.path.join(run, "jetstream")
        stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store) for f in fs)
        d = sorted(delays)
        rate = sent / a.seconds
        summary, probes = "", {}
        for name in sorted(os.listdir(run)):
            if name.startswith("collector-") and name.endswith(".err"):
                lines = open(os.path.join(run, name)).read().splitlines()
                summary = [l for l in lines if "paths from" in l][-1:] or summary
                # With FLOWTRACE_DELAY_STATS=1: the collector's stages and its loop.
                for l in lines:
                    for key, tag in (("delays", "flowtrace: delays "),
                                     ("loop", "flowtrace: collector loop ")):
                        if l.startswith(tag):
                            probes[key] = json.loads(l[len(tag):])
        out = {
            "requests": sent, "seconds": a.seconds, "rate": round(rate, 1), "traffic": traffic,
            "paths": len(d), "delay_p50_s": pct(d, 0.5), "delay_p99_s": pct(d, 0.99),
            "delay_max_s": round(d[-1], 3) if d else None,
            "stream_bytes": stored, "stream_bytes_per_request": round(stored / max(sent, 1)),
            "agents": {n: {"cpu_s": c, "run_s": round(stops[n] - starts[n], 1),
                           "cpu_share_per_1000_rps": round(c / (stops[n] - starts[n]) / rate * 1000, 3)}
                       for n, c in cpu.items() if c is not None},
            "collector": "".join(summary).strip(),
            "collector_probe": probes,
            "collector_nice": a.collector_nice, "agent_nice": a.agent_nice,
            "load_average_1min": {"min": min(loads), "max": max(loads)} if loads else None,
            "agent_capture": {n[:-4]: [l.strip() for l in open(os.path.join(run, n)) if "dropped by the kernel" in l]
                              for n in sorted(os.listdir(run)) if n.startswith("agent-") and n.endswith(".err")},
        }
        # CPU per captured packet: what the agent's work costs whatever the rate, to
        # compare runs whose rate moved with the machine's other load.
        for n, a in out["agents"].items():
            got = [int(m.group(1)) for l in out["agent_capture"].get(n, [])
                   for m in [re.search(r" (\d+) received", l)] if m]
            if got and sum(got):
                a["cpu_us_per_packet"] = round(a["cpu_s"] / sum(got) * 1e6, 2)
        out["collector_limit"] = collector_limit(flowtrace, store)
        print(json.dumps(out))
        return 0
    finally:
        stop.set()
        reader.join()
        subprocess.run([sys.executable, LAB, "down"], capture_output=True)
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept " + tmp, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
