#!/usr/bin/python3
"""Writes a Trivy JSON report of about SIZE_MB (default 100) megabytes by replicating the
real vulnerability entries of the fixtures (webgoat, alpine, debian) over many targets.

usage: make_report.py OUT [SIZE_MB]
"""
import copy
import json
import os
import sys

FIX = os.environ.get("MYRMEX_FIXTURES",
                     os.path.join(os.path.dirname(__file__), "../../tests/fixtures"))
out_path = sys.argv[1]
size = int(float(sys.argv[2] if len(sys.argv) > 2 else 100) * 1024 * 1024)

base = json.load(open(os.path.join(FIX, "scanners/trivy/webgoat-ubuntu2004-jar.json")))
entries = []
for name in ("webgoat-ubuntu2004-jar.json", "alpine-310.json", "debian-buster.json"):
    doc = json.load(open(os.path.join(FIX, "scanners/trivy", name)))
    for res in doc["Results"]:
        for v in res.get("Vulnerabilities") or []:
            entries.append((res["Class"], res["Type"], v))

# entries sit 4 levels deep in the indented report: 8 more spaces on each of their lines
one = sum(len(json.dumps(v, indent=2)) + 8 * json.dumps(v, indent=2).count("\n")
          for _, _, v in entries)
copies = max(1, size // one)
results = []
for i in range(copies):
    for cls, typ, v in entries:
        target = "layer-%d (%s)" % (i, typ)
        if not results or results[-1]["Target"] != target:
            results.append({"Target": target, "Class": cls, "Type": typ, "Vulnerabilities": []})
        e = copy.copy(v)
        # a different installed version per copy, so merge/diff keys stay distinct
        e["InstalledVersion"] = "%s-%d" % (v.get("InstalledVersion", ""), i)
        results[-1]["Vulnerabilities"].append(e)
base["Results"] = results
with open(out_path, "w") as f:
    json.dump(base, f, indent=2)
print("%s: %d bytes, %d findings" % (out_path, os.path.getsize(out_path),
                                     copies * len(entries)))
