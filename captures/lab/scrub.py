#!/usr/bin/env python3
"""Blank the ground-truth marker out of lab captures.

Every `X-Lab-Trace: <16 hex>\\r\\n` header line inside a TCP payload is
replaced by `X-Filler---: xxxxxxxxxxxxxxxx\\r\\n` (same length), so packet
lengths, sequence numbers and everything else stay as captured.  TCP
checksums are NOT recomputed (they become wrong for those packets; the
captures already hold offloaded, unchecksummed packets anyway).

A marker line split across two segments is handled: a payload that ends
with a prefix of the marker line, or starts with a suffix of it, has that
fragment blanked too.  Afterwards the output is re-read and the run fails if
any marker fragment is left (header name anywhere in any frame, any of the
known marker values, or a hex fragment of one at a segment edge).

    scrub.py IN.pcap OUT.pcap [--markers truth.jsonl]
"""
import argparse
import json
import re

import pcaplib

NAME = b"X-Lab-Trace: "
FILLER = b"X-Filler---: " + b"x" * 16 + b"\r\n"
LINE_LEN = len(NAME) + 16 + 2
assert len(FILLER) == LINE_LEN
FULL_RE = re.compile(rb"X-Lab-Trace: [0-9a-fA-F]{16}\r\n", re.I)
HEX = set(b"0123456789abcdefABCDEF")


def _match_at(frag, start):
    """Does frag match the marker-line template starting at template index start?"""
    for k, c in enumerate(frag):
        i = start + k
        if i < len(NAME):
            if chr(c).lower() != chr(NAME[i]).lower():
                return False
        elif i < len(NAME) + 16:
            if c not in HEX:
                return False
        elif i == LINE_LEN - 2:
            if c != 13:
                return False
        elif i == LINE_LEN - 1:
            if c != 10:
                return False
        else:
            return False
    return True


def scrub_payload(pl, head_k=0):
    """-> (new payload bytearray, number of replacements, tail_k)

    head_k > 0: the previous segment of this flow ended with the first head_k
    bytes of a marker line, so this payload should start with the rest.
    tail_k > 0: this payload ends with the first tail_k bytes of a marker line."""
    b = bytearray(pl)
    n = 0
    for m in FULL_RE.finditer(pl):
        b[m.start():m.end()] = FILLER
        n += 1
    # head: the rest of a marker line whose start was in the previous segment
    if head_k:
        rest = LINE_LEN - head_k
        frag = pl[:rest]
        if _match_at(frag, head_k):
            b[:len(frag)] = FILLER[head_k:head_k + len(frag)]
            n += 1
    else:
        # no flow context (e.g. the first segment was not captured here): a
        # payload starting with the hex tail of a marker line and CRLF
        first = pl.find(b"\n")
        if 0 <= first < LINE_LEN - 1:
            head = pl[:first + 1]
            start = LINE_LEN - len(head)
            if _match_at(head, start) and len(head) >= 7:
                b[:first + 1] = FILLER[start:]
                n += 1
    # tail: after the last CRLF, a proper prefix of the marker line
    last = pl.rfind(b"\r\n")
    tail_start = last + 2 if last >= 0 else 0
    tail = pl[tail_start:]
    tail_k = 0
    if 0 < len(tail) < LINE_LEN and _match_at(tail, 0) and len(tail) >= 2:
        b[tail_start:] = FILLER[:len(tail)]
        n += 1
        tail_k = len(tail)
    return b, n, tail_k


class _Scrubber:
    """Per-capture state: flows whose last segment ended inside a marker line."""

    def __init__(self):
        self.pending = {}   # flow -> (marker-line bytes at the end of its last segment, next seq)
        self.replaced = 0

    def frame(self, linktype, ts, data, iface_key=None):
        p = pcaplib.decode(linktype, ts, data)
        if p is None or p.payload_len <= 0:
            return data
        pl = bytes(data[p.payload_off:p.payload_off + p.payload_len])
        key = (p.ifindex if iface_key is None else iface_key, p.src, p.sport, p.dst, p.dport)
        head_k = 0
        pend = self.pending.pop(key, None)
        if pend and pend[1] == p.seq:
            head_k = pend[0]
        nb, n, tail_k = scrub_payload(pl, head_k)
        if tail_k:
            self.pending[key] = (tail_k, (p.seq + p.payload_len) & 0xFFFFFFFF)
        if not n:
            return data
        self.replaced += n
        return data[:p.payload_off] + bytes(nb) + data[p.payload_off + p.payload_len:]


def scrub_file(src, dst, markers=()):
    """Scrub one capture (pcap, or pcapng from dumpcap; plain or gzip) into dst
    (uncompressed, same format), then verify dst.  -> stats dict."""
    if pcaplib.is_pcapng(src):
        return scrub_pcapng(src, dst, markers)
    r = pcaplib.Reader(src)
    lt = r.linktype
    stats = {"packets": 0, "replaced": 0, "bytes": 0, "linktype": lt}
    sc = _Scrubber()
    with open(dst, "wb") as out:
        out.write(r.header)
        for hdr, ts, data, orig in r:
            stats["packets"] += 1
            stats["bytes"] += len(data)
            data = sc.frame(lt, ts, data)
            out.write(hdr)
            out.write(data)
    r.close()
    stats["replaced"] = sc.replaced
    left = verify(dst, markers)
    if left:
        raise RuntimeError("scrub %s: marker fragments remain: %s" % (dst, left[:5]))
    stats["verified_clean"] = True
    return stats


def scrub_pcapng(src, dst, markers=()):
    stats = {"packets": 0, "replaced": 0, "bytes": 0, "format": "pcapng", "interfaces": []}
    sc = _Scrubber()
    lts = []
    with open(dst, "wb") as out:
        for btype, raw, info in pcaplib.pcapng_blocks(src):
            if btype == pcaplib.PCAPNG_SHB:
                lts = []
            elif btype == pcaplib.PCAPNG_IDB:
                lts.append(info["linktype"])
                stats["interfaces"].append(info.get("name"))
            elif btype == pcaplib.PCAPNG_EPB and info["iface"] < len(lts):
                stats["packets"] += 1
                c = info["caplen"]
                data = raw[28:28 + c]
                stats["bytes"] += c
                nd = sc.frame(lts[info["iface"]], 0, data, iface_key=info["iface"])
                if nd is not data:
                    raw = raw[:28] + nd + raw[28 + c:]
            out.write(raw)
    stats["replaced"] = sc.replaced
    left = verify(dst, markers)
    if left:
        raise RuntimeError("scrub %s: marker fragments remain: %s" % (dst, left[:5]))
    stats["verified_clean"] = True
    return stats


def _frames(path):
    """(linktype, data) of every packet in a pcap or pcapng file."""
    if pcaplib.is_pcapng(path):
        lts = []
        for btype, raw, info in pcaplib.pcapng_blocks(path):
            if btype == pcaplib.PCAPNG_SHB:
                lts = []
            elif btype == pcaplib.PCAPNG_IDB:
                lts.append(info["linktype"])
            elif btype == pcaplib.PCAPNG_EPB and info["iface"] < len(lts):
                yield lts[info["iface"]], raw[28:28 + info["caplen"]]
        return
    r = pcaplib.Reader(path)
    try:
        for hdr, ts, data, orig in r:
            yield r.linktype, data
    finally:
        r.close()


HEX16 = re.compile(rb"[0-9a-f]{16}")
EDGE_HEAD = re.compile(rb"^[0-9a-f]{4,16}\r?\n?")
EDGE_TAIL = re.compile(rb"[0-9a-f]{4,16}$")


def verify(path, markers):
    """Return a list of problems (empty when clean)."""
    mset = set(m.encode() if isinstance(m, str) else m for m in markers)
    problems = []
    for i, (lt, data) in enumerate(_frames(path)):
        low = data.lower()
        if b"lab-trace" in low:
            problems.append((i, "header name"))
            continue
        for m in HEX16.finditer(data):
            if m.group(0) in mset:
                problems.append((i, "marker value"))
        p = pcaplib.decode(lt, 0, data)
        if p is None or not p.payload_len or not mset:
            continue
        pl = data[p.payload_off:p.payload_off + p.payload_len]
        m = EDGE_HEAD.match(pl)
        if m:
            frag = m.group(0).rstrip(b"\r\n")
            if len(frag) >= 6 and any(x.endswith(frag) for x in mset):
                problems.append((i, "marker suffix at segment start"))
        m = EDGE_TAIL.search(pl)
        if m:
            frag = m.group(0)
            if len(frag) >= 6 and any(x.startswith(frag) for x in mset):
                problems.append((i, "marker prefix at segment end"))
        # a tail "X-Lab..." is covered by the header-name check; "X-L"/"X-La"
        # fragments are too short to identify and carry no marker value.
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--markers", help="truth.jsonl whose marker fields to verify against")
    a = ap.parse_args()
    markers = []
    if a.markers:
        with open(a.markers) as f:
            markers = [json.loads(l).get("marker") for l in f if l.strip()]
        markers = [m for m in markers if m]
    print(json.dumps(scrub_file(a.src, a.dst, markers)))


if __name__ == "__main__":
    main()
