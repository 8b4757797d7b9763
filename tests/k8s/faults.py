#!/usr/bin/python3
"""A reverse proxy in front of an API server (tests/k8s/apiserver.py) that injects faults, for
the retry and log-streaming specs. Usage: faults.py UPSTREAM_URL. Prints "READY <port>".

Controls (never forwarded):
  POST /_faults/inject {"method": "GET", "path": REGEX, "status": 429, "retry_after": 1,
                        "count": 2, "reason": "TooManyRequests"}
       the next `count` requests matching method (any when absent) and path (re.search on
       the path with its query) get that status, a Status body and Retry-After when given;
  POST /_faults/stream {"path": REGEX, "lines": [...], "ack_timeout": 15}
       the next matching request gets the lines as a chunked stream, one line at a time; after
       each line the proxy waits for POST /_faults/ack before it sends the next one;
  POST /_faults/ack     acknowledge the line last sent;
  GET  /_faults/log     every request seen: [{method, path, status, injected}], and the
                        stream report: for each line, whether its ack came before the next
                        line was sent (false: the client only saw it later).
Anything else is forwarded to the upstream, streamed back chunk by chunk (watches work).
It is also a forward proxy for the proxy specs: an absolute-URI request for a host under
.myrmex.test goes to the upstream (logged with "proxied": true); CONNECT is logged and refused.
"""
import http.client
import json
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

UP = urlsplit(sys.argv[1])
LOCK = threading.Lock()
RULES = []
STREAMS = []
LOG = []
REPORT = []
ACK = threading.Condition(LOCK)
ACKS = [0]


def status_body(code, reason, message):
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body, ctype="application/json", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def control(self, data):
        path = self.path
        if path == "/_faults/inject":
            rule = json.loads(data)
            with LOCK:
                RULES.append(rule)
            return self.reply(200, b"{}")
        if path == "/_faults/stream":
            with LOCK:
                STREAMS.append(json.loads(data))
            return self.reply(200, b"{}")
        if path == "/_faults/ack":
            with ACK:
                ACKS[0] += 1
                ACK.notify_all()
            return self.reply(200, b"{}")
        if path == "/_faults/log":
            with LOCK:
                body = json.dumps({"requests": LOG, "stream": REPORT}).encode()
            return self.reply(200, body)
        return self.reply(404, b"{}")

    def take(self, table, match):
        with LOCK:
            for i, r in enumerate(table):
                if match(r):
                    if table is RULES:
                        r["count"] = r.get("count", 1) - 1
                        if r["count"] <= 0:
                            table.pop(i)
                    else:
                        table.pop(i)
                    return dict(r)
        return None

    def stream(self, spec):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        lines = spec["lines"]
        for i, line in enumerate(lines):
            with ACK:
                before = ACKS[0]
            data = (line + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            with ACK:
                ACK.wait_for(lambda: ACKS[0] > before, timeout=spec.get("ack_timeout", 15))
                REPORT.append({"line": line, "acked_while_streaming": ACKS[0] > before})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else None
        if self.path.startswith("/_faults/"):
            return self.control(data)
        method, path = self.command, self.path
        proxied = False
        if path.startswith("http://"):
            u = urlsplit(path)
            if not (u.hostname or "").endswith(".myrmex.test"):
                return self.reply(403, b"{}")
            path, proxied = u.path + ("?" + u.query if u.query else ""), True
        rule = self.take(RULES, lambda r: (r.get("method") in (None, method)) and re.search(r["path"], path))
        if rule:
            with LOCK:
                LOG.append({"method": method, "path": path, "status": rule["status"], "injected": True})
            extra = {}
            if rule.get("retry_after") is not None:
                extra["Retry-After"] = str(rule["retry_after"])
            body = status_body(rule["status"], rule.get("reason", "InternalError"), "injected by faults.py")
            return self.reply(rule["status"], body, extra=extra)
        spec = self.take(STREAMS, lambda s: re.search(s["path"], path))
        if spec:
            with LOCK:
                LOG.append({"method": method, "path": path, "status": 200, "injected": True})
            return self.stream(spec)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
        if UP.scheme == "https":
            conn = http.client.HTTPSConnection(UP.hostname, UP.port, timeout=600,
                                               context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection(UP.hostname, UP.port, timeout=600)
        conn.request(method, path, body=data, headers=headers)
        res = conn.getresponse()
        with LOCK:
            LOG.append({"method": method, "path": path, "status": res.status, "injected": False,
                        "proxied": proxied})
        self.send_response(res.status)
        for k, v in res.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            chunk = res.read1(65536)
            if not chunk:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        conn.close()

    def do_CONNECT(self):
        with LOCK:
            LOG.append({"method": "CONNECT", "path": self.path, "status": 403, "injected": False, "proxied": True})
        self.reply(403, b"{}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


srv = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
srv.serve_forever()
