#!/usr/bin/env python3
"""Offline test of scrub.py (no root, stdlib): builds an SLL2 pcap whose HTTP
requests carry the marker whole and split across two segments at every
possible offset, scrubs it, and checks lengths, sequence numbers, the filler
and that verify() finds nothing left.  Prints `N passed, M failed`."""
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcaplib  # noqa: E402
import scrub  # noqa: E402

MARK = "0123456789abcdef"
LINE = ("X-Lab-Trace: %s\r\n" % MARK).encode()
REQ = b"GET / HTTP/1.1\r\nHost: 198.18.1.231:8000\r\n" + LINE + b"Accept: */*\r\n\r\n"


def frame(seq, payload, sport):
    tcp = struct.pack(">HHIIHHHH", sport, 8000, seq, 1, (5 << 12) | 0x18, 502, 0, 0)
    tot = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, tot, 1, 0x4000, 64, 6, 0,
                     bytes([198, 18, 1, 1]), bytes([198, 19, 1, 2]))
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 3, 1, 4, 6, b"\x02\xf7\x00\x01\x00\x01\x00\x00")
    return sll2 + ip + tcp + payload


def main():
    frames = []
    seqs = []
    frames.append(frame(1000, REQ, 40000))
    i = REQ.index(LINE)
    for k, cut in enumerate(range(i + 1, i + len(LINE))):
        sport = 40001 + k
        a, b = REQ[:cut], REQ[cut:]
        frames.append(frame(5000, a, sport))
        frames.append(frame(5000 + len(a), b, sport))
        seqs.append(sport)
    d = tempfile.mkdtemp()
    src, dst = os.path.join(d, "in.pcap"), os.path.join(d, "out.pcap")
    with open(src, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 276))
        for n, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000, n, len(fr), len(fr)))
            f.write(fr)
    results = []

    def check(name, ok, detail=""):
        results.append(bool(ok))
        print("%s %s%s" % ("PASS" if ok else "FAIL", name, (" - " + detail) if detail else ""))

    st = scrub.scrub_file(src, dst, [MARK])
    check("scrub ran and verified clean", st.get("verified_clean"), str(st))
    _, pin = pcaplib.read_all(src)
    _, pout = pcaplib.read_all(dst)
    check("same packet count", len(pin) == len(pout))
    check("same frame lengths and sequence numbers",
          all(len(a.data) == len(b.data) and a.seq == b.seq for a, b in zip(pin, pout)))
    # reassemble each flow and compare with the expected filler text
    flows = {}
    for p in pout:
        flows.setdefault(p.sport, b"")
        flows[p.sport] += pcaplib.payload(p)
    exp = REQ.replace(LINE, scrub.FILLER)
    bad = [sp for sp, data in flows.items() if data != exp]
    check("whole and split markers (every offset) replaced by the filler", not bad,
          "%d flows, bad: %s" % (len(flows), bad[:5]))
    check("no marker bytes left anywhere", all(MARK[:6].encode() not in p.data and MARK[-6:].encode()
                                               not in p.data for p in pout))
    check("verify() flags an unscrubbed capture", scrub.verify(src, [MARK]))
    p, f = sum(results), len(results) - sum(results)
    print("%d passed, %d failed" % (p, f))
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
