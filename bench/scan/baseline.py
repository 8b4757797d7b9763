#!/usr/bin/python3
"""A straightforward Python implementation of the benchmarked steps, for comparison:
json.load the Trivy report, normalize each vulnerability into a dict, judge it against a
fail_on=HIGH policy with the default levels, group upgrade recommendations, and write SARIF
(json.dump) and CSV (csv module).

usage: baseline.py REPORT OUTDIR
"""
import csv
import json
import os
import sys

RANK = {"CRITICAL": 5, "HIGH": 4, "MEDIUM": 3, "LOW": 2, "UNKNOWN": 1}
LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note", "UNKNOWN": "note"}
FALLBACK = {"CRITICAL": "9.5", "HIGH": "8.0", "MEDIUM": "5.5", "LOW": "2.0", "UNKNOWN": "0.0"}
PREF = {"nvd": 1, "ghsa": 2, "redhat": 3}


def best_cvss(cvss, prefer):
    best = None
    for src, c in (cvss or {}).items():
        score = c.get("V3Score") or c.get("V40Score")
        modern = score is not None
        score = score if modern else c.get("V2Score")
        if score is None:
            continue
        key = (0 if modern else 1, 0 if src == prefer else PREF.get(src, 9), -score, src)
        if best is None or key < best[0]:
            vec = c.get("V3Vector") or c.get("V40Vector") if modern else c.get("V2Vector")
            best = (key, score, vec, src)
    return (None, None, None) if best is None else best[1:]


def normalize(doc):
    findings = []
    for res in doc.get("Results") or []:
        eco = "os" if res.get("Class") == "os-pkgs" else res.get("Type")
        for v in res.get("Vulnerabilities") or []:
            score, vector, source = best_cvss(v.get("CVSS"), v.get("SeveritySource"))
            fixed = v.get("FixedVersion") or None
            findings.append({
                "id": v["VulnerabilityID"], "aliases": v.get("VendorIDs") or [],
                "package": v.get("PkgName"), "type": eco, "pkg_type": res.get("Type"),
                "purl": (v.get("PkgIdentifier") or {}).get("PURL"),
                "installed_version": v.get("InstalledVersion"), "fixed_version": fixed,
                "fix_state": "fixed" if fixed else v.get("Status", "unknown"),
                "severity": v.get("Severity", "UNKNOWN").upper(),
                "cvss_score": score, "cvss_vector": vector, "cvss_source": source,
                "title": v.get("Title"), "description": v.get("Description"),
                "references": v.get("References") or [], "primary_url": v.get("PrimaryURL"),
                "target": res.get("Target"), "path": v.get("PkgPath"),
                "layer": (v.get("Layer") or {}).get("DiffID"), "scanner": "trivy",
            })
    return findings


def judge(findings, fail_on="HIGH"):
    counts = {s: 0 for s in RANK}
    for f in findings:
        counts[f["severity"]] += 1
    worst = max([RANK[f["severity"]] for f in findings] or [0])
    level = ("critical" if worst >= 5 else "non_compliant" if worst >= 4
             else "warning" if worst >= 3 else "compliant")
    passed = worst < RANK[fail_on]
    upgrades = {}
    for f in findings:
        if f["fixed_version"]:
            u = upgrades.setdefault((f["package"], f["installed_version"]), {"ids": [], "to": None})
            u["ids"].append(f["id"])
            u["to"] = max(u["to"] or "", f["fixed_version"].split(", ")[-1])
    return counts, level, passed, upgrades


def sarif(findings, image):
    rules, index, results = [], {}, []
    for f in findings:
        if f["id"] not in index:
            index[f["id"]] = len(rules)
            link = "[%s](%s)" % (f["id"], f["primary_url"])
            desc = f["description"] or f["title"] or f["id"]
            rules.append({
                "id": f["id"], "name": "OsPackageVulnerability",
                "shortDescription": {"text": f["title"] or f["id"]},
                "fullDescription": {"text": desc},
                "defaultConfiguration": {"level": LEVEL[f["severity"]]},
                "helpUri": f["primary_url"],
                "help": {"text": "Vulnerability %s\nSeverity: %s\nPackage: %s\nFixed Version: %s\nLink: %s\n%s"
                         % (f["id"], f["severity"], f["package"], f["fixed_version"], link, desc)},
                "properties": {"security-severity": "%.1f" % f["cvss_score"] if f["cvss_score"]
                               else FALLBACK[f["severity"]], "precision": "very-high",
                               "tags": ["vulnerability", "security", f["severity"]]},
            })
        results.append({
            "ruleId": f["id"], "ruleIndex": index[f["id"]], "level": LEVEL[f["severity"]],
            "message": {"text": "Package: %s\nInstalled Version: %s\nVulnerability %s\nSeverity: %s\nFixed Version: %s"
                        % (f["package"], f["installed_version"], f["id"], f["severity"], f["fixed_version"])},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": f["path"] or image, "uriBaseId": "ROOTPATH"},
                "region": {"startLine": 1, "startColumn": 1, "endLine": 1, "endColumn": 1}}}],
            "partialFingerprints": {"myrmexVulnerability/v1": "|".join(
                [f["id"], f["package"] or "", f["installed_version"] or "", f["path"] or f["target"] or ""])},
        })
    return {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "baseline", "rules": rules}},
                                          "results": results}]}


COLUMNS = ["id", "aliases", "severity", "cvss_score", "cvss_vector", "package", "type",
           "installed_version", "fixed_version", "fix_state", "purl", "title", "target", "path",
           "layer", "scanner", "references"]


def main():
    report, outdir = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "/tmp"
    with open(report, encoding="utf-8") as f:
        doc = json.load(f)
    findings = normalize(doc)
    del doc
    counts, level, passed, upgrades = judge(findings)
    with open(os.path.join(outdir, "baseline.sarif.json"), "w") as f:
        json.dump(sarif(findings, doc_image := report), f, indent=2)
    with open(os.path.join(outdir, "baseline.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for x in findings:
            row = dict(x, aliases=" ".join(x["aliases"]), references=" ".join(x["references"]),
                       cvss_score="%.1f" % x["cvss_score"] if x["cvss_score"] is not None else "")
            w.writerow([row.get(c) if row.get(c) is not None else "" for c in COLUMNS])
    print(len(findings), level, len(upgrades))


main()
