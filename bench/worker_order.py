#!/usr/bin/env python3
"""Does a proxy keep the order of its requests per worker? Measured on a lab scenario's truth.

    bench/worker_order.py captures/real-haproxy-stock-max A gateway veth-kong

A proxy serves each client connection on one worker (an HAProxy thread, an Nginx worker
process) and a worker forwards the requests it reads in the order it read them, while
two workers interleave freely. If so, the proxy's client connections fall into groups
within which the upstream requests leave in the order the inbound requests arrived,
and linking can use that order where a single global order (what the engine's convex
start-gap cost assumes) is broken by the other workers.

For the proxy `HOP` (gateway or nginx) on `HOST`, joined to the truth at interface
`IFACE` (where both its inbound and its upstream exchanges are seen; `flowtrace pcap
--format jsonl HOST.pcap.gz`, joined by bench/truthjoin.py), this prints:

1. **The truth's structure.** For pairs of requests on two client connections whose
   inbound requests ended within 3 ms of each other: whether their upstream requests
   left in the same order. The best split of the client connections into two groups
   (local search on the likelihood of "same group: order kept, other group: order
   free") is printed with the share of pairs out of order within and across the
   groups, beside the same search on the labels shuffled (what a split finds in noise).
2. **What the order is worth, learned without the truth.** An order-preserving merge:
   the upstream requests, in the order they left, are dealt to the groups' inbound
   requests, each group in its arrival order (dynamic programming over how many of
   each group are served). A pair costs its start gap plus its end gap in ms, plus
   penalties for a different method or URI (300) and for a gap below zero (100 + 10
   per ms). The split is learned by local search on the merge's total cost (several
   random starts, on the first `--learn` inbound requests), with no truth; then the
   whole run is merged with it, and the links are scored against the truth. Printed
   beside: one group (a proxy keeping one global order) and the truth's split; the
   split is also checked on the next `--learn` requests against random splits; and,
   when scipy is installed, an iterated one-to-one assignment that takes the order as
   a penalty (the form the engine's assignment could host).

The sets merged are the proxy's inbound and upstream exchanges at `IFACE` that the truth
joins (every request of these scenarios completes, so they are the exchanges an
observer sees there). A prototype for the correlation engine (docs/correlation.md,
"Worker order"), not a part of it; its penalties are not tuned.
"""
import argparse, bisect, collections, importlib.util, json, math, random, sys

from truthjoin import Join

WINDOW = 3e-3


def load(d, host, hop, iface):
    join = Join(d, host)
    kinds = {"gateway": ("client-gateway", "gateway-nginx"), "nginx": ("gateway-nginx", "nginx-python")}[hop]
    pairs = []
    for t in join.truth:
        if not t.get("complete") or t[hop]["server"] != host:
            continue
        i = join.views(t["connections"][kinds[0]], t["id"]).get(iface)
        u = join.views(t["connections"][kinds[1]], t["id"]).get(iface)
        if not i or not u or not i["response_end_ts"] or not u["response_end_ts"]:
            continue
        pairs.append({"conn": i["client"], "in_end": i["request_end_ts"], "in_resp_end": i["response_end_ts"],
                      "in_mu": (i["method"], i["uri"]), "up_start": u["request_ts"],
                      "up_end": u["response_end_ts"], "up_mu": (u["method"], u["uri"]), "id": t["id"]})
    return pairs


def order_counts(pairs):
    """Per pair of client connections: (pairs out of order, pairs in order)."""
    inv, conc = collections.Counter(), collections.Counter()
    p = sorted(pairs, key=lambda x: x["in_end"])
    for a in range(len(p)):
        for b in range(a + 1, len(p)):
            if p[b]["in_end"] - p[a]["in_end"] > WINDOW:
                break
            if p[a]["conn"] == p[b]["conn"]:
                continue
            key = tuple(sorted((p[a]["conn"], p[b]["conn"])))
            if p[b]["up_start"] < p[a]["up_start"]:
                inv[key] += 1
            else:
                conc[key] += 1
    return inv, conc


def split_by_order(conns, inv, conc, rng, eps=0.01, q=0.2, starts=30):
    """The 2-split maximising the likelihood of order kept within, free across."""
    w = collections.defaultdict(float)
    for k in set(inv) | set(conc):
        w[k] = inv[k] * (math.log(eps) - math.log(q)) + conc[k] * (math.log(1 - eps) - math.log(1 - q))
    nb = collections.defaultdict(list)
    for (a, b), v in w.items():
        nb[a].append((b, v))
        nb[b].append((a, v))
    best = None
    for _ in range(starts):
        g = {c: rng.randint(0, 1) for c in conns}
        moved = True
        while moved:
            moved = False
            for c in conns:
                same = sum(v for o, v in nb[c] if g[o] == g[c])
                other = sum(v for o, v in nb[c] if g[o] != g[c])
                if other > same + 1e-9:
                    g[c] ^= 1
                    moved = True
        score = sum(v for (a, b), v in w.items() if g[a] == g[b])
        if best is None or score > best[0]:
            best = (score, dict(g))
    return best[1]


def shares(groups, inv, conc):
    wi = sum(v for (a, b), v in inv.items() if groups[a] == groups[b])
    wc = sum(v for (a, b), v in conc.items() if groups[a] == groups[b])
    ai = sum(v for (a, b), v in inv.items() if groups[a] != groups[b])
    ac = sum(v for (a, b), v in conc.items() if groups[a] != groups[b])
    return wi, wi + wc, ai, ai + ac


def cost(i, u):
    c = 0.0
    if i["in_mu"] != u["up_mu"]:
        c += 300
    sg = (u["up_start"] - i["in_end"]) * 1e3
    eg = (i["in_resp_end"] - u["up_end"]) * 1e3
    for gap in (sg, eg):
        if gap < -0.05:
            c += 100 + 10 * abs(gap)
    return c + abs(sg) + abs(eg)


def merge(inbound, upstream, groups, band=0.08):
    """Order-preserving merge of two groups' inbound requests onto the upstream ones in
    departure order; (total cost, {inbound id: upstream id})."""
    g = [sorted((i for i in inbound if groups[i["conn"]] == k), key=lambda i: i["in_end"]) for k in (0, 1)]
    ups = sorted(upstream, key=lambda u: u["up_start"])
    n0, n1 = len(g[0]), len(g[1])
    t0 = [i["in_end"] for i in g[0]]
    t1 = [i["in_end"] for i in g[1]]
    inf = float("inf")
    layer = {0: 0.0}
    back = []
    for k in range(min(n0 + n1, len(ups))):
        u = ups[k]
        nxt, how = {}, {}
        for i, c in layer.items():
            j = k - i
            if i < n0:
                v = c + cost(g[0][i], u)
                if v < nxt.get(i + 1, inf):
                    nxt[i + 1], how[i + 1] = v, 0
            if j < n1:
                v = c + cost(g[1][j], u)
                if v < nxt.get(i, inf):
                    nxt[i], how[i] = v, 1
        # Keep states whose next inbound requests are not long overtaken by the
        # upstream ones (a worker does not hold a request for more than `band`).
        if k + 1 < len(ups):
            tu = ups[k + 1]["up_start"] - band
            lo0 = bisect.bisect_left(t0, tu)
            lo1 = bisect.bisect_left(t1, tu)
            kept = {i: c for i, c in nxt.items()
                    if (i >= n0 or i >= lo0) and (k + 1 - i >= n1 or k + 1 - i >= lo1)}
            nxt = kept or dict(sorted(nxt.items(), key=lambda x: x[1])[:64])
        back.append(how)
        layer = nxt
    end = min(layer, key=layer.get)
    total = layer[end]
    links, i = {}, end
    for k in range(len(back) - 1, -1, -1):
        if back[k][i] == 0:
            i -= 1
            links[g[0][i]["id"]] = ups[k]["id"]
        else:
            links[g[1][k - i]["id"]] = ups[k]["id"]
    return total, links


def learn_split(inbound, upstream, conns, rng, starts, passes=4):
    best = None
    for s in range(starts):
        g = {c: rng.randint(0, 1) for c in conns}
        cur, _ = merge(inbound, upstream, g)
        for _ in range(passes):
            moved = False
            for c in conns:
                g[c] ^= 1
                v, _ = merge(inbound, upstream, g)
                if v < cur:
                    cur, moved = v, True
                else:
                    g[c] ^= 1
            if not moved:
                break
        print(f"  learning: start {s + 1} of {starts}: merge cost {cur:,.0f}", file=sys.stderr)
        if best is None or cur < best[0]:
            best = (cur, dict(g))
    return best[1]


def iterated_assignment(inbound, upstream, groups, penalty, passes=4, relearn=None):
    """A cheaper use of the order than the merge, one the engine's assignment can host:
    an assignment of the prototype's costs (start gap as the engine's Huber cost, end
    gap squared), then `passes` more in which a pair whose upstream request left before
    the one chosen for the previous inbound request of the same group costs `penalty`
    more. With `relearn`, the split is learned again from each pass's links
    (`relearn(pairs)` returns it) instead of being given. Needs scipy; links right after
    each pass."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    ins = sorted(inbound, key=lambda i: i["in_end"])
    ups = sorted(upstream, key=lambda u: u["up_start"])
    n, big = len(ins), 1e9

    def huber(ms):
        ms = abs(ms)
        return ms * ms if ms <= 3 else 9 + 6 * (ms - 3)

    base = np.full((n, len(ups)), big)
    for a, i in enumerate(ins):
        for b, u in enumerate(ups):
            sg = (u["up_start"] - i["in_end"]) * 1e3
            eg = (i["in_resp_end"] - u["up_end"]) * 1e3
            if -0.05 <= sg <= 500 and eg >= -0.05:
                base[a, b] = (0 if i["in_mu"] == u["up_mu"] else 300) + eg * eg + huber(sg)
    starts = np.array([u["up_start"] for u in ups])
    chosen, right = None, []
    for _ in range(passes + 1):
        cost = base.copy()
        if chosen is not None:
            last = {}
            for a, i in enumerate(ins):
                g = groups[i["conn"]]
                if g in last and last[g] in chosen:
                    cost[a, starts < starts[chosen[last[g]]]] += penalty
                last[g] = a
        rows, cols = linear_sum_assignment(cost)
        chosen = {a: b for a, b in zip(rows, cols) if cost[a, b] < big}
        right.append(sum(1 for a, b in chosen.items() if ins[a]["id"] == ups[b]["id"]))
        if relearn is not None:
            groups = relearn([{"conn": ins[a]["conn"], "in_end": ins[a]["in_end"],
                               "up_start": ups[b]["up_start"]} for a, b in chosen.items()])
    return right


def agreement(a, b):
    same = sum(1 for c in a if a[c] == b[c])
    return max(same, len(a) - same)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("host")
    ap.add_argument("hop", choices=["gateway", "nginx"])
    ap.add_argument("iface")
    ap.add_argument("--learn", type=int, default=600, help="inbound requests the split is learned on")
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    pairs = load(a.scenario, a.host, a.hop, a.iface)
    conns = sorted({p["conn"] for p in pairs})
    print(f"{a.scenario} {a.hop} on {a.host} at {a.iface}: {len(pairs)} requests on {len(conns)} client connections")
    inv, conc = order_counts(pairs)
    truth_split = split_by_order(conns, inv, conc, rng)
    wi, wn, ai, an = shares(truth_split, inv, conc)
    labels = [(k, 1) for k, v in inv.items() for _ in range(v)] + [(k, 0) for k, v in conc.items() for _ in range(v)]
    shuffled = [x for _, x in labels]
    rng.shuffle(shuffled)
    sinv, sconc = collections.Counter(), collections.Counter()
    for (k, _), x in zip(labels, shuffled):
        (sinv if x else sconc)[k] += 1
    null_split = split_by_order(conns, sinv, sconc, rng)
    nwi, nwn, nai, nan_ = shares(null_split, sinv, sconc)
    sizes = collections.Counter(truth_split.values())
    print(f"order of close pairs ({len(labels)} pairs, {sum(inv.values())} out of order):")
    print(f"  truth's best split {sizes[0]}+{sizes[1]}: within {wi}/{wn} out of order ({100 * wi / max(wn, 1):.1f} %), "
          f"across {ai}/{an} ({100 * ai / max(an, 1):.1f} %)")
    print(f"  same search on shuffled labels: within {nwi}/{nwn} ({100 * nwi / max(nwn, 1):.1f} %), "
          f"across {nai}/{nan_} ({100 * nai / max(nan_, 1):.1f} %)")
    inbound = [{"id": p["id"], "conn": p["conn"], "in_end": p["in_end"], "in_resp_end": p["in_resp_end"],
                "in_mu": p["in_mu"]} for p in pairs]
    upstream = [{"id": p["id"], "up_start": p["up_start"], "up_end": p["up_end"], "up_mu": p["up_mu"]} for p in pairs]
    first = sorted(inbound, key=lambda i: i["in_end"])[:a.learn]
    ids = {i["id"] for i in first}
    learned = learn_split(first, [u for u in upstream if u["id"] in ids], conns, rng, a.starts)
    result = {"scenario": a.scenario, "host": a.host, "hop": a.hop, "iface": a.iface, "requests": len(pairs),
              "client_connections": len(conns), "close_pairs": len(labels),
              "truth_split": {"within_out_of_order": wi, "within": wn, "across_out_of_order": ai, "across": an},
              "shuffled_split": {"within_out_of_order": nwi, "within": nwn, "across_out_of_order": nai, "across": nan_},
              "learned_split_agrees_with_truth_split": agreement(learned, truth_split), "merge": {}}
    print(f"learned split (no truth, first {len(first)} requests): agrees with the truth's on "
          f"{result['learned_split_agrees_with_truth_split']} of {len(conns)} connections")
    # Held out: a worker's connections stay its own, so a real split lowers the merge
    # cost of the requests after the learning ones too; a split fitted to noise does
    # no better there than a random split of the same sizes.
    later = sorted(inbound, key=lambda i: i["in_end"])[a.learn:2 * a.learn]
    later_ids = {i["id"] for i in later}
    later_up = [u for u in upstream if u["id"] in later_ids]
    held = {"one group": merge(later, later_up, {c: 0 for c in conns})[0],
            "learned split": merge(later, later_up, learned)[0]}
    randoms = []
    for _ in range(5):
        shuffled_conns = conns[:]
        rng.shuffle(shuffled_conns)
        ones = set(shuffled_conns[:sum(learned.values())])
        randoms.append(merge(later, later_up, {c: int(c in ones) for c in conns})[0])
    held["random splits (median of 5)"] = sorted(randoms)[2]
    result["held_out"] = {"requests": len(later), **{k: round(v) for k, v in held.items()}}
    print(f"held-out merge cost (next {len(later)} requests): " +
          ", ".join(f"{k} {v:,.0f}" for k, v in held.items()))
    for name, split in [("one group", {c: 0 for c in conns}), ("learned split", learned), ("truth's split", truth_split)]:
        total, links = merge(inbound, upstream, split)
        right = sum(1 for k, v in links.items() if k == v)
        result["merge"][name] = {"cost": round(total), "links_right": right, "links": len(pairs)}
        print(f"  merge with {name:13}: cost {total:10,.0f}, links right {right} of {len(pairs)} ({100 * right / len(pairs):.2f} %)")
    if importlib.util.find_spec("scipy") is None:  # optional: `pip install scipy`
        print("  (scipy not installed: the iterated assignment is skipped)")
    else:
        result["iterated_assignment"] = {}
        for penalty in (50, 200, 1000):
            right = iterated_assignment(inbound, upstream, learned, penalty)
            result["iterated_assignment"][str(penalty)] = right
            print(f"  assignment with the learned split's order, penalty {penalty}: links right per pass {right}")
        # The split learned from the links alone, as an engine could do cheaply: split
        # by the order of the current links, assign again with it, split again.
        agreements = []

        def relearn(links):
            inv_, conc_ = order_counts(links)
            split = split_by_order(conns, inv_, conc_, rng)
            agreements.append(agreement(split, truth_split))
            return split

        first_split = relearn([{"conn": i["conn"], "in_end": i["in_end"], "up_start": i["in_end"]}
                               for i in inbound])
        right = iterated_assignment(inbound, upstream, first_split, 200, passes=6, relearn=relearn)
        result["split_from_links"] = {"links_right_per_pass": right, "agreement_per_pass": agreements[1:]}
        print(f"  split learned from the links alone (penalty 200): links right per pass {right}, "
              f"split agrees with the truth's on {agreements[1:]} of {len(conns)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
