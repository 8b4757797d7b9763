#!/usr/bin/env python3
"""Token server for the registry specs: the Docker token flow, signing RS256 JWTs with a test key.

Usage: token_server.py PORT_FILE KEY CERT ISSUER USERS_JSON [EXPIRES_IN]

Listens on a free 127.0.0.1 port (written to PORT_FILE once it is listening). GET /token with
Basic credentials from USERS_JSON ({"user": "password"}) grants the requested scopes; no
credentials grants only pull. A wrong password is 401, as real token servers answer.
GET /stats returns how many tokens were issued per scope, so specs can check caching.
POST /token is the OAuth2 refresh-token grant (form body): refresh token "refresh-<user>"
stands for that user, as an identity token stored by `docker login` would.
"""
import base64
import http.server
import json
import os
import sys
import threading
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

PORT_FILE, KEY, CERT, ISSUER, USERS = sys.argv[1:6]
EXPIRES_IN = int(sys.argv[6]) if len(sys.argv) > 6 else 300

with open(KEY, "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=None)
with open(CERT, "rb") as f:
    cert = x509.load_pem_x509_certificate(f.read())
with open(USERS) as f:
    users = json.load(f)
x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
stats = {}
lock = threading.Lock()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims):
    header = {"typ": "JWT", "alg": "RS256", "x5c": x5c}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def parse_scope(scope):
    # "repository:name/with/slashes:pull,push" — the name may not contain ':' except a port,
    # so split the type off the front and the actions off the back.
    typ, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return {"type": typ, "name": name, "actions": actions.split(",")}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("token-server: " + fmt % args + "\n")

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def user(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None, True
        name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return name, users.get(name) == password

    def do_POST(self):
        from urllib.parse import urlparse, parse_qs
        if urlparse(self.path).path != "/token":
            return self.reply(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        refresh = form.get("refresh_token", [""])[0]
        name = refresh[len("refresh-"):] if refresh.startswith("refresh-") else None
        if form.get("grant_type", [""])[0] != "refresh_token" or name not in users:
            return self.reply(400, {"error": "invalid_grant"})
        self.grant(name, form, oauth=True)

    def do_GET(self):
        from urllib.parse import urlparse, parse_qs
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/stats":
            with lock:
                return self.reply(200, stats)
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        name, ok = self.user()
        if not ok:
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                              [("WWW-Authenticate", 'Basic realm="token"')])
        self.grant(name, q)

    def grant(self, name, q, oauth=False):
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                s = parse_scope(one)
                allowed = s["actions"] if name else [a for a in s["actions"] if a == "pull"]
                if s["type"] == "registry" and name:
                    allowed = s["actions"]
                access.append({"type": s["type"], "name": s["name"], "actions": allowed})
            with lock:
                stats[scope] = stats.get(scope, 0) + 1
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": name or "", "aud": q.get("service", [""])[0],
                  "exp": now + EXPIRES_IN, "nbf": now - 10, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        token = sign(claims)
        reply = {"access_token": token, "expires_in": EXPIRES_IN,
                 "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        if not oauth:
            reply["token"] = token
        self.reply(200, reply)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
tmp = PORT_FILE + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, PORT_FILE)
server.serve_forever()
