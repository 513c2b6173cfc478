#!/usr/bin/env python3
"""docker-proxy stand-in (Docker's default userland proxy) for `--userland-proxy`.

Listens on the server's host namespace and relays every accepted TCP
connection over a NEW connection to the container (source = the bridge
address), so hairpin traffic (gateway container -> host:80) becomes two TCP
connections with different ports and sequence numbers, as with docker-proxy.
Bounded: exits by itself after --max-seconds.
"""
import argparse
import json
import socket
import threading
import time


def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


LOG = None
LOCK = threading.Lock()


def handle(c, to):
    try:
        u = socket.create_connection(to, timeout=10)
        u.settimeout(None)
    except OSError:
        c.close()
        return
    if LOG:
        p, l, ul = c.getpeername(), c.getsockname(), u.getsockname()
        with LOCK:
            LOG.write(json.dumps({"t": time.time(), "peer": "%s:%d" % p[:2], "listen": "%s:%d" % l[:2],
                                  "upstream_local": "%s:%d" % ul[:2],
                                  "upstream": "%s:%d" % to}) + "\n")
            LOG.flush()
    t = threading.Thread(target=pipe, args=(u, c), daemon=True)
    t.start()
    pipe(c, u)
    t.join(120)
    c.close()
    u.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--log", help="JSON line per relayed connection (ground truth)")
    a = ap.parse_args()
    global LOG
    if a.log:
        LOG = open(a.log, "a")
    lh, lp = a.listen.rsplit(":", 1)
    th, tp = a.to.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((lh, int(lp)))
    s.listen(1024)
    s.settimeout(0.5)
    end = time.monotonic() + a.max_seconds
    while time.monotonic() < end:
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c, (th, int(tp))), daemon=True).start()


if __name__ == "__main__":
    main()
