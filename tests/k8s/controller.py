"""The fake controllers of the test API server (called under the state lock when a timer is due,
at least every 50 ms).

Deployments own ReplicaSets as the real controller keeps them: one per pod template, named
<deployment>-<pod-template-hash>, labelled with that hash, annotated with its revision
(`deployment.kubernetes.io/revision`, a template seen again takes the next revision and keeps
the old numbers in `revision-history`); the Deployment carries the revision of its current
ReplicaSet; old ones are scaled to 0 and pruned beyond `revisionHistoryLimit`. The hash is not
Kubernetes' FNV hash, only stable for equal templates, which is all clients rely on.
Deployments: after `delay` seconds the new generation is observed with replicas updated but
not ready; after another `delay` they are ready and available. Marked "fail": Progressing
turns False with ProgressDeadlineExceeded. Marked "stall": nothing is ever observed.
Jobs: pods appear after `delay`, finish after another `delay` (Complete, or Failed when
marked "fail"); each pod's log is what an `echo` command would print. Namespaces being
deleted lose their contents, then go; Foreground deletions wait for their dependents;
dependents of deleted owners are collected.
"""
import hashlib
import heapq
import json
import time
import uuid

import schema as SC


now = SC.now


def step(state):
    """Look at the objects that changed (state.pending, filled by every store and removal, as
    the real controllers' work queues are filled by their informers) and those whose timer is
    due (state.timers, a heap, as the work queues' delaying queue). A handler returns None when
    the object is settled, else the monotonic time to look again. Returns when the next timer
    is due."""
    t = time.monotonic()
    keys, state.pending = state.pending, set()
    while state.timers and state.timers[0][0] <= t:
        due, key = heapq.heappop(state.timers)
        if state.due.get(key) == due:
            keys.add(key)
    for key in sorted(keys):
        obj = state.objects.get(key)
        if obj is None:
            state.due.pop(key, None)
            continue
        if state.due.get(key, 0) > t:
            continue  # changed while its timer runs: the timer looks at it
        plural = key[0]
        again = None
        if obj["metadata"].get("deletionTimestamp"):
            finish_deletion(state, key, obj)
            again = t if key in state.objects else None
        elif plural == "deployments":
            again = deployment(state, key, obj, t)
        elif plural == "jobs":
            again = job(state, key, obj, t)
        if again is None:
            state.due.pop(key, None)
        else:
            state.due[key] = again
            heapq.heappush(state.timers, (again, key))
    if state.gc_needed:
        state.gc_needed = False
        collect_garbage(state)
    # What the handlers changed (their own writes) is looked at on the next step.
    while state.timers and state.due.get(state.timers[0][1]) != state.timers[0][0]:
        heapq.heappop(state.timers)
    if state.pending:
        return t
    return state.timers[0][0] if state.timers else t + 1


def write_status(state, key, obj, status):
    if obj.get("status") == status:
        return
    # A new top level and metadata suffice: stored objects are never changed in place.
    new = dict(obj, metadata=dict(obj["metadata"]), status=status)
    mf = [e for e in new["metadata"].get("managedFields") or []
          if not (e["manager"] == "kube-controller-manager" and e.get("subresource") == "status")]
    mf.append({"manager": "kube-controller-manager", "operation": "Update", "apiVersion": new["apiVersion"],
               "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {".": {}}},
               "subresource": "status"})
    new["metadata"]["managedFields"] = mf
    state.put(key[0], key[1], new)


def condition(ctype, status, reason, message):
    ts = now()
    return {"type": ctype, "status": status, "lastUpdateTime": ts, "lastTransitionTime": ts,
            "reason": reason, "message": message}


def deployment(state, key, d, t):
    """One look at a Deployment; returns None when nothing is left to do until it changes,
    else when to look again."""
    mark = state.marks.get(key)
    if mark == "stall":
        return None
    gen = d["metadata"].get("generation", 1)
    st = d.get("status") or {}
    changed = state.changed_at.get(key, 0)
    since = t - changed
    want = d["spec"].get("replicas", 1)
    rs = sync_replicasets(state, key, d, want)
    d = state.objects[key]
    if st.get("observedGeneration") != gen or st.get("replicas") != want:
        if since < state.delay:
            return changed + state.delay
        status = {"observedGeneration": gen, "replicas": want, "updatedReplicas": want,
                  "unavailableReplicas": want, "readyReplicas": 0, "availableReplicas": 0,
                  "conditions": [condition("Available", "False", "MinimumReplicasUnavailable",
                                           "Deployment does not have minimum availability."),
                                 condition("Progressing", "True", "ReplicaSetUpdated",
                                           'ReplicaSet "%s" is progressing.' % rs)]}
        if want == 0:
            status = ready_status(gen, want, rs)
        for k in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
            if status.get(k) == 0:
                status.pop(k)
        write_status(state, key, d, status)
        return changed + 2 * state.delay
    if since < 2 * state.delay:
        return changed + 2 * state.delay
    if mark == "fail":
        if any(c["reason"] == "ProgressDeadlineExceeded" for c in st.get("conditions", [])):
            return None
        conds = [c for c in st.get("conditions", []) if c["type"] != "Progressing"]
        conds.append(condition("Progressing", "False", "ProgressDeadlineExceeded",
                               'ReplicaSet "%s" has timed out progressing.' % rs))
        write_status(state, key, d, dict(st, conditions=conds))
        return None
    if st.get("availableReplicas", 0) != want or any(c["reason"] == "ReplicaSetUpdated" for c in st.get("conditions", [])):
        write_status(state, key, d, ready_status(gen, want, rs))
    return None


REV = "deployment.kubernetes.io/revision"
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API machinery's SafeEncodeString letters


def template_hash(tmpl):
    digest = hashlib.sha256(json.dumps(tmpl, sort_keys=True).encode()).digest()
    return "".join(HASH_ALPHABET[b % len(HASH_ALPHABET)] for b in digest[:10])


def owned_replicasets(state, ns, uid):
    objs = ((k, state.objects[k]) for k in sorted(state.owned.get(uid, ())) if k[0] == "replicasets" and k[1] == ns)
    return [(k, o) for k, o in objs
            if any(r.get("uid") == uid and r.get("controller") for r in o["metadata"].get("ownerReferences") or [])]


def sync_replicasets(state, key, d, want):
    """Make the ReplicaSet of d's current template the newest revision; returns its name."""
    # The real controller works from change events; a poller gets the same effect by skipping
    # Deployments whose spec (generation) and revision are as it left them, with their
    # ReplicaSet untouched since.
    seen = (d["metadata"]["uid"], d["metadata"].get("generation"), (d["metadata"].get("annotations") or {}).get(REV))
    done = state.rs_synced.get(key)
    if done and done[0] == seen and (state.objects.get(done[1]) or {}).get("metadata", {}).get("resourceVersion") == done[2]:
        return done[1][2]
    rs_name = _sync_replicasets(state, key, d, want)
    d = state.objects[key]
    rs_key = ("replicasets", key[1], rs_name)
    state.rs_synced[key] = ((d["metadata"]["uid"], d["metadata"].get("generation"), d["metadata"]["annotations"][REV]),
                            rs_key, state.objects[rs_key]["metadata"]["resourceVersion"])
    return rs_name


def _sync_replicasets(state, key, d, want):
    ns, name = key[1], key[2]
    h = template_hash(d["spec"]["template"])
    rs_name = "%s-%s" % (name, h)
    rs_key = ("replicasets", ns, rs_name)
    current = state.objects.get(rs_key)
    anns = (d["metadata"].get("annotations") or {})
    if current is not None and anns.get(REV) == (current["metadata"].get("annotations") or {}).get(REV) \
            and current["spec"].get("replicas") == want:
        return rs_name
    owned = owned_replicasets(state, ns, d["metadata"]["uid"])
    top = max([int((o["metadata"].get("annotations") or {}).get(REV, "0")) for _, o in owned] or [0])
    if current is None:
        current = new_replicaset(d, rs_name, h, top + 1)
    else:
        current = SC.jcopy(current)
        ra = current["metadata"].setdefault("annotations", {})
        if int(ra.get(REV, "0")) < top:
            ra["deployment.kubernetes.io/revision-history"] = ",".join(
                x for x in (ra.get("deployment.kubernetes.io/revision-history"), ra.get(REV)) if x)
            ra[REV] = str(top + 1)
    current["spec"]["replicas"] = want
    current["status"] = {"replicas": want, "observedGeneration": current["metadata"].get("generation", 1)}
    state.put("replicasets", ns, current)
    for k, o in owned:
        if k != rs_key and o["spec"].get("replicas"):
            old = SC.jcopy(o)
            old["spec"]["replicas"] = 0
            old["status"] = {"replicas": 0, "observedGeneration": old["metadata"].get("generation", 1)}
            state.put(k[0], k[1], old)
    prune_history(state, ns, d, rs_key)
    set_revision(state, key, d, current["metadata"]["annotations"][REV])
    return rs_name


def new_replicaset(d, rs_name, h, revision):
    # New dicts down to the labels; the rest is shared with the Deployment (stored objects are
    # never changed in place).
    src = d["spec"]["template"]
    tmeta = src.get("metadata") or {}
    tmpl = dict(src, metadata=dict(tmeta, labels=dict(tmeta.get("labels") or {}, **{"pod-template-hash": h})))
    src_sel = d["spec"].get("selector") or {}
    sel = dict(src_sel, matchLabels=dict(src_sel.get("matchLabels") or {}, **{"pod-template-hash": h}))
    anns = {REV: str(revision), "deployment.kubernetes.io/desired-replicas": str(d["spec"].get("replicas", 1))}
    cause = (d["metadata"].get("annotations") or {}).get("kubernetes.io/change-cause")
    if cause:
        anns["kubernetes.io/change-cause"] = cause
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": d["metadata"]["namespace"], "uid": str(uuid.uuid4()),
                         "generation": 1, "creationTimestamp": now(), "labels": dict(tmpl["metadata"]["labels"]),
                         "annotations": anns,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": d["metadata"]["name"], "uid": d["metadata"]["uid"],
                                              "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"replicas": 0, "selector": sel, "template": tmpl}}


def prune_history(state, ns, d, keep):
    limit = d["spec"].get("revisionHistoryLimit", 10)
    old = sorted(((int((o["metadata"].get("annotations") or {}).get(REV, "0")), k)
                  for k, o in owned_replicasets(state, ns, d["metadata"]["uid"])
                  if k != keep and not o["spec"].get("replicas")))
    for _, k in old[:max(0, len(old) - limit)]:
        state.remove(*k)


def set_revision(state, key, d, revision):
    """The controller's own Update of the Deployment's revision annotation (not a spec change)."""
    if (d["metadata"].get("annotations") or {}).get(REV) == revision:
        return
    new = dict(d, metadata=dict(d["metadata"]))
    new["metadata"]["annotations"] = dict(d["metadata"].get("annotations") or {}, **{REV: revision})
    mf = [e for e in new["metadata"].get("managedFields") or []
          if not (e["manager"] == "kube-controller-manager" and not e.get("subresource"))]
    mf.append({"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "time": now(),
               "fieldsType": "FieldsV1",
               "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:" + REV: {}}}}})
    new["metadata"]["managedFields"] = mf
    state.put(key[0], key[1], new)


def ready_status(gen, want, rs):
    s = {"observedGeneration": gen, "replicas": want, "updatedReplicas": want, "readyReplicas": want,
         "availableReplicas": want,
         "conditions": [condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                        condition("Progressing", "True", "NewReplicaSetAvailable",
                                  'ReplicaSet "%s" has successfully progressed.' % rs)]}
    if want == 0:
        for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
            s.pop(k)
    return s


def echo_output(container):
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if argv and argv[0].rsplit("/", 1)[-1] == "echo":
        return " ".join(argv[1:]) + "\n"
    if len(argv) == 3 and argv[0].rsplit("/", 1)[-1] == "sh" and argv[1] == "-c" and argv[2].startswith("echo "):
        return argv[2][5:] + "\n"
    return ""


def job(state, key, j, t):
    mark = state.marks.get(key)
    st = j.get("status") or {}
    if mark == "stall" or any(c["type"] in ("Complete", "Failed") for c in st.get("conditions", [])):
        return None
    changed = state.changed_at.get(key, 0)
    since = t - changed
    ns, name = key[1], j["metadata"]["name"]
    n = j["spec"].get("completions") or 1
    if "startTime" not in st:
        if since < state.delay:
            return changed + state.delay
        for i in range(n):
            make_pod(state, ns, j, i)
        write_status(state, key, j, {"startTime": now(), "active": min(n, j["spec"].get("parallelism", 1) or 1),
                                     "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}})
        return changed + 2 * state.delay
    if since < 2 * state.delay:
        return changed + 2 * state.delay
    failed = mark == "fail"
    for pk, pod in list(state.objects.items()):
        if pk[0] == "pods" and pk[1] == ns and (pod["metadata"].get("labels") or {}).get("job-name") == name:
            finish_pod(state, pk, pod, 1 if failed else 0)
    ts = now()
    if failed:
        conds = [condition("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                 condition("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]
        status = {"conditions": conds, "startTime": st["startTime"], "failed": n, "ready": 0, "terminating": 0,
                  "uncountedTerminatedPods": {}}
    else:
        conds = [condition("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
                 condition("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")]
        status = {"conditions": conds, "startTime": st["startTime"], "completionTime": ts, "succeeded": n,
                  "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}
    for c in conds:
        c["lastProbeTime"] = c.pop("lastUpdateTime")
    write_status(state, key, j, status)
    return None


def make_pod(state, ns, j, index):
    name = "%s-%s" % (j["metadata"]["name"], uuid.uuid4().hex[:5])
    tmpl = SC.jcopy(j["spec"]["template"])
    meta = tmpl.get("metadata") or {}
    meta.update({"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                 "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"],
                                      "uid": j["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]})
    if j["spec"].get("completionMode") == "Indexed":
        meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(index)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tmpl.get("spec", {}),
           "status": {"phase": "Running", "startTime": now()}}
    pod["spec"]["nodeName"] = "test-node"
    state.logs[(ns, name)] = "".join(echo_output(c) for c in pod["spec"].get("containers", []))
    state.put("pods", ns, pod, "ADDED")


def finish_pod(state, key, pod, code):
    if pod["status"].get("phase") in ("Succeeded", "Failed"):
        return
    new = SC.jcopy(pod)
    ts = now()
    new["status"] = {"phase": "Failed" if code else "Succeeded", "startTime": pod["status"].get("startTime"),
                     "containerStatuses": [{"name": c["name"], "image": c.get("image"), "ready": False, "imageID": "",
                                            "containerID": "containerd://" + uuid.uuid4().hex,
                                            "restartCount": 0, "started": False,
                                            "state": {"terminated": {"exitCode": code,
                                                                     "reason": "Error" if code else "Completed",
                                                                     "startedAt": pod["status"].get("startTime"),
                                                                     "finishedAt": ts}}}
                                           for c in pod["spec"].get("containers", [])]}
    state.put(key[0], key[1], new)


def finish_deletion(state, key, obj):
    plural, ns, name = key
    if plural == "namespaces":
        inside = [k for k in state.objects if k[0] != "namespaces" and k[1] == name]
        for k in inside:
            state.remove(*k)
        state.remove(plural, ns, name)
        return
    fins = obj["metadata"].get("finalizers") or []
    if fins == ["foregroundDeletion"]:
        uid = obj["metadata"]["uid"]
        if not any(uid == r.get("uid") for o in state.objects.values() for r in o["metadata"].get("ownerReferences") or []):
            state.remove(plural, ns, name)
        else:
            for k, o in list(state.objects.items()):
                if any(uid == r.get("uid") for r in o["metadata"].get("ownerReferences") or []):
                    state.remove(*k)


def collect_garbage(state):
    for k, o in list(state.objects.items()):
        refs = o["metadata"].get("ownerReferences") or []
        if refs and all(r.get("uid") not in state.uids for r in refs) and k in state.objects:
            state.remove(*k)
