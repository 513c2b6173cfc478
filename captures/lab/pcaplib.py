"""Minimal pcap reader/writer for the lab (stdlib only).

Reads classic pcap (micro- or nanosecond, either byte order), plain or gzip
(detected by magic bytes).  Decodes LINUX_SLL2 (276), LINUX_SLL (113) and
Ethernet (1) far enough for the lab: interface index, IPv4, TCP, VRRP, ARP.
"""
import gzip
import struct

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276


def open_maybe_gzip(path):
    f = open(path, "rb")
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")
    return f


class Reader:
    def __init__(self, path):
        self.f = open_maybe_gzip(path)
        hdr = self.f.read(24)
        if len(hdr) < 24:
            raise ValueError("%s: short pcap header" % path)
        self.header = hdr
        magic = struct.unpack("<I", hdr[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            self.endian = "<"
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            self.endian = ">"
            magic = struct.unpack(">I", hdr[:4])[0]
        else:
            raise ValueError("%s: not a pcap file (pcapng is not supported here)" % path)
        self.nano = magic == 0xA1B23C4D
        _, _, _, _, self.snaplen, self.linktype = struct.unpack(self.endian + "HHiIII", hdr[4:])
        self.rec = struct.Struct(self.endian + "IIII")

    def __iter__(self):
        rd = self.f.read
        rec = self.rec
        div = 1e9 if self.nano else 1e6
        while True:
            h = rd(16)
            if len(h) < 16:
                return
            sec, frac, incl, orig = rec.unpack(h)
            data = rd(incl)
            if len(data) < incl:
                return
            yield h, sec + frac / div, data, orig

    def close(self):
        self.f.close()


def l2(linktype, data):
    """-> (ifindex or None, pkttype or None, src_mac bytes or None, ethertype, l3 offset)"""
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        proto, _, ifindex, hatype, pkttype, halen = struct.unpack(">HHIHBB", data[:12])
        return ifindex, pkttype, data[12:12 + min(halen, 8)], proto, 20
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        pkttype, hatype, halen = struct.unpack(">HHH", data[:6])
        proto = struct.unpack(">H", data[14:16])[0]
        return None, pkttype, data[6:6 + min(halen, 8)], proto, 16
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        return None, None, data[6:12], struct.unpack(">H", data[12:14])[0], 14
    return None


def ip4(b):
    return "%d.%d.%d.%d" % (b[0], b[1], b[2], b[3])


class Pkt:
    __slots__ = ("ts", "ifindex", "pkttype", "src_mac", "ethertype", "src", "dst", "proto",
                 "sport", "dport", "seq", "ack", "flags", "payload_off", "payload_len", "data",
                 "ip_off", "ip_id", "vrrp")


def decode(linktype, ts, data):
    r = l2(linktype, data)
    if r is None:
        return None
    p = Pkt()
    p.ts = ts
    p.ifindex, p.pkttype, p.src_mac, p.ethertype, off = r
    p.data = data
    p.src = p.dst = p.proto = p.sport = p.dport = p.seq = p.ack = p.flags = None
    p.payload_off = p.payload_len = 0
    p.vrrp = None
    p.ip_off = off
    p.ip_id = None
    if p.ethertype != 0x0800 or len(data) < off + 20:
        return p
    vihl = data[off]
    ihl = (vihl & 0x0F) * 4
    total = struct.unpack(">H", data[off + 2:off + 4])[0]
    p.ip_id = struct.unpack(">H", data[off + 4:off + 6])[0]
    p.proto = data[off + 9]
    p.src = ip4(data[off + 12:off + 16])
    p.dst = ip4(data[off + 16:off + 20])
    l4 = off + ihl
    end = min(len(data), off + total) if total else len(data)
    if p.proto == 6 and len(data) >= l4 + 20:
        p.sport, p.dport, p.seq, p.ack, doff_flags = struct.unpack(">HHIIH", data[l4:l4 + 14])
        doff = (doff_flags >> 12) * 4
        p.flags = doff_flags & 0x1FF
        p.payload_off = l4 + doff
        p.payload_len = max(0, end - p.payload_off)
    elif p.proto == 112 and len(data) >= l4 + 8:
        ver_type, vrid, prio, naddr = data[l4], data[l4 + 1], data[l4 + 2], data[l4 + 3]
        p.vrrp = {"version": ver_type >> 4, "type": ver_type & 15, "vrid": vrid, "prio": prio,
                  "naddr": naddr, "ttl": data[off + 8]}
    return p


def payload(p):
    return p.data[p.payload_off:p.payload_off + p.payload_len]


def read_all(path):
    r = Reader(path)
    out = [decode(r.linktype, ts, data) for _, ts, data, _ in r]
    lt = r.linktype
    r.close()
    return lt, [p for p in out if p is not None]


# --------------------------------------------------------------------------
# pcapng (dumpcap's format): enough to walk blocks and rewrite packet bytes
# --------------------------------------------------------------------------
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 1
PCAPNG_EPB = 6


def is_pcapng(path):
    with open_maybe_gzip(path) as f:
        return f.read(4) == b"\x0a\x0d\x0d\x0a"


def pcapng_blocks(path):
    """Yield (block_type, raw block bytes, info) for every block.
    info for IDB: {"linktype", "name"}; for EPB: {"iface", "ts", "data_off", "caplen"}."""
    f = open_maybe_gzip(path)
    endian = "<"
    try:
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            btype = struct.unpack(endian + "I", head[:4])[0]
            if head[:4] == b"\x0a\x0d\x0d\x0a":
                bom = f.read(4)
                endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
                blen = struct.unpack(endian + "I", head[4:8])[0]
                rest = bom + f.read(blen - 12)
                btype = PCAPNG_SHB
            else:
                blen = struct.unpack(endian + "I", head[4:8])[0]
                rest = f.read(blen - 8)
            raw = head + rest
            if len(raw) < blen or blen < 12:
                return
            info = {"endian": endian}
            if btype == PCAPNG_IDB:
                info["linktype"] = struct.unpack(endian + "H", raw[8:10])[0]
                info["name"] = None
                off = 16
                while off + 4 <= blen - 4:
                    code, olen = struct.unpack(endian + "HH", raw[off:off + 4])
                    if code == 0:
                        break
                    if code == 2:
                        info["name"] = raw[off + 4:off + 4 + olen].decode("utf-8", "replace")
                    if code == 9 and olen >= 1:
                        v = raw[off + 4]
                        info["tsdiv"] = float(2 ** (v & 0x7F)) if v & 0x80 else float(10 ** v)
                    off += 4 + ((olen + 3) & ~3)
            elif btype == PCAPNG_EPB:
                iface, th, tl, caplen, origlen = struct.unpack(endian + "IIIII", raw[8:28])
                info.update({"iface": iface, "ts_raw": (th << 32) | tl,
                             "data_off": 28, "caplen": caplen})
            yield btype, raw, info
    finally:
        f.close()


def read_pcapng(path):
    """-> (list of interface dicts, list of Pkt) — Pkt.ifindex is the IDB index."""
    ifaces, out = [], []
    for btype, raw, info in pcapng_blocks(path):
        if btype == PCAPNG_IDB:
            ifaces.append(info)
        elif btype == PCAPNG_EPB and info["iface"] < len(ifaces):
            data = raw[28:28 + info["caplen"]]
            idb = ifaces[info["iface"]]
            p = decode(idb["linktype"], info["ts_raw"] / idb.get("tsdiv", 1e6), data)
            if p is not None:
                p.ifindex = info["iface"]
                out.append(p)
    return ifaces, out
