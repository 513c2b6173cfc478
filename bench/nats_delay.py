#!/usr/bin/env python3
"""End-to-end delay of `flowtrace agent` + `flowtrace collect` on loopback (issue 15).

Starts its own nats-server (JetStream, free loopback port, temporary store), an HTTP
server on 127.0.0.1, `flowtrace agent -i lo` and `flowtrace collect --format jsonl`,
then sends requests at a fixed rate for a fixed time. The delay of a path is the time
from its response's last byte on the wire (the path's `end_ts`, captured on this same
host, so on the same clock) to the moment its line arrives on the collector's output.
Prints p50/p99 of the delay, paths seen against requests sent, which requests no
path reported and which several did (each request is `/item/N`; issue 15: every
request once, none twice), the agent's CPU per 1,000 requests/s, and the bytes the
stream stored per request. Everything it started
is stopped by PID. Needs root (capture on lo) and nats-server.

usage: bench/nats_delay.py [--rate 200] [--seconds 20] [--flowtrace target/release/flowtrace]
"""

import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body in separate writes would meet the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--flowtrace", default="target/release/flowtrace")
    a = ap.parse_args()
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    tmp = tempfile.mkdtemp(prefix="flowtrace-delay-")
    procs = []
    try:
        nport, hport = free_port(), free_port()
        nats = subprocess.Popen(
            [nats_bin, "-js", "-a", "127.0.0.1", "-p", str(nport), "-sd", tmp + "/js"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nats)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", nport)).close()
                break
            except OSError:
                time.sleep(0.02)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", hport), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"nats://127.0.0.1:{nport}"
        agent = subprocess.Popen(
            [a.flowtrace, "agent", "--nats", url, "--host", "bench", "-i", "lo",
             "-f", f"tcp port {hport}"], stderr=open(tmp + "/agent.err", "w"))
        procs.append(agent)
        time.sleep(1.0)
        collect = subprocess.Popen(
            [a.flowtrace, "collect", "--nats", url, "--format", "jsonl", "--max-host-lag", "5"],
            stdout=subprocess.PIPE, stderr=open(tmp + "/collect.err", "w"), text=True)
        procs.append(collect)
        delays = []
        summary = []
        # How many times each request (/item/N) appears in a path's hops.
        reported = {}
        lock = threading.Lock()

        def read():
            for line in collect.stdout:
                now = time.time()
                v = json.loads(line)
                if v.get("type") == "path":
                    delays.append(now - v["end_ts"])
                    for h in v.get("hops", []):
                        uri = h.get("uri") or ""
                        if uri.startswith("/item/"):
                            n = int(uri[len("/item/"):])
                            with lock:
                                reported[n] = reported.get(n, 0) + 1
                elif v.get("type") == "summary":
                    summary.append(v)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1.0)
        cpu0 = cpu_seconds(agent.pid)
        sent = 0
        start = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", hport)
        while time.time() - start < a.seconds:
            target = start + sent / a.rate
            pause = target - time.time()
            if pause > 0:
                time.sleep(pause)
            conn.request("GET", f"/item/{sent}")
            conn.getresponse().read()
            sent += 1
        elapsed = time.time() - start
        cpu = cpu_seconds(agent.pid) - cpu0
        # The last paths are final once the floor passes them (wall clock, no traffic).
        deadline = time.time() + 10
        # Distinct requests seen, so that duplicates do not end the wait early.
        while len(reported) < sent and time.time() < deadline:
            time.sleep(0.1)
        conn.close()
        httpd.shutdown()
        stored = sum(os.path.getsize(os.path.join(d, f))
                     for d, _, fs in os.walk(tmp + "/js") for f in fs)
        d = sorted(delays)
        pct = lambda q: d[min(len(d) - 1, int(q * len(d)))] if d else float("nan")
        rate = sent / elapsed
        with lock:
            seen = dict(reported)
        missing = [n for n in range(sent) if n not in seen]
        twice = sorted(n for n, c in seen.items() if c > 1)
        print(json.dumps({
            "requests": sent, "rate": round(rate, 1), "paths": len(d),
            "delay_p50_s": round(pct(0.50), 3), "delay_p99_s": round(pct(0.99), 3),
            "delay_max_s": round(d[-1], 3) if d else None,
            "requests_missing": len(missing), "requests_twice": len(twice),
            "missing_first": missing[:10], "twice_first": twice[:10],
            "agent_cpu_s": round(cpu, 2),
            "agent_cpu_per_1000_rps": round(cpu / elapsed / rate * 1000, 3),
            "stream_bytes_per_request": round(stored / max(sent, 1)),
        }))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if os.environ.get("DEBUG_SUMMARY"):
            time.sleep(2)
            for v in summary:
                print(json.dumps({"correlation": v.get("correlation"), "summary": {k: v["summary"].get(k) for k in ("paths", "complete", "partial", "failed")}}), file=sys.stderr)
        for name in ("agent.err", "collect.err"):
            try:
                with open(os.path.join(tmp, name)) as f:
                    tail = f.read().strip().splitlines()[-3:]
                print(name + ": " + " | ".join(tail), file=sys.stderr)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
