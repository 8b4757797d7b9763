#!/usr/bin/python3
"""Python client (python3-kubernetes): server-side apply every manifest, watch until ready
(MYRMEX_BENCH_NO_WAIT=1: the apply alone)."""
import json
import os
import sys

import yaml
from kubernetes import client, config, watch

kc, d, ns = sys.argv[1:4]
api = config.new_client_from_config(config_file=kc)
apps = client.AppsV1Api(api)


def apply(path, obj):
    # python3-kubernetes 22.6 has no apply helper: PATCH with the apply content type by hand.
    api.call_api(path, "PATCH", query_params=[("fieldManager", "bench")], body=json.dumps(obj),
                 header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
                 auth_settings=["BearerToken"], response_type="object")


apply("/api/v1/namespaces/" + ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
names = set()
for f in sorted(os.listdir(d)):
    obj = yaml.safe_load(open(os.path.join(d, f)))
    apply("/apis/apps/v1/namespaces/%s/deployments/%s" % (ns, obj["metadata"]["name"]), obj)
    names.add(obj["metadata"]["name"])
if os.environ.get("MYRMEX_BENCH_NO_WAIT"):
    # The apply alone, as myrmex's and kubectl's apply-only rows (bench/k8s/real.sh).
    print("applied", len(names))
    sys.exit(0)
w = watch.Watch()
for ev in w.stream(apps.list_namespaced_deployment, ns,
                   timeout_seconds=int(os.environ.get("MYRMEX_BENCH_TIMEOUT", "120"))):
    o = ev["object"]
    s = o.status
    if o.metadata.generation <= (s.observed_generation or 0) and (s.available_replicas or 0) == o.spec.replicas \
            and (s.updated_replicas or 0) == o.spec.replicas:
        names.discard(o.metadata.name)
    if not names:
        w.stop()
if names:
    sys.exit("not ready: %d deployments" % len(names))
print("ready")
