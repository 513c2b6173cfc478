#!/usr/bin/env python3
"""Check a lab run made with `--live-on HOST` (used by live-selftest.sh; stdlib only).

    livecheck.py RUN_DIR OUT_DIR [--host A] [--flowtrace BIN] [--min-pct 95]

RUN_DIR holds live-HOST.{jsonl,pcapng,result.json} (written by lab.py), OUT_DIR the
scenario's truth.jsonl.  Checks:
  (a) flowtrace live exited 0, its jsonl ends with a summary line whose
      live.interfaces all report 0 dropped / 0 if_dropped;
  (b) the paths it wrote equal those `flowtrace pcap --paths --format jsonl` finds
      in the pcapng it wrote (multiset of canonical paths: the sorted
      (kind, client, server, role, method, uri, status) of every hop);
  (c) every truth request whose gateway is on HOST has a live path: root hop client =
      the truth's router_snat.to, or a hop gateway_upstream.src -> dst (one path per
      request, >= --min-pct %);
  (d) the paths that addressed the VIP name its holder as a host (live knows its
      interfaces' addresses), not as an address.
One line per check, then "N passed, M failed"; exit 1 on any failure.
"""
import argparse
import collections
import json
import os
import subprocess
import sys

RESULTS = []


def check(ok, text):
    RESULTS.append(bool(ok))
    print("%s %s" % ("PASS" if ok else "FAIL", text))
    sys.stdout.flush()


def read_jsonl(path):
    rows, bad = [], 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad += 1
    return rows, bad


def canon(path):
    hops = []
    for h in path.get("hops", []):
        hops.append(tuple("" if h.get(k) is None else str(h.get(k))
                          for k in ("kind", "client", "server", "role", "method", "uri", "status")))
    return tuple(sorted(hops))


def root_hop(path):
    for h in path.get("hops", []):
        if h.get("parent") is None:
            return h
    return (path.get("hops") or [None])[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--host", default="A")
    ap.add_argument("--flowtrace", default=os.environ.get("FLOWTRACE_BIN") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "target", "release", "flowtrace"))
    ap.add_argument("--min-pct", type=float, default=95.0)
    a = ap.parse_args()
    base = os.path.join(a.run_dir, "live-" + a.host)

    # (a) exit code, summary line, drops
    res = {}
    try:
        res = json.load(open(base + ".result.json"))
    except (OSError, ValueError) as e:
        check(False, "flowtrace live result recorded (%s)" % e)
    if res:
        how = "stopped with SIGINT by PID" if res.get("running_at_stop") else "stopped by itself (--duration)"
        check(res.get("exit_code") == 0,
              "flowtrace live exited %s (%s, %.1f s after the stop request)%s" % (
                  res.get("exit_code"), how, res.get("stop_seconds") or 0,
                  "" if res.get("exit_code") == 0 else "; stderr: " + (res.get("stderr_tail") or "").strip()[-400:]))
    live_rows, bad = [], 0
    if os.path.exists(base + ".jsonl"):
        live_rows, bad = read_jsonl(base + ".jsonl")
    paths = [r for r in live_rows if r.get("type") == "path"]
    summ = live_rows[-1] if live_rows and live_rows[-1].get("type") == "summary" else None
    check(summ is not None and bad == 0,
          "live-%s.jsonl: %d lines, %d paths, %d unparsable, last line is %s" % (
              a.host, len(live_rows), len(paths), bad,
              "the summary" if summ is not None else
              ("type %r" % live_rows[-1].get("type") if live_rows else "missing (file empty or absent)")))
    ifs = ((summ or {}).get("live") or {}).get("interfaces") or []
    drops = [(i.get("name"), i.get("dropped"), i.get("if_dropped")) for i in ifs
             if i.get("dropped") != 0 or i.get("if_dropped") not in (0, None)]
    check(ifs and not drops,
          "summary live.interfaces report 0 dropped: %s" % (
              ", ".join("%s received %s dropped %s if_dropped %s" % (i.get("name"), i.get("received"),
                                                                    i.get("dropped"), i.get("if_dropped"))
                        for i in ifs) or "no interfaces in the summary"))

    # (b) live paths == pcap replay of the pcapng it wrote
    replay = []
    if not os.path.exists(base + ".pcapng"):
        check(False, "live-%s.pcapng written" % a.host)
    else:
        cmd = [a.flowtrace, "pcap", "--paths", "--format", "jsonl", base + ".pcapng"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                check(False, "flowtrace pcap on live-%s.pcapng exit %d: %s" % (
                    a.host, r.returncode, r.stderr.strip()[-400:]))
            else:
                rows = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
                replay = [x for x in rows if x.get("type") == "path"]
                live_c = collections.Counter(canon(p) for p in paths)
                rep_c = collections.Counter(canon(p) for p in replay)
                only_live = sum((live_c - rep_c).values())
                only_rep = sum((rep_c - live_c).values())
                check(live_c == rep_c and paths,
                      "live paths equal `flowtrace pcap --paths` on live-%s.pcapng: %d live, %d replayed, "
                      "%d only live, %d only replayed (canonical hop lists)" % (
                          a.host, len(paths), len(replay), only_live, only_rep))
                if live_c != rep_c:
                    for c, n in list((live_c - rep_c).items())[:2]:
                        print("    only live  x%d: %s" % (n, json.dumps(c)[:600]))
                    for c, n in list((rep_c - live_c).items())[:2]:
                        print("    only replay x%d: %s" % (n, json.dumps(c)[:600]))
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            check(False, "flowtrace pcap on live-%s.pcapng: %r" % (a.host, e))

    # (c) truth coverage
    truth, _ = read_jsonl(os.path.join(a.out_dir, "truth.jsonl"))
    want = [t for t in truth if (t.get("gateway") or {}).get("server") == a.host]
    by_client = collections.defaultdict(list)
    by_upstream = collections.defaultdict(list)
    for i, p in enumerate(paths):
        rh = root_hop(p) or {}
        if rh.get("client"):
            by_client[rh["client"]].append(i)
        for h in p.get("hops", []):
            if h.get("kind") == "http" and h.get("client") and h.get("server"):
                by_upstream[(h["client"], h["server"])].append(i)
    used = set()
    found = same_req = via_client = via_up = 0
    missing = []

    def take(cands, t):
        # one path per truth request; prefer one with the same method and URI
        free = [i for i in cands if i not in used]
        if not free:
            return None
        for i in free:
            rh = root_hop(paths[i]) or {}
            if rh.get("method") == t.get("method") and rh.get("uri") == t.get("path"):
                return i
        return free[0]

    for t in want:
        snat = (t.get("router_snat") or {}).get("to")
        gu = t.get("gateway_upstream") or {}
        i = take(by_client.get(snat, []), t) if snat else None
        if i is not None:
            via_client += 1
        else:
            i = take(by_upstream.get((gu.get("src"), gu.get("dst")), []), t) if gu.get("src") else None
            if i is not None:
                via_up += 1
        if i is None:
            missing.append(t)
            continue
        used.add(i)
        found += 1
        rh = root_hop(paths[i]) or {}
        if rh.get("method") == t.get("method") and rh.get("uri") == t.get("path"):
            same_req += 1
    pct = 100.0 * found / len(want) if want else 0.0
    check(want and pct >= a.min_pct,
          "truth requests via the gateway on %s found in the live paths: %d/%d (%.1f %%, need >= %.0f %%; "
          "%d by router SNAT address, %d by gateway upstream; %d with the same method and URI)" % (
              a.host, found, len(want), pct, a.min_pct, via_client, via_up, same_req))
    for t in missing[:3]:
        print("    missing: id %s %s %s snat %s upstream %s" % (
            t.get("id"), t.get("method"), t.get("path"), (t.get("router_snat") or {}).get("to"),
            t.get("gateway_upstream")))
    # (d) live knows its interfaces' addresses, so the VIP holder is named as a host,
    # not left as the advert's source address
    import ipaddress
    holders = collections.Counter((p.get("vip") or {}).get("holder") for p in paths if p.get("vip"))

    def is_address(h):
        try:
            ipaddress.ip_address(h)
            return True
        except (TypeError, ValueError):
            return False
    unnamed = sum(n for h, n in holders.items() if h is None or is_address(h))
    check(holders and unnamed == 0,
          "VIP holder named as a host in the live paths: %s" % dict(holders))
    p, f = sum(RESULTS), len(RESULTS) - sum(RESULTS)
    print("%d passed, %d failed" % (p, f))
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
