#!/usr/bin/env python3
"""Bounded HTTP traffic generator for the flowtrace lab (stdlib only).

Refuses to run unless it is inside the lab's client network namespace and
that namespace has no default route and only routes to 198.18.0.0/15.
Fails closed: any error while checking means "refuse".

Every request carries `X-Lab-Trace: <16 hex>` (the ground-truth marker,
scrubbed from the captures afterwards).  One JSON line per request is
written to --out.
"""
import argparse
import http.client
import ipaddress
import json
import os
import random
import secrets
import subprocess
import sys
import threading
import time

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
ALLOWED_NETNS = ("ftlab-client",)


# `--mix production`: traffic like a production API's, dominated by a few hot
# endpoints (no per-request unique URI), with some small JSON POST bodies.  Weights in
# percent; every request's shape is drawn from random.Random((seed, index)), so a run
# is the same request sequence whatever the thread interleaving.
PRODUCTION_MIX = (
    (60, "GET", "/", None),
    (8, "GET", "/health", None),
    (10, "GET", "/api/items", None),
    (6, "GET", "/api/items/42", None),
    (6, "GET", "/static/app.js", None),
    (7, "POST", "/api/items", "item"),
    (3, "POST", "/api/login", "login"),
)
ITEM_NAMES = ("widget", "gadget", "sprocket", "gizmo")


def production_body(kind, rng):
    """A small JSON body from a short list of shapes (bodies repeat, as in production)."""
    if kind == "login":
        return json.dumps({"user": "user%d" % rng.randrange(8), "password": "secret"},
                          separators=(",", ":")).encode()
    return json.dumps({"name": rng.choice(ITEM_NAMES), "qty": rng.randrange(1, 6)},
                      separators=(",", ":")).encode()


def refuse(msg):
    sys.stderr.write("traffic.py: REFUSING TO RUN: %s\n" % msg)
    sys.exit(3)


def safety_check(netns_name, target_host):
    """Return None if safe, else exit(3).  Any exception -> refuse."""
    try:
        if netns_name not in ALLOWED_NETNS:
            refuse("netns name %r is not the lab's client namespace" % netns_name)
        self_ns = os.stat("/proc/self/ns/net")
        lab_ns = os.stat("/run/netns/%s" % netns_name)
        if (self_ns.st_ino, self_ns.st_dev) != (lab_ns.st_ino, lab_ns.st_dev):
            refuse("not running inside netns %s" % netns_name)
        try:  # extra check where /proc/1 is readable (it is not in some sandboxes)
            root_ns = os.stat("/proc/1/ns/net")
        except PermissionError:
            root_ns = None
        if root_ns is not None and (root_ns.st_ino, root_ns.st_dev) == (self_ns.st_ino, self_ns.st_dev):
            refuse("running in the root network namespace")
        for fam in ("-4", "-6"):
            r = subprocess.run(["ip", fam, "route", "show", "default"],
                               capture_output=True, text=True, timeout=5)
            if r.returncode != 0:
                refuse("ip %s route show default failed: %s" % (fam, r.stderr.strip()))
            if r.stdout.strip():
                refuse("namespace has a default route: %s" % r.stdout.strip())
        r = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"],
                           capture_output=True, text=True, timeout=5)
        if r.returncode != 0:
            refuse("ip route failed: %s" % r.stderr.strip())
        routes = json.loads(r.stdout or "[]")
        for rt in routes:
            if rt.get("type") in ("local", "broadcast", "multicast"):
                continue   # local delivery, not a way out
            dst = rt.get("dst", "")
            if dst == "default":
                refuse("default route present")
            net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
            if not net.subnet_of(LAB_NET):
                refuse("route to %s leaves the lab prefix 198.18.0.0/15" % dst)
        # the real NIC must not be here: every non-loopback interface's IPv4
        # addresses must be in the lab prefix
        r = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, timeout=5)
        if r.returncode != 0:
            refuse("ip addr failed")
        for link in json.loads(r.stdout or "[]"):
            for ai in link.get("addr_info", []):
                if ai.get("family") != "inet" or link.get("ifname") == "lo":
                    continue
                if ipaddress.ip_address(ai["local"]) not in LAB_NET:
                    refuse("interface %s has non-lab address %s" % (link.get("ifname"), ai["local"]))
        if ipaddress.ip_address(target_host) not in LAB_NET:
            refuse("target %s is not a lab address" % target_host)
    except SystemExit:
        raise
    except Exception as e:  # fail closed
        refuse("safety check errored: %r" % (e,))


class Gen:
    def __init__(self, a):
        self.a = a
        self.lock = threading.Lock()
        self.next_id = 0
        self.out = open(a.out, "w", buffering=1)
        self.t0 = time.monotonic()
        # no new request after the deadline: --duration (duration mode) or --max-seconds
        self.deadline = self.t0 + (a.duration if a.duration else a.max_seconds)
        self.ok = 0
        self.failed = 0
        self.times = []
        # --worker-rate: each worker paces itself to rate/concurrency req/s (its own
        # schedule, phase-shifted by worker id so the workers do not fire together)
        self.worker_interval = (min(a.concurrency, a.count) / a.worker_rate
                                if a.worker_rate > 0 else 0.0)

    def take(self):
        with self.lock:
            if self.next_id >= self.a.count or time.monotonic() > self.deadline:
                return None
            i = self.next_id
            self.next_id += 1
        if self.a.rate > 0:  # pace globally: request i not before t0 + i/rate
            due = self.t0 + i / self.a.rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(min(d, max(0.0, self.deadline - time.monotonic())))
        return i

    def plan(self, i):
        """Deterministic per-index request shape: (path, method, body, content type)."""
        if self.a.mix == "production":
            rng = random.Random(self.a.seed * 1000003 + i)
            x = rng.randrange(100)
            for weight, method, path, body in PRODUCTION_MIX:
                if x < weight:
                    break
                x -= weight
            if body is None:
                return path, method, None, None
            return path, method, production_body(body, rng), "application/json"
        # mix of identical and distinct URLs
        if (i * 7919) % 100 < self.a.same_url_pct:
            path = "/"
        else:
            path = "/api/items/%d?q=%d" % (i, (i * 31) % 97)
        post = (i * 104729) % 100 < self.a.post_pct
        if not post:
            return path, "GET", None, None
        body = (("item=%d&data=" % i) + "x" * self.a.body_size).encode()
        return path, "POST", body, "application/x-www-form-urlencoded"

    def pace(self, wid, k):
        """--worker-rate: wait until this worker's k-th request is due; a worker that
        fell behind by more than one interval starts its schedule again (no bursts)."""
        if self.worker_interval <= 0:
            return
        due = self.sched[wid] + k * self.worker_interval
        now = time.monotonic()
        if due < now - self.worker_interval:
            self.sched[wid] = now - k * self.worker_interval
            return
        d = min(due - now, self.deadline - now)
        if d > 0:
            time.sleep(d)

    def worker(self, wid):
        a = self.a
        conn = None
        k = 0
        while True:
            self.pace(wid, k)
            k += 1
            i = self.take()
            if i is None:
                break
            path, method, body, ctype = self.plan(i)
            marker = secrets.token_hex(8)
            rec = {"id": i, "worker": wid, "marker": marker,
                   "method": method, "path": path,
                   "keepalive": a.keepalive}
            hdrs = {"X-Lab-Trace": marker, "User-Agent": "ftlab-traffic/1",
                    "Accept": "*/*"}
            if body is not None:
                hdrs["Content-Type"] = ctype
            if not a.keepalive:
                hdrs["Connection"] = "close"
            rec["req_body_len"] = len(body) if body else 0
            try:
                if conn is None or conn.sock is None:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
                    conn.connect()
                    rec["new_conn"] = True
                else:
                    rec["new_conn"] = False
                loc = conn.sock.getsockname()
                rem = conn.sock.getpeername()
                rec["client_src"] = "%s:%d" % (loc[0], loc[1])
                rec["client_dst"] = "%s:%d" % (rem[0], rem[1])
                rec["t_start"] = time.time()
                conn.request(rec["method"], path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                rec["t_end"] = time.time()
                rec["status"] = resp.status
                rec["http_version"] = resp.version
                rec["resp_body"] = data[:80].decode("latin-1")
                rec["resp_headers"] = {k: v for k, v in resp.getheaders()
                                       if k.lower() in ("via", "backend-server", "server",
                                                        "x-kong-upstream-latency",
                                                        "x-kong-proxy-latency", "connection")}
                rec["ok"] = resp.status == 200
                if not a.keepalive or resp.will_close:
                    conn.close()
            except Exception as e:
                rec["t_end"] = time.time()
                rec["ok"] = False
                rec["error"] = "%s: %s" % (type(e).__name__, e)
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None
            with self.lock:
                if rec.get("ok"):
                    self.times.append((rec["t_start"], rec["t_end"]))
                    self.ok += 1
                else:
                    self.failed += 1
                self.out.write(json.dumps(rec) + "\n")
        if conn is not None:
            conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--netns", required=True, help="lab namespace this must run in")
    ap.add_argument("--host", default="198.18.1.231")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--keepalive", action="store_true")
    ap.add_argument("--same-url-pct", type=int, default=30)
    ap.add_argument("--post-pct", type=int, default=20)
    ap.add_argument("--body-size", type=int, default=48)
    ap.add_argument("--rate", type=float, default=0.0, help="overall req/s cap (0 = none)")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-socket-op timeout")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="hard time bound")
    ap.add_argument("--duration", type=float, default=0.0,
                    help="duration mode: issue requests until this many seconds have passed "
                         "(still at most --count; must be below --max-seconds)")
    ap.add_argument("--mix", choices=("unique", "production"), default="unique",
                    help="unique: --same-url-pct of GET / and the rest unique URIs (the old "
                         "lab traffic); production: a few hot endpoints, 10%% JSON POSTs")
    ap.add_argument("--seed", type=int, default=1, help="--mix production: the request sequence")
    ap.add_argument("--worker-rate", type=float, default=0.0,
                    help="target req/s over all workers, each worker pausing for its share "
                         "(rate/concurrency); 0 = unpaced")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not (1 <= a.count <= 1000000 and 1 <= a.concurrency <= 512):
        refuse("count/concurrency out of bounds")
    if a.max_seconds <= 0 or a.max_seconds > 600:
        refuse("max-seconds out of bounds")
    if a.worker_rate < 0 or a.rate < 0:
        refuse("rates must not be negative")
    if a.duration < 0 or (a.duration and a.duration >= a.max_seconds):
        refuse("duration out of bounds (0 < duration < max-seconds)")
    safety_check(a.netns, a.host)
    g = Gen(a)
    n = min(a.concurrency, a.count)
    g.sched = [g.t0 + g.worker_interval * w / n for w in range(n)]
    ths = [threading.Thread(target=g.worker, args=(w,), daemon=True)
           for w in range(min(a.concurrency, a.count))]
    for t in ths:
        t.start()
    hard = time.monotonic() + a.max_seconds + a.timeout * 3 + 5
    for t in ths:
        t.join(max(0.1, hard - time.monotonic()))
    alive = sum(t.is_alive() for t in ths)
    summary = {"requested": a.count, "issued": g.next_id, "ok": g.ok, "failed": g.failed,
               "stuck_workers": alive, "seconds": round(time.monotonic() - g.t0, 3),
               "mode": "duration" if a.duration else "count", "mix": a.mix}
    if a.mix == "production":
        summary["seed"] = a.seed
    if a.worker_rate:
        summary["worker_rate_target"] = a.worker_rate
    ok_t = [r for r in g.times if r]
    if ok_t:
        # the rate reached: successful requests over first start to last end
        span = max(e for _, e in ok_t) - min(s for s, _ in ok_t)
        summary["rate_reached"] = round(len(ok_t) / span, 1) if span > 0 else None
    if a.duration:
        summary["duration"] = a.duration
    print(json.dumps(summary))
    g.out.flush()
    os._exit(0 if alive == 0 else 4)


if __name__ == "__main__":
    main()
