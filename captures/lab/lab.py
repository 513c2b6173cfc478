#!/usr/bin/env python3
"""flowtrace lab: the seed's two-server stack in Linux network namespaces.

    lab.py run <scenario> [--out DIR]   up, capture, traffic, down, truth, scrub
    lab.py down                          tear down whatever a previous run left
    lab.py list                          list the scenarios

    lab.py run <scenario> --live-on A    also run `flowtrace live` in ftlab-a during
                                         the traffic (binary: $FLOWTRACE_BIN or
                                         <repo>/target/release/flowtrace)
    lab.py run <scenario> --agents       also run `flowtrace agent` in A and B, and
                                         nats-server and `flowtrace collect` in the
                                         router, restarting each during the traffic

Everything started is tracked by PID (state file /run/ftlab/state.json) and
stopped by PID; namespaces all carry the prefix `ftlab-`.  See docs/lab.md.
"""
import argparse
import datetime
import fcntl
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
STATE_DIR = "/run/ftlab"
STATE = os.path.join(STATE_DIR, "state.json")
LOCK = os.path.join(STATE_DIR, "lock")
PREFIX = "ftlab-"
KONG_VERSION = "3.4.2"

# --------------------------------------------------------------------------
# topology (all addresses in 198.18.0.0/15, see docs/lab.md)
# --------------------------------------------------------------------------
VIP = "198.18.1.231"
CLIENT = dict(ns="ftlab-client", ip="198.18.0.137", mac="02:f7:00:00:00:89")
ROUTER = dict(ns="ftlab-router", ip_client="198.18.0.1", mac_client="02:f7:00:00:00:01",
              ip_lan="198.18.1.1", mac_lan="02:f7:00:01:00:01")
LAN_NS = "ftlab-lan"           # the LAN switch (a bridge named `lan`), not captured
SERVERS = {
    "A": dict(tag="a", ns="ftlab-a", ip="198.18.1.17", mac="02:26:6c:f3:15:fa",
              kong_net="198.19.1", mdk="198.19.2", state="MASTER", prio=100,
              peer="198.18.1.16"),
    "B": dict(tag="b", ns="ftlab-b", ip="198.18.1.16", mac="02:26:6c:f3:16:0e",
              kong_net="198.19.11", mdk="198.19.12", state="BACKUP", prio=90,
              peer="198.18.1.17"),
}
REPLICAS = ["py1", "py2", "py3"]


def mac_for(ip, kind=0x42):
    """Docker-style MAC 02:42:<ip bytes> (kind 0x43 for host-side veth ends)."""
    o = [int(x) for x in ip.split(".")]
    return "02:%02x:%02x:%02x:%02x:%02x" % (kind, o[0], o[1], o[2], o[3])


def containers(srv):
    """(name, ns, bridge, ip, gw, host_veth) for one server's containers."""
    s = SERVERS[srv]
    out = [("kong", "%s-kong" % s["ns"], "kong_net", s["kong_net"] + ".2",
            s["kong_net"] + ".1", "veth-kong")]
    out.append(("nginx", "%s-nginx" % s["ns"], "mdk", s["mdk"] + ".2", s["mdk"] + ".1",
                "veth-nginx"))
    for i, r in enumerate(REPLICAS):
        out.append((r, "%s-%s" % (s["ns"], r), "mdk", "%s.%d" % (s["mdk"], 3 + i),
                    s["mdk"] + ".1", "veth-" + r))
    return out


def all_namespaces():
    ns = [CLIENT["ns"], ROUTER["ns"], LAN_NS]
    for k in SERVERS:
        ns.append(SERVERS[k]["ns"])
        ns += [c[1] for c in containers(k)]
    return ns


CAPTURE_HOSTS = {"client": CLIENT["ns"], "router": ROUTER["ns"],
                 "A": SERVERS["A"]["ns"], "B": SERVERS["B"]["ns"]}

# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------
BASE_TRAFFIC = dict(count=1, concurrency=1, keepalive=True, same_url_pct=30, post_pct=20,
                    body_size=48, rate=0.0, max_seconds=60.0, duration=0.0, mix="unique",
                    seed=1, worker_rate=0.0)
# issue 13: traffic like production (a few hot URIs, identical replica answers, 10 %
# small JSON POSTs; traffic.py --mix production), fixed seed, 2,000 requests at
# concurrency 64 over keep-alive, paced (~600 req/s by per-worker pauses) or unpaced
REAL_TRAFFIC = dict(count=2000, concurrency=64, mix="production", seed=13)
REAL_MODERATE = dict(REAL_TRAFFIC, worker_rate=600.0)
# `flowtrace live --duration` = the traffic's hard bound + this margin (the lab stops it
# earlier with SIGINT by PID once the traffic and its trailing packets are over)
LIVE_MARGIN = 30.0
REPO = os.path.dirname(os.path.dirname(HERE))
SCENARIOS = {
    "single-request": dict(desc="one GET to VIP:8000 while A holds the VIP (A gateway -> A nginx)",
                           traffic=dict(count=1, concurrency=1, post_pct=0, same_url_pct=100),
                           gw_upstreams="own-first"),
    "cross-server": dict(desc="one GET to VIP:8000; A's gateway forwards to Nginx on B only",
                         traffic=dict(count=1, concurrency=1, post_pct=0, same_url_pct=100),
                         gw_upstreams="other"),
    "keepalive-500": dict(desc="500 requests, concurrency 32, client keep-alive",
                          traffic=dict(count=500, concurrency=32)),
    "failover": dict(desc="paced traffic; keepalived on A stopped by PID (SIGTERM) mid-run",
                     traffic=dict(count=400, concurrency=8, rate=50.0, max_seconds=40.0),
                     failover_after=3.0),
    "highconc-2000": dict(desc="2000 requests, concurrency 64, client keep-alive",
                          traffic=dict(count=2000, concurrency=64)),
    "no-forward-headers": dict(desc="as highconc-2000, gateway and Nginx add no X-Forwarded-*, "
                                    "X-Real-IP, Via",
                               traffic=dict(count=2000, concurrency=64),
                               forward_headers=False),
    "real-seed-600": dict(desc="production mix, seed's Nginx headers (Backend-Server), "
                               "~600 req/s (per-worker pauses), concurrency 64",
                          traffic=REAL_MODERATE, nginx_headers="seed", gzip_truth=True),
    "real-seed-max": dict(desc="production mix, seed's Nginx headers (Backend-Server), unpaced, "
                               "concurrency 64",
                          traffic=REAL_TRAFFIC, nginx_headers="seed", gzip_truth=True),
    "real-stock-600": dict(desc="production mix, stock Nginx (no Backend-Server, no forwarding "
                                "headers), ~600 req/s, concurrency 64",
                           traffic=REAL_MODERATE, nginx_headers="stock", gzip_truth=True),
    "real-stock-max": dict(desc="production mix, stock Nginx, unpaced, concurrency 64",
                           traffic=REAL_TRAFFIC, nginx_headers="stock", gzip_truth=True),
    "real-seed-samenet-600": dict(desc="as real-seed-600, both servers on the same container "
                                       "subnets (198.19.1/24, 198.19.2/24)",
                                  traffic=REAL_MODERATE, nginx_headers="seed", gzip_truth=True, samenet=True),
    "real-stock-samenet-600": dict(desc="as real-stock-600, both servers on the same container "
                                        "subnets (198.19.1/24, 198.19.2/24)",
                                   traffic=REAL_MODERATE, nginx_headers="stock", gzip_truth=True, samenet=True),
    "real-seed-samenet-max": dict(desc="as real-seed-max, both servers on the same container "
                                       "subnets (198.19.1/24, 198.19.2/24)",
                                  traffic=REAL_TRAFFIC, nginx_headers="seed", gzip_truth=True, samenet=True),
    "real-stock-samenet-max": dict(desc="as real-stock-max, both servers on the same container "
                                        "subnets (198.19.1/24, 198.19.2/24)",
                                   traffic=REAL_TRAFFIC, nginx_headers="stock", gzip_truth=True, samenet=True),
    "real-haproxy-stock-max": dict(desc="production mix, unpaced, concurrency 64; the gateway "
                                        "is HAProxy (option forwardfor, server keep-alive), "
                                        "stock Nginx",
                                   traffic=REAL_TRAFFIC, nginx_headers="stock", gateway="haproxy",
                                   gzip_truth=True),
    "real-seed-userland-max": dict(desc="production mix, unpaced, concurrency 64, seed's Nginx "
                                        "headers; Docker's userland proxy (relay.py) relays the "
                                        "gateway's hairpin connections to its own host's Nginx",
                                   traffic=REAL_TRAFFIC, nginx_headers="seed", userland_proxy=True,
                                   gzip_truth=True),
    "real-seed-workers-max": dict(desc="as real-seed-max, with two worker processes in the "
                                      "gateway and in every Nginx (Kong's and Nginx's "
                                      "default is one per core): arrival order is kept per "
                                      "worker only",
                                 traffic=REAL_TRAFFIC, nginx_headers="seed", workers=2,
                                 gzip_truth=True),
    "real-haproxy-stock-600": dict(desc="as real-haproxy-stock-max, ~600 req/s (per-worker "
                                        "pauses)",
                                   traffic=REAL_MODERATE, nginx_headers="stock", gateway="haproxy",
                                   gzip_truth=True),
    "real-seed-userland-600": dict(desc="as real-seed-userland-max, ~600 req/s (per-worker "
                                        "pauses)",
                                   traffic=REAL_MODERATE, nginx_headers="seed", userland_proxy=True,
                                   gzip_truth=True),
    "real-nofwd-600": dict(desc="production mix, ~600 req/s, concurrency 64; no forwarding "
                                "headers anywhere (gateway and stock Nginx add no X-Forwarded-*, "
                                "X-Real-IP, Via)",
                           traffic=REAL_MODERATE, nginx_headers="stock", forward_headers=False,
                           gzip_truth=True),
    "real-nofwd-max": dict(desc="as real-nofwd-600, unpaced",
                           traffic=REAL_TRAFFIC, nginx_headers="stock", forward_headers=False,
                           gzip_truth=True),
    "selftest": dict(desc="small live run for selftest.sh (both servers' Nginx, keep-alive)",
                     traffic=dict(count=24, concurrency=4)),
    "soak": dict(desc="duration-bounded load for live-soak.sh: concurrency 64, keep-alive, "
                      "unpaced, 60 s (--duration), at most 1,000,000 requests",
                 traffic=dict(count=1000000, concurrency=64, duration=60.0, max_seconds=75.0)),
}


def flowtrace_bin():
    """The flowtrace binary for --live-on: $FLOWTRACE_BIN or <repo>/target/release/flowtrace."""
    b = os.environ.get("FLOWTRACE_BIN") or os.path.join(REPO, "target", "release", "flowtrace")
    b = os.path.abspath(b)
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        sys.exit("lab.py: --live-on needs the flowtrace binary, but %s is missing or not "
                 "executable (build it with `cargo build --release`, or set FLOWTRACE_BIN)" % b)
    return b


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# command helpers
# --------------------------------------------------------------------------
def run(cmd, check=True, timeout=30, input=None, quiet=False):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd),
                                                            r.stderr.strip()))
    return r


def nsx(ns, cmd):
    assert ns.startswith(PREFIX), ns
    return ["ip", "netns", "exec", ns] + cmd


def nsrun(ns, cmd, **kw):
    return run(nsx(ns, cmd), **kw)


def ipn(ns, *args, **kw):
    assert ns.startswith(PREFIX), ns
    return run(["ip", "-n", ns] + list(args), **kw)


# --------------------------------------------------------------------------
# PID-tracked processes
# --------------------------------------------------------------------------
def _starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


class State:
    def __init__(self):
        self.d = {"procs": [], "namespaces": [], "run_dir": None}
        if os.path.exists(STATE):
            try:
                with open(STATE) as f:
                    self.d = json.load(f)
            except Exception:
                pass

    def save(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = STATE + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.d, f, indent=1)
        os.replace(tmp, STATE)

    def add_proc(self, name, pid):
        self.d["procs"].append({"name": name, "pid": pid, "start": _starttime(pid)})
        self.save()

    def add_ns(self, ns):
        if ns not in self.d["namespaces"]:
            self.d["namespaces"].append(ns)
            self.save()


STATE_OBJ = None
POPENS = {}


def start(name, cmd, stdout=None, stderr=None, env=None):
    so = open(stdout, "wb") if stdout else subprocess.DEVNULL
    se = open(stderr, "wb") if stderr else subprocess.DEVNULL
    p = subprocess.Popen(cmd, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    POPENS[p.pid] = p
    STATE_OBJ.add_proc(name, p.pid)
    return p


def proc_alive(entry):
    st = _starttime(entry["pid"])
    return st is not None and st == entry["start"]


def stop_pid(entry, sig=signal.SIGTERM, wait=5.0):
    """Signal one tracked PID (only if it is still the process we started)."""
    if not proc_alive(entry):
        return True
    try:
        os.kill(entry["pid"], sig)
    except ProcessLookupError:
        return True
    end = time.monotonic() + wait
    while time.monotonic() < end:
        p = POPENS.get(entry["pid"])
        if p is not None:
            if p.poll() is not None:
                return True
        elif not proc_alive(entry):
            return True
        st = _proc_state(entry["pid"])
        if st == "Z" and p is None:
            return True
        time.sleep(0.05)
    if proc_alive(entry):
        try:
            os.kill(entry["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        p = POPENS.get(entry["pid"])
        if p is not None:
            try:
                p.wait(3)
            except Exception:
                pass
    return False


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def find_proc(name):
    for e in STATE_OBJ.d["procs"]:
        if e["name"] == name:
            return e
    return None


# --------------------------------------------------------------------------
# teardown (always safe to call, idempotent)
# --------------------------------------------------------------------------
def _descendants(pids):
    """(pid, starttime) of every live descendant of the given PIDs."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(rest[1]), []).append((int(d), rest[19]))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], list(pids)
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c[0])
    return out


def teardown(state=None):
    st = state or STATE_OBJ or State()
    procs = list(st.d.get("procs", []))
    # children of what we started (nginx workers, keepalived's VRRP process) are
    # ours too: remember them now, stop them by PID if they outlive their parent
    kids = _descendants([e["pid"] for e in procs if proc_alive(e)])
    # tcpdump first with SIGINT so it flushes, then everything else
    for e in procs:
        if e["name"].startswith("tcpdump"):
            stop_pid(e, signal.SIGINT, wait=10)
    for e in reversed(procs):
        if not e["name"].startswith("tcpdump"):
            stop_pid(e, signal.SIGTERM, wait=5)
    for pid, start_t in kids:
        stop_pid({"name": "child", "pid": pid, "start": start_t}, signal.SIGTERM, wait=3)
    existing = set()
    r = run(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        if line.split():
            existing.add(line.split()[0])
    ours = [n for n in st.d.get("namespaces", [])] + all_namespaces()
    seen = set()
    for ns in ours:
        if ns in seen or not ns.startswith(PREFIX):
            continue
        seen.add(ns)
        if ns in existing:
            run(["ip", "netns", "del", ns], check=False)
    st.d["procs"] = []
    st.d["namespaces"] = []
    st.save()


# --------------------------------------------------------------------------
# bring-up
# --------------------------------------------------------------------------
def ensure_packages(extra=()):
    need = {"nginx": "nginx", "keepalived": "keepalived", "tcpdump": "tcpdump",
            "iptables": "iptables", "conntrack": "conntrack", "ethtool": "ethtool",
            "ss": "iproute2"}
    for b in extra:   # e.g. haproxy, only for the scenarios that use it
        need[b] = b
    missing = sorted({pkg for b, pkg in need.items() if shutil.which(b) is None})
    if not missing:
        return
    log("installing %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prc = "/usr/sbin/policy-rc.d"
    saved = None
    if os.path.exists(prc):
        with open(prc, "rb") as f:
            saved = f.read()
    with open(prc, "w") as f:   # keep Debian's nginx/keepalived from starting in the root ns
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod(prc, 0o755)
    try:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    finally:
        if saved is None:
            os.unlink(prc)
        else:
            with open(prc, "wb") as f:
                f.write(saved)


def mkns(ns):
    run(["ip", "netns", "add", ns])
    STATE_OBJ.add_ns(ns)
    ipn(ns, "link", "set", "lo", "up")
    nsrun(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1"])


def veth(ns1, if1, mac1, ns2, if2, mac2):
    # created directly inside the two lab namespaces: no end ever exists in the root ns
    ipn(ns1, "link", "add", if1, "address", mac1, "type", "veth",
        "peer", "name", if2, "address", mac2, "netns", ns2)


def bridge(ns, name, mac):
    ipn(ns, "link", "add", name, "address", mac, "type", "bridge", "stp_state", "0",
        "forward_delay", "0")
    ipn(ns, "link", "set", name, "up")


def docker_rules(srv, opts):
    s = SERVERS[srv]
    kong_ip, ngx_ip = s["kong_net"] + ".2", s["mdk"] + ".2"
    kn, mdk = s["kong_net"] + ".0/24", s["mdk"] + ".0/24"
    ret = ""
    if opts.get("userland_proxy"):
        ret = "-A DOCKER -i kong_net -j RETURN\n-A DOCKER -i mdk -j RETURN\n"
    return f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {kn} ! -o kong_net -j MASQUERADE
-A POSTROUTING -s {mdk} ! -o mdk -j MASQUERADE
-A POSTROUTING -s {kong_ip}/32 -d {kong_ip}/32 -p tcp -m tcp --dport 8000 -j MASQUERADE
-A POSTROUTING -s {ngx_ip}/32 -d {ngx_ip}/32 -p tcp -m tcp --dport 80 -j MASQUERADE
{ret}-A DOCKER ! -i kong_net -p tcp -m tcp --dport 8000 -j DNAT --to-destination {kong_ip}:8000
-A DOCKER ! -i mdk -p tcp -m tcp --dport 80 -j DNAT --to-destination {ngx_ip}:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o kong_net -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o kong_net -j DOCKER
-A FORWARD -i kong_net ! -o kong_net -j ACCEPT
-A FORWARD -i kong_net -o kong_net -j ACCEPT
-A FORWARD -o mdk -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o mdk -j DOCKER
-A FORWARD -i mdk ! -o mdk -j ACCEPT
-A FORWARD -i mdk -o mdk -j ACCEPT
-A DOCKER -d {kong_ip}/32 ! -i kong_net -o kong_net -p tcp -m tcp --dport 8000 -j ACCEPT
-A DOCKER -d {ngx_ip}/32 ! -i mdk -o mdk -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i kong_net ! -o kong_net -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -i mdk ! -o mdk -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o kong_net -j DROP
-A DOCKER-ISOLATION-STAGE-2 -o mdk -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -i kong_net -o mdk -d {ngx_ip}/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -j ACCEPT
-A DOCKER-USER -i mdk -o kong_net -s {ngx_ip}/32 -p tcp -m tcp --sport 80 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
"""


def router_rules():
    return """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 198.18.0.0/24 -o eth1 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -i eth0 -o eth1 -s 198.18.0.0/24 -d 198.18.1.0/24 -j ACCEPT
-A FORWARD -i eth1 -o eth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""


def topology_up(opts):
    for ns in all_namespaces():
        mkns(ns)
    # client <-> router
    veth(CLIENT["ns"], "eth0", CLIENT["mac"], ROUTER["ns"], "eth0", ROUTER["mac_client"])
    ipn(CLIENT["ns"], "addr", "add", CLIENT["ip"] + "/24", "dev", "eth0")
    ipn(CLIENT["ns"], "link", "set", "eth0", "up")
    ipn(CLIENT["ns"], "route", "add", "198.18.1.0/24", "via", ROUTER["ip_client"])
    ipn(ROUTER["ns"], "addr", "add", ROUTER["ip_client"] + "/24", "dev", "eth0")
    ipn(ROUTER["ns"], "link", "set", "eth0", "up")
    # LAN switch
    bridge(LAN_NS, "lan", "02:f7:ff:00:00:00")
    veth(ROUTER["ns"], "eth1", ROUTER["mac_lan"], LAN_NS, "p-router", "02:f7:ff:00:00:01")
    ipn(ROUTER["ns"], "addr", "add", ROUTER["ip_lan"] + "/24", "dev", "eth1")
    ipn(ROUTER["ns"], "link", "set", "eth1", "up")
    nsrun(ROUTER["ns"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    nsrun(ROUTER["ns"], ["iptables-restore"], input=router_rules())
    for i, (k, s) in enumerate(sorted(SERVERS.items())):
        ns = s["ns"]
        port = "p-" + s["tag"]
        veth(ns, "eth0", s["mac"], LAN_NS, port, "02:f7:ff:00:00:%02x" % (0x10 + i))
        ipn(LAN_NS, "link", "set", port, "master", "lan")
        ipn(LAN_NS, "link", "set", port, "up")
        ipn(ns, "addr", "add", s["ip"] + "/24", "dev", "eth0")
        ipn(ns, "link", "set", "eth0", "up")
        nsrun(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        bridge(ns, "kong_net", mac_for(s["kong_net"] + ".1"))
        bridge(ns, "mdk", mac_for(s["mdk"] + ".1"))
        ipn(ns, "addr", "add", s["kong_net"] + ".1/24", "dev", "kong_net")
        ipn(ns, "addr", "add", s["mdk"] + ".1/24", "dev", "mdk")
        for name, cns, br, ip, gw, hv in containers(k):
            veth(ns, hv, mac_for(ip, 0x43), cns, "eth0", mac_for(ip))
            ipn(ns, "link", "set", hv, "master", br)
            ipn(ns, "link", "set", hv, "up")
            ipn(cns, "addr", "add", ip + "/24", "dev", "eth0")
            ipn(cns, "link", "set", "eth0", "up")
            ipn(cns, "route", "add", "198.18.0.0/15", "via", gw)
        bnf = "1" if opts.get("br_netfilter", True) else "0"
        nsrun(ns, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=" + bnf], check=False)
        # what the kernel actually does in this namespace (truth views depend on it)
        r = nsrun(ns, ["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"], check=False)
        opts["br_netfilter_effective"] = r.returncode == 0 and r.stdout.strip() == "1"
        nsrun(ns, ["iptables-restore"], input=docker_rules(k, opts))
    ipn(LAN_NS, "link", "set", "p-router", "master", "lan")
    ipn(LAN_NS, "link", "set", "p-router", "up")
    if opts.get("no_offload"):
        for ns in all_namespaces():
            links = json.loads(ipn(ns, "-j", "link").stdout)
            for l in links:
                if l.get("link_type") == "ether" and l["ifname"] not in ("lan", "kong_net", "mdk"):
                    nsrun(ns, ["ethtool", "-K", l["ifname"], "rx", "off", "tx", "off", "tso", "off",
                               "gso", "off", "gro", "off"], check=False)
    safety_verify()


def safety_verify():
    """No lab ns has a default route; no lab interface in the root ns."""
    for ns in all_namespaces():
        for fam in ("-4", "-6"):
            r = ipn(ns, fam, "route", "show", "default")
            if r.stdout.strip():
                raise RuntimeError("SAFETY: %s has a default route" % ns)
    root = json.loads(run(["ip", "-j", "link"]).stdout)
    bad = [l["ifname"] for l in root if l["ifname"].startswith(("veth-", "p-", "kong_net", "mdk"))
           or l["ifname"] == "lan"]
    if bad:
        raise RuntimeError("SAFETY: lab-like interfaces in root ns: %s" % bad)


# --------------------------------------------------------------------------
# service configs
# --------------------------------------------------------------------------
def nginx_common(prefix, worker_conns=8192, workers=1):
    return f"""daemon off;
master_process on;
user root;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections {worker_conns}; }}
"""


TRACE_LOG = ('escape=json \'{"t":$msec,"marker":"$http_x_lab_trace",'
             '"remote":"$remote_addr:$remote_port","local":"$server_addr:$server_port",'
             '"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
             '"conn":$connection,"conn_req":$connection_requests,"status":$status,'
             '"rt":$request_time,"urt":"$upstream_response_time",'
             '"uct":"$upstream_connect_time","method":"$request_method","uri":"$request_uri",'
             '"xff":"$http_x_forwarded_for","bytes_sent":$bytes_sent}\'')


def http_common(prefix):
    return f"""  default_type text/plain;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  log_format trace {TRACE_LOG};
  access_log {prefix}/logs/trace.jsonl trace;
"""


def kong_conf(srv, prefix, opts):
    s = SERVERS[srv]
    other = SERVERS["B" if srv == "A" else "A"]
    mode = opts.get("gw_upstreams", "own-first")
    if mode == "other" and srv == "A":
        targets = [other["ip"]]
    else:
        targets = [s["ip"], other["ip"]]   # own first: nginx's RR picks it first
    ups = "\n".join("    server %s:80 weight=100 max_fails=0;" % t for t in targets)
    fwd = opts.get("forward_headers", True)
    fh = ""
    if fwd:
        fh = f"""      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Forwarded-Path $uri;
      proxy_set_header Via "kong/{KONG_VERSION}";
"""
    via_resp = f'      add_header Via "kong/{KONG_VERSION}" always;\n' if fwd else ""
    return nginx_common(prefix, workers=opts.get("workers", 1)) + f"""http {{
{http_common(prefix)}
  server_tokens off;
  keepalive_timeout 60s;
  keepalive_requests 10000;
  client_max_body_size 8m;
  # Kong reports latencies in integer milliseconds
  map $upstream_header_time $ft_ups_raw {{ ~^(?<s>\\d+)\\.(?<ms>\\d\\d\\d)$ $s$ms; default 0; }}
  map $ft_ups_raw $kong_upstream_ms {{ ~^0*(?<v>\\d+)$ $v; default 0; }}
  map $upstream_connect_time $ft_px_raw {{ ~^(?<s>\\d+)\\.(?<ms>\\d\\d\\d)$ $s$ms; default 0; }}
  map $ft_px_raw $kong_proxy_ms {{ ~^0*(?<v>\\d+)$ $v; default 0; }}
  upstream kong_upstream {{
{ups}
    keepalive 512;
    keepalive_requests 10000;
    keepalive_timeout 60s;
  }}
  server {{
    listen 8000 reuseport backlog=16384;
    location / {{
      proxy_pass http://kong_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "keep-alive";
      proxy_set_header Host $http_host;
{fh}      proxy_pass_header Server;
      proxy_pass_header Date;
      proxy_connect_timeout 60s;
      proxy_send_timeout 60s;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 6;
      proxy_buffering on;
      proxy_request_buffering on;
      add_header X-Kong-Upstream-Latency $kong_upstream_ms always;
      add_header X-Kong-Proxy-Latency $kong_proxy_ms always;
{via_resp}    }}
  }}
}}
"""


# HAProxy's log line in the gateway trace format (truth.py reads kong-<s>/logs/trace.jsonl):
# written to stdout, which lab.py sends to that file
HAPROXY_LOG = ('{\\"t\\":%Ts.%ms,\\"marker\\":\\"%[capture.req.hdr(0)]\\",'
               '\\"remote\\":\\"%ci:%cp\\",\\"local\\":\\"%fi:%fp\\",'
               '\\"upstream\\":\\"%si:%sp\\",\\"upstream_status\\":\\"%ST\\",'
               '\\"conn\\":0,\\"conn_req\\":0,\\"status\\":%ST,\\"rt\\":%Ta,'
               '\\"urt\\":\\"%Tr\\",\\"uct\\":\\"%Tc\\",\\"method\\":\\"%HM\\",'
               '\\"uri\\":\\"%HU\\",\\"xff\\":\\"\\",\\"bytes_sent\\":%B}')


def haproxy_conf(srv, prefix, opts):
    """The gateway as a plain HAProxy (Debian's 2.6): HTTP mode, keep-alive both sides
    (server connections reused, `http-reuse safe`), `option forwardfor`, round-robin over
    both servers' Nginx (own first), nothing else added to requests or responses."""
    s = SERVERS[srv]
    other = SERVERS["B" if srv == "A" else "A"]
    mode = opts.get("gw_upstreams", "own-first")
    targets = [other["ip"]] if mode == "other" and srv == "A" else [s["ip"], other["ip"]]
    servers = "\n".join("  server n%d %s:80 maxconn 512" % (i, t) for i, t in enumerate(targets))
    return f"""global
  maxconn 8000
  pidfile {prefix}/haproxy.pid
  log stdout format raw local0
defaults
  mode http
  log global
  option http-keep-alive
  option forwardfor
  timeout connect 60s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend gateway
  bind :8000
  http-request capture req.hdr(X-Lab-Trace) len 32
  log-format "{HAPROXY_LOG}"
  default_backend nginx
backend nginx
  balance roundrobin
  http-reuse safe
{servers}
"""


def mdk_nginx_conf(srv, prefix, opts):
    s = SERVERS[srv]
    ups = "\n".join("    server %s.%d:8888;" % (s["mdk"], 3 + i) for i in range(len(REPLICAS)))
    fwd = opts.get("forward_headers", True)
    # `seed`: STACK.md's Nginx (Host, X-Real-IP, X-Forwarded-*, Backend-Server);
    # `stock`: a bare `proxy_pass` (nginx's defaults: Host $proxy_host, no forwarding
    # headers, no Backend-Server)
    seed = opts.get("nginx_headers", "seed") == "seed"
    fh = "      proxy_set_header Host $host;\n" if seed else ""
    if fwd and seed:
        fh += """      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
"""
    bs = "      add_header Backend-Server $upstream_addr;\n" if seed else ""
    lc_zone = lc = ""
    if opts.get("limit_conn"):
        lc_zone = "  limit_conn_zone $binary_remote_addr zone=perip:10m;\n"
        lc = "      limit_conn perip 2;\n"
    return nginx_common(prefix, workers=opts.get("workers", 1)) + f"""http {{
{http_common(prefix)}
  log_format main '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                  '"$http_referer" "$http_user_agent" $msec $request_time $upstream_addr';
  access_log {prefix}/logs/access.log main;
  keepalive_timeout 65;
{lc_zone}  upstream backend {{
{ups}
  }}
  server {{
    listen 80 backlog=4096;
    location / {{
{lc}      proxy_pass http://backend;
{fh}{bs}    }}
  }}
}}
"""


def keepalived_conf(srv):
    s = SERVERS[srv]
    return f"""global_defs {{
  router_id ftlab_{srv}
  enable_script_security
}}
vrrp_instance VI_1 {{
  state {s['state']}
  interface eth0
  virtual_router_id 52
  priority {s['prio']}
  advert_int 1
  authentication {{
    auth_type PASS
    auth_pass ftlab52
  }}
  unicast_src_ip {s['ip']}
  unicast_peer {{
    {s['peer']}
  }}
  virtual_ipaddress {{
    {VIP}/24 dev eth0
  }}
}}
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def services_up(run_dir, opts):
    for k, s in SERVERS.items():
        t = s["tag"]
        for name, cns, br, ip, gw, hv in containers(k):
            if name.startswith("py"):
                start("py-%s-%s" % (t, name),
                      nsx(cns, [PY, os.path.join(HERE, "app.py"), "--name", "%s-%s" % (k, name),
                                "--port", "8888", "--log",
                                os.path.join(run_dir, "logs", "py-%s-%s.jsonl" % (t, name))]),
                      stderr=os.path.join(run_dir, "logs", "py-%s-%s.err" % (t, name)))
        for role, conf_fn in (("nginx", mdk_nginx_conf), ("kong", kong_conf)):
            prefix = os.path.join(run_dir, "%s-%s" % (role, t))
            for d in ("logs", "tmp"):
                os.makedirs(os.path.join(prefix, d), exist_ok=True)
            if role == "kong" and opts.get("gateway") == "haproxy":
                cfg = os.path.join(prefix, "haproxy.cfg")
                write(cfg, haproxy_conf(k, prefix, opts))
                cns = "%s-kong" % s["ns"]
                nsrun(cns, ["haproxy", "-c", "-q", "-f", cfg])
                start("haproxy-%s" % t, nsx(cns, ["haproxy", "-db", "-f", cfg]),
                      stdout=os.path.join(prefix, "logs", "trace.jsonl"),
                      stderr=os.path.join(prefix, "logs", "stderr.log"))
                continue
            write(os.path.join(prefix, "nginx.conf"), conf_fn(k, prefix, opts))
            cns = "%s-%s" % (s["ns"], role)
            nsrun(cns, ["nginx", "-t", "-q", "-p", prefix + "/", "-c", prefix + "/nginx.conf",
                        "-e", prefix + "/logs/error.log"])
            start("%s-%s" % (role, t),
                  nsx(cns, ["nginx", "-p", prefix + "/", "-c", prefix + "/nginx.conf",
                            "-e", prefix + "/logs/error.log"]),
                  stderr=os.path.join(prefix, "logs", "stderr.log"))
        if opts.get("userland_proxy"):
            for port, dst in ((8000, s["kong_net"] + ".2"), (80, s["mdk"] + ".2")):
                start("relay-%s-%d" % (t, port),
                      nsx(s["ns"], [PY, os.path.join(HERE, "relay.py"), "--listen", "0.0.0.0:%d" % port,
                                    "--to", "%s:%d" % (dst, port),
                                    "--log", os.path.join(run_dir, "logs", "relay-%s-%d.jsonl" % (t, port))]),
                      stderr=os.path.join(run_dir, "logs", "relay-%s-%d.err" % (t, port)))


def keepalived_up(run_dir, srv):
    s = SERVERS[srv]
    d = os.path.join(run_dir, "keepalived-" + s["tag"])
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "keepalived.conf"), keepalived_conf(srv))
    return start("keepalived-" + s["tag"],
                 nsx(s["ns"], ["keepalived", "-n", "-l", "-D", "-G", "-P",
                               "-f", d + "/keepalived.conf", "-p", d + "/keepalived.pid",
                               "-r", d + "/vrrp.pid", "-c", d + "/checkers.pid",
                               "-i", "ftlab_" + srv]),
                 stdout=os.path.join(d, "keepalived.log"),
                 stderr=os.path.join(d, "keepalived.err"))


def has_vip(srv):
    r = ipn(SERVERS[srv]["ns"], "-j", "-4", "addr", "show", "dev", "eth0", check=False)
    if r.returncode != 0:
        return False
    for l in json.loads(r.stdout or "[]"):
        for ai in l.get("addr_info", []):
            if ai.get("local") == VIP:
                return True
    return False


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def listening(ns, port):
    r = nsrun(ns, ["ss", "-Hltn"], check=False)
    return any(l.split()[3].endswith(":%d" % port) for l in r.stdout.splitlines() if len(l.split()) > 3)


def captures_up(run_dir, opts):
    for host, ns in CAPTURE_HOSTS.items():
        start("tcpdump-" + host,
              nsx(ns, ["tcpdump", "-i", "any", "-B", "8192", "-s", "0", "-Z", "root", "-n",
                       "-w", os.path.join(run_dir, "pcap", host + ".pcap")]),
              stderr=os.path.join(run_dir, "pcap", host + ".tcpdump.log"))
    for host in ("router", "A", "B"):
        ns = CAPTURE_HOSTS[host]
        start("conntrack-" + host,
              nsx(ns, ["conntrack", "-E", "-e", "NEW", "-p", "tcp", "-o", "timestamp",
                       "-b", "16777216"]),
              stdout=os.path.join(run_dir, "conntrack", host + ".events"),
              stderr=os.path.join(run_dir, "conntrack", host + ".err"))
    if opts.get("pcapng"):
        # optional: dumpcap per interface (pcapng, interface names in the IDBs);
        # its internal queue limits raised (-N/-C), 16 MiB kernel buffer per interface
        for host, ns in CAPTURE_HOSTS.items():
            ifs = [l["ifname"] for l in json.loads(ipn(ns, "-j", "link").stdout)
                   if l["ifname"] != "lo"]
            cmd = ["dumpcap", "-n", "-t", "-s", "0", "-B", "16", "-N", "10000000",
                   "-C", str(1 << 30), "-w", os.path.join(run_dir, "pcap", host + ".pcapng")]
            for i in ifs:
                cmd += ["-i", i]
            start("dumpcap-" + host, nsx(ns, cmd),
                  stderr=os.path.join(run_dir, "pcap", host + ".dumpcap.log"))
        for host in CAPTURE_HOSTS:
            p = os.path.join(run_dir, "pcap", host + ".dumpcap.log")
            if not wait_for(lambda: os.path.exists(p) and b"Capturing on" in open(p, "rb").read(), 15):
                raise RuntimeError("dumpcap on %s did not start" % host)
    # tcpdump prints "listening on any" once it is capturing
    for host in CAPTURE_HOSTS:
        p = os.path.join(run_dir, "pcap", host + ".tcpdump.log")
        if not wait_for(lambda: os.path.exists(p) and b"listening" in open(p, "rb").read(), 10):
            raise RuntimeError("tcpdump on %s did not start" % host)


def save_links(run_dir, out_dir):
    for host, ns in CAPTURE_HOSTS.items():
        r = ipn(ns, "-j", "addr")
        with open(os.path.join(out_dir, host + ".links.json"), "w") as f:
            f.write(json.dumps(json.loads(r.stdout), indent=1) + "\n")
    topo = {}
    for ns in all_namespaces():
        topo[ns] = json.loads(ipn(ns, "-j", "addr").stdout)
    with open(os.path.join(run_dir, "topology-addrs.json"), "w") as f:
        json.dump(topo, f)


# --------------------------------------------------------------------------
# flowtrace live inside a lab namespace (--live-on HOST)
# --------------------------------------------------------------------------
def live_start(run_dir, host, binary, seconds):
    """Start `flowtrace live -i any` in HOST's namespace, tracked by PID like the rest.
    Files in the run dir: live-HOST.{pcapng,jsonl,out,err,pid}; the pcapng is NOT
    scrubbed (it holds the X-Lab-Trace markers), so it never leaves the run dir."""
    ns = CAPTURE_HOSTS[host]
    base = os.path.join(run_dir, "live-" + host)
    cmd = nsx(ns, [binary, "live", "-i", "any", "-w", base + ".pcapng", "--format", "jsonl",
                   "-o", base + ".jsonl", "--duration", "%d" % int(seconds + 0.999),
                   "--no-progress"])
    name = "flowtrace-live-" + host
    p = start(name, cmd, stdout=base + ".out", stderr=base + ".err")
    e = find_proc(name)
    write(base + ".pid", json.dumps({"pid": p.pid, "start": e["start"], "name": name}) + "\n")
    t0 = time.time()
    # no readiness line is specified: give it a moment to open the capture, and fail
    # at once if it exits during that time
    end = time.monotonic() + 1.5
    while time.monotonic() < end and p.poll() is None:
        time.sleep(0.05)
    if p.poll() is not None:
        err = open(base + ".err", errors="replace").read().strip()[-2000:]
        raise RuntimeError("flowtrace live on %s exited at start with code %s: %s\n  command: %s"
                           % (host, p.returncode, err, " ".join(cmd)))
    log("flowtrace live running on %s (pid %d, --duration %d)" % (host, p.pid, int(seconds + 0.999)))
    return {"host": host, "command": cmd, "pid": p.pid, "t_start": t0}


def live_stop(run_dir, live, wait=120.0):
    """SIGINT by PID if still running, then wait for it (final summary); record the result."""
    name = "flowtrace-live-" + live["host"]
    e = find_proc(name)
    p = POPENS.get(live["pid"])
    live["running_at_stop"] = p.poll() is None
    live["t_stop_requested"] = time.time()
    if live["running_at_stop"]:
        stop_pid(e, signal.SIGINT, wait=wait)   # SIGKILL only after `wait` seconds
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    live["exit_code"] = p.returncode
    live["t_exited"] = time.time()
    live["stop_seconds"] = round(live["t_exited"] - live["t_stop_requested"], 3)
    base = os.path.join(run_dir, "live-" + live["host"])
    live["stderr_tail"] = open(base + ".err", errors="replace").read()[-3000:]
    live["files"] = {f: os.path.getsize(base + f) if os.path.exists(base + f) else None
                     for f in (".pcapng", ".jsonl")}
    write(base + ".result.json", json.dumps(live, indent=1) + "\n")
    log("flowtrace live on %s: exit %s after %.1fs (%s)" % (
        live["host"], live["exit_code"], live["stop_seconds"],
        "stopped with SIGINT" if live["running_at_stop"] else "had stopped by itself"))
    return live


# --------------------------------------------------------------------------
# flowtrace agent + collect over NATS JetStream (--agents, issue 15)
# --------------------------------------------------------------------------
# nats-server and the collector run in the router's namespace, listening on its LAN
# address; the agents in A's and B's. The agents leave the NATS connection out of
# what they capture (-f 'not port 4222').
NATS_PORT = 4222


def nats_url():
    return "nats://%s:%d" % (ROUTER["ip_lan"], NATS_PORT)


def proc_cpu_s(pid):
    """User + system CPU seconds of a running process (/proc/PID/stat), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Agents:
    """Every process of the --agents run, each start under its own name (so that a
    restart is a new tracked PID), with the times of the restarts."""

    def __init__(self, run_dir, binary, collector_nice=None, agent_nice=None):
        self.run_dir, self.binary = run_dir, binary
        self.collector_nice, self.agent_nice = collector_nice, agent_nice
        self.n = {}
        self.events = []

    def _start(self, kind, ns, cmd):
        self.n[kind] = self.n.get(kind, 0) + 1
        name = "%s-%d" % (kind, self.n[kind])
        base = os.path.join(self.run_dir, name)
        start(name, nsx(ns, cmd), stdout=base + ".out", stderr=base + ".err")
        self.events.append({"event": "start", "name": name, "t": time.time()})
        return name

    def _renice(self, name, nice):
        """Sets the autogroup nice value of `name`'s session (None: leaves it). Each
        process start() launches leads a session of its own, hence an autogroup of its
        own: the scheduler shares the CPUs between autogroups by their nice values; a
        process's own nice (nice(1)) counts only within its group."""
        if nice is not None:
            with open("/proc/%d/autogroup" % find_proc(name)["pid"], "w") as f:
                f.write("%d" % nice)
        return name

    def _stop(self, name, sig, wait):
        e = find_proc(name)
        self.events.append({"event": "stop", "name": name, "signal": int(sig), "t": time.time()})
        stop_pid(e, sig, wait=wait)
        self.events.append({"event": "stopped", "name": name, "t": time.time()})

    def nats(self):
        nb = shutil.which("nats-server") or "/usr/sbin/nats-server"
        name = self._start("nats-server", ROUTER["ns"],
                           [nb, "-js", "-a", ROUTER["ip_lan"], "-p", str(NATS_PORT),
                            "-sd", os.path.join(self.run_dir, "jetstream")])
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if nsrun(ROUTER["ns"], ["ss", "-ltn", "sport = :%d" % NATS_PORT],
                     check=False).stdout.count("LISTEN"):
                return name
            time.sleep(0.05)
        raise RuntimeError("nats-server did not listen in %s" % ROUTER["ns"])

    def agent(self, host):
        k = self.n.get("agent-" + host, 0) + 1
        return self._renice(self._start("agent-" + host, SERVERS[host]["ns"],
                            [self.binary, "agent", "--nats", nats_url(), "--host", host,
                             "-i", "any", "-f", "not port %d" % NATS_PORT,
                             "-w", os.path.join(self.run_dir, "agent-%s-%d.pcapng" % (host, k))]),
                            self.agent_nice)

    def collector(self):
        return self._renice(self._start("collector", ROUTER["ns"],
                            [self.binary, "collect", "--nats", nats_url(), "--format", "jsonl",
                             "-o", os.path.join(self.run_dir, "collect.jsonl"),
                             "--exit-when-idle", "8"]),
                            self.collector_nice)

    def begin(self):
        self.nats()
        self.agent("A")
        self.agent("B")
        time.sleep(1.5)   # the agents announce their hosts before the collector starts
        self.collector()

    def choreography(self, t0, seconds):
        """During the traffic: kill -9 the collector and start it again, restart
        nats-server, restart agent B."""
        def at(frac):
            time.sleep(max(0.0, t0 + frac * seconds - time.time()))
        at(0.25)
        self._stop("collector-1", signal.SIGKILL, 5)
        time.sleep(1.0)
        self.collector()
        at(0.45)
        self._stop("nats-server-1", signal.SIGTERM, 10)
        time.sleep(1.0)
        self.nats()
        at(0.65)
        self._stop("agent-B-1", signal.SIGINT, 30)
        time.sleep(1.0)
        self.agent("B")

    def end(self):
        for name in ("agent-A-%d" % self.n.get("agent-A", 1), "agent-B-%d" % self.n.get("agent-B", 1)):
            # CPU (user + system) of the agent's whole run, read by PID before it stops
            self.events.append({"event": "cpu", "name": name, "cpu_s": proc_cpu_s(find_proc(name)["pid"]),
                                "t": time.time()})
            self._stop(name, signal.SIGINT, 30)
        # the collector ends by itself once no record came for --exit-when-idle
        name = "collector-%d" % self.n["collector"]
        p = POPENS.get(find_proc(name)["pid"])
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            self._stop(name, signal.SIGTERM, 10)
        self.events.append({"event": "exited", "name": name, "code": p.returncode, "t": time.time()})
        self._stop("nats-server-%d" % self.n["nats-server"], signal.SIGTERM, 10)
        write(os.path.join(self.run_dir, "agents.json"), json.dumps(self.events, indent=1) + "\n")
        log("agents run: %s" % " ".join("%s %s" % (e["event"], e["name"]) for e in self.events))


# --------------------------------------------------------------------------
# one scenario
# --------------------------------------------------------------------------
def output_names():
    ours = {"truth.jsonl", "connections.jsonl", "scenario.json", "truth.jsonl.gz",
            "connections.jsonl.gz"}
    for h in CAPTURE_HOSTS:
        ours |= {h + ".pcap", h + ".pcap.gz", h + ".links.json", h + ".pcapng", h + ".pcapng.gz"}
    return ours


def publish(src_dir, dst_dir):
    """Move a finished scenario into dst_dir file by file (rename, or copy+rename
    across filesystems); remove our stale files there; leave anything else alone."""
    os.makedirs(dst_dir, exist_ok=True)
    new = set(os.listdir(src_dir))
    for f in sorted(new):
        try:
            os.replace(os.path.join(src_dir, f), os.path.join(dst_dir, f))
        except OSError:   # other filesystem: copy next to the target, then rename
            tmp = os.path.join(dst_dir, "." + f + ".new")
            shutil.copyfile(os.path.join(src_dir, f), tmp)
            os.replace(tmp, os.path.join(dst_dir, f))
    for f in os.listdir(dst_dir):
        if f in output_names() and f not in new:
            os.unlink(os.path.join(dst_dir, f))


def run_scenario(name, out_dir, extra):
    sc = dict(SCENARIOS[name])
    opts = {"forward_headers": sc.get("forward_headers", True),
            "gw_upstreams": sc.get("gw_upstreams", "own-first"),
            "limit_conn": extra.limit_conn,
            "userland_proxy": bool(extra.userland_proxy or sc.get("userland_proxy", False)),
            "gateway": extra.gateway or sc.get("gateway", "kong"),
            "no_offload": extra.no_offload, "br_netfilter": not extra.no_br_netfilter,
            "pcapng": extra.pcapng, "live_on": extra.live_on, "no_truth": extra.no_truth,
            "nginx_headers": extra.nginx_headers or sc.get("nginx_headers", "seed"),
            "samenet": bool(extra.samenet or sc.get("samenet", False))}
    if opts["samenet"]:
        # as two Docker hosts with default networks: B's container subnets are A's
        # (separate namespaces, so the overlap is real and harmless)
        SERVERS["B"]["kong_net"] = SERVERS["A"]["kong_net"]
        SERVERS["B"]["mdk"] = SERVERS["A"]["mdk"]
    opts["subnets"] = {k: [s["kong_net"] + ".0/24", s["mdk"] + ".0/24"]
                       for k, s in SERVERS.items()}
    traffic = dict(BASE_TRAFFIC)
    traffic.update(sc.get("traffic", {}))
    if extra.count:
        traffic["count"] = extra.count
    if extra.concurrency:
        traffic["concurrency"] = extra.concurrency
    if getattr(extra, "rate", None) is not None:
        traffic["rate"] = extra.rate
    if getattr(extra, "worker_rate", None) is not None:
        traffic["worker_rate"] = extra.worker_rate
    if extra.no_keepalive:
        traffic["keepalive"] = False
    if extra.duration:
        traffic["duration"] = extra.duration
    if traffic.get("duration"):
        # duration mode: issue requests until the time is up (still at most `count`)
        traffic["max_seconds"] = max(traffic["max_seconds"], traffic["duration"] + 15.0)
    live_bin = flowtrace_bin() if extra.live_on else None
    t_begin = time.time()
    run_dir = os.path.abspath(extra.run_dir or os.path.join(HERE, "run", name))
    if os.path.isdir(run_dir):
        # only ever delete a directory a previous lab run created
        if os.path.exists(os.path.join(run_dir, ".ftlab-run")) or \
                os.path.dirname(run_dir) == os.path.join(HERE, "run"):
            shutil.rmtree(run_dir)
        elif os.listdir(run_dir):
            raise RuntimeError("--run-dir %s exists, is not empty and is not a lab run dir" % run_dir)
    for d in ("pcap", "conntrack", "logs"):
        os.makedirs(os.path.join(run_dir, d), exist_ok=True)
    with open(os.path.join(run_dir, ".ftlab-run"), "w") as f:
        f.write("created by captures/lab/lab.py; deleted and recreated by the next run\n")
    # build everything in the (gitignored) run dir, move it into place at the end:
    # the output dir never holds a half-written scenario
    final_out = os.path.abspath(out_dir)
    out_dir = os.path.join(run_dir, "out")
    os.makedirs(out_dir)

    STATE_OBJ.d["run_dir"] = run_dir
    STATE_OBJ.save()
    info = {"scenario": name, "description": sc["desc"], "options": opts, "traffic": traffic,
            "kong_emulated_version": KONG_VERSION, "failures": [],
            "command": " ".join(["captures/lab/run-scenario.sh"] + sys.argv[2:]),
            "date_utc": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
    log("topology up")
    topology_up(opts)
    captures_up(run_dir, opts)
    log("captures running; starting keepalived and services")
    keepalived_up(run_dir, "A")
    keepalived_up(run_dir, "B")
    services_up(run_dir, opts)
    for k, s in SERVERS.items():
        for role, ns, port in (("kong", s["ns"] + "-kong", 8000), ("nginx", s["ns"] + "-nginx", 80)):
            if not wait_for(lambda: listening(ns, port), 10):
                raise RuntimeError("%s on %s not listening" % (role, k))
        for r in REPLICAS:
            ns = "%s-%s" % (s["ns"], r)
            if not wait_for(lambda: listening(ns, 8888), 10):
                raise RuntimeError("%s on %s not listening" % (r, k))
    if not wait_for(lambda: has_vip("A"), 15):
        raise RuntimeError("VIP did not come up on A")
    t_vip_a = time.time()
    log("VIP on A; saving links; running traffic %s" % traffic)
    save_links(run_dir, out_dir)
    time.sleep(1.0)   # a VRRP advert or so before traffic
    cmd = nsx(CLIENT["ns"], [PY, os.path.join(HERE, "traffic.py"), "--netns", CLIENT["ns"],
                             "--host", VIP, "--port", "8000",
                             "--count", str(traffic["count"]),
                             "--concurrency", str(traffic["concurrency"]),
                             "--same-url-pct", str(traffic["same_url_pct"]),
                             "--post-pct", str(traffic["post_pct"]),
                             "--body-size", str(traffic["body_size"]),
                             "--rate", str(traffic["rate"]),
                             "--max-seconds", str(traffic["max_seconds"]),
                             "--mix", traffic["mix"], "--seed", str(traffic["seed"]),
                             "--worker-rate", str(traffic["worker_rate"]),
                             "--out", os.path.join(run_dir, "client.jsonl")]
              + (["--keepalive"] if traffic["keepalive"] else [])
              + (["--duration", str(traffic["duration"])] if traffic.get("duration") else []))
    live = None
    if live_bin:
        live = live_start(run_dir, extra.live_on, live_bin, traffic["max_seconds"] + LIVE_MARGIN)
    agents = (Agents(run_dir, flowtrace_bin(), getattr(extra, "collector_nice", None),
                     getattr(extra, "agent_nice", None))
              if getattr(extra, "agents", False) else None)
    if agents is not None:
        agents.begin()
    gen = start("traffic", cmd, stdout=os.path.join(run_dir, "traffic.out"),
                stderr=os.path.join(run_dir, "traffic.err"))
    t_traffic = time.time()
    if agents is not None and not getattr(extra, "agents_steady", False):
        agents.choreography(t_traffic, traffic.get("duration") or traffic["max_seconds"])
    fo = None
    if sc.get("failover_after"):
        time.sleep(sc["failover_after"])
        ka = find_proc("keepalived-a")
        t_kill = time.time()
        if proc_alive(ka):
            os.kill(ka["pid"], signal.SIGTERM)
        t_gone_a = t_on_b = None
        end = time.monotonic() + 15
        while time.monotonic() < end and (t_gone_a is None or t_on_b is None):
            if t_gone_a is None and not has_vip("A"):
                t_gone_a = time.time()
            if t_on_b is None and has_vip("B"):
                t_on_b = time.time()
            time.sleep(0.01)
        stop_pid(ka, signal.SIGTERM, wait=10)
        t_dead = time.time()
        fo = {"keepalived_a_sigterm_at": t_kill, "vip_gone_from_a_at": t_gone_a,
              "vip_on_b_at": t_on_b, "keepalived_a_exited_at": t_dead,
              "method": "SIGTERM to keepalived (A) by PID; VIP presence on A and B polled "
                        "every ~10 ms with `ip -j addr` (times are epoch seconds, same clock "
                        "as truth t_start/t_end)"}
        log("failover: %s" % fo)
    try:
        gen.wait(traffic["max_seconds"] + 30)
    except subprocess.TimeoutExpired:
        stop_pid(find_proc("traffic"), signal.SIGTERM)
        info["failures"].append("traffic generator timed out")
    t_traffic_end = time.time()
    summ = open(os.path.join(run_dir, "traffic.out")).read().strip()
    log("traffic done: %s %s" % (summ, open(os.path.join(run_dir, "traffic.err")).read().strip()))
    if gen.returncode not in (0,):
        info["failures"].append("traffic generator exit code %s" % gen.returncode)
    # trailing FIN/ACKs; and at least ~3 s of the master's 1 s adverts in the capture
    time.sleep(max(1.5, 3.5 - (time.time() - t_vip_a)))
    if agents is not None:
        agents.end()
    if live is not None:
        live = live_stop(run_dir, live)
        info["live"] = {k: v for k, v in live.items() if k != "stderr_tail"}
        if live["exit_code"] != 0:
            info["failures"].append("flowtrace live on %s exit code %s: %s" % (
                live["host"], live["exit_code"], live["stderr_tail"].strip()[-500:]))
    # stop captures (SIGINT, let tcpdump flush), then snapshot conntrack
    for host in CAPTURE_HOSTS:
        stop_pid(find_proc("tcpdump-" + host), signal.SIGINT, wait=15)
        if opts.get("pcapng"):
            stop_pid(find_proc("dumpcap-" + host), signal.SIGINT, wait=15)
    for host in ("router", "A", "B"):
        stop_pid(find_proc("conntrack-" + host), signal.SIGTERM, wait=5)
        r = nsrun(CAPTURE_HOSTS[host], ["conntrack", "-L", "-p", "tcp"], check=False)
        write(os.path.join(run_dir, "conntrack", host + ".list"), r.stdout)
    # keepalived state transitions for the record
    log("tearing down")
    teardown()
    t_down = time.time()
    if extra.no_truth:
        return finish_without_truth(name, info, run_dir, out_dir, final_out, t_begin, t_vip_a,
                                    t_traffic, t_traffic_end, t_down, summ)

    import truth as truthmod
    import scrub as scrubmod
    truth_rows, tstats, conns = truthmod.build(run_dir, SERVERS, containers, VIP,
                                               opts.get("br_netfilter_effective", False))
    if fo is not None:
        for row in truth_rows:   # where the request started relative to the VIP move
            ts = row.get("t_start") or 0
            row["failover_phase"] = ("before" if fo["vip_gone_from_a_at"] and ts < fo["vip_gone_from_a_at"]
                                     else "after" if fo["vip_on_b_at"] and ts >= fo["vip_on_b_at"]
                                     else "during")
    with open(os.path.join(out_dir, "truth.jsonl"), "w") as f:
        for row in truth_rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    with open(os.path.join(out_dir, "connections.jsonl"), "w") as f:
        for c in conns:
            f.write(json.dumps(c, separators=(",", ":")) + "\n")
    if sc.get("gzip_truth") and not extra.no_gzip:
        # the realistic scenarios ship their truth compressed too (captures/ < 40 MiB)
        for base in ("truth.jsonl", "connections.jsonl"):
            src = os.path.join(out_dir, base)
            with open(src, "rb") as fi, gzip.open(src + ".gz", "wb", compresslevel=9) as fo_:
                shutil.copyfileobj(fi, fo_, 1 << 20)
            os.unlink(src)
    markers = [r["marker"] for r in truth_rows if r.get("marker")]
    if fo is not None:
        fo["failed_requests"] = [{"id": r["id"], "t_start": r["t_start"], "error": r["error"],
                                  "client": r.get("client")} for r in truth_rows if not r.get("ok")]
        fo["requests_served_by_gateway"] = tstats.get("gateway_server")
        for srv in ("a", "b"):
            kl = os.path.join(run_dir, "keepalived-" + srv, "keepalived.err")
            if os.path.exists(kl):
                fo["keepalived_%s_log" % srv] = [l.strip() for l in open(kl, errors="replace")
                                                 if "STATE" in l or "priority 0" in l
                                                 or "Stopping" in l or "Stopped" in l]
    pstats = {}
    for host in CAPTURE_HOSTS:
        src = os.path.join(run_dir, "pcap", host + ".pcap")
        dst = os.path.join(out_dir, host + ".pcap")
        st = scrubmod.scrub_file(src, dst, markers)
        tdlog = open(os.path.join(run_dir, "pcap", host + ".tcpdump.log")).read()
        st["tcpdump"] = [l for l in tdlog.splitlines() if "packets" in l]
        dropped = [l for l in st["tcpdump"] if "dropped by kernel" in l and not l.startswith("0 ")]
        if dropped:
            info["failures"].append("tcpdump %s: %s" % (host, dropped))
        if not extra.no_gzip:
            with open(dst, "rb") as fi, gzip.open(dst + ".gz", "wb", compresslevel=9) as fo_:
                shutil.copyfileobj(fi, fo_, 1 << 20)
            os.unlink(dst)
            st["file"] = host + ".pcap.gz"
            st["bytes_gz"] = os.path.getsize(dst + ".gz")
        else:
            st["file"] = host + ".pcap"
        pstats[host] = st
        if opts.get("pcapng"):
            src = os.path.join(run_dir, "pcap", host + ".pcapng")
            dst = os.path.join(out_dir, host + ".pcapng")
            st2 = scrubmod.scrub_file(src, dst, markers)
            dlog = open(os.path.join(run_dir, "pcap", host + ".dumpcap.log"), errors="replace").read()
            st2["dumpcap"] = [l.strip() for l in dlog.splitlines() if "dropped" in l or "captured" in l]
            if any(re.search(r": \d+/[1-9]\d*", l) for l in st2["dumpcap"]):
                info["failures"].append("dumpcap %s dropped packets" % host)
            if not extra.no_gzip:
                with open(dst, "rb") as fi, gzip.open(dst + ".gz", "wb", compresslevel=9) as fo_:
                    shutil.copyfileobj(fi, fo_, 1 << 20)
                os.unlink(dst)
                st2["file"] = host + ".pcapng.gz"
            pstats[host + ".pcapng"] = st2
    info.update({
        "t_begin": t_begin, "t_vip_on_a": t_vip_a, "t_traffic_start": t_traffic,
        "t_traffic_end": t_traffic_end, "t_down": t_down,
        "traffic_summary": json.loads(summ) if summ.startswith("{") else summ,
        "truth": tstats, "captures": pstats, "failover": fo,
        "rate_reached": (json.loads(summ).get("rate_reached") if summ.startswith("{") else None),
        "elapsed_seconds": round(time.time() - t_begin, 1),
    })
    if tstats.get("unresolved"):
        info["failures"].append("%d requests with incomplete truth" % tstats["unresolved"])
    with open(os.path.join(out_dir, "scenario.json"), "w") as f:
        f.write(json.dumps(info, sort_keys=True) + "\n")
    publish(out_dir, final_out)
    log("scenario %s done in %.1fs -> %s" % (name, time.time() - t_begin, final_out))
    return info


def finish_without_truth(name, info, run_dir, out_dir, final_out, t_begin, t_vip_a, t_traffic,
                         t_traffic_end, t_down, summ):
    """--no-truth (soak runs): no truth, no scrubbing, no gzip; the raw captures stay in
    the run dir (they hold the markers); the output dir gets scenario.json and links."""
    pstats = {}
    for host in CAPTURE_HOSTS:
        tdlog = open(os.path.join(run_dir, "pcap", host + ".tcpdump.log")).read()
        st = {"tcpdump": [l for l in tdlog.splitlines() if "packets" in l],
              "raw_file": os.path.join(run_dir, "pcap", host + ".pcap")}
        if any("dropped by kernel" in l and not l.startswith("0 ") for l in st["tcpdump"]):
            info["failures"].append("tcpdump %s: %s" % (host, st["tcpdump"]))
        pstats[host] = st
    info.update({
        "t_begin": t_begin, "t_vip_on_a": t_vip_a, "t_traffic_start": t_traffic,
        "t_traffic_end": t_traffic_end, "t_down": t_down,
        "traffic_summary": json.loads(summ) if summ.startswith("{") else summ,
        "truth": None, "captures": pstats, "failover": None,
        "elapsed_seconds": round(time.time() - t_begin, 1),
    })
    with open(os.path.join(out_dir, "scenario.json"), "w") as f:
        f.write(json.dumps(info, sort_keys=True) + "\n")
    publish(out_dir, final_out)
    log("scenario %s (no truth) done in %.1fs -> %s" % (name, time.time() - t_begin, final_out))
    return info


def main():
    global STATE_OBJ
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("run")
    rp.add_argument("scenario", choices=sorted(SCENARIOS))
    rp.add_argument("--out", help="output dir (default captures/<scenario>)")
    rp.add_argument("--run-dir", help="working dir (default captures/lab/run/<scenario>)")
    rp.add_argument("--count", type=int, help="override the request count")
    rp.add_argument("--concurrency", type=int, help="override the concurrency")
    rp.add_argument("--rate", type=float, help="override the request rate (requests/s over all workers; 0: as fast as possible)")
    rp.add_argument("--no-keepalive", action="store_true",
                    help="client sends Connection: close, one connection per request")
    rp.add_argument("--no-offload", action="store_true", help="ethtool -K off on all veths")
    rp.add_argument("--userland-proxy", action="store_true",
                    help="docker-proxy style relay for hairpin traffic")
    rp.add_argument("--limit-conn", action="store_true", help="Nginx limit_conn perip 2 (STACK.md)")
    rp.add_argument("--no-br-netfilter", action="store_true")
    rp.add_argument("--nginx-headers", choices=("seed", "stock"),
                    help="Nginx header set: seed (STACK.md: X-Real-IP, X-Forwarded-*, "
                         "Backend-Server) or stock (bare proxy_pass); default per scenario")
    rp.add_argument("--gateway", choices=("kong", "haproxy"),
                    help="the gateway in the kong_net container: kong (the Kong-like nginx, "
                         "default) or haproxy (Debian's HAProxy, installed when needed)")
    rp.add_argument("--samenet", action="store_true",
                    help="both servers use the same container subnets (198.19.1/24, 198.19.2/24)")
    rp.add_argument("--worker-rate", type=float,
                    help="override the per-worker-paced target rate (req/s over all workers)")
    rp.add_argument("--no-gzip", action="store_true")
    rp.add_argument("--pcapng", action="store_true",
                    help="also capture with dumpcap per interface: <host>.pcapng (interface names)")
    rp.add_argument("--live-on", choices=sorted(CAPTURE_HOSTS), metavar="HOST",
                    help="also run `flowtrace live -i any` in HOST's namespace (client, router, "
                         "A, B) during the traffic: <run-dir>/live-HOST.{jsonl,pcapng,err,"
                         "result.json}; binary $FLOWTRACE_BIN or <repo>/target/release/flowtrace")
    rp.add_argument("--agents", action="store_true",
                    help="also run `flowtrace agent` in A and B and nats-server + `flowtrace "
                         "collect` in the router, killing/restarting each during the traffic "
                         "(<run-dir>/collect.jsonl, agent-HOST-N.pcapng, agents.json)")
    rp.add_argument("--agents-steady", action="store_true",
                    help="with --agents: no restarts during the traffic (for measuring delay "
                         "and cost; bench/nats_lab.py)")
    rp.add_argument("--collector-nice", type=int, metavar="N",
                    help="with --agents: the collector's autogroup nice value (-20..19; "
                         "/proc/PID/autogroup), e.g. -10 to stand for a collector with a "
                         "CPU of its own (default: 0, an equal share with every other "
                         "session of the machine)")
    rp.add_argument("--agent-nice", type=int, metavar="N",
                    help="with --agents: the agents' autogroup nice value (as --collector-nice)")
    rp.add_argument("--duration", type=float,
                    help="duration mode: issue requests for this many seconds (at most --count)")
    rp.add_argument("--no-truth", action="store_true",
                    help="skip truth, scrubbing and gzip (soak runs); raw pcaps stay in the run dir")
    sub.add_parser("down")
    sub.add_parser("list")
    a = ap.parse_args()
    if a.cmd == "list":
        for k, v in SCENARIOS.items():
            print("%-20s %s" % (k, v["desc"]))
        return 0
    if os.geteuid() != 0:
        sys.exit("lab.py must run as root")
    os.makedirs(STATE_DIR, exist_ok=True)
    lockf = open(LOCK, "w")
    try:
        fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit("another lab run holds %s" % LOCK)
    if a.cmd == "run" and (a.live_on or a.agents):
        flowtrace_bin()   # fail before anything is built
    if a.cmd == "run" and a.duration is not None and not (0 < a.duration <= 585):
        sys.exit("lab.py: --duration must be in (0, 585] seconds")
    STATE_OBJ = State()
    if a.cmd == "down":
        teardown()
        return 0
    # leftovers from a crashed run
    teardown()
    STATE_OBJ = State()
    if a.cmd == "run" and (a.gateway or SCENARIOS[a.scenario].get("gateway")) == "haproxy":
        ensure_packages(("haproxy",))
    elif a.cmd == "run" and a.agents:
        ensure_packages(("nats-server",))
    else:
        ensure_packages()
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except Exception:
        pass

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    out = a.out or os.path.join(os.path.dirname(HERE), a.scenario)
    try:
        info = run_scenario(a.scenario, out, a)
    finally:
        teardown()
    return 1 if info["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
