#!/usr/bin/env bash
# Start-up benchmark (issue 2): process start to the first line of a trivial recipe, against
# `python3 -c 'import docker'` (Debian's python3-docker), in the same hyperfine run; then the
# peak RSS of the trivial recipe from /usr/bin/time -v.
# Usage: bench/startup/run.sh [build/myrmex]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build/myrmex}
command -v hyperfine >/dev/null || { echo "hyperfine missing: bash .ci/install-deps" >&2; exit 1; }
out=$(mktemp -d)
hyperfine -N --warmup 20 --runs 300 --export-json "$out/startup.json" \
  -n "myrmex run trivial" "$BIN run bench/startup/trivial.lua" \
  -n "myrmex -e print" "$BIN -e print(1)" \
  -n "lua5.4 -e print" "lua5.4 -e print(1)" \
  -n "python3 -c 'import docker'" "python3 -c 'import docker'"
python3 - "$out/startup.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
m = r["myrmex run trivial"]["median"]; p = r["python3 -c 'import docker'"]["median"]
print(f"median myrmex run trivial: {m*1000:.2f} ms; python3 import docker: {p*1000:.1f} ms; ratio {p/m:.0f}x")
PY
for i in 1 2 3; do
  /usr/bin/time -v "$BIN" run bench/startup/trivial.lua 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print "peak RSS (KiB): " $2}'
done
rm -rf "$out"
