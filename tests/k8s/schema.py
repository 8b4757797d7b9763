"""OpenAPI-driven merge rules for the test API server.

The official OpenAPI v3 documents carry the list and map semantics that server-side apply
(x-kubernetes-list-type, -list-map-keys, -map-type) and strategic merge patch
(x-kubernetes-patch-strategy, -patch-merge-key) follow; this module walks them instead of
hard-coding which lists merge by which key.
"""
import json
import os
import time

def jcopy(v):
    """A deep copy of a JSON value (C-speed; copy.deepcopy dominated the server's time)."""
    if not isinstance(v, (dict, list)):
        return v
    return json.loads(json.dumps(v))


_NOW = [None, ""]


def now():
    """The API's timestamp text (seconds, UTC); formatted once per second."""
    t = int(time.time())
    if _NOW[0] != t:
        _NOW[:] = [t, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))]
    return _NOW[1]


FIXTURES = os.environ.get("K8S_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "kubernetes"))
DOCS = {
    "api/v1": "api__v1_openapi.json",
    "apis/apps/v1": "apis__apps__v1_openapi.json",
    "apis/batch/v1": "apis__batch__v1_openapi.json",
}


class Schemas:
    def __init__(self):
        self.schemas = {}
        self.by_gvk = {}
        self.raw = {}
        # Lookups by the identity of a schema node, kept with the node so its id stays its own.
        # Only nodes of the loaded documents are cached (they never change).
        self._resolved = {}
        self._children = {}
        for gv, fname in DOCS.items():
            path = os.path.join(FIXTURES, "openapi", fname)
            with open(path, "rb") as f:
                data = f.read()
            self.raw[gv] = data
            doc = json.loads(data)
            for name, sch in doc["components"]["schemas"].items():
                self.schemas.setdefault(name, sch)
                for gvk in sch.get("x-kubernetes-group-version-kind", []):
                    self.by_gvk[(gvk["group"], gvk["version"], gvk["kind"])] = name

    def resolve(self, node):
        """Follow $ref / single allOf to the schema that has the properties."""
        hit = self._resolved.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        found = self._resolve(node)
        if node and ("$ref" in node or "allOf" in node):
            self._resolved[id(node)] = (node, found)
        return found

    def _resolve(self, node):
        seen = 0
        while node and seen < 8:
            seen += 1
            if "$ref" in node:
                node = self.schemas[node["$ref"].rsplit("/", 1)[1]]
            elif "allOf" in node and len(node["allOf"]) == 1:
                node = node["allOf"][0]
            else:
                return node
        return node or {}

    def for_kind(self, group, version, kind):
        name = self.by_gvk.get((group, version, kind))
        return self.schemas[name] if name else {}

    def child(self, schema, key):
        """The property node (with its x-kubernetes-* extensions) and its resolved schema."""
        ck = (id(schema), key)
        hit = self._children.get(ck)
        if hit is not None and hit[0] is schema:
            return hit[1]
        found = self._child(schema, key)
        if schema and ("$ref" in schema or "allOf" in schema or "properties" in schema
                       or "additionalProperties" in schema):
            self._children[ck] = (schema, found)
        return found

    def _child(self, schema, key):
        schema = self.resolve(schema)
        props = schema.get("properties")
        if props and key in props:
            node = props[key]
            return node, self.resolve(node)
        add = schema.get("additionalProperties")
        if isinstance(add, dict):
            return add, self.resolve(add)
        return {}, {}

    def items(self, node):
        return self.resolve(node.get("items", {})) if node else {}


def list_type(node):
    if not node:
        return "atomic"
    lt = node.get("x-kubernetes-list-type")
    if lt:
        return lt
    if node.get("x-kubernetes-patch-merge-key"):
        return "map"
    return "atomic"


def map_keys(node):
    keys = node.get("x-kubernetes-list-map-keys")
    if keys:
        return keys
    k = node.get("x-kubernetes-patch-merge-key")
    return [k] if k else []


def item_key(item, keys, item_schema, S):
    """Key of a map-list item; key fields left out take their schema default (TCP)."""
    out = {}
    for k in keys:
        if isinstance(item, dict) and k in item:
            out[k] = item[k]
        else:
            node, _ = S.child(item_schema, k)
            if "default" in node and node["default"] not in ("", {}):
                out[k] = node["default"]
    return out


def key_string(key):
    return "k:" + json.dumps(key, separators=(",", ":"), sort_keys=True)


# ---- field sets (managedFields) -------------------------------------------------------------
# A field set is a Python set of path tuples; each element is "f:name", "k:{...}" or "v:json",
# and a trailing "." marks a list item owned as a whole.

IGNORED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                "generateName"}


def field_set(obj, schema, S, top=True):
    out = set()
    _walk(obj, schema, S, (), out, top)
    return out


def _walk(value, schema, S, prefix, out, top=False):
    if isinstance(value, dict):
        if not value and prefix:
            out.add(prefix)
            return
        for k, v in value.items():
            if top and k in ("apiVersion", "kind", "status"):
                continue
            if top and k == "metadata" and isinstance(v, dict):
                node, sch = S.child(schema, k)
                for mk, mv in v.items():
                    if mk in IGNORED_META:
                        continue
                    mnode, msch = S.child(sch, mk)
                    _field(mv, mnode, msch, S, prefix + ("f:metadata", "f:" + mk), out)
                continue
            node, sch = S.child(schema, k)
            _field(v, node, sch, S, prefix + ("f:" + k,), out)
    else:
        out.add(prefix)


def _field(v, node, sch, S, path, out):
    if isinstance(v, list):
        lt = list_type(node)
        if lt == "map" and v:
            isch = S.items(node)
            for item in v:
                p = path + (key_string(item_key(item, map_keys(node), isch, S)),)
                out.add(p + (".",))
                if isinstance(item, dict):
                    for ik, iv in item.items():
                        inode, ischild = S.child(isch, ik)
                        _field(iv, inode, ischild, S, p + ("f:" + ik,), out)
            return
        if lt == "set" and v:
            for item in v:
                out.add(path + ("v:" + json.dumps(item, separators=(",", ":")),))
            return
        out.add(path)
    elif isinstance(v, dict) and v and node.get("x-kubernetes-map-type") != "atomic":
        _walk(v, sch, S, path, out)
    else:
        out.add(path)


def to_fields_v1(fs):
    tree = {}
    for path in sorted(fs):
        node = tree
        for el in path:
            node = node.setdefault(el, {})
    return tree


def from_fields_v1(tree, prefix=()):
    out = set()
    for k, v in tree.items():
        p = prefix + (k,)
        if v:
            out |= from_fields_v1(v, p)
        else:
            out.add(p)
    return out


def path_text(path):
    """.spec.template.spec.containers[name="web"].image, the way conflicts name fields."""
    s = ""
    for el in path:
        if el == ".":
            continue
        if el.startswith("f:"):
            s += "." + el[2:]
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            s += "[" + ",".join("%s=%s" % (k, json.dumps(v)) for k, v in key.items()) + "]"
        elif el.startswith("v:"):
            s += "[=" + el[2:] + "]"
    return s


def get_path(obj, path, S=None, schema=None):
    """The value at a field-set path, or a sentinel MISSING."""
    cur = obj
    for el in path:
        if el == ".":
            return cur
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return MISSING
            cur = cur[el[2:]]
        elif el.startswith("k:"):
            key = json.loads(el[2:])
            if not isinstance(cur, list):
                return MISSING
            found = MISSING
            for item in cur:
                if isinstance(item, dict) and all(item.get(k, _dflt(k)) == v for k, v in key.items()):
                    found = item
                    break
            if found is MISSING:
                return MISSING
            cur = found
        elif el.startswith("v:"):
            val = json.loads(el[2:])
            if not isinstance(cur, list) or val not in cur:
                return MISSING
            cur = val
    return cur


def _dflt(k):
    return "TCP" if k == "protocol" else None


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()


def remove_path(obj, path):
    """Delete the field at path (used when an applier stops owning it)."""
    if not path:
        return
    parent = get_path(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if last == ".":
        if len(path) < 2:
            return
        container = get_path(obj, path[:-2]) if len(path) > 2 else obj
        key = path[-2]
        if isinstance(container, list) and key.startswith("k:"):
            kv = json.loads(key[2:])
            container[:] = [i for i in container
                            if not (isinstance(i, dict) and all(i.get(k, _dflt(k)) == v for k, v in kv.items()))]
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("v:") and isinstance(parent, list):
        val = json.loads(last[2:])
        parent[:] = [i for i in parent if i != val]


def prune_empty(obj, path):
    """After removals, drop maps left empty along path (apply removes what it emptied)."""
    for n in range(len(path) - 1, 0, -1):
        p = path[:n]
        if p[-1] == "." or not p[-1].startswith("f:"):
            continue
        v = get_path(obj, p)
        if v == {} or v == []:
            remove_path(obj, p)
        else:
            break


# ---- merging --------------------------------------------------------------------------------

def apply_merge(live, applied, schema, S, private=False):
    """Merge an applied configuration into the live object following the schema's list types.
    Neither input is changed: live is copied once, then merged into in place. With `private`,
    both belong to the caller alone: live is merged into and applied's values are taken as
    they are, no copies."""
    take = _same if private else jcopy
    if not isinstance(live, dict) or not isinstance(applied, dict):
        return take(applied)
    out = live if private else jcopy(live)
    _apply_into(out, applied, schema, S, take)
    return out


def _same(v):
    return v


def _apply_into(out, applied, schema, S, take):
    """apply_merge on `out`, a private copy: changed in place, applied values `take`n."""
    for k, v in applied.items():
        node, sch = S.child(schema, k)
        cur = out.get(k)
        if isinstance(v, dict) and isinstance(cur, dict) and node.get("x-kubernetes-map-type") != "atomic":
            _apply_into(cur, v, sch, S, take)
        elif isinstance(v, list) and isinstance(cur, list) and list_type(node) == "map":
            keys, isch = map_keys(node), S.items(node)
            for item in v:
                key = item_key(item, keys, isch, S)
                for idx, c in enumerate(cur):
                    if item_key(c, keys, isch, S) == key:
                        if isinstance(c, dict) and isinstance(item, dict):
                            _apply_into(c, item, isch, S, take)
                        else:
                            cur[idx] = take(item)
                        break
                else:
                    cur.append(take(item))
        elif isinstance(v, list) and isinstance(cur, list) and list_type(node) == "set":
            out[k] = cur + [take(i) for i in v if i not in cur]
        else:
            out[k] = take(v)


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return jcopy(patch)
    out = jcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge(target, patch, schema, S):
    """Strategic merge patch for built-in types: merge-key lists, $patch directives."""
    if not isinstance(patch, dict):
        return jcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = jcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k == "$patch" or k.startswith("$setElementOrder/") or k == "$retainKeys":
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            if isinstance(out.get(name), list):
                out[name] = [i for i in out[name] if i not in v]
            continue
        node, sch = S.child(schema, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and node.get("x-kubernetes-patch-strategy", "").startswith("merge"):
            out[k] = _smp_list(out.get(k) or [], v, node, S)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v, sch, S)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = jcopy(v)
    return out


def _smp_list(live, patch, node, S):
    key = node.get("x-kubernetes-patch-merge-key")
    if not key:
        return live + [i for i in patch if i not in live]
    isch = S.items(node)
    result = [jcopy(i) for i in live]
    for item in patch:
        if not isinstance(item, dict):
            continue
        if item.get("$patch") == "replace":
            return [i for i in patch if not (isinstance(i, dict) and i.get("$patch"))]
        kv = item.get(key)
        idx = next((n for n, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == kv), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(jcopy(item))
        else:
            result[idx] = strategic_merge(result[idx], item, isch, S)
    return result


class PatchError(Exception):
    pass


def json_patch(doc, ops):
    """RFC 6902."""
    doc = jcopy(doc)
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    for op in ops:
        kind = op.get("op")
        if kind in ("add", "replace", "test"):
            doc = _jp_set(doc, _ptr(op.get("path")), op.get("value"), kind)
        elif kind == "remove":
            doc = _jp_remove(doc, _ptr(op.get("path")))
        elif kind in ("move", "copy"):
            val = _jp_get(doc, _ptr(op.get("from")))
            if kind == "move":
                doc = _jp_remove(doc, _ptr(op.get("from")))
            doc = _jp_set(doc, _ptr(op.get("path")), jcopy(val), "add")
        else:
            raise PatchError("Unexpected kind: %s" % kind)
    return doc


def _ptr(p):
    if p is None:
        raise PatchError("missing path")
    if p == "":
        return []
    return [s.replace("~1", "/").replace("~0", "~") for s in p.split("/")[1:]]


def _jp_get(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, list):
            cur = cur[int(p)]
        elif isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            raise PatchError("doc is missing path: /" + "/".join(parts))
    return cur


def _jp_set(doc, parts, value, kind):
    if not parts:
        if kind == "test":
            if doc != value:
                raise PatchError("testing value failed")
            return doc
        return jcopy(value)
    parent = _jp_get(doc, parts[:-1])
    last = parts[-1]
    if kind == "test":
        if _jp_get(doc, parts) != value:
            raise PatchError("testing value /%s failed" % "/".join(parts))
    elif isinstance(parent, list):
        if last == "-":
            parent.append(jcopy(value))
        elif kind == "add":
            parent.insert(int(last), jcopy(value))
        else:
            parent[int(last)] = jcopy(value)
    elif isinstance(parent, dict):
        if kind == "replace" and last not in parent:
            raise PatchError("replace operation does not apply: doc is missing key: /" + "/".join(parts))
        parent[last] = jcopy(value)
    else:
        raise PatchError("doc is missing path: /" + "/".join(parts))
    return doc


def _jp_remove(doc, parts):
    parent = _jp_get(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            parent.pop(int(last))
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError):
        raise PatchError("Unable to remove nonexistent key: %s: missing value" % last)
    return doc
