#!/usr/bin/env bash
# Apply 200 Deployment manifests server-side and wait until all are available, against
# tests/k8s/apiserver.py: myrmex vs kubectl vs the Python client. A fresh server per run.
# Usage: bench/k8s/run.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build} ROUNDS=${2:-3} N=200
work=$(mktemp -d /tmp/myrmex-bench-k8s-XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
python3=/usr/bin/python3
$python3 bench/k8s/make_manifests.py "$work/m" $N bench

cpu_of() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; } # user+sys of a live process

one() { # $1 = label, rest = command; prints: label wall-s client-cpu-s server-cpu-s
  local label=$1; shift
  $python3 tests/k8s/apiserver.py --delay 0.05 >"$work/port" 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 300); do grep -q READY "$work/port" && break; sleep 0.1; done
  local port; port=$(awk '{print $2}' "$work/port")
  [ -n "$port" ] || { echo "server did not start: $(cat "$work/server.log")" >&2; exit 1; }
  printf 'apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters: [{name: b, cluster: {server: "http://127.0.0.1:%s"}}]\ncontexts: [{name: b, context: {cluster: b, user: u}}]\nusers: [{name: u, user: {}}]\n' "$port" >"$work/kc"
  rm -rf "$work/home"; mkdir -p "$work/home"
  local t0 t1 s0 s1
  s0=$(cpu_of "$pid")
  t0=$(date +%s.%N)
  # client CPU: user+sys of the command and every process it waited for (kubectl's too)
  HOME="$work/home" /usr/bin/time -f "%U %S" -o "$work/cpu" "$@" "$work/kc" "$work/m" bench >/dev/null
  t1=$(date +%s.%N)
  s1=$(cpu_of "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
  echo "$label $(echo "$t1 - $t0" | bc) $(awk '{printf "%.2f", $1 + $2}' "$work/cpu") $(echo "$s1 - $s0" | bc)"
}


for r in $(seq "$ROUNDS"); do
  one myrmex "$BUILD/myrmex" bench/k8s/apply.lua  # as shipped: 8 at a time within a tier
  one myrmex-parallel4 env MYRMEX_BENCH_PARALLEL=4 "$BUILD/myrmex" bench/k8s/apply.lua
  one myrmex-sequential env MYRMEX_BENCH_PARALLEL=1 "$BUILD/myrmex" bench/k8s/apply.lua
  one kubectl bench/k8s/kubectl.sh
  one kubectl-apply-only env KUBECTL_NO_WAIT=1 bench/k8s/kubectl.sh
  one python $python3 bench/k8s/apply.py
done >"$work/results"  # not a pipeline: the loop stays in this shell, under its trap
cat "$work/results"
awk '{s[$1]+=$2; c[$1]+=$3; v[$1]+=$4; n[$1]++} END {for (k in s) printf "%-18s mean %.2f s wall, %.2f s client CPU, %.2f s server CPU over %d runs\n", k, s[k]/n[k], c[k]/n[k], v[k]/n[k], n[k]}' "$work/results"
