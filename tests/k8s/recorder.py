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

usage: recorder.py KUBECONFIG        prints "READY <port>" once listening
"""
import base64
import http.client
import json
import re
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

    def forward(self):
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
            self.relay(res)
        finally:
            conn.close()

    def relay(self, res):
        """Relay a streaming body chunk by chunk as it arrives, until it ends or is dropped."""
        with LOCK:
            STREAMS.add(self.connection)
        try:
            while True:
                data = res.read1(65536)
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            with LOCK:
                STREAMS.discard(self.connection)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
srv.serve_forever()
