#!/usr/bin/env bash
# Apply 200 Deployments server-side and wait until all are Available, on the test bed's REAL
# control plane (kube-apiserver 1.34, controller manager, kwok nodes: .ci/services start
# kubernetes), side by side in one run: myrmex, kubectl 1.32 (apply --server-side + wait), the
# Python client, and the floor: the same 200 apply PATCHes sent by curl over kept-alive
# connections (`curl --parallel`, 8 at a time, like myrmex's default), without the wait.
# Apply-only rows (myrmex, python, kubectl) stop after the apply. myrmex-watch-from-apply waits
# without the list (bench/k8s/apply.lua, MYRMEX_BENCH_WATCH_FROM). Each row runs in a namespace
# of its own. kubectl runs with -v=3 so that its client-side
# throttling ("Waited for ... due to client-side throttling") can be summed and noted apart.
# Usage: bench/k8s/real.sh [BUILD_DIR] [ROUNDS]   (MYRMEX_KUBECONFIG: the admin kubeconfig;
# BENCH_REPLICAS: replicas per Deployment, default 1: the wait is the controllers' and kwok's
# work, the same for every client, and 400 pods take minutes on a loaded 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build} ROUNDS=${2:-1} N=${BENCH_N:-200} REPLICAS=${BENCH_REPLICAS:-1}
export MYRMEX_BENCH_TIMEOUT=${MYRMEX_BENCH_TIMEOUT:-900}
ADMIN=${MYRMEX_KUBECONFIG:-/tmp/myrmex-kube/kubeconfig}
APIPID=$(cat "$(dirname "$ADMIN")/kubernetes/apiserver.pid")
work=$(mktemp -d /tmp/myrmex-bench-k8s-real-XXXXXX)
trap 'for ns in $(cat "$work/namespaces" 2>/dev/null); do kubectl --kubeconfig "$ADMIN" delete ns "$ns" --wait=false >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
python3=/usr/bin/python3
cpu_of() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }

# The admin's TLS material as files, for curl.
"$BUILD/myrmex" -e '
local kc = require("myrmex.k8s.kubeconfig")
local s = kc.resolve(kc.load(arg[1]))
local function put(p, v) local f = assert(io.open(p, "wb")) f:write(v) f:close() end
put(arg[2] .. "/ca.pem", s.tls.ca_data) put(arg[2] .. "/cert.pem", s.tls.cert_data) put(arg[2] .. "/key.pem", s.tls.key_data)
print(s.server)' "$ADMIN" "$work" >"$work/server"
SERVER=$(cat "$work/server")

floor() { # curl: the 200 apply PATCHes, 8 at a time over kept-alive connections
  local kc=$1 dir=$2 ns=$3
  kubectl --kubeconfig "$kc" create namespace "$ns" >/dev/null
  : >"$work/curl.cfg"
  local sep=""
  for f in "$dir"/*.yaml; do
    local name; name=$(awk '/^  name:/ {print $2; exit}' "$f")
    # Per-transfer options hold for one URL group only ("next" starts the next one).
    printf '%surl = "%s/apis/apps/v1/namespaces/%s/deployments/%s?fieldManager=curl&force=true"\nrequest = "PATCH"\nheader = "Content-Type: application/apply-patch+yaml"\ndata-binary = "@%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\ncacert = "%s"\ncert = "%s"\nkey = "%s"\nsilent\n' \
      "$sep" "$SERVER" "$ns" "$name" "$f" "$work/ca.pem" "$work/cert.pem" "$work/key.pem" >>"$work/curl.cfg"
    sep=$'next\n'
  done
  curl --parallel --parallel-max 8 -K "$work/curl.cfg" >"$work/codes"
  [ "$(grep -c '^20[01]$' "$work/codes")" = "$N" ] || { echo "curl: not all applied: $(sort "$work/codes" | uniq -c)" >&2; exit 1; }
}

kubectl_row() { # kubectl.sh with -v=3, its throttling waits summed into $work/throttle
  local kc=$1 dir=$2 ns=$3
  export KUBECONFIG=$kc
  kubectl create namespace "$ns" >/dev/null
  kubectl -v=3 apply --server-side -f "$dir" >/dev/null 2>"$work/kubectl.log"
  if [ -z "${KUBECTL_NO_WAIT:-}" ]; then
    kubectl -v=3 wait -n "$ns" --for=condition=Available deployment --all --timeout=${MYRMEX_BENCH_TIMEOUT}s >/dev/null 2>>"$work/kubectl.log"
  fi
}

one() { # $1 = label, rest = command; prints: label wall client-cpu server-cpu [throttled]
  local label=$1; shift
  local ns; ns=bench-$label-$RANDOM$RANDOM
  echo "$ns" >>"$work/namespaces"
  rm -rf "$work/m"; $python3 bench/k8s/make_manifests.py "$work/m" $N "$ns" "$REPLICAS"
  local t0 t1 s0 s1
  : >"$work/kubectl.log"
  s0=$(cpu_of "$APIPID"); t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$work/cpu" "$@" "$ADMIN" "$work/m" "$ns" >/dev/null
  t1=$(date +%s.%N); s1=$(cpu_of "$APIPID")
  local thr; thr=$({ grep -o 'Waited for [0-9.]*[mµ]*s due to client-side throttling' "$work/kubectl.log" || true; } |
    awk '{v=$3; if (v ~ /ms$/) {sub(/ms$/,"",v); v/=1000} else if (v ~ /µs$/) {sub(/µs$/,"",v); v/=1e6} else sub(/s$/,"",v); t+=v} END {printf "%.2f", t}')
  echo "$label $(echo "$t1 - $t0" | bc) $(awk '{printf "%.2f", $1 + $2}' "$work/cpu") $(echo "$s1 - $s0" | bc) $thr"
  # Untimed: the next row starts once this namespace is gone, so that the controllers'
  # garbage collection of 200 Deployments and their pods does not run during the next row.
  kubectl --kubeconfig "$ADMIN" delete ns "$ns" --timeout=300s >/dev/null 2>&1 || true
}

export -f floor kubectl_row
export work N SERVER
echo "load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(kubectl --kubeconfig "$ADMIN" version -o json | $python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
for r in $(seq "$ROUNDS"); do
  one myrmex "$BUILD/myrmex" bench/k8s/apply.lua
  one myrmex-apply-only env MYRMEX_BENCH_NO_WAIT=1 "$BUILD/myrmex" bench/k8s/apply.lua
  one curl-floor bash -c 'floor "$@"' floor
  one myrmex-watch-from-apply env MYRMEX_BENCH_WATCH_FROM=namespace "$BUILD/myrmex" bench/k8s/apply.lua
  one python $python3 bench/k8s/apply.py
  one python-apply-only env MYRMEX_BENCH_NO_WAIT=1 $python3 bench/k8s/apply.py
  one kubectl bash -c 'kubectl_row "$@"' kubectl
  one kubectl-apply-only env KUBECTL_NO_WAIT=1 bash -c 'kubectl_row "$@"' kubectl
done >"$work/results"
cat "$work/results"
awk '{s[$1]+=$2; c[$1]+=$3; v[$1]+=$4; t[$1]+=$5; n[$1]++} END {for (k in s) printf "%-20s mean %.2f s wall, %.2f s client CPU, %.2f s server CPU, %.2f s throttled, over %d runs\n", k, s[k]/n[k], c[k]/n[k], v[k]/n[k], t[k]/n[k], n[k]}' "$work/results" | sort
