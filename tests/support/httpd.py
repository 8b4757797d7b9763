#!/usr/bin/env python3
"""A loopback test server for the transport specs (standard library only).

Usage: httpd.py [--unix PATH] [--cert CERT --key KEY [--client-ca CA]]
Prints "READY <port>" (or "READY unix") on stdout once listening on 127.0.0.1.
"""
import argparse
import hashlib
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"flaky": {}, "active": 0, "max_active": 0, "peers": set()}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", 0) or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code, body, ctype="application/json", extra=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        body = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else b""
        p = u.path
        with LOCK:
            STATE["peers"].add(self.client_address)
        if p == "/peers":
            # Distinct client connections seen since the last call (keep-alive checks).
            with LOCK:
                n = len(STATE["peers"])
                STATE["peers"] = set()
            return self._send(200, json.dumps({"connections": n}))
        if p == "/echo":
            cert = None
            if isinstance(self.connection, ssl.SSLSocket):
                peer = self.connection.getpeercert()
                if peer:
                    cert = dict(x[0] for x in peer.get("subject", ()))
            return self._send(200, json.dumps({
                "method": self.command, "path": p, "query": q,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
                "body": body.decode("utf-8", "replace") if len(body) < 4096 else None,
                "client_cert": cert}))
        if p == "/upgrade":
            # A hijacked connection, as Docker's attach does: 101, then every byte received
            # comes back upper-cased until the client ends its direction, then "END" and close.
            if self.headers.get("Upgrade", "").lower() != q.get("proto", "tcp"):
                return self._send(400, "upgrade expected")
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", q.get("proto", "tcp"))
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.wfile.write(data.upper())
                self.wfile.flush()
            self.wfile.write(b"END")
            self.wfile.flush()
            self.close_connection = True
            return
        if p == "/bytes":
            n = int(q.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"x" * 65536
            while n > 0:
                k = min(n, len(block))
                self.wfile.write(block[:k])
                n -= k
            return
        if p == "/slow":
            time.sleep(float(q.get("delay", "2")))
            return self._send(200, "late")
        if p == "/flaky":
            key, fail = q.get("key", "k"), int(q.get("fail", "2"))
            with LOCK:
                STATE["flaky"][key] = STATE["flaky"].get(key, 0) + 1
                n = STATE["flaky"][key]
            if n <= fail:
                return self._send(503, "busy", extra={"Retry-After": "0"})
            return self._send(200, json.dumps({"attempts": n}))
        if p == "/attempts":
            return self._send(200, json.dumps({"attempts": STATE["flaky"].get(q.get("key", "k"), 0)}))
        if p == "/count":
            with LOCK:
                STATE["active"] += 1
                STATE["max_active"] = max(STATE["max_active"], STATE["active"])
            time.sleep(float(q.get("delay", "0.3")))
            with LOCK:
                STATE["active"] -= 1
            return self._send(200, json.dumps({"id": q.get("id")}))
        if p == "/maxseen":
            with LOCK:
                m = STATE["max_active"]
                STATE["max_active"] = 0
            return self._send(200, json.dumps({"max": m}))
        if p == "/ndjson":
            n = int(q.get("n", "3"))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                line = (json.dumps({"i": i + 1}) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                time.sleep(float(q.get("gap", "0")))
            self.wfile.write(b"0\r\n\r\n")
            return
        if p == "/reset":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if p == "/redirect":
            self.send_response(int(q.get("code", "302")))
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if p == "/status":
            return self._send(int(q.get("code", "200")), json.dumps({"message": "status " + q.get("code", "200")}))
        if p == "/hugeheaders":
            self.send_response(200)
            for i in range(400):
                self.send_header("X-Filler-%d" % i, "y" * 1000)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return self._send(404, json.dumps({"message": "no route " + p}))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _route


ThreadingHTTPServer.request_queue_size = 128


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128

    def get_request(self):
        req, _ = super().get_request()
        return req, ("unix", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unix")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca")
    a = ap.parse_args()
    if a.unix:
        if os.path.exists(a.unix):
            os.unlink(a.unix)
        srv = UnixServer(a.unix, Handler)
        ready = "READY unix"
    else:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        if a.cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(a.cert, a.key)
            if a.client_ca:
                ctx.load_verify_locations(a.client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        ready = "READY %d" % srv.server_address[1]
    print(ready, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
