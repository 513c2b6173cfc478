#!/usr/bin/env python3
"""Check that a lab scenario's captures contain what its truth names.

    pcapcheck.py DIR      (DIR holds <host>.pcap[.gz], <host>.links.json,
                           truth.jsonl, scenario.json)

Reads the pcaps directly (pcaplib, stdlib only).  Prints one line per check
and ends with `N passed, M failed`; exit status 1 if anything failed.
"""
import gzip
import ipaddress
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pcaplib  # noqa: E402

HOSTS = ("client", "router", "A", "B")
LAB = ipaddress.ip_network("198.18.0.0/15")
MCAST = ipaddress.ip_network("224.0.0.0/4")
SYN, ACK = 0x02, 0x10

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, (" - " + detail) if detail else ""))
    sys.stdout.flush()


def hp(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


class Cap:
    def __init__(self, d, host):
        path = os.path.join(d, host + ".pcap.gz")
        if not os.path.exists(path):
            path = os.path.join(d, host + ".pcap")
        self.path = path
        self.linktype, self.pkts = pcaplib.read_all(path)
        with open(os.path.join(d, host + ".links.json")) as f:
            links = json.load(f)
        self.ifname = {l["ifindex"]: l["ifname"] for l in links}
        self.flows = {}
        for p in self.pkts:
            if p.sport is None:
                continue
            key = (self.ifname.get(p.ifindex, "?%s" % p.ifindex), p.src, p.sport, p.dst, p.dport)
            self.flows.setdefault(key, []).append(p)

    def flow(self, ifname, src, dst):
        s, sp = hp(src)
        d, dp = hp(dst)
        return self.flows.get((ifname, s, sp, d, dp), [])

    def syn(self, ifname, src, dst):
        for p in self.flow(ifname, src, dst):
            if p.flags & SYN and not p.flags & ACK:
                return p
        return None


def open_text(d, name):
    """NAME in D, or NAME.gz (the realistic scenarios ship their truth compressed)."""
    path = os.path.join(d, name)
    if os.path.exists(path):
        return open(path)
    return gzip.open(path + ".gz", "rt")


def starts(p, prefixes):
    pl = pcaplib.payload(p)
    return any(pl.startswith(x) for x in prefixes)


def main():
    d = sys.argv[1]
    truth = [json.loads(l) for l in open_text(d, "truth.jsonl") if l.strip()]
    scen = json.load(open(os.path.join(d, "scenario.json")))
    conns = {}
    if any(os.path.exists(os.path.join(d, "connections.jsonl" + z)) for z in ("", ".gz")):
        conns = {c["cid"]: c for c in (json.loads(l) for l in open_text(d, "connections.jsonl")
                                       if l.strip())}
    for r in truth:
        if "views" not in r:
            r["views"] = [dict(v, conn=conns[cid]["kind"])
                          for cid in r.get("connections", {}).values() if cid in conns
                          for v in conns[cid]["views"]]
    caps = {}
    for h in HOSTS:
        try:
            caps[h] = Cap(d, h)
            c = caps[h]
            check("capture %s readable, SLL2, non-empty" % h,
                  c.linktype == pcaplib.LINKTYPE_LINUX_SLL2 and len(c.pkts) > 0,
                  "%d packets, linktype %d" % (len(c.pkts), c.linktype))
            unknown = {p.ifindex for p in c.pkts} - set(c.ifname)
            check("capture %s interface indexes named by links.json" % h, not unknown,
                  "unknown %s" % sorted(unknown) if unknown else "%d interfaces" % len(c.ifname))
        except Exception as e:
            check("capture %s readable" % h, False, repr(e))
    if len(caps) != len(HOSTS):
        return finish()

    # safety: nothing but lab addresses on the wire
    bad = set()
    for h, c in caps.items():
        for p in c.pkts:
            for a in (p.src, p.dst):
                if a is None or a == "0.0.0.0":
                    continue
                ip = ipaddress.ip_address(a)
                if ip not in LAB and ip not in MCAST and a != "255.255.255.255":
                    bad.add((h, a))
    check("only lab addresses (198.18.0.0/15) in captures", not bad, str(sorted(bad)[:5]))

    # drops and scrub
    caps_info = scen.get("captures", {})
    drops = [h for h, v in caps_info.items()
             if any("dropped by kernel" in l and not l.startswith("0 ") for l in v.get("tcpdump", []))]
    check("tcpdump reported 0 packets dropped", not drops, ",".join(drops))
    leak = [h for h, c in caps.items() if any(b"lab-trace" in p.data.lower() for p in c.pkts)]
    check("no X-Lab-Trace marker left in captures", not leak, ",".join(leak))

    ok_rows = [r for r in truth if r.get("ok")]
    check("truth: every successful request fully resolved",
          ok_rows and all(r.get("complete") for r in ok_rows),
          "%d/%d complete" % (sum(1 for r in ok_rows if r.get("complete")), len(ok_rows)))

    # DNAT at the gateway's server: the same SYN on the host NIC (to VIP:8000)
    # and on the kong_net bridge (to the gateway container), same seq number
    seen, good, detail = set(), 0, ""
    for r in ok_rows:
        if not r.get("new_conn") or not r.get("router_snat"):
            continue
        G = r["gateway"]["server"]
        key = (G, r["router_snat"]["to"])
        if key in seen:
            continue
        seen.add(key)
        a = caps[G].syn("eth0", r["router_snat"]["to"], r["client"]["dst"])
        b = caps[G].syn("kong_net", r["router_snat"]["to"], r["gateway"]["listen"])
        if a and b and a.seq == b.seq:
            good += 1
        elif not detail:
            detail = "missing for %s (eth0 %s, kong_net %s)" % (key, bool(a), bool(b))
    check("DNAT visible: client SYN on host eth0 (->VIP:8000) and on kong_net (->gateway:8000)",
          seen and good == len(seen), detail or "%d/%d connections" % (good, len(seen)))

    # router MASQUERADE: client SYN on router eth0 and eth1 with rewritten source
    seen, good = set(), 0
    for r in ok_rows:
        if r.get("new_conn") and r.get("router_snat"):
            if r["client"]["src"] in seen:
                continue
            seen.add(r["client"]["src"])
            a = caps["router"].syn("eth0", r["client"]["src"], r["client"]["dst"])
            b = caps["router"].syn("eth1", r["router_snat"]["to"], r["client"]["dst"])
            c = caps["client"].syn("eth0", r["client"]["src"], r["client"]["dst"])
            good += bool(a and b and c and a.seq == b.seq == c.seq)
    check("router SNAT visible: client SYN on client eth0, router eth0 and eth1 (rewritten src)",
          seen and good == len(seen), "%d/%d connections" % (good, len(seen)))

    # gateway -> Nginx connections, hairpin on one server: the same SYN on the
    # gateway's veth (-> host:80), on kong_net, on mdk (from the mdk gateway
    # address after MASQUERADE) and on Nginx's veth
    same, cross, proxied = {}, {}, {}
    for r in ok_rows:
        gu = r.get("gateway_upstream")
        if not gu:
            continue
        G = r["gateway"]["server"]
        if gu.get("userland_proxy"):
            proxied.setdefault((G, gu["src"]), r["views"])
            continue
        vs = [v for v in r["views"] if v["conn"] == "gateway-nginx"]
        (cross if gu["cross_server"] else same).setdefault((G, gu["src"]), vs)
    for label, group in (("hairpin NAT (same server)", same), ("cross-server MASQUERADE+DNAT", cross)):
        good, found, detail = 0, 0, ""
        for key, vs in group.items():
            syns = [caps[v["host"]].syn(v["iface"], v["fwd"]["src"], v["fwd"]["dst"]) for v in vs]
            if any(syns):
                found += 1
                if all(syns) and len({p.seq for p in syns}) == 1:
                    good += 1
                elif not detail:
                    detail = "; first bad: " + ", ".join(
                        "%s/%s %s->%s:%s" % (v["host"], v["iface"], v["fwd"]["src"], v["fwd"]["dst"],
                                             "ok" if sy else "MISSING") for v, sy in zip(vs, syns))
        if group:
            check("%s visible: gateway->Nginx SYN with rewritten addresses on every interface "
                  "the truth names" % label, found and good == found,
                  "%d/%d connections opened during capture%s" % (good, found, detail))

    if proxied:
        good, found = 0, 0
        for key, vs in proxied.items():
            a = [caps[v["host"]].syn(v["iface"], v["fwd"]["src"], v["fwd"]["dst"])
                 for v in vs if v["conn"] == "gateway-proxy"]
            b = [caps[v["host"]].syn(v["iface"], v["fwd"]["src"], v["fwd"]["dst"])
                 for v in vs if v["conn"] == "proxy-nginx"]
            if any(a) or any(b):
                found += 1
                good += bool(all(a) and all(b) and len({p.seq for p in a}) == 1
                             and len({p.seq for p in b}) == 1)
        check("userland proxy visible: gateway->host:80 and proxy->Nginx as two connections",
              found and good == found, "%d/%d proxied connections" % (good, found))

    # every view of every connection the truth names has packets both ways
    conns = {}
    for r in ok_rows:
        for v in r["views"]:
            conns.setdefault((v["conn"], v["host"], v["iface"], v["fwd"]["src"], v["fwd"]["dst"]), v)
    missing = []
    for key, v in conns.items():
        c = caps[v["host"]]
        if not c.flow(v["iface"], v["fwd"]["src"], v["fwd"]["dst"]) or \
                not c.flow(v["iface"], v["rev"]["src"], v["rev"]["dst"]):
            missing.append(key)
    check("every truth view (connection x interface) has packets in both directions",
          conns and not missing, "%d views" % len(conns) if not missing else
          "%d/%d missing, e.g. %s" % (len(missing), len(conns), missing[:2]))

    # VRRP adverts from the master (A) on the LAN, unicast to B
    a_ip, b_ip = "198.18.1.17", "198.18.1.16"
    adv = [p for p in caps["A"].pkts if p.vrrp and p.src == a_ip and p.dst == b_ip
           and p.vrrp["vrid"] == 52 and p.vrrp["prio"] == 100 and p.vrrp["type"] == 1]
    adv_b = [p for p in caps["B"].pkts if p.vrrp and p.src == a_ip and p.vrrp["vrid"] == 52]
    ts = [p.ts for p in adv]
    gaps = [y - x for x, y in zip(ts, ts[1:])]
    regular = gaps and all(0.5 < g < 1.6 for g in gaps)
    check("VRRP adverts from master A (vrid 52, prio 100, unicast to B) about every 1 s",
          len(adv) >= 3 and regular and len(adv_b) >= len(adv) - 1,
          "%d adverts in A.pcap, %d seen in B.pcap, gaps %.2f-%.2f s" %
          (len(adv), len(adv_b), min(gaps or [0]), max(gaps or [0])))
    garp = [p for p in caps["A"].pkts if p.ethertype == 0x0806 and
            p.data[20 + 14:20 + 18] == bytes(map(int, "198.18.1.231".split("."))) and
            p.data[20 + 24:20 + 28] == bytes(map(int, "198.18.1.231".split(".")))]
    check("gratuitous ARP for the VIP from A", len(garp) >= 1, "%d GARPs" % len(garp))

    fo = scen.get("failover")
    if fo:
        t_on_b = fo.get("vip_on_b_at") or 0
        p0 = [p for p in caps["A"].pkts if p.vrrp and p.src == a_ip and p.vrrp["prio"] == 0]
        advb = [p for p in caps["B"].pkts if p.vrrp and p.src == b_ip and p.vrrp["vrid"] == 52
                and p.ts >= t_on_b - 1.0]
        garpb = [p for p in caps["B"].pkts if p.ethertype == 0x0806 and p.ts >= t_on_b - 1.0 and
                 p.data[20 + 14:20 + 18] == bytes(map(int, "198.18.1.231".split(".")))]
        check("failover: A's priority-0 advert, then B's adverts and B's gratuitous ARP for the VIP",
              p0 and advb and garpb, "%d prio-0, %d B adverts, %d B GARPs" % (len(p0), len(advb), len(garpb)))
        failed = [r for r in truth if not r.get("ok")]
        check("failover: failed requests recorded in truth and scenario.json",
              len(failed) == len(fo.get("failed_requests", [])), "%d failed" % len(failed))

    # every truth request complete on the wire at each hop
    def count_on(cap, ifname, src, dst, req_pfx, resp_pfx):
        fwd = cap.flow(ifname, src, dst)
        rev = cap.flow(ifname, dst, src)
        return (sum(1 for p in fwd if starts(p, req_pfx)),
                sum(1 for p in rev if starts(p, resp_pfx)))

    per_conn = {}
    for r in ok_rows:
        per_conn.setdefault(r["client"]["src"], []).append(r)
    bad = []
    for src, rows in per_conn.items():
        q, s = count_on(caps["client"], "eth0", src, rows[0]["client"]["dst"],
                        (b"GET ", b"POST "), (b"HTTP/1.1 200",))
        if q < len(rows) or s < len(rows):
            bad.append((src, len(rows), q, s))
    check("every request and its 200 seen on the client's connection (client.pcap eth0)",
          not bad, "%d connections, %d requests" % (len(per_conn), len(ok_rows)) if not bad else str(bad[:3]))

    per_gu = {}
    for r in ok_rows:
        gu = r["gateway_upstream"]
        up = gu.get("userland_proxy") or gu["after_nat"]
        per_gu.setdefault((r["nginx"]["server"], up["src"], up["dst"]), []).append(r)
    bad = []
    for (N, src, dst), rows in per_gu.items():
        q, s = count_on(caps[N], "veth-nginx", src, dst, (b"GET ", b"POST "), (b"HTTP/1.1 200",))
        if q < len(rows) or s < len(rows):
            bad.append((N, src, len(rows), q, s))
    check("every request and its 200 seen on the gateway->Nginx connection (Nginx's veth)",
          not bad, "%d connections" % len(per_gu) if not bad else str(bad[:3]))

    bad = []
    for r in ok_rows:
        nu = r["nginx_upstream"]
        srv = r["python"]["server"]
        q, s = count_on(caps[srv], "veth-" + r["python"]["replica"], nu["src"], nu["dst"],
                        (b"GET ", b"POST "), (b"HTTP/1.0 200",))
        if q < 1 or s < 1:
            bad.append((r["id"], srv, nu))
    check("every request and its HTTP/1.0 200 seen on Nginx->Python (python's veth)",
          not bad, "%d requests" % len(ok_rows) if not bad else str(bad[:3]))
    return finish()


def finish():
    p = sum(RESULTS)
    f = len(RESULTS) - p
    print("%d passed, %d failed" % (p, f))
    return 1 if f or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
