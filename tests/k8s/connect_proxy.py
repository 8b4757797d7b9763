#!/usr/bin/python3
"""A CONNECT-only HTTP proxy on loopback for the WebSocket proxy specs (exec, attach and
port-forward through HTTPS_PROXY or a kubeconfig's proxy-url).

  CONNECT host:port   tunnels to 127.0.0.1:port whatever the host (so a server URL with a
                      name that does not resolve, such as kubernetes.default.svc, reaches the
                      test bed's API server only through this proxy); with --auth USER:PASS a
                      tunnel needs "Proxy-Authorization: Basic ..." (else 407)
  GET /_log           the CONNECTs so far: [{"target": "host:port", "auth": "user:pass"|null,
                      "status": 200|407}]
Nothing else is served. Each tunnel copies bytes both ways until either side closes.

usage: connect_proxy.py [--auth USER:PASS]   prints "READY <port>" once listening
"""
import base64
import json
import select
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
LOG = []
AUTH = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--auth" else None


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        with LOCK:
            body = json.dumps(LOG).encode() if self.path == "/_log" else b"{}"
        self.send_response(200 if self.path == "/_log" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self):
        given = self.headers.get("Proxy-Authorization") or ""
        auth = None
        if given.lower().startswith("basic "):
            auth = base64.b64decode(given[6:].strip()).decode("utf-8", "replace")
        ok = AUTH is None or auth == AUTH
        with LOCK:
            LOG.append({"target": self.path, "auth": auth, "status": 200 if ok else 407})
        if not ok:
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        port = int(self.path.rsplit(":", 1)[1])
        try:
            up = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as e:
            self.send_error(502, str(e))
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        self.tunnel(self.connection, up)
        self.close_connection = True

    @staticmethod
    def tunnel(a, b):
        b.settimeout(None)
        a.settimeout(None)
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 600)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            pass
        finally:
            b.close()


srv = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
srv.serve_forever()
