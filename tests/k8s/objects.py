"""Resource table, defaulting, decoding checks and validation of the test API server.

The checks follow the API server's Go validation (messages and cause reasons as in
samples/status); the types come from the OpenAPI schemas.
"""
import re

import schema as SC

RESOURCES = {
    "namespaces": {"group": "", "version": "v1", "kind": "Namespace", "namespaced": False},
    "services": {"group": "", "version": "v1", "kind": "Service", "namespaced": True},
    "configmaps": {"group": "", "version": "v1", "kind": "ConfigMap", "namespaced": True},
    "secrets": {"group": "", "version": "v1", "kind": "Secret", "namespaced": True},
    "pods": {"group": "", "version": "v1", "kind": "Pod", "namespaced": True},
    "deployments": {"group": "apps", "version": "v1", "kind": "Deployment", "namespaced": True},
    "replicasets": {"group": "apps", "version": "v1", "kind": "ReplicaSet", "namespaced": True},
    "jobs": {"group": "batch", "version": "v1", "kind": "Job", "namespaced": True},
}
# Resources whose spec changes bump metadata.generation.
GENERATION = {"deployments", "replicasets", "jobs"}

LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
             "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
             "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                 "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                 "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def qualified(plural):
    g = RESOURCES[plural]["group"]
    return plural + ("." + g if g else "")


def api_version(plural):
    r = RESOURCES[plural]
    return (r["group"] + "/" if r["group"] else "") + r["version"]


class DecodeError(Exception):
    """A body that does not decode into the Go type: 400 BadRequest."""


def type_check(obj, schema, S, kind, strict_unknown, path=""):
    """Returns the unknown fields; raises DecodeError on a type mismatch, as json decoding does."""
    unknown = []
    _check(obj, schema, S, kind, path, unknown)
    return unknown


GO_TYPES = {"integer": "int32", "string": "string", "boolean": "bool", "number": "float64"}


_INFO = {}


def _info(node, S):
    """What _check needs of a schema node, looked up once per node (kept with the node, so
    its id stays its own): (type, int-or-string, properties, additionalProperties, items)."""
    hit = _INFO.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    sch = S.resolve(node) if node else {}
    t = sch.get("type") or node.get("type") if node else None
    info = (t, bool(node and (node.get("x-kubernetes-int-or-string") or sch.get("x-kubernetes-int-or-string"))),
            sch.get("properties"), sch.get("additionalProperties"),
            (node.get("items") or sch.get("items") or {}) if node else {}, bool(sch or node))
    if node:
        _INFO[id(node)] = (node, info)
    return info


def _check(v, node, S, kind, path, unknown):
    t, int_or_string, props, add, items, known = _info(node, S)
    if v is None or not known:
        return
    if int_or_string:
        if not isinstance(v, (int, str)) or isinstance(v, bool):
            raise DecodeError(_decode_msg(kind, path, "IntOrString"))
        return
    if t == "integer" and (not isinstance(v, int) or isinstance(v, bool)):
        raise DecodeError(_decode_msg(kind, path, _go_type(v, "int32")))
    if t == "string" and not isinstance(v, str):
        raise DecodeError(_decode_msg(kind, path, _go_type(v, "string")))
    if t == "boolean" and not isinstance(v, bool):
        raise DecodeError(_decode_msg(kind, path, _go_type(v, "bool")))
    if t == "array":
        if not isinstance(v, list):
            raise DecodeError(_decode_msg(kind, path, _go_type(v, "array")))
        for i, item in enumerate(v):
            _check(item, items, S, kind, "%s[%d]" % (path, i), unknown)
        return
    if t == "object" or props:
        if not isinstance(v, dict):
            raise DecodeError(_decode_msg(kind, path, _go_type(v, "object")))
        for k, val in list(v.items()):
            sub = path + "." + k if path else k
            if props is not None and k in props:
                _check(val, props[k], S, kind, sub, unknown)
            elif isinstance(add, dict):
                _check(val, add, S, kind, sub, unknown)
            elif props is not None:
                unknown.append(sub)


def _go_type(v, want):
    if isinstance(v, bool):
        return "bool into Go value of type " + want
    if isinstance(v, (int, float)):
        return "number into Go value of type " + want
    if isinstance(v, str):
        return "string into Go value of type " + want
    if isinstance(v, list):
        return "array into Go value of type " + want
    return "object into Go value of type " + want


def _decode_msg(kind, path, what):
    return "json: cannot unmarshal %s (field %s)" % (what, path)


def drop_unknown(obj, unknown):
    for path in unknown:
        parts = re.split(r"\.(?![^\[]*\])", path)
        cur = obj
        for p in parts[:-1]:
            m = re.match(r"^(.*?)\[(\d+)\]$", p)
            if m:
                cur = cur.get(m.group(1), [])[int(m.group(2))]
            else:
                cur = cur.get(p, {})
        last = parts[-1]
        if isinstance(cur, dict):
            cur.pop(last, None)


# ---- defaults -------------------------------------------------------------------------------

def default_pod_spec(spec, restart="Always"):
    spec.setdefault("restartPolicy", restart)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        image = c.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def apply_defaults(plural, obj, state):
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    tmeta = spec.get("template", {}).get("metadata") if spec and isinstance(spec.get("template"), dict) else None
    if isinstance(tmeta, dict) and "creationTimestamp" in tmeta and tmeta["creationTimestamp"] is None:
        # Go clients send a zero time as null; decoded and encoded again it is omitted.
        del tmeta["creationTimestamp"]
    if plural == "deployments" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strat = spec.setdefault("strategy", {})
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
    elif plural == "jobs" and spec is not None:
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"], restart=None)
            if tmpl["spec"].get("restartPolicy") is None:
                tmpl["spec"].pop("restartPolicy")
    elif plural == "pods" and spec is not None:
        default_pod_spec(spec)
    elif plural == "services" and spec is not None:
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if "clusterIP" not in spec:
                spec["clusterIP"] = state.allocate_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
    elif plural == "namespaces":
        meta = obj.setdefault("metadata", {})
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name")
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
    elif plural == "secrets":
        import base64
        sd = obj.pop("stringData", None)
        if isinstance(sd, dict):
            data = obj.setdefault("data", {})
            for k, v in sd.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        obj.setdefault("type", "Opaque")


# ---- validation (422 causes) ----------------------------------------------------------------

def cause(reason, field, message):
    return {"reason": reason, "message": message, "field": field}


def _quote(v):
    import json
    return json.dumps(v)


def invalid(field, value, detail):
    return cause("FieldValueInvalid", field, "Invalid value: %s: %s" % (_quote(value), detail))


def required(field, detail=""):
    return cause("FieldValueRequired", field, "Required value" + (": " + detail if detail else ""))


def not_supported(field, value, allowed):
    return cause("FieldValueNotSupported", field,
                 "Unsupported value: %s: supported values: %s" % (_quote(value), ", ".join(allowed)))


def validate(plural, obj, old=None):
    causes = []
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    dns_label = plural in ("namespaces", "services")
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    elif dns_label and (len(name) > 63 or not LABEL_RE.match(name)):
        causes.append(invalid("metadata.name", name, LABEL_MSG))
    elif not dns_label and (len(name) > 253 or not SUBDOMAIN_RE.match(name)):
        causes.append(invalid("metadata.name", name, SUBDOMAIN_MSG))
    for k in (meta.get("labels") or {}):
        if not re.match(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", k):
            causes.append(invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.'"))
    spec = obj.get("spec") or {}
    if plural == "deployments":
        causes += _validate_deployment(spec)
    elif plural == "jobs":
        causes += _validate_job(spec, old)
    elif plural == "services":
        causes += _validate_service(spec, old)
    elif plural == "pods":
        causes += _validate_containers(spec.get("containers"), "spec.containers")
    elif plural == "configmaps":
        for k in list((obj.get("data") or {}).keys()) + list((obj.get("binaryData") or {}).keys()):
            if not re.match(r"^[-._a-zA-Z0-9]+$", k):
                causes.append(invalid("data", k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"))
    return causes


def _selector_matches(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _validate_deployment(spec):
    causes = []
    sel = spec.get("selector")
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if not sel:
        causes.append(required("spec.selector"))
    elif not sel.get("matchLabels") and not sel.get("matchExpressions"):
        causes.append(invalid("spec.selector", sel, "empty selector is invalid for deployment"))
    elif not _selector_matches(sel, labels):
        causes.append(invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    r = spec.get("replicas")
    if isinstance(r, int) and r < 0:
        causes.append(invalid("spec.replicas", r, "must be greater than or equal to 0"))
    pod = tmpl.get("spec") or {}
    causes += _validate_containers(pod.get("containers"), "spec.template.spec.containers")
    rp = pod.get("restartPolicy")
    if rp and rp != "Always":
        causes.append(not_supported("spec.template.spec.restartPolicy", rp, ['"Always"']))
    return causes


def _validate_job(spec, old):
    causes = []
    pod = (spec.get("template") or {}).get("spec") or {}
    causes += _validate_containers(pod.get("containers"), "spec.template.spec.containers")
    rp = pod.get("restartPolicy")
    if rp not in ("OnFailure", "Never"):
        if rp is None:
            causes.append(required("spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
        else:
            causes.append(not_supported("spec.template.spec.restartPolicy", rp, ['"OnFailure"', '"Never"']))
    for f in ("parallelism", "completions", "backoffLimit"):
        v = spec.get(f)
        if isinstance(v, int) and v < 0:
            causes.append(invalid("spec." + f, v, "must be greater than or equal to 0"))
    if old is not None:
        ospec = old.get("spec") or {}
        if ospec.get("template") != spec.get("template"):
            causes.append(invalid("spec.template", "core.PodTemplateSpec", "field is immutable"))
        if ospec.get("completions") != spec.get("completions"):
            causes.append(invalid("spec.completions", spec.get("completions"), "field is immutable"))
    return causes


def _validate_containers(containers, field):
    causes = []
    if not containers:
        return [required(field)]
    seen = set()
    for i, c in enumerate(containers):
        f = "%s[%d]" % (field, i)
        if not c.get("name"):
            causes.append(required(f + ".name"))
        elif c["name"] in seen:
            causes.append(cause("FieldValueDuplicate", f + ".name", "Duplicate value: " + _quote(c["name"])))
        elif not LABEL_RE.match(c["name"]):
            causes.append(invalid(f + ".name", c["name"], LABEL_MSG))
        seen.add(c.get("name"))
        if not c.get("image"):
            causes.append(required(f + ".image"))
        for j, p in enumerate(c.get("ports") or []):
            cp = p.get("containerPort")
            if not isinstance(cp, int) or not 0 < cp < 65536:
                causes.append(invalid("%s.ports[%d].containerPort" % (f, j), cp, "must be between 1 and 65535, inclusive"))
            if p.get("protocol") not in ("TCP", "UDP", "SCTP"):
                causes.append(not_supported("%s.ports[%d].protocol" % (f, j), p.get("protocol"), ["TCP", "UDP", "SCTP"]))
        for j, e in enumerate(c.get("env") or []):
            if not e.get("name"):
                causes.append(required("%s.env[%d].name" % (f, j)))
    return causes


def _validate_service(spec, old):
    causes = []
    typ = spec.get("type", "ClusterIP")
    if typ not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(not_supported("spec.type", typ, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    ports = spec.get("ports") or []
    if not ports and typ != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    names = set()
    for i, p in enumerate(ports):
        f = "spec.ports[%d]" % i
        if p.get("protocol") not in ("TCP", "UDP", "SCTP"):
            causes.append(not_supported(f + ".protocol", p.get("protocol"), ["TCP", "UDP", "SCTP"]))
        port = p.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            causes.append(invalid(f + ".port", port, "must be between 1 and 65535, inclusive"))
        if len(ports) > 1 and not p.get("name"):
            causes.append(required(f + ".name"))
        if p.get("name") in names:
            causes.append(cause("FieldValueDuplicate", f + ".name", "Duplicate value: " + _quote(p["name"])))
        names.add(p.get("name"))
    ip = spec.get("clusterIP")
    if ip not in (None, "", "None") and not re.match(r"^(\d{1,3}\.){3}\d{1,3}$", ip):
        causes.append(invalid("spec.clusterIP", ip, "must be empty, 'None', or a valid IP address"))
    if old is not None:
        oip = (old.get("spec") or {}).get("clusterIP")
        if oip and ip != oip:
            causes.append(invalid("spec.clusterIP", ip, "field is immutable"))
    return causes


def invalid_message(kind, group, name, causes):
    head = "%s%s %s is invalid: " % (kind, "." + group if group else "", _quote(name or ""))
    parts = ["%s: %s" % (c["field"], c["message"]) for c in causes]
    return head + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")


def strip_for_list(obj):
    """A list item: the object without kind and apiVersion (a shallow copy: the items are only
    written out, and stored objects are never changed in place)."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
