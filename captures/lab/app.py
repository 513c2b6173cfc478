#!/usr/bin/env python3
"""The seed's Python app: an http.server (BaseHTTP, HTTP/1.0) answering
`welcome from 8888` on port 8888.  One process per replica ("container").

Lab additions (out-of-band ground truth only, never on the wire):
every request is logged as one JSON line with the peer address it saw
(Nginx's upstream connection), its own address, the replica name and the
X-Lab-Trace marker header the client put in the request.
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The production mix's hot endpoints (traffic.py --mix production); any other request
# gets the seed's `welcome from 8888`.  POST bodies are %-formatted with the request
# body's length.
ROUTES = {
    ("GET", "/health"): ("application/json", b'{"status":"ok"}'),
    ("GET", "/api/items"): ("application/json",
                            b'[{"id":41,"name":"widget"},{"id":42,"name":"gadget"},'
                            b'{"id":43,"name":"sprocket"}]'),
    ("GET", "/api/items/42"): ("application/json", b'{"id":42,"name":"gadget","qty":3}'),
    ("GET", "/static/app.js"): ("application/javascript",
                                b'document.addEventListener("DOMContentLoaded",function(){'
                                b'fetch("/api/items").then(function(r){return r.json()})});\n'),
    ("POST", "/api/items"): ("application/json", b'{"created":true,"bytes":%d}'),
    ("POST", "/api/login"): ("application/json", b'{"ok":true,"bytes":%d}'),
}
LOG_LOCK = threading.Lock()
LOG = None
NAME = "py"
PORT = 8888


class Handler(BaseHTTPRequestHandler):
    # BaseHTTPRequestHandler defaults to HTTP/1.0, like the seed's app.
    server_version = "BaseHTTP/0.6"

    def _log(self, status, nbody):
        peer = self.client_address
        local = self.connection.getsockname()
        rec = {
            "t": time.time(),
            "replica": NAME,
            "marker": self.headers.get("X-Lab-Trace", ""),
            "peer": "%s:%d" % (peer[0], peer[1]),
            "local": "%s:%d" % (local[0], local[1]),
            "method": self.command,
            "path": self.path,
            "req_body_len": nbody,
            "status": status,
            "xff": self.headers.get("X-Forwarded-For"),
            "x_real_ip": self.headers.get("X-Real-IP"),
        }
        with LOG_LOCK:
            LOG.write(json.dumps(rec) + "\n")
            LOG.flush()

    def _reply(self, nbody=0):
        # the same request gets the same answer from every replica: nothing in a
        # response names the replica (the seed's app answers `welcome from 8888`)
        ctype, body = ROUTES.get((self.command, self.path), (None, None))
        if body is None:
            ctype = "text/html; charset=utf-8"
            body = ("welcome from %d" % PORT).encode()
            if self.command == "POST":
                body += (" (got %d bytes)" % nbody).encode()
        elif self.command == "POST":
            body = body % nbody
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._log(200, nbody)

    def do_GET(self):
        self._reply(0)

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        n = max(0, min(n, 1 << 20))
        data = self.rfile.read(n) if n else b""
        self._reply(len(data))

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    global LOG, NAME, PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8888)
    ap.add_argument("--name", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--max-seconds", type=float, default=900.0,
                    help="exit by itself after this long (safety bound)")
    a = ap.parse_args()
    NAME, PORT = a.name, a.port
    LOG = open(a.log, "a", buffering=1)
    srv = Server((a.bind, a.port), Handler)
    t = threading.Timer(a.max_seconds, srv.shutdown)
    t.daemon = True
    t.start()
    srv.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
