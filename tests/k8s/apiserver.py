#!/usr/bin/python3
"""A Kubernetes API server for tests: standard library + python3-yaml, loopback only.

Implements what myrmex.k8s, kubectl and the Python client rely on, the way kube-apiserver
does it (see tests/fixtures/kubernetes/samples/SEMANTICS.md): discovery and OpenAPI v3,
namespaced CRUD for namespaces, services, configmaps, secrets, pods, deployments (+scale,
+status) and jobs; resourceVersion, generation, server-side apply with managedFields,
conflicts and force; strategic/merge/JSON patches; dryRun=All; watch streams; Status bodies;
TLS with client certificates and bearer tokens; a fake controller for deployments and jobs.

Usage: apiserver.py [--cert C --key K [--client-ca CA]] [--token T ...] [--basic user:pw]
                    [--delay SECONDS] [--port N]
Prints "READY <port>" once listening on 127.0.0.1. Test controls live under /_test/
(no auth): POST /_test/fail {"resource","namespace","name","mode": fail|stall|ok},
POST /_test/drop-watches, POST /_test/compact, POST /_test/tokens {"revoke": T},
GET /_test/requests (the request log).
"""
import argparse
import bisect
import base64
import json
import os
import select
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import objects as O  # noqa: E402
import schema as SC  # noqa: E402

try:
    import yaml
except ImportError:  # apply bodies in JSON still work
    yaml = None

DISCOVERY = os.path.join(SC.FIXTURES, "samples", "discovery")


def load_yaml_or_json(body):
    """A YAML body. JSON is YAML, and the JSON decoder gives the same object for it much faster
    than the YAML one, so a body starting with '{' is tried as JSON first (flow-style YAML such as
    `{a: 1}` then falls back to YAML); YAML goes through libyaml when python3-yaml has it."""
    if not yaml or body.lstrip()[:1] == b"{":
        try:
            return json.loads(body)
        except ValueError:
            if not yaml:
                raise
    return yaml.load(body.decode(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


now = SC.now


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason}
        if self.details is not None:
            s["details"] = self.details
        s["code"] = self.code
        return s


def details(plural, name):
    d = {"name": name}
    g = O.RESOURCES[plural]["group"]
    if g:
        d["group"] = g
    d["kind"] = plural
    return d


def not_found(plural, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (O.qualified(plural), name), details(plural, name))


def conflict_modified(plural, name):
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    "please apply your changes to the latest version and try again" % (O.qualified(plural), name),
                    details(plural, name))


def invalid(plural, name, causes, kind=None, group=None):
    r = O.RESOURCES.get(plural, {})
    kind = kind or r.get("kind")
    group = r.get("group") if group is None else group
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = kind
    d["causes"] = causes
    return ApiError(422, "Invalid", O.invalid_message(kind, group, name, causes), d)


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


# ---- state ----------------------------------------------------------------------------------

OWNER_PLURALS = {"Deployment": "deployments", "ReplicaSet": "replicasets", "Job": "jobs"}


class State:
    def __init__(self, delay):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 100
        self.objects = {}          # (plural, ns, name) -> object
        self.events = []           # [rv, plural, ns, type, object, labels, its JSON text once written]
        self.texts = {}            # (plural, ns, name) -> (stored object, its JSON text) once written
        self.owned = {}            # owner uid -> keys of the objects whose ownerReferences name it
        self.compacted = 0
        self.drop_gen = 0
        self.delay = delay
        self.marks = {}            # (plural, ns, name) -> "fail" | "stall"
        self.logs = {}             # (ns, pod) -> text
        self.changed_at = {}       # (plural, ns, name) -> monotonic time of last spec change
        self.rs_synced = {}        # deployment key -> what the controller last synced (controller.py)
        self.pending = set()       # keys that changed since the controller last looked
        self.due = {}              # key -> monotonic time its timer is due (controller.py)
        self.timers = []           # heap of (due, key); an entry is live while due[key] is its time
        self.gc_needed = False     # an owner went away or an orphan came: collect garbage
        self.uids = set()          # uids of the stored objects
        self.next_ip = 10
        self.requests = []
        self.tokens = set()
        self.S = SC.Schemas()
        with self.lock:
            for ns in ("default", "kube-system", "kube-public"):
                self.put("namespaces", "", self.new_object("namespaces", {"metadata": {"name": ns}}, "kube-apiserver"))

    def allocate_ip(self):
        self.next_ip += 1
        return "10.96.%d.%d" % (self.next_ip // 250, self.next_ip % 250 + 1)

    def bump(self):
        self.rv += 1
        return str(self.rv)

    def schema_for(self, plural):
        r = O.RESOURCES[plural]
        return self.S.for_kind(r["group"], r["version"], r["kind"])

    def new_object(self, plural, obj, manager):
        obj = SC.jcopy(obj)
        r = O.RESOURCES[plural]
        obj["apiVersion"] = O.api_version(plural)
        obj["kind"] = r["kind"]
        O.apply_defaults(plural, obj, self)
        meta = obj.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if plural in O.GENERATION:
            meta["generation"] = 1
        return obj

    def put(self, plural, ns, obj, etype=None):
        """Store obj with a new resourceVersion and emit a watch event. Stored objects are
        never changed in place (writers build a new object), so events and replies share them."""
        key = (plural, ns, obj["metadata"]["name"])
        old = self.objects.get(key)
        if etype is None:
            etype = "MODIFIED" if old is not None else "ADDED"
        obj["metadata"]["resourceVersion"] = self.bump()
        obj = _ordered(obj)
        self._index(key, old, obj)
        self.objects[key] = obj
        self.uids.add(obj["metadata"].get("uid"))
        self._changed(key, obj)
        self.emit(plural, ns, etype, obj)
        return obj

    def text_of(self, key):
        """The stored object's JSON text, written on first use: most controller writes are
        never read by anyone."""
        obj = self.objects.get(key)
        hit = self.texts.get(key)
        if hit is None or hit[0] is not obj:
            hit = self.texts[key] = (obj, json.dumps(obj, separators=(",", ":")))
        return hit[1]

    def remove(self, plural, ns, name):
        key = (plural, ns, name)
        obj = self.objects.pop(key, None)
        if obj is not None:
            self.texts.pop(key, None)
            self._index(key, obj, None)
            self._changed(key, obj)
            self.uids.discard(obj["metadata"].get("uid"))
            self.gc_needed = self.gc_needed or bool(self.owned.get(obj["metadata"].get("uid")))
            obj = dict(obj, metadata=dict(obj["metadata"]))
            obj["metadata"]["resourceVersion"] = self.bump()
            self.emit(plural, ns, "DELETED", obj)
            self.marks.pop(key, None)
        return obj

    def _changed(self, key, obj):
        """What the real controllers' informers do: a change queues the object and its owners."""
        self.pending.add(key)
        for r in obj["metadata"].get("ownerReferences") or []:
            if r.get("uid") not in self.uids:
                self.gc_needed = True
            plural = OWNER_PLURALS.get(r.get("kind"))
            if plural:
                self.pending.add((plural, key[1], r.get("name")))

    def _index(self, key, old, new):
        for o, add in ((old, False), (new, True)):
            for r in ((o or {}).get("metadata", {}).get("ownerReferences") or []):
                keys = self.owned.setdefault(r.get("uid"), set())
                keys.add(key) if add else keys.discard(key)

    def events_after(self, rv):
        start = bisect.bisect_right(self.events, rv, key=lambda e: e[0])
        return self.events[start:]

    def emit(self, plural, ns, etype, obj):
        """Record a watch event; its JSON text is written when a watcher first sends it."""
        self.events.append([self.rv, plural, ns, etype, obj, obj["metadata"].get("labels") or {}, None])
        if len(self.events) > 5000:
            drop = self.events[:1000]
            self.events = self.events[1000:]
            self.compacted = drop[-1][0]
        self.cond.notify_all()


def _ordered(obj):
    """Key order as the Go serializer writes it: kind, apiVersion, metadata, spec..., status."""
    out = {}
    for k in ("kind", "apiVersion", "metadata"):
        if k in obj:
            out[k] = obj[k]
    for k, v in obj.items():
        if k not in out and k != "status":
            out[k] = v
    if "status" in obj:
        out["status"] = obj["status"]
    return out


# ---- managed fields -------------------------------------------------------------------------

def entries(obj, S):
    out = []
    for e in obj.get("metadata", {}).get("managedFields") or []:
        out.append(dict(e, _set=SC.from_fields_v1(e.get("fieldsV1") or {})))
    return out


def store_entries(obj, ents):
    mf = []
    for e in ents:
        if not e["_set"]:
            continue
        d = {"manager": e["manager"], "operation": e["operation"], "apiVersion": e["apiVersion"],
             "time": e.get("time") or now(), "fieldsType": "FieldsV1", "fieldsV1": SC.to_fields_v1(e["_set"])}
        if e.get("subresource"):
            d["subresource"] = e["subresource"]
        mf.append(d)
    if mf:
        obj["metadata"]["managedFields"] = mf
    else:
        obj["metadata"].pop("managedFields", None)


def leaf_values(obj, fs):
    return {p: SC.get_path(obj, p) for p in fs}


def record_update(state, plural, old, new, manager, subresource=None, status_only=False):
    """Non-apply writes take ownership of every field they changed (they always 'force')."""
    S = state.S
    sch = state.schema_for(plural)
    if status_only:
        new_fs = _status_set(new.get("status"), sch, S)
        old_fs = _status_set(old.get("status"), sch, S) if old else set()
    else:
        new_fs = SC.field_set(new, sch, S)
        old_fs = SC.field_set(old, sch, S) if old else set()
    changed = {p for p in new_fs if p[-1] != "." and (p not in old_fs or SC.get_path(old, p) != SC.get_path(new, p))}
    changed |= {p for p in new_fs if p[-1] == "." and p not in old_fs}
    gone = old_fs - new_fs
    ents = entries(old, S) if old else []
    api = O.api_version(plural)
    mine = None
    for e in ents:
        e["_set"] -= gone
        if e["manager"] == manager and e["operation"] == "Update" and e.get("subresource") == subresource:
            mine = e
        else:
            e["_set"] -= changed
    if changed:
        if mine is None:
            mine = {"manager": manager, "operation": "Update", "apiVersion": api, "_set": set()}
            if subresource:
                mine["subresource"] = subresource
            ents.append(mine)
        mine["_set"] |= changed
        mine["time"] = now()
    store_entries(new, ents)


def _status_set(status, sch, S):
    if not status:
        return set()
    node, ssch = S.child(sch, "status")
    out = set()
    SC._field(status, node, ssch, S, ("f:status",), out)
    return out


def manager_text(e):
    s = json.dumps(e["manager"])
    if e.get("subresource"):
        s += " with subresource " + json.dumps(e["subresource"])
    if e["operation"] == "Update":
        s += " using " + e["apiVersion"]
    return s


def apply_fields(state, plural, live, applied, manager, force, subresource=None):
    """Server-side apply: conflicts, removal of fields no longer applied, merge, ownership."""
    S = state.S
    sch = state.schema_for(plural)
    a_set = SC.field_set(applied, sch, S)
    ents = entries(live, S) if live else []
    conflicts = []
    for e in ents:
        if e["manager"] == manager and e["operation"] == "Apply":
            continue
        for p in sorted(a_set & e["_set"]):
            if p[-1] == ".":
                continue
            if SC.get_path(live, p) != SC.get_path(applied, p):
                conflicts.append((e, p))
    if conflicts and not force:
        raise apply_conflict(conflicts)
    for e, p in conflicts:
        e["_set"].discard(p)
    mine = next((e for e in ents if e["manager"] == manager and e["operation"] == "Apply"
                 and e.get("subresource") == subresource), None)
    result = SC.jcopy(live) if live else {}
    if mine:
        others = set()
        for e in ents:
            if e is not mine:
                others |= e["_set"]
        removed = sorted(mine["_set"] - a_set - others, key=len, reverse=True)
        for p in removed:
            SC.remove_path(result, p)
            SC.prune_empty(result, p)
    else:
        mine = {"manager": manager, "operation": "Apply", "apiVersion": applied.get("apiVersion") or O.api_version(plural)}
        if subresource:
            mine["subresource"] = subresource
        ents.append(mine)
    mine["_set"] = a_set
    mine["time"] = now()
    body = {k: v for k, v in applied.items() if k not in ("status",)}
    # result is a copy made here and the applied body is the request's own: no more copies.
    merged = SC.apply_merge(result, body, sch, S, private=True)
    return merged, ents


def apply_conflict(conflicts):
    by = []
    for e, p in conflicts:
        for entry in by:
            if entry[0] is e:
                entry[1].append(p)
                break
        else:
            by.append((e, [p]))
    n = len(conflicts)
    parts = []
    for e, paths in by:
        if len(paths) == 1 and n == 1:
            parts.append("conflict with %s: %s" % (manager_text(e), SC.path_text(paths[0])))
        else:
            parts.append("conflicts with %s:\n%s" % (manager_text(e), "\n".join("- " + SC.path_text(p) for p in paths)))
    msg = "Apply failed with %d conflict%s: %s" % (n, "" if n == 1 else "s", "\n".join(parts))
    causes = [{"reason": "FieldManagerConflict", "message": "conflict with " + manager_text(e),
               "field": SC.path_text(p)} for e, p in conflicts]
    return ApiError(409, "Conflict", msg, {"causes": causes})


# ---- selectors ------------------------------------------------------------------------------

def parse_label_selector(text):
    reqs = []
    if not text:
        return reqs
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if not p:
            continue
        if " notin " in p or " in " in p:
            op = "notin" if " notin " in p else "in"
            k, vals = p.split(" " + op + " ", 1)
            vals = [v.strip() for v in vals.strip().strip("()").split(",")]
            reqs.append((k.strip(), op, vals))
        elif "!=" in p:
            k, v = p.split("!=", 1)
            reqs.append((k.strip(), "!=", [v.strip()]))
        elif "==" in p or "=" in p:
            k, v = p.split("==" if "==" in p else "=", 1)
            reqs.append((k.strip(), "=", [v.strip()]))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!exists", []))
        else:
            reqs.append((p, "exists", []))
    return reqs


def labels_match(reqs, labels):
    for k, op, vals in reqs:
        v = labels.get(k)
        if op == "=" and v != vals[0]:
            return False
        if op == "!=" and v == vals[0]:
            return False
        if op == "in" and v not in vals:
            return False
        if op == "notin" and v in vals:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!exists" and k in labels:
            return False
    return True


def field_value(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def fields_match(text, obj):
    for p in (text or "").split(","):
        if not p:
            continue
        neg = "!=" in p
        k, v = p.split("!=" if neg else ("==" if "==" in p else "="), 1)
        actual = field_value(obj, k.strip())
        actual = "" if actual is None else str(actual)
        if (actual == v.strip()) == neg:
            return False
    return True


# ---- HTTP -----------------------------------------------------------------------------------

STATE = None
ARGS = None


class Headers(dict):
    """Request headers by lower-case name (the first of repeated ones), read with .get(name)."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


MAX_HEADERS = 100


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "myrmex-test-apiserver"

    def log_message(self, *a):
        pass

    def parse_request(self):
        """The request line and headers, read as BaseHTTPRequestHandler reads them but without
        the email package, whose parser cost a seventh of the server's CPU per request."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # what send_error answers in until the line is read
        self.requestline = line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, "Bad request line %r" % line)
            return False
        self.command, self.path, version = words
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(65537)
            if len(raw) > 65536:
                self.send_error(431, "Line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(raw, "iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                self.send_error(400, "Bad header line %r" % raw[:80])
                return False
            headers.setdefault(name.lower(), value.strip())
        else:
            self.send_error(431, "Too many headers")
            return False
        self.request_version, self.headers = version, headers
        conn = headers.get("connection", "").lower()
        self.close_connection = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
            return self.handle_expect_100()
        return True

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus the client's
        # delayed ACK stall every response by 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, code, obj, extra=None, text=None):
        data = (text if text is not None else json.dumps(obj, separators=(",", ":"))).encode()
        head = ["%s %d %s" % (self.protocol_version, code, self.responses.get(code, ("",))[0]),
                "Audit-Id: " + str(uuid.uuid4()),
                "Cache-Control: no-cache, private",
                "Content-Type: application/json",
                "Date: " + self.date_time_string(),
                "X-Kubernetes-Pf-Flowschema-Uid: 6027abd0-aa72-4d3c-a2cb-42b534068f6d",
                "X-Kubernetes-Pf-Prioritylevel-Uid: f72ba9d7-6df9-4dd9-8720-be5485197492"]
        head += ["%s: %s" % kv for kv in (extra or {}).items()]
        head.append("Content-Length: %d" % len(data))
        # Status, headers and body in one write: one send and one wake-up of the client per reply.
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        u = urlparse(self.path)
        self.q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        self.body = self.read_body()
        with STATE.lock:
            STATE.requests.append({"method": self.command, "path": self.path,
                                   "content_type": self.headers.get("Content-Type"),
                                   "user_agent": self.headers.get("User-Agent"),
                                   "body": self.body.decode(errors="replace") if self.body else None})
        try:
            if u.path.startswith("/_test/"):
                return self.control(u.path)
            self.authenticate()
            self.route(u.path)
        except ApiError as e:
            self.send_json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    # -- auth --
    def authenticate(self):
        if not ARGS.token and not ARGS.client_ca and not ARGS.basic:
            return
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and auth[7:] in STATE.tokens:
            return
        if ARGS.basic and auth.startswith("Basic "):
            try:
                if base64.b64decode(auth[6:]).decode() == ARGS.basic:
                    return
            except Exception:
                pass
        if ARGS.client_ca and not auth:
            try:
                cert = self.connection.getpeercert()
            except (AttributeError, ValueError):
                cert = None
            if cert:
                return
        raise ApiError(401, "Unauthorized", "Unauthorized")

    # -- test controls --
    def control(self, path):
        body = json.loads(self.body or b"{}")
        with STATE.lock:
            if path == "/_test/fail":
                key = (body["resource"], body.get("namespace", "default"), body["name"])
                STATE.marks[key] = body.get("mode", "fail")
                STATE.pending.add(key)
            elif path == "/_test/drop-watches":
                STATE.drop_gen += 1
                STATE.cond.notify_all()
            elif path == "/_test/compact":
                STATE.compacted = STATE.rv
                STATE.events = []
            elif path == "/_test/tokens":
                if body.get("revoke"):
                    STATE.tokens.discard(body["revoke"])
                if body.get("add"):
                    STATE.tokens.add(body["add"])
            elif path == "/_test/requests":
                return self.send_json(200, STATE.requests)
            elif path == "/_test/delay":
                STATE.delay = float(body["seconds"])
            else:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self.send_json(200, {"ok": True})

    # -- routing --
    def route(self, path):
        parts = [p for p in path.split("/") if p]
        if self.command == "GET" and self.discovery(parts):
            return
        if parts[:2] == ["api", "v1"]:
            rest, group, version = parts[2:], "", "v1"
        elif len(parts) >= 3 and parts[0] == "apis":
            rest, group, version = parts[3:], parts[1], parts[2]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, plural, name, sub = self.split(rest)
        r = O.RESOURCES.get(plural)
        if not r or r["group"] != group or r["version"] != version:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if r["namespaced"] and ns is None and name is None and self.command == "GET":
            return self.list(plural, None)
        if r["namespaced"] and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = ns or ""
        m = self.command
        if sub == "scale" and plural == "deployments":
            return self.scale(ns, name)
        if sub == "log" and plural == "pods":
            return self.pod_log(ns, name)
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if m == "GET":
                return self.list(plural, ns)
            if m == "POST":
                return self.create(plural, ns)
            if m == "DELETE":
                return self.delete_collection(plural, ns)
        else:
            if m == "GET":
                return self.send_json(200, self.get_obj(plural, ns, name))
            if m == "PUT":
                return self.update(plural, ns, name, sub)
            if m == "PATCH":
                return self.patch(plural, ns, name, sub)
            if m == "DELETE":
                return self.delete(plural, ns, name)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def split(self, rest):
        if rest[:1] == ["namespaces"] and len(rest) >= 3 and rest[2] in O.RESOURCES and O.RESOURCES[rest[2]]["namespaced"]:
            ns, rest = rest[1], rest[2:]
        else:
            ns = None
        plural = rest[0] if rest else None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if plural == "namespaces" and name:
            ns = ""
        return ns, plural, name, sub

    def discovery(self, parts):
        p = "/".join(parts)
        if p == "version":
            self.send_json(200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "gitCommit": "test",
                                 "gitTreeState": "clean", "buildDate": "2025-12-17T00:00:00Z",
                                 "goVersion": "go1.25.5", "compiler": "gc", "platform": "linux/amd64"})
        elif p == "api":
            doc = _load("api.json")
            doc["serverAddressByClientCIDRs"] = [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address_text()}]
            self.send_json(200, doc)
        elif p == "apis":
            groups = []
            for g in ("apps", "batch", "autoscaling"):
                gv = {"groupVersion": g + "/v1", "version": "v1"}
                groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
            self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        elif p in ("api/v1", "apis/apps/v1", "apis/batch/v1", "apis/autoscaling/v1"):
            self.send_json(200, _load(p.replace("/", "__") + ".json"))
        elif p in ("apis/apps", "apis/batch", "apis/autoscaling"):
            g = parts[1]
            gv = {"groupVersion": g + "/v1", "version": "v1"}
            self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv], "preferredVersion": gv})
        elif p == "openapi/v3":
            paths = {gv: {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (gv, _hash(STATE.S.raw[gv]))} for gv in SC.DOCS}
            self.send_json(200, {"paths": paths})
        elif p.startswith("openapi/v3/") and p[len("openapi/v3/"):] in SC.DOCS:
            data = STATE.S.raw[p[len("openapi/v3/"):]]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif p == "apis/apiextensions.k8s.io/v1/customresourcedefinitions":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            return False
        return True

    def server_address_text(self):
        return "127.0.0.1:%d" % self.server.server_address[1]

    # -- helpers --
    def decode(self, plural, kind=None):
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if ctype not in ("application/json", "application/apply-patch+yaml", "application/yaml") and not ctype.endswith("+json"):
            raise ApiError(415, "UnsupportedMediaType", 'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml')
        try:
            if ctype in ("application/apply-patch+yaml", "application/yaml"):
                obj = load_yaml_or_json(self.body)
            else:
                obj = json.loads(self.body)
        except Exception as e:
            raise bad_request("Object 'Kind' is missing in '%s' (%s)" % (self.body[:100].decode(errors="replace"), e))
        return obj

    def manager(self):
        m = self.q.get("fieldManager")
        if m:
            if len(m) > 128:
                raise invalid("", "", [O.cause("FieldValueTooLong", "fieldManager", "Too long: may not be more than 128 bytes")],
                              kind="PatchOptions", group="meta.k8s.io")
            return m
        ua = self.headers.get("User-Agent") or "unknown"
        return ua.split("/")[0]

    def dry_run(self):
        v = self.q.get("dryRun")
        if v is None or v == "":
            return False
        if v != "All":
            raise invalid("", "", [O.not_supported("dryRun", v, ['"All"'])], kind="CreateOptions", group="meta.k8s.io")
        return True

    def check_types(self, plural, obj):
        """Decode-time checks: wrong types are 400, unknown fields follow fieldValidation."""
        r = O.RESOURCES[plural]
        try:
            unknown = O.type_check(obj, STATE.schema_for(plural), STATE.S, r["kind"], False)
        except O.DecodeError as e:
            raise bad_request('%s in version "%s" cannot be handled as a %s: %s' % (r["kind"], r["version"], r["kind"], e))
        mode = (self.q.get("fieldValidation") or "Warn").lower()
        warn = {}
        if unknown and mode == "strict":
            raise bad_request("strict decoding error: " + ", ".join('unknown field "%s"' % u for u in unknown))
        if unknown and mode == "warn":
            warn["Warning"] = ", ".join('299 - "unknown field \\"%s\\""' % u for u in unknown)
        O.drop_unknown(obj, unknown)
        return warn

    def check_namespace(self, plural, ns, obj):
        meta = obj.setdefault("metadata", {})
        if not O.RESOURCES[plural]["namespaced"]:
            meta.pop("namespace", None)
            return
        if meta.get("namespace") and meta["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = ns
        if ("namespaces", "", ns) not in STATE.objects:
            raise not_found("namespaces", ns)

    def check_kind(self, plural, obj):
        if not isinstance(obj, dict):
            raise bad_request("Object 'Kind' is missing in '%s'" % json.dumps(obj))
        r = O.RESOURCES[plural]
        if obj.get("kind") and obj["kind"] != r["kind"]:
            raise bad_request("the kind in the data (%s) does not match the expected kind (%s)" % (obj["kind"], r["kind"]))
        if obj.get("apiVersion") and obj["apiVersion"] != O.api_version(plural):
            raise bad_request('the API version in the data (%s) does not match the expected API version (%s)'
                              % (obj["apiVersion"], O.api_version(plural)))

    def get_obj(self, plural, ns, name):
        with STATE.lock:
            obj = STATE.objects.get((plural, ns, name))
            if obj is None:
                raise not_found(plural, name)
            return SC.jcopy(obj)

    def validate(self, plural, obj, old=None):
        causes = O.validate(plural, obj, old)
        if causes:
            raise invalid(plural, obj.get("metadata", {}).get("name"), causes)

    # -- list / watch --
    def list(self, plural, ns):
        if self.q.get("watch") in ("1", "true", "True"):
            return self.watch(plural, ns)
        sel = parse_label_selector(self.q.get("labelSelector"))
        fsel = self.q.get("fieldSelector")
        with STATE.lock:
            # Stored objects are never changed in place: the list refers to them, no copies.
            items = [o for (p, n, _), o in sorted(STATE.objects.items())
                     if p == plural and (ns is None or n == ns)
                     and labels_match(sel, o["metadata"].get("labels") or {}) and fields_match(fsel, o)]
            rv = str(STATE.rv)
        meta = {"resourceVersion": rv}
        cont = self.q.get("continue")
        if cont:
            try:
                token = json.loads(base64.b64decode(cont))
            except Exception:
                raise bad_request("continue key is not valid: illegal base64 data")
            meta["resourceVersion"] = token["rv"]
            items = [i for i in items if (i["metadata"].get("namespace", ""), i["metadata"]["name"]) > tuple(token["after"])]
        limit = int(self.q.get("limit") or 0)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.b64encode(json.dumps({"rv": meta["resourceVersion"],
                                                            "after": [last.get("namespace", ""), last["name"]]}).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        r = O.RESOURCES[plural]
        self.send_json(200, {"kind": r["kind"] + "List", "apiVersion": O.api_version(plural), "metadata": meta,
                             "items": [O.strip_for_list(i) for i in items]})

    def watch(self, plural, ns):
        sel = parse_label_selector(self.q.get("labelSelector"))
        fsel = self.q.get("fieldSelector")
        rv = self.q.get("resourceVersion") or "0"
        timeout = float(self.q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        bookmarks = self.q.get("allowWatchBookmarks") in ("true", "1")

        def wanted(p, n, labels, obj):
            return p == plural and (ns is None or n == ns) and labels_match(sel, labels) \
                and (not fsel or fields_match(fsel, obj))

        self.send_response(200)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with STATE.lock:
            gen = STATE.drop_gen
            if rv == "0" or self.q.get("sendInitialEvents") == "true":
                pos = STATE.rv
                initial = [STATE.text_of(k) for k, o in sorted(STATE.objects.items())
                           if wanted(k[0], k[1], o["metadata"].get("labels") or {}, o)]
            else:
                pos = int(rv)
                initial = []
                if pos < STATE.compacted:
                    gone = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": "too old resource version: %s (%d)" % (rv, STATE.compacted),
                            "reason": "Expired", "code": 410}
                    self.chunk({"type": "ERROR", "object": gone})
                    return self.chunk_end()
        self.send_chunks([event_chunk("ADDED", text) for text in initial])
        if self.q.get("sendInitialEvents") == "true" and bookmarks:
            r = O.RESOURCES[plural]
            self.chunk({"type": "BOOKMARK", "object": {"kind": r["kind"], "apiVersion": O.api_version(plural),
                        "metadata": {"resourceVersion": str(pos), "annotations": {"k8s.io/initial-events-end": "true"}}}})
        while True:
            with STATE.lock:
                batch = STATE.events_after(pos)
                while not batch and STATE.drop_gen == gen and time.monotonic() < deadline:
                    STATE.cond.wait(min(1.0, max(0.01, deadline - time.monotonic())))
                    batch = STATE.events_after(pos)
                    if not batch and self.client_gone():
                        return
                dropped = STATE.drop_gen != gen
            if dropped:
                # A dropped connection: no terminating chunk, the way a proxy cut looks.
                self.close_connection = True
                return
            out = []
            for e in batch:
                pos = e[0]
                if wanted(e[1], e[2], e[5], e[4]):
                    if e[6] is None:  # a race between watchers writes the same text twice
                        e[6] = json.dumps(e[4], separators=(",", ":"))
                    out.append(event_chunk(e[3], e[6]))
            self.send_chunks(out)
            if time.monotonic() >= deadline:
                return self.chunk_end()

    def client_gone(self):
        """A watcher whose client hung up ends instead of waking on every event until its timeout."""
        # A watching client sends nothing while the stream is open, so anything readable is
        # its FIN (or TLS close_notify).
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            return bool(r)
        except (OSError, ValueError):
            return True

    def chunk(self, obj):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def send_chunks(self, chunks):
        """Events that are ready together go out in one write (one chunk each, as before)."""
        if chunks:
            self.wfile.write(b"".join(chunks))
            self.wfile.flush()

    def chunk_end(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- writes --
    def create(self, plural, ns):
        obj = self.decode(plural)
        self.check_kind(plural, obj)
        warn = self.check_types(plural, obj)
        dry = self.dry_run()
        manager = self.manager()
        with STATE.lock:
            self.check_namespace(plural, ns, obj)
            meta = obj["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
                meta.pop(k, None)
            if plural != "namespaces":
                obj.pop("status", None)
            new = STATE.new_object(plural, obj, manager)
            if plural in ("deployments", "jobs"):
                new["status"] = {}
            self.validate(plural, new)
            if plural == "jobs":
                _job_selector(new)
            key = (plural, ns, new["metadata"]["name"])
            if key in STATE.objects:
                raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (O.qualified(plural), key[2]),
                               details(plural, key[2]))
            record_update(STATE, plural, None, new, manager)
            if dry:
                new["metadata"]["resourceVersion"] = ""
                new = _ordered(new)
            else:
                new = STATE.put(plural, ns, new, "ADDED")
                STATE.changed_at[key] = time.monotonic()
            self.send_json(201, new, warn, STATE.text_of(key) if not dry else None)

    def update(self, plural, ns, name, sub):
        obj = self.decode(plural)
        self.check_kind(plural, obj)
        warn = self.check_types(plural, obj)
        dry = self.dry_run()
        manager = self.manager()
        with STATE.lock:
            old = STATE.objects.get((plural, ns, name))
            if old is None:
                raise not_found(plural, name)
            if obj.get("metadata", {}).get("name") not in (None, name):
                raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                  % (obj["metadata"]["name"], name))
            rv = obj.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict_modified(plural, name)
            self.check_namespace(plural, ns, obj)
            new = self.merge_update(plural, old, obj, sub)
            self.commit(plural, ns, old, new, manager, sub, dry, 200, warn)

    def merge_update(self, plural, old, obj, sub):
        """What a PUT stores: the body's spec with the old status, or the reverse on /status."""
        if sub == "status":
            new = SC.jcopy(old)
            new["status"] = obj.get("status", {})
            return new
        new = SC.jcopy(obj)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        meta = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "managedFields"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        if "status" in old:
            new["status"] = SC.jcopy(old["status"])
        else:
            new.pop("status", None)
        if plural == "services":
            spec = new.setdefault("spec", {})
            if "clusterIP" not in spec and "clusterIP" in (old.get("spec") or {}):
                spec["clusterIP"] = old["spec"]["clusterIP"]
                spec.setdefault("clusterIPs", old["spec"].get("clusterIPs"))
        if plural == "jobs":
            new.setdefault("spec", {}).setdefault("selector", old["spec"].get("selector"))
            tl = new["spec"].get("template", {}).setdefault("metadata", {}).setdefault("labels", {})
            for k, v in (old["spec"]["template"].get("metadata", {}).get("labels") or {}).items():
                if k.startswith("batch.kubernetes.io/") or k in ("controller-uid", "job-name"):
                    tl.setdefault(k, v)
        O.apply_defaults(plural, new, STATE)
        return new

    def commit(self, plural, ns, old, new, manager, sub, dry, code, warn=None, ents=None):
        """Validate, bump generation, record ownership, store (unless dry run), reply."""
        self.validate(plural, new, old)
        if plural in O.GENERATION and old is not None and sub != "status":
            o_spec = (old.get("spec"), (old["metadata"].get("annotations") or {}))
            n_spec = (new.get("spec"), (new["metadata"].get("annotations") or {}))
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + (1 if o_spec != n_spec else 0)
        if ents is not None:
            store_entries(new, ents)
        else:
            record_update(STATE, plural, old, new, manager, sub if sub else None, status_only=(sub == "status"))
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"] if old else ""
        new = _ordered(new)
        unchanged = old is not None and _comparable(old) == _comparable(new)
        key = (plural, ns, new["metadata"]["name"])
        if not dry and not unchanged:
            new = STATE.put(plural, ns, new)
            if old is None or old.get("spec") != new.get("spec"):
                STATE.changed_at[key] = time.monotonic()
        elif unchanged:
            new = old
        self.send_json(code, new, warn, STATE.text_of(key) if STATE.objects.get(key) is new else None)

    def patch(self, plural, ns, name, sub):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        dry = self.dry_run()
        if self.q.get("force") and ctype != "application/apply-patch+yaml":
            raise invalid("", "", [O.cause("FieldValueForbidden", "force", "Forbidden: may not be specified for non-apply patch")],
                          kind="PatchOptions", group="meta.k8s.io")
        if ctype == "application/apply-patch+yaml":
            return self.apply(plural, ns, name, sub, dry)
        if ctype not in ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise ApiError(415, "UnsupportedMediaType", 'the body of the request was in an unknown format - accepted media types include: '
                           'application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml')
        try:
            p = json.loads(self.body)
        except ValueError as e:
            raise bad_request("error decoding patch: %s" % e)
        manager = self.manager()
        with STATE.lock:
            old = STATE.objects.get((plural, ns, name))
            if old is None:
                raise not_found(plural, name)
            patched = self.apply_patch(plural, ctype, old, p)
            if not isinstance(patched, dict):
                raise bad_request("patch did not produce an object")
            rv = (patched.get("metadata") or {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict_modified(plural, name)
            self.check_kind(plural, patched)
            warn = self.check_types(plural, patched)
            if patched.get("metadata", {}).get("name") != name:
                raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                  % (patched.get("metadata", {}).get("name"), name))
            new = self.merge_update(plural, old, patched, None) if sub != "status" else SC.jcopy(patched)
            if sub == "status":
                new = SC.jcopy(old)
                new["status"] = patched.get("status", {})
            self.commit(plural, ns, old, new, manager, sub, dry, 200, warn)

    def apply_patch(self, plural, ctype, old, p):
        try:
            if ctype == "application/json-patch+json":
                return SC.json_patch(old, p)
            if ctype == "application/merge-patch+json":
                return SC.merge_patch(old, p)
            return SC.strategic_merge(old, p, STATE.schema_for(plural), STATE.S)
        except SC.PatchError as e:
            raise ApiError(422, "Invalid", str(e))
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            raise bad_request("the patch could not be applied: %s" % e)

    def apply(self, plural, ns, name, sub, dry):
        if not self.q.get("fieldManager"):
            raise invalid("", "", [O.required("fieldManager", "is required for apply patch")],
                          kind="PatchOptions", group="meta.k8s.io")
        manager = self.q["fieldManager"]
        if len(manager) > 128:
            self.manager()
        force = self.q.get("force") in ("true", "1", "True")
        applied = self.decode(plural)
        if not isinstance(applied, dict):
            raise bad_request("error decoding YAML: the body is not an object")
        if sub == "status":
            raise ApiError(415, "UnsupportedMediaType", "apply to the status subresource is not supported here")
        for f in ("apiVersion", "kind"):
            if not applied.get(f):
                raise bad_request("%s must be specified" % ("apiVersion" if f == "apiVersion" else "kind"))
        if (applied.get("metadata") or {}).get("name") not in (name,):
            raise bad_request("metadata.name: Invalid value: %s: name must match the name in the URL"
                              % json.dumps((applied.get("metadata") or {}).get("name")))
        self.check_kind(plural, applied)
        warn = self.check_types(plural, applied)
        with STATE.lock:
            self.check_namespace(plural, ns, applied)
            old = STATE.objects.get((plural, ns, name))
            if old is None:
                base = STATE.new_object(plural, {"metadata": {"name": name}}, manager)
                base["metadata"].pop("labels", None) if plural != "namespaces" else None
                merged, ents = apply_fields(STATE, plural, None, applied, manager, force)
                merged = SC.apply_merge(base, merged, STATE.schema_for(plural), STATE.S, private=True)
                if plural != "namespaces":
                    merged["metadata"].pop("namespace", None)
                    if O.RESOURCES[plural]["namespaced"]:
                        merged["metadata"]["namespace"] = ns
                O.apply_defaults(plural, merged, STATE)
                if plural in ("deployments", "jobs"):
                    merged["status"] = {}
                if plural == "jobs":
                    _job_selector(merged)
                return self.commit(plural, ns, None, merged, manager, None, dry, 201, warn, ents)
            merged, ents = apply_fields(STATE, plural, old, applied, manager, force)
            merged["status"] = SC.jcopy(old.get("status")) if "status" in old else merged.pop("status", None)
            if merged.get("status") is None:
                merged.pop("status", None)
            for k in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                if k in old["metadata"]:
                    merged["metadata"][k] = old["metadata"][k]
            O.apply_defaults(plural, merged, STATE)
            self.commit(plural, ns, old, merged, manager, None, dry, 200, warn, ents)

    # -- scale --
    def scale_view(self, d):
        m = d["metadata"]
        sel = (d["spec"].get("selector") or {}).get("matchLabels") or {}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                             "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
                "spec": {"replicas": d["spec"].get("replicas", 1)},
                "status": {"replicas": (d.get("status") or {}).get("replicas", 0),
                           "selector": ",".join("%s=%s" % kv for kv in sorted(sel.items()))}}

    def scale(self, ns, name):
        m = self.command
        with STATE.lock:
            d = STATE.objects.get(("deployments", ns, name))
            if d is None:
                raise not_found("deployments", name)
            view = self.scale_view(d)
            if m == "GET":
                return self.send_json(200, view)
            dry = self.dry_run()
            ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
            if m == "PUT":
                body = json.loads(self.body or b"{}")
            elif m == "PATCH" and ctype == "application/apply-patch+yaml":
                body = self.scale_apply(d, view)
            elif m == "PATCH":
                body = self.apply_patch("deployments", ctype, view, json.loads(self.body or b"{}"))
            else:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            bm = body.get("metadata") or {}
            if (bm.get("resourceVersion") and bm["resourceVersion"] != view["metadata"]["resourceVersion"]) or \
                    (bm.get("uid") and bm["uid"] != view["metadata"]["uid"]):
                raise conflict_modified("deployments", name)
            replicas = (body.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or replicas < 0:
                raise invalid("deployments", name, [O.invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                              kind="Scale", group="autoscaling")
            new = SC.jcopy(d)
            new["spec"]["replicas"] = replicas
            manager = self.q.get("fieldManager") or self.manager()
            if m == "PATCH" and ctype == "application/apply-patch+yaml":
                ents = self._scale_ents
                return self.commit_scale(ns, d, new, manager, dry, ents)
            self.commit_scale(ns, d, new, manager, dry, None)

    def scale_apply(self, d, view):
        """Apply of a Scale: .spec.replicas owned by the manager with subresource scale."""
        manager = self.q.get("fieldManager")
        if not manager:
            raise invalid("", "", [O.required("fieldManager", "is required for apply patch")],
                          kind="PatchOptions", group="meta.k8s.io")
        body = self.decode("deployments")
        force = self.q.get("force") in ("true", "1")
        applied = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": d["metadata"]["name"]},
                   "spec": {"replicas": (body.get("spec") or {}).get("replicas")}}
        _, ents = apply_fields(STATE, "deployments", d, applied, manager, force, subresource="scale")
        self._scale_ents = ents
        return body

    def commit_scale(self, ns, old, new, manager, dry, ents):
        new["metadata"]["generation"] = old["metadata"].get("generation", 1) + (
            1 if old["spec"].get("replicas") != new["spec"]["replicas"] else 0)
        if ents is not None:
            store_entries(new, ents)
        else:
            record_update(STATE, "deployments", old, new, manager, "scale")
        if not dry and new != old:
            new = STATE.put("deployments", ns, new)
            STATE.changed_at[("deployments", ns, new["metadata"]["name"])] = time.monotonic()
        self.send_json(200, self.scale_view(new))

    # -- delete --
    def delete_options(self):
        opts = {}
        if self.body:
            try:
                opts = json.loads(self.body)
            except ValueError:
                raise bad_request("invalid DeleteOptions body")
        policy = self.q.get("propagationPolicy") or opts.get("propagationPolicy")
        dry = self.dry_run() or opts.get("dryRun") == ["All"]
        return opts, policy, dry

    def delete(self, plural, ns, name):
        opts, policy, dry = self.delete_options()
        with STATE.lock:
            obj = STATE.objects.get((plural, ns, name))
            if obj is None:
                raise not_found(plural, name)
            pre = opts.get("preconditions") or {}
            if (pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]) or \
                    (pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]):
                raise conflict_modified(plural, name)
            self.send_json(200, self.do_delete(plural, ns, obj, policy, dry))

    def do_delete(self, plural, ns, obj, policy, dry):
        name = obj["metadata"]["name"]
        if policy is None:
            policy = "Orphan" if plural == "jobs" else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise invalid(plural, name, [O.not_supported("propagationPolicy", policy, ['"Background"', '"Foreground"', '"Orphan"'])],
                          kind="DeleteOptions", group="meta.k8s.io")
        if obj["metadata"].get("deletionTimestamp"):
            return SC.jcopy(obj)
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if plural == "namespaces" or policy == "Foreground" or finalizers:
            new = SC.jcopy(obj)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if policy == "Foreground":
                new["metadata"]["finalizers"] = finalizers + ["foregroundDeletion"]
            if plural == "namespaces":
                new["status"] = {"phase": "Terminating"}
            if not dry:
                new = STATE.put(plural, ns, new)
            return new
        if not dry:
            removed = STATE.remove(plural, ns, name)
            if policy == "Orphan":
                _orphan(obj["metadata"]["uid"])
            if plural == "pods":
                return removed
        elif plural == "pods":
            return SC.jcopy(obj)
        d = details(plural, name)
        d["uid"] = obj["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}

    def delete_collection(self, plural, ns):
        opts, policy, dry = self.delete_options()
        sel = parse_label_selector(self.q.get("labelSelector"))
        with STATE.lock:
            victims = [o for (p, n, _), o in sorted(STATE.objects.items())
                       if p == plural and n == ns and labels_match(sel, o["metadata"].get("labels") or {})
                       and fields_match(self.q.get("fieldSelector"), o)]
            items = []
            for o in victims:
                self.do_delete(plural, ns, o, policy, dry)
                items.append(O.strip_for_list(o))
            r = O.RESOURCES[plural]
            self.send_json(200, {"kind": r["kind"] + "List", "apiVersion": O.api_version(plural),
                                 "metadata": {"resourceVersion": str(STATE.rv)}, "items": items})

    # -- pod logs --
    def pod_log(self, ns, name):
        with STATE.lock:
            if ("pods", ns, name) not in STATE.objects:
                raise not_found("pods", name)
            text = STATE.logs.get((ns, name), "")
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def event_chunk(etype, text):
    """A watch event around an object's stored JSON text (no decode and encode again)."""
    data = ('{"type":"%s","object":%s}\n' % (etype, text)).encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


def _comparable(o):
    meta = {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}
    if "managedFields" in meta:
        meta["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in meta["managedFields"]]
    o = dict(o, metadata=meta)
    return o


def _job_selector(job):
    uid = job["metadata"]["uid"]
    spec = job["spec"]
    labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": job["metadata"]["name"],
              "controller-uid": uid, "job-name": job["metadata"]["name"]}
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
    tmeta.setdefault("labels", {}).update(labels)


def _orphan(uid):
    for key, o in list(STATE.objects.items()):
        refs = o["metadata"].get("ownerReferences") or []
        if any(r.get("uid") == uid for r in refs):
            new = SC.jcopy(o)
            new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
            if not new["metadata"]["ownerReferences"]:
                new["metadata"].pop("ownerReferences")
            STATE.put(key[0], key[1], new)


_DISCOVERY_CACHE = {}


def _load(name):
    if name not in _DISCOVERY_CACHE:
        with open(os.path.join(DISCOVERY, name)) as f:
            _DISCOVERY_CACHE[name] = json.load(f)
    return SC.jcopy(_DISCOVERY_CACHE[name])


def _hash(data):
    import hashlib
    return hashlib.sha512(data).hexdigest()[:128].upper()


# ---- the fake controller --------------------------------------------------------------------

def controller():
    import controller as C
    due = 0
    while True:
        # Until the next timer, at most 50 ms: what is changed meanwhile waits for the next look.
        time.sleep(min(0.05, max(0.001, due - time.monotonic())))
        try:
            with STATE.lock:
                due = C.step(STATE)
        except Exception as e:  # keep serving; a controller bug shows in the log
            print("controller: %r" % e, file=sys.stderr, flush=True)


def main():
    global STATE, ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca")
    ap.add_argument("--token", action="append", default=[])
    ap.add_argument("--basic")
    ap.add_argument("--delay", type=float, default=0.2)
    ARGS = ap.parse_args()
    STATE = State(ARGS.delay)
    STATE.tokens = set(ARGS.token)
    # Go's listeners take the kernel's somaxconn backlog; socketserver's default of 5 drops the
    # handshakes of clients that open several connections at once.
    ThreadingHTTPServer.request_queue_size = socket.SOMAXCONN
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        if ARGS.client_ca:
            ctx.load_verify_locations(ARGS.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=controller, daemon=True).start()
    print("READY %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
