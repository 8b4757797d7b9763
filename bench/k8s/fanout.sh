#!/usr/bin/env bash
# Issue 20: 64 items of a recipe that sleeps 1 s (examples/fan-out/square.lua): 64 sequential
# `myrmex run`s, the same items 8-wide through myrmex.parallel (`run --items`), and one
# Indexed Job of parallelism 8 on the test bed's control plane (bench/k8s/fanout.lua); then
# one item run by the Docker engine in the packed image, as a kubelet would start a pod.
# The test bed's nodes are kwok's: no process runs in a pod, so the cluster figure is the
# Job's own overhead (image reuse, Job start, scheduling, completion, result collection),
# not 64 seconds of sleeping spread over 8 pods.
# Usage: MYRMEX_CI_STATE=/tmp/myrmex-ci bench/k8s/fanout.sh [build/myrmex] [ITEMS] [PARALLELISM]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-build/myrmex}")
N=${2:-64}
P=${3:-8}
STATE=${MYRMEX_CI_STATE:-/tmp/myrmex-ci}
export KUBECONFIG=$STATE/kubeconfig
REG=$(cat "$STATE/registry")
out=$(mktemp -d)
tag=mxb-fanout/runner:$$
trap 'docker rmi -f "$tag" >/dev/null 2>&1; rm -rf "$out"' EXIT
now() { date +%s.%N; }
R=examples/fan-out/square.lua
echo "load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
"$BIN" -e "local t = {} for i = 1, $N do t[i] = {n = i, sleep = 1} end
  io.write(require('myrmex.json').encode(require('myrmex.json').array(t)))" >"$out/items.json"

t0=$(now)
for i in $(seq 1 "$N"); do "$BIN" run "$R" --set n="$i" --set sleep=1 --quiet >/dev/null; done
t1=$(now)
echo "sequential: $N runs: $(echo "$t1 - $t0" | bc) s"

t0=$(now)
"$BIN" run "$R" --items "$out/items.json" --parallelism "$P" --quiet >/dev/null
t1=$(now)
echo "local myrmex.parallel, $P wide: $(echo "$t1 - $t0" | bc) s"

"$BIN" bench/k8s/fanout.lua "$REG" "$N" "$P"

# One item in the packed image, started by the Docker engine as a kubelet would start the pod.
"$BIN" -e "require('myrmex.log').configure({level = 'warn'})
  io.write(require('myrmex.selfimage').ensure({recipe = '$R', tag = '$tag'}).recipe)" >"$out/recipe"
mkdir "$out/items"; cp "$out/items.json" "$out/items/items.json"; : >"$out/term"
t0=$(now)
docker run --rm --network none --label myrmex.bench=1 -e JOB_COMPLETION_INDEX=0 \
  -e MYRMEX_FANOUT_RECIPE="$(cat "$out/recipe")" -e MYRMEX_FANOUT_ITEMS=/etc/myrmex/fanout/items.json \
  -v "$out/items:/etc/myrmex/fanout:ro" -v "$out/term:/dev/termination-log" "$tag" \
  -e "os.exit(require('myrmex.k8s.fanout').pod_main())" 2>/dev/null
t1=$(now)
echo "one item (sleep 1 s) in the packed image under docker run: $(echo "$t1 - $t0" | bc) s; message $(cat "$out/term")"
