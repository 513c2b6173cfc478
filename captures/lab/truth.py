"""Build ground truth (truth.jsonl rows) from the lab's out-of-band records.

Sources (all in the run dir, none of them in the shipped captures):
  client.jsonl                 traffic.py: marker, client socket, times, status
  kong-<a|b>/logs/trace.jsonl  gateway nginx: marker, $remote_addr:$remote_port, $upstream_addr
  nginx-<a|b>/logs/trace.jsonl Nginx: marker, peer (gateway upstream conn after NAT), $upstream_addr
  logs/py-<a|b>-pyN.jsonl      Python: marker, peer (Nginx's upstream connection)
  conntrack/<host>.events      `conntrack -E -e NEW -o timestamp` (router, A, B): NAT mappings
  conntrack/<host>.list        `conntrack -L` snapshot at the end (fallback)
Schema: docs/lab.md.
"""
import json
import os
import re

CT_TUPLE = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")
CT_TS = re.compile(r"^\[(\d+\.\d+)\]")


def _jsonl(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _ct(path):
    """-> list of (ts or None, (osrc, odst, osport, odport), (rsrc, rdst, rsport, rdport))"""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, errors="replace") as f:
        for line in f:
            t = CT_TUPLE.findall(line)
            if len(t) < 2:
                continue
            m = CT_TS.match(line.strip())
            ts = float(m.group(1)) if m else None
            o, r = t[0], t[1]
            out.append((ts, (o[0], o[1], int(o[2]), int(o[3])), (r[0], r[1], int(r[2]), int(r[3]))))
    return out


class CT:
    """conntrack entries of one namespace, indexed both ways."""

    def __init__(self, run_dir, host):
        ev = _ct(os.path.join(run_dir, "conntrack", host + ".events"))
        ls = _ct(os.path.join(run_dir, "conntrack", host + ".list"))
        self.by_orig = {}
        self.by_reply = {}
        for ts, o, r in ev + ls:      # events first; list entries only fill gaps
            self.by_orig.setdefault(o, []).append((ts, o, r))
            self.by_reply.setdefault(r, []).append((ts, o, r))

    @staticmethod
    def _pick(cands, t):
        if not cands:
            return None
        timed = [c for c in cands if c[0] is not None and (t is None or c[0] <= t + 1.0)]
        if timed:
            return max(timed, key=lambda c: c[0])
        return cands[-1]

    def orig_src(self, ip, port, t=None):
        """entries whose original source is ip:port (any destination)"""
        c = [e for k, v in self.by_orig.items() if k[0] == ip and k[2] == port for e in v]
        return self._pick(c, t)

    def reply_dst(self, ip, port, sport=None, t=None):
        c = [e for k, v in self.by_reply.items()
             if k[1] == ip and k[3] == port and (sport is None or k[2] == sport) for e in v]
        return self._pick(c, t)

    def orig(self, src, sport, dst, dport, t=None):
        return self._pick(self.by_orig.get((src, dst, sport, dport), []), t)


def _hp(s):
    if not s or ":" not in s:
        return None, None
    h, p = s.rsplit(":", 1)
    try:
        return h, int(p)
    except ValueError:
        return h, None


def _ap(ip, port):
    return "%s:%s" % (ip, port)


def _v(conn, host, iface, src, dst, rsrc=None, rdst=None):
    """One capture view of a TCP connection: the addresses its packets carry on
    that interface, for the initiator's packets (fwd) and the responder's (rev)."""
    return {"conn": conn, "host": host, "iface": iface,
            "fwd": {"src": src, "dst": dst},
            "rev": {"src": rsrc or dst, "dst": rdst or src}}


def build(run_dir, SERVERS, containers, VIP, br_netfilter=True):
    client = _jsonl(os.path.join(run_dir, "client.jsonl"))
    kong, ngx, py = {}, {}, {}
    for k, s in SERVERS.items():
        for e in _jsonl(os.path.join(run_dir, "kong-%s" % s["tag"], "logs", "trace.jsonl")):
            e["server"] = k
            kong.setdefault(e.get("marker"), []).append(e)
        for e in _jsonl(os.path.join(run_dir, "nginx-%s" % s["tag"], "logs", "trace.jsonl")):
            e["server"] = k
            ngx.setdefault(e.get("marker"), []).append(e)
        for c in containers(k):
            if c[0].startswith("py"):
                for e in _jsonl(os.path.join(run_dir, "logs", "py-%s-%s.jsonl" % (s["tag"], c[0]))):
                    e["server"] = k
                    e["replica_name"] = c[0]
                    py.setdefault(e.get("marker"), []).append(e)
    ct = {"router": CT(run_dir, "router"), "A": CT(run_dir, "A"), "B": CT(run_dir, "B")}
    relay = {}   # (server, upstream_local) -> relay record (--userland-proxy)
    for k, s in SERVERS.items():
        for e in _jsonl(os.path.join(run_dir, "logs", "relay-%s-80.jsonl" % s["tag"])):
            relay.setdefault((k, e["upstream_local"]), []).append(e)
    cinfo = {}
    for k in SERVERS:
        for c in containers(k):
            cinfo[(k, c[0])] = {"ns": c[1], "bridge": c[2], "ip": c[3], "gw": c[4], "host_veth": c[5]}

    rows = []
    st = {"requests": 0, "ok": 0, "failed": 0, "complete": 0, "unresolved": 0,
          "gateway_server": {}, "nginx_server": {}, "cross_server": 0, "replica": {},
          "client_connections": 0, "gateway_upstream_connections": 0}
    client_conns, gw_up_conns = set(), set()
    conns, conn_ids, conn_by_id = [], {}, {}
    for c in sorted(client, key=lambda r: r.get("id", 0)):
        st["requests"] += 1
        mk = c.get("marker")
        t = c.get("t_start")
        row = {k: c.get(k) for k in ("id", "marker", "method", "path", "req_body_len", "t_start",
                                       "t_end", "ok", "status", "error", "new_conn", "keepalive")}
        row["resp_headers"] = c.get("resp_headers")
        views = []
        nat = []
        missing = []
        ct_t = {}
        # ---- client connection and router SNAT
        if c.get("client_src"):
            cip, cport = _hp(c["client_src"])
            row["client"] = {"src": c["client_src"], "dst": c["client_dst"]}
            client_conns.add(c["client_src"])
            e = ct["router"].orig(cip, cport, VIP, 8000, t) or ct["router"].orig_src(cip, cport, t)
            if e:
                ct_t["client-gateway"] = e[0]
                snat = _ap(e[2][1], e[2][3])
                row["router_snat"] = {"from": c["client_src"], "to": snat}
                nat.append({"conn": "client-gateway", "where": "router", "type": "SNAT (MASQUERADE)",
                            "orig": {"src": c["client_src"], "dst": c["client_dst"]},
                            "reply": {"src": _ap(e[2][0], e[2][2]), "dst": snat}})
            else:
                missing.append("router_snat")
            views.append(_v("client-gateway", "client", "eth0", c["client_src"], c["client_dst"]))
            views.append(_v("client-gateway", "router", "eth0", c["client_src"], c["client_dst"]))
        else:
            missing.append("client")
        # ---- gateway
        ks = [e for e in kong.get(mk, [])] if mk else []
        kg = ks[-1] if ks else None
        G = kg["server"] if kg else None
        ups_seen = None
        if kg:
            kc = cinfo[(G, "kong")]
            row["gateway"] = {"server": G, "listen": kg["local"],
                              "seen_peer": kg["remote"], "nginx_connection": kg["conn"],
                              "connection_requests": kg["conn_req"], "status": kg["status"],
                              "upstream_addr": kg["upstream"], "upstream_status": kg["upstream_status"],
                              "t_log": kg["t"], "request_time": kg["rt"],
                              "upstream_response_time": kg["urt"]}
            st["gateway_server"][G] = st["gateway_server"].get(G, 0) + 1
            rs = row.get("router_snat", {}).get("to")
            if rs:
                views.append(_v("client-gateway", "router", "eth1", rs, c["client_dst"]))
                views.append(_v("client-gateway", G, "eth0", rs, c["client_dst"]))
                for ifc in ("kong_net", kc["host_veth"]):
                    views.append(_v("client-gateway", G, ifc, rs, kg["local"]))
                rip, rport = _hp(rs)
                e = ct[G].orig(rip, rport, VIP, 8000, t)
                if e:
                    nat.append({"conn": "client-gateway", "where": G, "type": "DNAT (published port 8000)",
                                "orig": {"src": rs, "dst": _ap(VIP, 8000)},
                                "reply": {"src": _ap(e[2][0], e[2][2]), "dst": _ap(e[2][1], e[2][3])}})
                else:
                    missing.append("gateway_dnat")
            ups_seen = (kg["upstream"] or "").split(", ")[-1]
        else:
            missing.append("gateway")
        # ---- Nginx
        ns_ = [e for e in ngx.get(mk, [])] if mk else []
        ng = ns_[-1] if ns_ else None
        N = ng["server"] if ng else None
        if ng:
            nc = cinfo[(N, "nginx")]
            row["nginx"] = {"server": N, "listen": ng["local"],
                            "seen_peer": ng["remote"], "nginx_connection": ng["conn"],
                            "connection_requests": ng["conn_req"], "status": ng["status"],
                            "upstream_addr": ng["upstream"], "t_log": ng["t"],
                            "request_time": ng["rt"], "upstream_response_time": ng["urt"]}
            st["nginx_server"][N] = st["nginx_server"].get(N, 0) + 1
        else:
            missing.append("nginx")
        # ---- gateway -> Nginx connection and its NAT
        if kg and ng:
            kc = cinfo[(G, "kong")]
            nc = cinfo[(N, "nginx")]
            pip, pport = _hp(ng["remote"])
            uip, uport = _hp(ups_seen)
            e = ct[G].reply_dst(pip, pport, None, t)
            rl = relay.get((N, ng["remote"])) if G == N else None
            if rl:
                # docker-proxy style relay: two TCP connections, no NAT on either
                rr = [x for x in rl if x["t"] <= (t or 1e18) + 1.0] or rl
                rr = rr[-1]
                ct_t["gateway-proxy"] = ct_t["proxy-nginx"] = rr["t"]
                row["gateway_upstream"] = {"src": rr["peer"], "dst": ups_seen,
                                           "after_nat": {"src": rr["peer"], "dst": rr["listen"]},
                                           "cross_server": False,
                                           "userland_proxy": {"src": rr["upstream_local"],
                                                              "dst": rr["upstream"]}}
                gw_up_conns.add((G, rr["peer"]))
                views.append(_v("gateway-proxy", G, kc["host_veth"], rr["peer"], ups_seen))
                views.append(_v("gateway-proxy", G, "kong_net", rr["peer"], ups_seen))
                views.append(_v("proxy-nginx", N, "mdk", rr["upstream_local"], rr["upstream"]))
                views.append(_v("proxy-nginx", N, nc["host_veth"], rr["upstream_local"], rr["upstream"]))
            elif e and e[1][0] == kc["ip"]:
                ct_t["gateway-nginx"] = e[0]
                kong_local = _ap(e[1][0], e[1][2])
                row["gateway_upstream"] = {"src": kong_local, "dst": ups_seen,
                                           "after_nat": {"src": ng["remote"], "dst": ng["local"]},
                                           "cross_server": G != N}
                gw_up_conns.add((G, kong_local))
                views.append(_v("gateway-nginx", G, kc["host_veth"], kong_local, ups_seen))
                if G == N:
                    # br_netfilter: a packet entering a bridge from a container port is
                    # captured on the bridge device after PREROUTING (DNAT / un-SNAT done)
                    if br_netfilter:
                        views.append(_v("gateway-nginx", G, "kong_net", kong_local, ng["local"],
                                        ups_seen, kong_local))
                        views.append(_v("gateway-nginx", G, "mdk", ng["remote"], ng["local"],
                                        ng["local"], kong_local))
                    else:
                        views.append(_v("gateway-nginx", G, "kong_net", kong_local, ups_seen))
                        views.append(_v("gateway-nginx", G, "mdk", ng["remote"], ng["local"]))
                    nat.append({"conn": "gateway-nginx", "where": G, "type": "DNAT (published port 80) + MASQUERADE (hairpin)",
                                "orig": {"src": kong_local, "dst": ups_seen},
                                "reply": {"src": _ap(e[2][0], e[2][2]), "dst": _ap(e[2][1], e[2][3])}})
                else:
                    st["cross_server"] += 1
                    nat.append({"conn": "gateway-nginx", "where": G, "type": "MASQUERADE (container egress)",
                                "orig": {"src": kong_local, "dst": ups_seen},
                                "reply": {"src": _ap(e[2][0], e[2][2]), "dst": _ap(e[2][1], e[2][3])}})
                    views.append(_v("gateway-nginx", G, "kong_net", kong_local, ups_seen))
                    views.append(_v("gateway-nginx", G, "eth0", ng["remote"], ups_seen))
                    views.append(_v("gateway-nginx", N, "eth0", ng["remote"], ups_seen))
                    views.append(_v("gateway-nginx", N, "mdk", ng["remote"], ng["local"]))
                    e2 = ct[N].orig(pip, pport, uip, uport, t)
                    if e2:
                        nat.append({"conn": "gateway-nginx", "where": N, "type": "DNAT (published port 80)",
                                    "orig": {"src": ng["remote"], "dst": ups_seen},
                                    "reply": {"src": _ap(e2[2][0], e2[2][2]),
                                              "dst": _ap(e2[2][1], e2[2][3])}})
                    else:
                        missing.append("nginx_dnat")
                views.append(_v("gateway-nginx", N, nc["host_veth"], ng["remote"], ng["local"]))
            else:
                missing.append("gateway_upstream")
        # ---- Python
        ps = py.get(mk, []) if mk else []
        pe = ps[-1] if ps else None
        if pe:
            row["python"] = {"server": pe["server"], "replica": pe["replica_name"],
                             "name": pe["replica"], "addr": pe["local"], "seen_peer": pe["peer"],
                             "t_log": pe["t"]}
            row["nginx_upstream"] = {"src": pe["peer"], "dst": pe["local"]}
            key = "%s/%s" % (pe["server"], pe["replica_name"])
            st["replica"][key] = st["replica"].get(key, 0) + 1
            pc = cinfo[(pe["server"], pe["replica_name"])]
            nc = cinfo[(pe["server"], "nginx")]
            # bridged port to port: never on the mdk bridge device itself
            for ifc in (nc["host_veth"], pc["host_veth"]):
                views.append(_v("nginx-python", pe["server"], ifc, pe["peer"], pe["local"]))
            if ng and ng["server"] != pe["server"]:
                missing.append("python_server_mismatch")
        else:
            missing.append("python")
        # one record per TCP connection (shared by the requests it carried)
        row["connections"] = {}
        for kind in ("client-gateway", "gateway-proxy", "proxy-nginx", "gateway-nginx", "nginx-python"):
            vs = [v for v in views if v["conn"] == kind]
            if not vs:
                continue
            first = vs[0]["fwd"]
            if kind == "nginx-python":
                key = (kind, row["id"])            # HTTP/1.0: one connection per request
            else:
                key = (kind, vs[0]["host"], first["src"], first["dst"], ct_t.get(kind))
            cid = conn_ids.get(key)
            if cid is None:
                cid = "%s%d" % ({"client-gateway": "c", "gateway-nginx": "g", "gateway-proxy": "gp",
                                 "proxy-nginx": "pn", "nginx-python": "p"}[kind],
                                sum(1 for k in conn_ids if k[0] == kind) + 1)
                conn_ids[key] = cid
                conns.append({"cid": cid, "kind": kind, "initiator": first["src"],
                              "responder": first["dst"], "ct_new_t": ct_t.get(kind),
                              "nat": [{k: v for k, v in n.items() if k != "conn"}
                                      for n in nat if n.get("conn") == kind],
                              "views": [{k: v for k, v in x.items() if k != "conn"} for x in vs],
                              "requests": []})
                conn_by_id[cid] = conns[-1]
            conn_by_id[cid]["requests"].append(row["id"])
            row["connections"][kind] = cid
        row["complete"] = not missing
        if missing:
            row["missing"] = missing
        if c.get("ok"):
            st["ok"] += 1
            if missing:
                st["unresolved"] += 1
        else:
            st["failed"] += 1
        if not missing:
            st["complete"] += 1
        rows.append(row)
    st["client_connections"] = len(client_conns)
    st["gateway_upstream_connections"] = len(gw_up_conns)
    st["connections"] = len(conns)
    return rows, st, conns
