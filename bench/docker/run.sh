#!/usr/bin/env bash
# Docker benchmarks (issue 3), each one a single hyperfine run putting myrmex, Debian's
# python3-docker and the docker CLI (or curl) side by side, then the peak RSS of the myrmex
# runs from /usr/bin/time. Needs a running dockerd on /var/run/docker.sock.
#   1. process start + connect + ping
#   2. 1000 sequential container listings (10 stopped containers present)
#   3. create + start + wait + remove 100 busybox containers: sequential, and 8 at a time
# Usage: bench/docker/run.sh [build/myrmex] [ROUNDS_FOR_3] [ROUNDS_FOR_2]
#   PARTS="2 3" bench/docker/run.sh ...   runs only those benchmarks (default: 1 2 3)
# For 2 and 3 it also runs each command once more while reading the CPU time of dockerd and
# containerd from /proc (the per-container shims and runc are not included): the engine's
# share, which no client can go below.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build/myrmex}
RUNS3=${2:-3}
RUNS2=${3:-5}
B=bench/docker
PARTS=${PARTS:-1 2 3}
part() { [[ " $PARTS " == *" $1 "* ]]; }
command -v hyperfine >/dev/null || { echo "hyperfine missing: bash .ci/install-deps" >&2; exit 1; }
python3 -c 'import docker' || { echo "python3-docker missing: bash .ci/install-deps" >&2; exit 1; }
out=$(mktemp -d)
trap 'docker ps -aq --filter label=myrmex.bench=1 | xargs -r docker rm -f >/dev/null; rm -rf "$out"' EXIT

IMAGE=$(MYRMEX_LUA_PATH=lua "$BIN" -e 'package.path = "./?.lua;" .. package.path
  io.write(require("tests.support.docker").image())')
export DOCKER_API_VERSION
DOCKER_API_VERSION=$(docker version --format '{{.Server.APIVersion}}')
echo "image $IMAGE, engine API $DOCKER_API_VERSION, load $(cut -d' ' -f1-3 /proc/loadavg)"

if part 1; then
  echo "== 1. process start + ping"
  gcc -O2 $B/cping.c -o "$out/cping" -lcurl
  hyperfine -N --warmup 5 --runs 50 --export-json "$out/ping.json" \
    -n myrmex "$BIN $B/ping.lua" \
    -n python3-docker "python3 $B/ping.py" \
    -n "docker version" "docker version --format {{.Server.APIVersion}}" \
    -n "C + libcurl floor" "$out/cping"
fi

# The machine is shared: load drifts over minutes. Benchmarks 2 and 3 therefore run in rounds,
# each round timing every command once (hyperfine --runs 1), so drift hits all alike.
rounds() { # NAME ROUNDS -n name cmd ...
  local name=$1 n=$2
  shift 2
  for ((r = 1; r <= n; r++)); do
    hyperfine -N --runs 1 --style none --export-json "$out/$name.$r.json" "$@" >/dev/null
  done
}

# engine_cpu NAME CMD...: run CMD once, print the wall time and the CPU time (user + sys) that
# the client, dockerd and containerd used during it.
engine_cpu() {
  local name=$1 d c t0 t1 d0 d1 c0 c1
  shift
  d=$(pidof dockerd) c=$(pidof containerd)
  ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  d0=$(ticks "$d") c0=$(ticks "$c") t0=$(date +%s.%N)
  local client
  client=$(/usr/bin/time -f '%U %S' "$@" 2>&1 >/dev/null | tail -1)
  t1=$(date +%s.%N) d1=$(ticks "$d") c1=$(ticks "$c")
  awk -v n="$name" -v t0="$t0" -v t1="$t1" -v cl="$client" -v dd=$((d1 - d0)) -v cc=$((c1 - c0)) \
    -v hz="$(getconf CLK_TCK)" 'BEGIN { split(cl, u, " ");
      printf "| %s | %.2f s | %.2f s | %.2f s | %.2f s |\n", n, t1 - t0, u[1] + u[2], dd / hz, cc / hz }'
}

if part 2; then
  echo "== 2. 1000 sequential listings (${RUNS2} rounds)"
  for i in $(seq 10); do docker create --label myrmex.bench=1 --network none "$IMAGE" true >/dev/null; done
  rounds list "$RUNS2" \
    -n myrmex "$BIN $B/list.lua 1000" \
    -n python3-docker "python3 $B/list.py 1000" \
    -n "curl keep-alive" "bash $B/list-curl.sh 1000"
  echo "engine CPU, 1000 listings: | command | wall | client CPU | dockerd CPU | containerd CPU |"
  engine_cpu myrmex "$BIN" $B/list.lua 1000
  engine_cpu python3-docker python3 $B/list.py 1000
  engine_cpu "curl keep-alive" bash $B/list-curl.sh 1000
fi

if part 3; then
  echo "== 3. create+start+wait+remove 100 containers (${RUNS3} rounds)"
  rounds run "$RUNS3" \
    -n "myrmex sequential" "$BIN $B/run100.lua $IMAGE 100 1" \
    -n "myrmex parallel 8" "$BIN $B/run100.lua $IMAGE 100 8" \
    -n "python3-docker sequential" "python3 $B/run100.py $IMAGE 100" \
    -n "docker run --rm sequential" "bash $B/run100-cli.sh $IMAGE 100"
  echo "engine CPU, 100 containers: | command | wall | client CPU | dockerd CPU | containerd CPU |"
  engine_cpu "myrmex sequential" "$BIN" $B/run100.lua "$IMAGE" 100 1
  engine_cpu "myrmex parallel 8" "$BIN" $B/run100.lua "$IMAGE" 100 8
  engine_cpu "python3-docker sequential" python3 $B/run100.py "$IMAGE" 100
fi

echo "== peak RSS of the myrmex runs (KiB)"
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
if part 1; then echo "ping: $(rss "$BIN" $B/ping.lua)"; fi
if part 2; then echo "list 1000: $(rss "$BIN" $B/list.lua 1000)"; fi
if part 3; then
  echo "run 100 sequential: $(rss "$BIN" $B/run100.lua "$IMAGE" 100 1)"
  echo "run 100 parallel 8: $(rss "$BIN" $B/run100.lua "$IMAGE" 100 8)"
fi

python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
d = sys.argv[1]
def load(pattern):
    runs = {}
    for f in sorted(glob.glob(os.path.join(d, pattern))):
        for r in json.load(open(f))["results"]:
            e = runs.setdefault(r["command"], {"wall": [], "cpu": []})
            e["wall"] += r["times"]
            e["cpu"].append(r["user"] + r["system"])
    return runs
p, l, r = load("ping.json"), load("list.*.json"), load("run.*.json")
def row(bench, name, e, unit, ref):
    med, cpu = statistics.median(e["wall"]), statistics.median(e["cpu"])
    scale, u = (1000, "ms") if unit == "ms" else (1, "s")
    spread = f'{min(e["wall"])*scale:.{1 if u == "ms" else 2}f}–{max(e["wall"])*scale:.{1 if u == "ms" else 2}f}'
    print(f'| {bench} | {name} | {med*scale:.{1 if u == "ms" else 2}f} {u} ({spread}) | '
          f'{cpu*scale:.{1 if u == "ms" else 2}f} {u} | {ref(med)} |')
print("\n| benchmark | command | median wall (min–max) | median CPU | ratio |")
print("|---|---|---|---|---|")
if p:
    pm = statistics.median(p["myrmex"]["wall"])
    for k, e in p.items(): row("1. start + ping", k, e, "ms", lambda m: f"{m/pm:.1f}x myrmex")
if l:
    lm = statistics.median(l["myrmex"]["wall"])
    for k, e in l.items(): row("2. 1000 listings", k, e, "s", lambda m: f"{m/lm:.2f}x myrmex")
if r:
    base = statistics.median(r["python3-docker sequential"]["wall"])
    for k, e in r.items(): row("3. 100 containers", k, e, "s", lambda m: f"python seq / this = {base/m:.2f}")
PY
