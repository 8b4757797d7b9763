#!/usr/bin/python3
"""A recording, fault-injecting proxy in front of the real kube-apiserver of the test bed.

The client under test speaks plain HTTP to 127.0.0.1:<port>; every request is forwarded over
TLS to the real API server with the credentials of the kubeconfig given (the admin's), and the
response is relayed as it comes (watch and log streams included). It adds only what a real
server cannot be asked to do on demand:

  GET  /_test/requests       every request so far: [{method, path, query, content_type, body}]
  POST /_test/drop-watches   cut every open streaming response (the client sees a dropped watch)
  POST /_test/inject         {"status": 503, "times": 2, "retry_after": 1, "path": "regex",
                              "method": "GET"}: answer the next matching requests with that
                             status (a Status body, Retry-After when given) instead of forwarding
  POST /_test/cut-after-bookmark  {"times": 1}: cut the next watch stream(s) right after relaying
                             a BOOKMARK event (the server's own, sent shortly before the watch's
                             timeoutSeconds and about once a minute)
  GET  /_test/bookmarks      the BOOKMARK events relayed so far: [{path, query, resourceVersion}]
  POST /_test/strip-protocols {"protocols": ["v5.channel.k8s.io"]}: drop these from the
                             Sec-WebSocket-Protocol of WebSocket upgrades (exec, attach,
                             port-forward), as a server that speaks only the others would see it

A WebSocket upgrade is forwarded as it came (less the stripped protocols) over its own TLS
connection, and the bytes are then relayed both ways until either side closes; its request
record has "protocols" (offered) and "forwarded_protocols".

usage: recorder.py KUBECONFIG        prints "READY <port>" once listening
"""
import base64
import http.client
import json
import re
import select
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import yaml

LOCK = threading.Lock()
REQUESTS = []
STREAMS = set()
FAULTS = []
BOOKMARKS = []
CUT_AFTER_BOOKMARK = [0]
STRIP = set()


def load_upstream(path):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    tls = ssl.create_default_context()
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    tls.load_verify_locations(cadata=ca)
    # ssl wants files for the client certificate.
    tmp = tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False)
    tmp.write(base64.b64decode(user["client-certificate-data"]))
    tmp.write(b"\n")
    tmp.write(base64.b64decode(user["client-key-data"]))
    tmp.close()
    tls.load_cert_chain(tmp.name)
    u = urlsplit(cluster["server"])
    return u.hostname, u.port, tls


HOST, PORT, TLS = load_upstream(sys.argv[1])
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "host",
       "content-length", "authorization"}


def take_fault(method, path):
    with LOCK:
        for f in FAULTS:
            if f["times"] > 0 and re.search(f.get("path", ""), path) and f.get("method", method) == method:
                f["times"] -= 1
                return dict(f)
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def control(self, body):
        what = self.path[len("/_test/"):]
        if what == "requests":
            with LOCK:
                return self.reply(200, REQUESTS)
        if what == "bookmarks":
            with LOCK:
                return self.reply(200, BOOKMARKS)
        if what == "cut-after-bookmark":
            with LOCK:
                CUT_AFTER_BOOKMARK[0] += json.loads(body or b"{}").get("times", 1)
            return self.reply(200, {"armed": CUT_AFTER_BOOKMARK[0]})
        if what == "strip-protocols":
            with LOCK:
                STRIP.clear()
                STRIP.update(json.loads(body or b"{}").get("protocols", []))
                return self.reply(200, sorted(STRIP))
        if what == "drop-watches":
            with LOCK:
                n = len(STREAMS)
                for s in list(STREAMS):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            return self.reply(200, {"dropped": n})
        if what == "inject":
            spec = json.loads(body or b"{}")
            spec.setdefault("times", 1)
            with LOCK:
                FAULTS.append(spec)
            return self.reply(200, spec)
        return self.reply(404, {"error": "no control " + what})

    def upgrade(self):
        """Forward a WebSocket upgrade (less the stripped subprotocols) and relay its bytes."""
        u = urlsplit(self.path)
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        with LOCK:
            kept = [p for p in offered if p not in STRIP]
            REQUESTS.append({"method": self.command, "path": u.path, "query": u.query,
                             "user_agent": self.headers.get("User-Agent"), "upgrade": True,
                             "protocols": offered, "forwarded_protocols": kept})
        up = TLS.wrap_socket(socket.create_connection((HOST, PORT), timeout=30), server_hostname=HOST)
        lines = ["%s %s HTTP/1.1" % (self.command, self.path), "Host: %s:%d" % (HOST, PORT)]
        for k, v in self.headers.items():
            if k.lower() in ("host", "authorization", "sec-websocket-protocol"):
                continue
            lines.append("%s: %s" % (k, v))
        if kept:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(kept))
        up.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.close_connection = True
        down = self.connection
        # A client sends frames only after the 101, so the handler's reader holds nothing more.
        up.settimeout(None)
        down.settimeout(None)
        try:
            while True:
                # TLS may hold decrypted bytes that select() cannot see.
                ready = [up] if up.pending() else select.select([down, up], [], [], 600)[0]
                if not ready:
                    return
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (up if src is down else down).sendall(data)
        except OSError:
            pass
        finally:
            up.close()

    def forward(self):
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            return self.upgrade()
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/_test/"):
            return self.control(body)
        u = urlsplit(self.path)
        with LOCK:
            REQUESTS.append({"method": self.command, "path": u.path, "query": u.query,
                             "user_agent": self.headers.get("User-Agent"),
                             "content_type": self.headers.get("Content-Type"),
                             "body": body.decode("utf-8", "replace") if body else None})
        fault = take_fault(self.command, u.path)
        if fault:
            headers = [("Retry-After", str(fault["retry_after"]))] if "retry_after" in fault else []
            return self.reply(fault["status"], {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                "status": "Failure", "message": fault.get("message", "injected"),
                                                "reason": fault.get("reason", "ServiceUnavailable"),
                                                "code": fault["status"]}, headers)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn = http.client.HTTPSConnection(HOST, PORT, context=TLS, timeout=600)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            res = conn.getresponse()
            streaming = res.getheader("Content-Length") is None
            self.send_response(res.status)
            for k, v in res.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            if not streaming:
                data = res.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.relay(res, u if "watch=true" in u.query else None)
        finally:
            conn.close()

    def relay(self, res, watch=None):
        """Relay a streaming body chunk by chunk as it arrives, until it ends or is dropped. A
        watch's events are read line by line on the way, to note BOOKMARKs (and cut after one
        when armed)."""
        with LOCK:
            STREAMS.add(self.connection)
        pending = b""
        try:
            while True:
                data = res.read1(65536)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if watch is None:
                    continue
                pending += data
                *lines, pending = pending.split(b"\n")
                if any(self.bookmark(watch, line) for line in lines):
                    with LOCK:
                        cut = CUT_AFTER_BOOKMARK[0] > 0
                        if cut:
                            CUT_AFTER_BOOKMARK[0] -= 1
                    if cut:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            with LOCK:
                STREAMS.discard(self.connection)

    @staticmethod
    def bookmark(watch, line):
        """Note a BOOKMARK event line; True when it was one."""
        try:
            ev = json.loads(line)
        except ValueError:
            return False
        if not isinstance(ev, dict) or ev.get("type") != "BOOKMARK":
            return False
        rv = ((ev.get("object") or {}).get("metadata") or {}).get("resourceVersion")
        with LOCK:
            BOOKMARKS.append({"path": watch.path, "query": watch.query, "resourceVersion": rv})
        return True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
srv.serve_forever()
