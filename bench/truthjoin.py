"""A lab scenario's truth joined to the transactions flowtrace reads from one host's
capture: which exchange, at which interface, each truth request was on each of its
connections. Shared by bench/proxy_gaps.py and bench/worker_order.py.

A truth connection (connections.jsonl.gz) lists its views (host, interface and the
addresses there) and its requests in order; a request is the transaction at the same
position on the view's connection in `flowtrace pcap --format jsonl HOST.pcap.gz`.
"""
import collections, gzip, json, os, subprocess

FLOWTRACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target/release/flowtrace")


class Join:
    def __init__(self, scenario, host):
        self.host = host
        out = subprocess.run([FLOWTRACE, "pcap", "--format", "jsonl", "--no-progress",
                              f"{scenario}/{host}.pcap.gz"], capture_output=True, text=True, check=True).stdout
        self.tx = collections.defaultdict(list)
        for line in out.splitlines():
            t = json.loads(line)
            if t.get("type") == "transaction":
                self.tx[(t["capture"]["interface"], t["client"], t["server"])].append(t)
        for v in self.tx.values():
            v.sort(key=lambda t: t["request_ts"] or 0)
        self.conns = {}
        for line in gzip.open(f"{scenario}/connections.jsonl.gz", "rt"):
            c = json.loads(line)
            self.conns[c["cid"]] = c
        self.truth = [json.loads(line) for line in gzip.open(f"{scenario}/truth.jsonl.gz", "rt")]

    def views(self, cid, rid):
        """Request `rid` on truth connection `cid`, per interface of the host."""
        c = self.conns[cid]
        idx = c["requests"].index(rid)
        out = {}
        for v in c["views"]:
            if v["host"] != self.host:
                continue
            lst = self.tx.get((v["iface"], v["fwd"]["src"], v["fwd"]["dst"]))
            if lst and idx < len(lst):
                out[v["iface"]] = lst[idx]
        return out
