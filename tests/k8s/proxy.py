#!/usr/bin/python3
"""A forward HTTP proxy for the kubeconfig proxy-url test: absolute-URI requests to loopback
only, forwarded with http.client; GET /_proxied answers how many requests went through.
Prints "READY <port>"."""
import http.client
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

COUNT = [0]
LOCK = threading.Lock()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def forward(self):
        if self.path == "/_proxied":
            body = str(COUNT[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        u = urlsplit(self.path)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            self.send_error(403, "loopback only")
            return
        with LOCK:
            COUNT[0] += 1
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request(self.command, u.path + ("?" + u.query if u.query else ""), body=data, headers=headers)
        res = conn.getresponse()
        body = res.read()
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward


srv = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
sys.stdout.flush()
srv.serve_forever()
