#!/usr/bin/env python3
"""Checks a `lab.py run ... --agents` run (issue 15): the collector's paths
(<run>/collect.jsonl) against `flowtrace pcap --paths` over the agents' own -w
captures (<run>/agent-HOST-N.pcapng), every request once and none duplicated, leaving
out the window of agent B's own restart (<run>/agents.json).

Paths are compared as tests/remote.rs compares them: ids, evidence sentences and the
record type left out, times within 20 us (both depend on when a link was decided);
paths that differ only in a link's confidence are counted apart, and at most 1 in
1,000 may differ in a time by more (the clock offset estimated at that moment).
One line per check, then "N passed, M failed"; exit 1 on any failure.

usage: natscheck.py RUN_DIR --flowtrace BIN
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

MARGIN = 2.0   # seconds either side of agent B's outage


def strip(v, times):
    if isinstance(v, dict):
        for k in ("id", "type", "evidence"):
            if k != "id" or "hops" in v:
                v.pop(k, None)
        for k in list(v):
            if k == "ts" or k.endswith("_ts"):
                times.append(v[k] if isinstance(v[k], (int, float)) else 0.0)
                v[k] = None
            else:
                strip(v[k], times)
    elif isinstance(v, list):
        for x in v:
            strip(x, times)


def split(path, loose=False):
    v = json.loads(json.dumps(path))
    times = []
    strip(v, times)
    if loose:   # a link's confidence and the alternatives it lists
        for h in v.get("hops", []):
            h.pop("confidence", None)
            h.pop("alternatives", None)
    return json.dumps(v, sort_keys=True), times


def match(want, got):
    """Pairs each wanted path with an equal collected one (times within 20 us);
    returns the unmatched of each side."""
    index = {}
    for i, (shape, _) in enumerate(got):
        index.setdefault(shape, []).append(i)
    used, missing = set(), []
    for shape, times in want:
        for i in index.get(shape, []):
            t2 = got[i][1]
            if i not in used and len(t2) == len(times) and all(
                    abs(x - y) <= 20e-6 for x, y in zip(t2, times)):
                used.add(i)
                break
        else:
            missing.append((shape, times))
    return missing, [g for i, g in enumerate(got) if i not in used]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--flowtrace", required=True)
    a = ap.parse_args()
    ok = bad = 0

    def check(cond, msg):
        nonlocal ok, bad
        print(("PASS " if cond else "FAIL ") + msg)
        if cond:
            ok += 1
        else:
            bad += 1

    events = json.load(open(os.path.join(a.run, "agents.json")))
    t = {(e["event"], e["name"]): e["t"] for e in events}
    out_from = t[("stop", "agent-B-1")] - MARGIN
    out_to = t[("start", "agent-B-2")] + MARGIN
    for name in ("collector-1", "nats-server-1", "agent-B-1"):
        check(("stopped", name) in t, "%s was stopped and started again during the traffic" % name)
    code = [e for e in events if e["event"] == "exited"]
    check(code and code[0]["code"] == 0, "the last collector exited 0 (%s)" % code)

    captures = sorted(glob.glob(os.path.join(a.run, "agent-*-*.pcapng")))
    r = subprocess.run([a.flowtrace, "pcap", "--paths", "--format", "jsonl"] + captures,
                       capture_output=True, text=True)
    check(r.returncode == 0, "flowtrace pcap --paths over %s" % " ".join(map(os.path.basename, captures)))
    text = r.stdout
    for c in captures:   # agent-B-2.pcapng -> host B, as the collector names it
        host = re.match(r"agent-(.+)-\d+\.pcapng$", os.path.basename(c)).group(1)
        text = text.replace('"%s"' % c, '"%s"' % host)
        text = text.replace('"%s"' % os.path.basename(c)[:-len(".pcapng")], '"%s"' % host)
    want = [json.loads(l) for l in text.splitlines() if l.strip()]
    want = [p for p in want if p.get("type") == "path"]
    got = [json.loads(l) for l in open(os.path.join(a.run, "collect.jsonl"))]
    got = [p for p in got if p.get("type") == "path"]
    ids = [p["id"] for p in got]
    check(len(ids) == len(set(ids)), "no path id twice in the collector's output (%d paths)" % len(ids))
    outside = lambda p: not (out_from <= p["start_ts"] <= out_to)
    w = [p for p in want if outside(p)]
    g = [p for p in got if outside(p)]
    missing, extra = match([split(p) for p in w], [split(p) for p in g])
    # What differs only in a link's confidence (decided with another view of how rare
    # the shared values were) is the same path.
    m_loose, e_loose = match(
        [split(p, True) for p in w if split(p) in missing],
        [split(p, True) for p in g if split(p) in extra])
    # Same hops, links, statuses and roles, but a time further than 20 us off: another
    # host's times are corrected by the clock offset as estimated when the path was
    # decided. Tolerated for at most 1 path in 1,000.
    untimed = lambda x: (x[0], [])
    m_shape, e_shape = match([untimed(x) for x in m_loose], [untimed(x) for x in e_loose])
    check(not m_shape and not e_shape and len(w) == len(g)
          and len(m_loose) * 1000 <= max(len(w), 1),
          "outside agent B's outage (%.1f s): %d paths from the captures, %d from the collector; "
          "%d identical, %d differing only in a link's confidence, %d only in a time by more "
          "than 20 us; %d missing, %d extra"
          % (out_to - out_from, len(w), len(g), len(w) - len(missing),
             len(missing) - len(m_loose), len(m_loose) - len(m_shape), len(m_shape), len(e_shape)))
    inside = [p for p in got if not outside(p)]
    print("     inside the outage: %d paths from the collector, %d partial or failed"
          % (len(inside), sum(p["status"] != "complete" for p in inside)))
    print("%d passed, %d failed" % (ok, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
