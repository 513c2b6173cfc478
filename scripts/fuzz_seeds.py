#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora from the shipped captures and ../shared/pcaps.

Usage: fuzz_seeds.py CORPUS_DIR [PCAP_DIR ...]

Writes CORPUS_DIR/<target>/<name> for the five targets of fuzz/, each input in the
layout its target reads (see the doc comment of fuzz/fuzz_targets/<target>.rs):

- capture_file: a mode byte and the capture (at most 64 KiB of it; gzip files as is).
- decode_frame: a link-type selector byte and one frame of a capture.
- tcp_reassembly: the segment records of a capture's first two TCP connections.
- http_parse: the stream operations of the same connections' payloads.
- correlate: records of synthetic exchanges (a seeded generator).

Standard library only, so the script runs wherever the fuzzers do.
"""

import gzip
import hashlib
import os
import random
import struct
import sys

MAX_CAPTURE = 64 << 10
MAX_FILE = 100 << 10
# Index in decode_frame's LINKS table of each link type it decodes.
LINKS = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105, 239]


def put(corpus, target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frames(raw):
    """(linktype, frame bytes) of a pcap or pcapng capture; stops at the first
    inconsistency (broken captures are seeds for capture_file only)."""
    out = []
    if len(raw) < 24:
        return out
    magic = raw[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if magic[0] in (0xD4, 0x4D) else ">"
        link = struct.unpack(e + "I", raw[20:24])[0] & 0x0FFFFFFF
        off = 24
        while off + 16 <= len(raw):
            caplen = struct.unpack(e + "I", raw[off + 8:off + 12])[0]
            if off + 16 + caplen > len(raw) or caplen > 262144:
                break
            out.append((link, raw[off + 16:off + 16 + caplen]))
            off += 16 + caplen
        return out
    if magic == b"\x0a\x0d\x0d\x0a":
        e = "<" if raw[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        links, off = [], 0
        while off + 12 <= len(raw):
            btype, blen = struct.unpack(e + "II", raw[off:off + 8])
            if blen < 12 or off + blen > len(raw):
                break
            body = raw[off + 8:off + blen - 4]
            if btype == 0x0A0D0D0A:
                links = []
            elif btype == 1 and len(body) >= 2:
                links.append(struct.unpack(e + "H", body[:2])[0])
            elif btype == 6 and len(body) >= 20:
                iface, _, _, caplen = struct.unpack(e + "IIII", body[:16])
                if iface < len(links) and 20 + caplen <= len(body):
                    out.append((links[iface], body[20:20 + caplen]))
            elif btype == 3 and len(body) >= 4 and links:
                out.append((links[0], body[4:]))
            off += blen
    return out


def ip_of(link, f):
    """The IP packet inside a frame, for the link types the seeds need."""
    if link == 1 and len(f) >= 14:
        et, off = f[12:14], 14
        while et == b"\x81\x00" and len(f) >= off + 4:
            et, off = f[off + 2:off + 4], off + 4
        return f[off:] if et in (b"\x08\x00", b"\x86\xdd") else None
    if link in (12, 14, 101, 228, 229):
        return f
    if link == 113 and len(f) >= 16:
        return f[16:]
    if link == 276 and len(f) >= 20:
        return f[20:]
    if link in (0, 108) and len(f) >= 4:
        return f[4:]
    return None


def tcp_of(ip):
    """(src, dst, sport, dport, seq, ack, flags, payload) of an unfragmented IPv4 or
    IPv6 TCP packet."""
    if len(ip) >= 20 and ip[0] >> 4 == 4 and ip[9] == 6:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        seg, src, dst = ip[ihl:total], ip[12:16], ip[16:20]
    elif len(ip) >= 40 and ip[0] >> 4 == 6 and ip[6] == 6:
        plen = struct.unpack(">H", ip[4:6])[0]
        seg, src, dst = ip[40:40 + plen], ip[8:24], ip[24:40]
    else:
        return None
    if len(seg) < 20:
        return None
    sport, dport, seq, ack = struct.unpack(">HHII", seg[:12])
    doff = (seg[12] >> 4) * 4
    return src, dst, sport, dport, seq, ack, seg[13], seg[doff:]


def streams(pairs):
    """The segments of the first two TCP connections: (conn, to_server, seq, ack,
    flags, payload) in capture order, with each direction's first sequence number."""
    conns, segs, base = [], [], {}
    for link, f in pairs:
        ip = ip_of(link, f)
        t = ip and tcp_of(ip)
        if not t:
            continue
        src, dst, sport, dport, seq, ack, flags, payload = t
        key = tuple(sorted([(src, sport), (dst, dport)]))
        if key not in conns:
            if len(conns) == 2:
                continue
            conns.append(key)
        c = conns.index(key)
        # The server is the side with the lower port (80, 8080 ... against ephemeral).
        to_server = dport < sport
        base.setdefault((c, to_server), seq)
        segs.append((c, to_server, seq, ack, flags, payload))
    return segs, base


def tcp_records(segs, base):
    out = bytearray([0])
    for c, to_server, seq, ack, flags, payload in segs:
        off = (seq - base[(c, to_server)]) & 0xFFFFFFFF
        aoff = (ack - base.get((c, not to_server), ack)) & 0xFFFFFFFF
        chunks = [payload[i:i + 255] for i in range(0, len(payload), 255)] or [b""]
        for chunk in chunks:
            if off >= 4096 or len(out) > 32768:
                return bytes(out)
            who = (0 if to_server else 1) | c << 1 | (off & 15) << 4
            out += bytes([who, flags, off >> 4, min(aoff >> 4, 255), len(chunk), 0, 1, 0])
            out += chunk
            off += len(chunk)
    return bytes(out)


def http_ops(segs):
    out = bytearray()
    seen = set()
    for c, to_server, seq, _ack, flags, payload in segs:
        if (c, to_server, seq) in seen or not payload:
            continue
        seen.add((c, to_server, seq))
        op = c | (0 if to_server else 2)
        for i in range(0, len(payload), 255):
            chunk = payload[i:i + 255]
            out += bytes([op | 0x40, len(chunk)]) + chunk
            if len(out) > 32768:
                return bytes(out)
        if flags & 1:
            out += bytes([op | 13 << 2])
    return bytes(out)


def main():
    corpus = sys.argv[1]
    dirs = sys.argv[2:]
    files = []
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in sorted(names):
                if n.endswith((".pcap", ".pcapng", ".pcap.gz", ".bin")):
                    files.append(os.path.join(root, n))
    counts = {}
    for path in files:
        if os.path.getsize(path) > MAX_FILE:
            continue
        with open(path, "rb") as f:
            raw = f.read()
        put(corpus, "capture_file", b"\x00" + raw[:MAX_CAPTURE])
        if path.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except OSError:
                continue
            # Unwrapped, and gzipped again by the target (mode bit 0).
            put(corpus, "capture_file", b"\x01" + raw[:MAX_CAPTURE])
        pairs = frames(raw)
        for link, f in pairs[:40]:
            if link in LINKS:
                put(corpus, "decode_frame", bytes([LINKS.index(link)]) + f)
        segs, base = streams(pairs)
        if segs:
            put(corpus, "tcp_reassembly", tcp_records(segs, base))
            ops = http_ops(segs)
            if ops:
                put(corpus, "http_parse", ops)
    rng = random.Random(17)
    for _ in range(32):
        n = rng.randrange(1, 40)
        put(corpus, "correlate", bytes([rng.randrange(8)]) + rng.randbytes(20 * n))
    for t in ("capture_file", "decode_frame", "tcp_reassembly", "http_parse", "correlate"):
        d = os.path.join(corpus, t)
        counts[t] = len(os.listdir(d)) if os.path.isdir(d) else 0
    print("seed corpus:", ", ".join(f"{t} {n}" for t, n in counts.items()))


if __name__ == "__main__":
    main()
