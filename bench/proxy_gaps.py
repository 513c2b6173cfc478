#!/usr/bin/env python3
"""The true start and end gaps at each proxy of a lab scenario, from its ground truth.

    bench/proxy_gaps.py captures/real-haproxy-stock-max A

For every complete request whose gateway (or Nginx) ran on HOST, finds the inbound and
the upstream exchange in `flowtrace pcap --format jsonl HOST.pcap.gz` (by the truth's
connections and the request's position on each), on an interface of HOST that saw
both, and prints the percentiles of: start gap (upstream request's first byte after
the inbound request's last) and end gap (inbound response's first byte after the
upstream response's last), in milliseconds. It shows how tightly a proxy follows its
upstream: the correlation engine's timing penalties assume order-keeping proxies
(docs/correlation.md).
"""
import json, gzip, os, subprocess, sys, collections
FLOWTRACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target/release/flowtrace")
d=sys.argv[1]; host=sys.argv[2]
out=subprocess.run([FLOWTRACE,"pcap","--format","jsonl",f"{d}/{host}.pcap.gz"],capture_output=True,text=True).stdout
tx=collections.defaultdict(list)
for line in out.splitlines():
    t=json.loads(line)
    if t.get("type")!="transaction": continue
    tx[(t["capture"]["interface"],t["client"],t["server"])].append(t)
for v in tx.values(): v.sort(key=lambda t:t["request_ts"] or 0)
conns={}
for line in gzip.open(f"{d}/connections.jsonl.gz","rt"):
    c=json.loads(line); conns[c["cid"]]=c
truth=[json.loads(l) for l in gzip.open(f"{d}/truth.jsonl.gz","rt")]
def find(cid, rid, iface_host):
    c=conns[cid]; idx=c["requests"].index(rid); out={}
    for v in c["views"]:
        if v["host"]!=iface_host: continue
        lst=tx.get((v["iface"],v["fwd"]["src"],v["fwd"]["dst"]))
        if lst and idx < len(lst): out[v["iface"]]=lst[idx]
    return out
gaps=collections.defaultdict(list)
for t in truth:
    if not t.get("complete"): continue
    cc=t["connections"]
    for (a,b,name) in [("client-gateway","gateway-nginx","gateway"),("gateway-nginx","nginx-python","nginx")]:
        srv=t[name]["server"]
        if srv!=host: continue
        G=find(cc[a],t["id"],host); U=find(cc[b],t["id"],host)
        common=[i for i in G if i in U and G[i]["response_ts"] and U[i]["response_end_ts"] and G[i]["request_end_ts"]]
        if not common: continue
        g=G[common[0]]; u=U[common[0]]
        sg=(u["request_ts"]-g["request_end_ts"])*1e3; eg=(g["response_ts"]-u["response_end_ts"])*1e3
        gaps[name].append((sg,eg))
for k,v in gaps.items():
    s=sorted(x[0] for x in v); e=sorted(x[1] for x in v)
    q=lambda a,p:a[min(len(a)-1,int(p*len(a)))]
    print(k,len(v),"start gap ms p50/p90/p99",round(q(s,.5),3),round(q(s,.9),3),round(q(s,.99),3),"end gap ms p50/p90/p99",round(q(e,.5),3),round(q(e,.9),3),round(q(e,.99),3))
