#!/usr/bin/env bash
# Docker benchmarks (issue 3), each one a single hyperfine run putting myrmex, Debian's
# python3-docker and the docker CLI (or curl) side by side, then the peak RSS of the myrmex
# runs from /usr/bin/time. Needs a running dockerd on /var/run/docker.sock.
#   1. process start + connect + ping
#   2. 1000 sequential container listings (10 stopped containers present)
#   3. create + start + wait + remove 100 busybox containers: sequential, and 8 at a time
# Usage: bench/docker/run.sh [build/myrmex] [RUNS_FOR_3]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build/myrmex}
RUNS3=${2:-3}
B=bench/docker
command -v hyperfine >/dev/null || { echo "hyperfine missing: bash .ci/install-deps" >&2; exit 1; }
python3 -c 'import docker' || { echo "python3-docker missing: bash .ci/install-deps" >&2; exit 1; }
out=$(mktemp -d)
trap 'docker ps -aq --filter label=myrmex.bench=1 | xargs -r docker rm -f >/dev/null; rm -rf "$out"' EXIT

IMAGE=$(MYRMEX_LUA_PATH=lua "$BIN" -e 'package.path = "./?.lua;" .. package.path
  io.write(require("tests.support.docker").image())')
export DOCKER_API_VERSION
DOCKER_API_VERSION=$(docker version --format '{{.Server.APIVersion}}')
echo "image $IMAGE, engine API $DOCKER_API_VERSION, load $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== 1. process start + ping"
hyperfine -N --warmup 5 --runs 50 --export-json "$out/ping.json" \
  -n myrmex "$BIN $B/ping.lua" \
  -n python3-docker "python3 $B/ping.py" \
  -n "docker version" "docker version --format {{.Server.APIVersion}}"

echo "== 2. 1000 sequential listings"
for i in $(seq 10); do docker create --label myrmex.bench=1 --network none "$IMAGE" true >/dev/null; done
hyperfine -N --warmup 1 --runs 5 --export-json "$out/list.json" \
  -n myrmex "$BIN $B/list.lua 1000" \
  -n python3-docker "python3 $B/list.py 1000" \
  -n "curl keep-alive" "bash $B/list-curl.sh 1000"

echo "== 3. create+start+wait+remove 100 containers"
hyperfine -N --warmup 0 --runs "$RUNS3" --export-json "$out/run.json" \
  -n "myrmex sequential" "$BIN $B/run100.lua $IMAGE 100 1" \
  -n "myrmex parallel 8" "$BIN $B/run100.lua $IMAGE 100 8" \
  -n "python3-docker sequential" "python3 $B/run100.py $IMAGE 100" \
  -n "docker run --rm sequential" "bash $B/run100-cli.sh $IMAGE 100"

echo "== peak RSS of the myrmex runs (KiB)"
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
echo "ping: $(rss "$BIN" $B/ping.lua)"
echo "list 1000: $(rss "$BIN" $B/list.lua 1000)"
echo "run 100 sequential: $(rss "$BIN" $B/run100.lua "$IMAGE" 100 1)"
echo "run 100 parallel 8: $(rss "$BIN" $B/run100.lua "$IMAGE" 100 8)"

python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
def load(name):
    return {r["command"]: r for r in json.load(open(os.path.join(d, name)))["results"]}
p, l, r = load("ping.json"), load("list.json"), load("run.json")
def ms(x): return f'{x["mean"]*1000:.1f} ms ± {x["stddev"]*1000:.1f}'
def s(x): return f'{x["mean"]:.2f} s ± {x["stddev"]:.2f}'
print("\n| benchmark | command | mean ± σ | ratio |")
print("|---|---|---|---|")
for k in p: print(f'| 1. start + ping | {k} | {ms(p[k])} | {p[k]["mean"]/p["myrmex"]["mean"]:.1f}x myrmex |')
for k in l: print(f'| 2. 1000 listings | {k} | {s(l[k])} | {l[k]["mean"]/l["myrmex"]["mean"]:.2f}x myrmex |')
base = r["python3-docker sequential"]["mean"]
for k in r: print(f'| 3. 100 containers | {k} | {s(r[k])} | python seq / this = {base/r[k]["mean"]:.2f} |')
PY
