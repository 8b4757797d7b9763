#!/usr/bin/env bash
# Compressed pushes, pulls and copies of a realistic image: one FROM scratch layer holding a
# tar of this machine's /usr/lib/python3, /usr/lib/gcc and /usr/libexec (text, bytecode and
# binaries, about 250 MiB, compressible), built into the local engine, against Debian's
# docker-registry on 127.0.0.1 (plain HTTP).
#   push from the engine: myrmex (gzip, zstd), skopeo copy docker-daemon: -> docker://,
#     docker push, crane push (of `docker save`'s tar, the save included);
#   pull of the gzip image: myrmex (OCI layout), skopeo (oci:), crane pull --format oci;
#   copy registry -> registry: myrmex, skopeo, crane copy.
# Alternating: each round runs every client once, in the order above; ROUNDS rounds (3).
# Each push starts from an empty registry, each pull from an empty directory, each copy from
# an empty destination. Wall seconds (median, range), CPU (user+sys, median) and peak RSS
# (GNU time) of the client process; dockerd's own work in `docker push` is not the client's.
# Two floor rows: the engine's save stream alone (to /dev/null) and myrmex's push without
# compression.
# usage: bench/registry/compress.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MX="$PWD/$BUILD/myrmex"
CRANE=/usr/local/lib/myrmex-test/bin/crane
ROUNDS=${ROUNDS:-3}
W=$(mktemp -d /tmp/myrmex-bench-compress.XXXXXX)
export XDG_CACHE_HOME="$W/cache"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HOST=127.0.0.1:$(port)
HOST2=127.0.0.1:$(port)
LABEL="myrmex.bench.compress=$$"
IMG="mxbench-compress-$$:1"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  docker rmi -f "$IMG" "$HOST/dk/bench:1" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

for n in 1 2; do
  h=$HOST; [ $n = 2 ] && h=$HOST2
  cat >"$W/config$n.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/storage$n}, delete: {enabled: true}}
http: {addr: "$h", secret: bench}
CFG
done
declare -A REG_PID
start() { # start N: registry N with empty storage
  local n=$1 h=$HOST; [ "$n" = 2 ] && h=$HOST2
  if [ -n "${REG_PID[$n]:-}" ]; then kill "${REG_PID[$n]}"; wait "${REG_PID[$n]}" 2>/dev/null || true; fi
  rm -rf "$W/storage$n"
  docker-registry serve "$W/config$n.yml" >>"$W/registry.log" 2>&1 &
  REG_PID[$n]=$!
  PIDS+=("$!")
  for _ in $(seq 1 200); do curl -fs "http://$h/v2/" >/dev/null && return; sleep 0.05; done
  echo "registry $n did not start" >&2; exit 1
}

# The image: one layer, ADDed from a tar of real files (docker build, FROM scratch).
mkdir -p "$W/ctx"
# shellcheck disable=SC2086 # DIRS is a list
tar cf "$W/ctx/rootfs.tar" -C / ${DIRS:-usr/lib/python3 usr/lib/gcc usr/libexec} 2>/dev/null || true
printf 'FROM scratch\nADD rootfs.tar /\nLABEL %s\n' "$LABEL" >"$W/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$IMG" "$W/ctx" >/dev/null
docker tag "$IMG" "$HOST/dk/bench:1"
RAW=$(stat -c %s "$W/ctx/rootfs.tar")
rm -rf "$W/ctx"

declare -A T CPU RSS
run() { # run NAME PREP CMD...: one timed run, appended to NAME's samples
  local name=$1 prep=$2; shift 2
  "$prep"
  sync
  /usr/bin/time -f "%e %M %U %S" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { echo "$name failed:" >&2; cat "$W/err" >&2; exit 1; }
  read -r secs kib usr sys <"$W/time"
  T[$name]="${T[$name]:-} $secs"
  CPU[$name]="${CPU[$name]:-} $(echo "$usr + $sys" | bc -l)"
  [ "$kib" -gt "${RSS[$name]:-0}" ] && RSS[$name]=$kib
  true
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() {
  local name=$1 s
  s=$(echo "${T[$name]}" | tr ' ' '\n' | grep -v '^$' | sort -n)
  printf "| %-44s | %6.2f s | %s-%s s | %6.2f s | %6.1f MiB |\n" "$name" "$(echo "${T[$name]}" | median)" \
    "$(echo "$s" | head -1)" "$(echo "$s" | tail -1)" "$(echo "${CPU[$name]}" | median)" \
    "$(echo "${RSS[$name]} / 1024" | bc -l)"
}

# The compressed layer sizes each client pushed (first round), for the ratio line.
declare -A SIZE
size_of() { # size_of NAME REPO: the summed layer sizes of REPO:1 on registry 1
  SIZE[$1]=$(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$HOST/v2/$2/manifests/1" |
    python3 -c 'import json, sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))')
}
fresh() { start 1; }
fresh2() { start 2; }
nopull() { rm -rf "$W/pull"; }
have_crane=0; [ -x "$CRANE" ] && have_crane=1

PUSH=("myrmex push from the engine (gzip)" "myrmex push from the engine (zstd)"
  "skopeo copy docker-daemon: -> docker:// (gzip)" "docker push (gzip)")
[ $have_crane = 1 ] && PUSH+=("docker save | crane push (gzip)")
# Floors every engine client pays: the engine's save stream alone, read to /dev/null, and
# myrmex's push of it uncompressed.
FLOOR=("floor: engine save stream to /dev/null (curl)" "floor: myrmex push from the engine (none)")
nothing() { :; }
echo "image: $IMG, one layer of $RAW bytes uncompressed; load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)"
for r in $(seq 1 "$ROUNDS"); do
  run "${PUSH[0]}" fresh "$MX" bench/registry/push_engine.lua "$HOST" "$IMG" bench/mx:1 gzip
  [ "$r" = 1 ] && size_of "myrmex gzip" bench/mx
  run "${PUSH[1]}" fresh "$MX" bench/registry/push_engine.lua "$HOST" "$IMG" bench/mx:1 zstd
  [ "$r" = 1 ] && size_of "myrmex zstd" bench/mx
  run "${PUSH[2]}" fresh skopeo copy -q --dest-tls-verify=false "docker-daemon:$IMG" "docker://$HOST/sk/bench:1"
  [ "$r" = 1 ] && size_of "skopeo gzip" sk/bench
  run "${PUSH[3]}" fresh docker push -q "$HOST/dk/bench:1"
  [ "$r" = 1 ] && size_of "docker gzip" dk/bench
  run "${FLOOR[0]}" nothing curl -fsS --unix-socket /var/run/docker.sock -o /dev/null "http://d/images/$IMG/get"
  run "${FLOOR[1]}" fresh "$MX" bench/registry/push_engine.lua "$HOST" "$IMG" bench/none:1 none
  [ $have_crane = 1 ] && run "${PUSH[4]}" fresh sh -c "docker save -o '$W/save.tar' '$IMG' && '$CRANE' push --insecure '$W/save.tar' '$HOST/cr/bench:1'; rc=\$?; rm -f '$W/save.tar'; exit \$rc"
done
# The pull and copy source: the gzip image pushed once by myrmex.
start 1
GZ=$("$MX" bench/registry/push_engine.lua "$HOST" "$IMG" bench/src:1 gzip 2>&1 | sed -n 's/.*, \([0-9]*\) bytes.*/\1/p')
PULL=("myrmex pull (OCI layout)" "skopeo copy docker:// -> oci:" )
[ $have_crane = 1 ] && PULL+=("crane pull --format oci")
COPY=("myrmex copy registry -> registry" "skopeo copy docker:// -> docker://")
[ $have_crane = 1 ] && COPY+=("crane copy")
for r in $(seq 1 "$ROUNDS"); do
  run "${PULL[0]}" nopull "$MX" bench/registry/pull.lua "$HOST" bench/src:1 "$W/pull"
  run "${PULL[1]}" nopull skopeo copy -q --src-tls-verify=false "docker://$HOST/bench/src:1" "oci:$W/pull:x"
  [ $have_crane = 1 ] && run "${PULL[2]}" nopull "$CRANE" pull --insecure --format oci "$HOST/bench/src:1" "$W/pull"
  run "${COPY[0]}" fresh2 "$MX" bench/registry/copy.lua "$HOST/bench/src:1" "$HOST2/bench/copy:1"
  run "${COPY[1]}" fresh2 skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$HOST/bench/src:1" "docker://$HOST2/bench/copy:1"
  [ $have_crane = 1 ] && run "${COPY[2]}" fresh2 "$CRANE" copy --insecure "$HOST/bench/src:1" "$HOST2/bench/copy:1"
done
echo "gzip layer as myrmex pushes it: $GZ bytes ($(echo "scale=1; 100 * $GZ / $RAW" | bc)% of $RAW)"
for n in "myrmex gzip" "myrmex zstd" "skopeo gzip" "docker gzip"; do
  echo "layer bytes pushed, $n: ${SIZE[$n]} ($(echo "scale=2; 100 * ${SIZE[$n]} / $RAW" | bc)%)"
done
echo "| client | median | range | CPU (user+sys) | peak RSS |"
echo "|---|---|---|---|---|"
for n in "${PUSH[@]}" "${FLOOR[@]}" "${PULL[@]}" "${COPY[@]}"; do row "$n"; done
[ $have_crane = 1 ] || echo "(crane rows missing: $CRANE is not built)"
echo "load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)"
