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
import collections, sys
from truthjoin import Join
d=sys.argv[1]; host=sys.argv[2]
join=Join(d, host)
truth=join.truth
find=lambda cid, rid, _host: join.views(cid, rid)
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
