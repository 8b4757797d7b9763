#!/usr/bin/python3
"""Write N Deployment manifests (one file each) into DIR for namespace NS, each with REPLICAS
replicas (default 2)."""
import os
import sys

out, n, ns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
replicas = int(sys.argv[4]) if len(sys.argv) > 4 else 2
os.makedirs(out, exist_ok=True)
for i in range(n):
    with open(os.path.join(out, "d%03d.yaml" % i), "w") as f:
        f.write("""apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-%(i)03d
  namespace: %(ns)s
  labels: {app: app-%(i)03d, bench: "1"}
spec:
  replicas: %(replicas)d
  selector: {matchLabels: {app: app-%(i)03d}}
  template:
    metadata: {labels: {app: app-%(i)03d}}
    spec:
      containers:
      - name: app
        image: registry.local/app:%(i)d
        ports: [{containerPort: 8080}]
        env: [{name: INDEX, value: "%(i)d"}]
""" % {"i": i, "ns": ns, "replicas": replicas})
