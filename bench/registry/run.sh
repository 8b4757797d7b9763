#!/usr/bin/env bash
# Push and pull of a FROM scratch image with two random uncompressed layers to a local
# docker-registry (plain HTTP on 127.0.0.1), side by side in one run:
#   myrmex (push from an OCI layout, pull into one), skopeo copy (same directions),
#   docker push / docker pull (the engine's own image store), and the floor
#   (sha256 of the bytes with OpenSSL + a loopback GET of the same blobs with curl).
# usage: bench/registry/run.sh [BUILD_DIR] [LAYER_MIB ...]   (default: build 256 1024)
# Each measurement starts from an empty registry storage. Results: wall seconds and peak RSS
# (GNU time) of the client process; dockerd's own memory is not the client's and is not shown.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
SIZES=("${@:-256 1024}")
[ "${#SIZES[@]}" -eq 1 ] && read -r -a SIZES <<<"${SIZES[0]}"
MX="$PWD/$BUILD/myrmex"
export MYRMEX_LUA_PATH="$PWD/lua"
W=$(mktemp -d /tmp/myrmex-bench-registry.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
PORT2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST2=127.0.0.1:$PORT2
REG_PID=
REG2_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  [ -n "$REG2_PID" ] && kill "$REG2_PID" 2>/dev/null || true
  docker rmi -f "$HOST/docker/bench:1" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

cat >"$W/config.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/storage}, delete: {enabled: true}}
http: {addr: "$HOST", secret: bench}
CFG

sed -e "s#$W/storage#$W/storage2#" -e "s#$HOST#$HOST2#" "$W/config.yml" >"$W/config2.yml"

# A second, empty registry: the destination of registry-to-registry copies.
start_registry2() {
  [ -n "$REG2_PID" ] && { kill "$REG2_PID"; wait "$REG2_PID" 2>/dev/null || true; }
  rm -rf "$W/storage2"
  docker-registry serve "$W/config2.yml" >>"$W/registry.log" 2>&1 &
  REG2_PID=$!
  for _ in $(seq 1 100); do curl -fs "http://$HOST2/v2/" >/dev/null && return; sleep 0.05; done
  echo "second registry did not start" >&2; exit 1
}

start_registry() {
  [ -n "$REG_PID" ] && { kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; }
  rm -rf "$W/storage"
  docker-registry serve "$W/config.yml" >>"$W/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 1 100); do curl -fs "http://$HOST/v2/" >/dev/null && return; sleep 0.05; done
  echo "registry did not start" >&2; exit 1
}

# timed NAME PREP CMD...: runs PREP (a shell function: fresh registry, empty destination)
# then CMD, REPS times; prints the median wall time, the min-max range, the median CPU time
# (user + sys of the client process and its children) and the largest RSS.
REPS=${REPS:-3}
timed() {
  local name=$1 prep=$2; shift 2
  local times=() cpus=() rss=0
  for _ in $(seq 1 "$REPS"); do
    "$prep"
    sync
    /usr/bin/time -f "%e %M %U %S" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
    read -r secs kib usr sys <"$W/time"
    times+=("$secs")
    cpus+=("$(echo "$usr + $sys" | bc -l)")
    [ "$kib" -gt "$rss" ] && rss=$kib
  done
  local sorted mid=$(( (REPS + 1) / 2 ))
  sorted=$(printf "%s\n" "${times[@]}" | sort -n)
  printf "| %-34s | %6.2f s | %s-%s s | %6.2f s | %6.1f MiB |\n" "$name" \
    "$(echo "$sorted" | sed -n "${mid}p")" "$(echo "$sorted" | head -1)" \
    "$(echo "$sorted" | tail -1)" "$(printf "%s\n" "${cpus[@]}" | sort -n | sed -n "${mid}p")" \
    "$(echo "$rss / 1024" | bc -l)"
}

fresh() { start_registry; }
fresh_pull() { rm -rf "$W/pull"; }
seeded() { start_registry; "$MX" bench/registry/push.lua "$HOST" "$W/img" bench/mx:1 2>/dev/null; rm -rf "$W/pull"; }
docker_fresh() { start_registry; }
fresh2() { start_registry2; }
docker_gone() { docker rmi -f "$HOST/docker/bench:1" >/dev/null 2>&1 || true; }

for MIB in "${SIZES[@]}"; do
  TOTAL=$((MIB * 2))
  echo "== image: 2 layers x $MIB MiB = $TOTAL MiB (uncompressed, random)"
  rm -rf "$W/img"
  "$MX" bench/registry/make_image.lua "$W/img" "$MIB" >/dev/null
  LAYERS=$(ls -S "$W/img/blobs/sha256" | head -2)

  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)"
  echo "| client | median | range | CPU (user+sys) | peak RSS |"
  echo "|---|---|---|---|---|"
  timed "myrmex push (OCI layout)" fresh "$MX" bench/registry/push.lua "$HOST" "$W/img" bench/mx:1
  timed "myrmex pull (OCI layout)" fresh_pull "$MX" bench/registry/pull.lua "$HOST" bench/mx:1 "$W/pull"
  timed "myrmex copy registry -> registry" fresh2 "$MX" bench/registry/copy.lua \
    "$HOST/bench/mx:1" "$HOST2/bench/copy:1"
  if [ "$MIB" -le 512 ]; then
    "$MX" bench/registry/pull.lua "$HOST" bench/mx:1 "$W/img.tar" docker-archive 2>/dev/null
    timed "myrmex push (docker-archive tar)" fresh "$MX" bench/registry/push.lua "$HOST" "$W/img.tar" bench/mx:1
    rm -f "$W/img.tar"
  fi

  # floor: hash the bytes at OpenSSL speed + one loopback GET of each blob, no hashing;
  # and what the registry itself needs to ingest the bytes (curl PUT of each blob).
  t0=$(date +%s.%N)
  for l in $LAYERS; do openssl dgst -sha256 "$W/img/blobs/sha256/$l" >/dev/null; done
  t1=$(date +%s.%N)
  for l in $LAYERS; do curl -fs -o /dev/null "http://$HOST/v2/bench/mx/blobs/sha256:$l"; done
  t2=$(date +%s.%N)
  for l in $LAYERS; do
    loc=$(curl -fs -i -X POST "http://$HOST/v2/bench/floor/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    curl -fs -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$W/img/blobs/sha256/$l" "$loc&digest=sha256:$l"
  done
  t3=$(date +%s.%N)
  printf "| %-34s | %6.2f s | sha256 %.2f s + loopback GET %.2f s | | |\n" "floor (hash + loopback copy)" \
    "$(echo "$t2 - $t0" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$t2 - $t1" | bc -l)"
  printf "| %-34s | %6.2f s | | | |\n" "registry ingest (curl PUT per blob)" "$(echo "$t3 - $t2" | bc -l)"

  if [ "$MIB" -le 512 ]; then
    timed "skopeo copy oci: -> docker://" fresh skopeo copy -q --dest-tls-verify=false \
      "oci:$W/img:bench" "docker://$HOST/bench/sk:1"
    timed "skopeo copy docker:// -> oci: (as is)" seeded skopeo copy -q --src-tls-verify=false \
      --dest-oci-accept-uncompressed-layers "docker://$HOST/bench/mx:1" "oci:$W/pull:bench"
    timed "skopeo copy docker:// -> docker://" fresh2 skopeo copy -q --src-tls-verify=false \
      --dest-tls-verify=false "docker://$HOST/bench/mx:1" "docker://$HOST2/bench/copy:1"
    timed "skopeo copy docker:// -> oci: (gzip)" seeded skopeo copy -q --src-tls-verify=false \
      "docker://$HOST/bench/mx:1" "oci:$W/pull:bench"

    # docker: load the image into the engine first (not timed), then push and pull.
    start_registry
    docker_gone
    "$MX" bench/registry/push.lua "$HOST" "$W/img" docker/bench:1 2>/dev/null
    "$MX" bench/registry/pull.lua "$HOST" docker/bench:1 "$W/seed.tar" docker-archive 2>/dev/null
    docker load -q -i "$W/seed.tar" >/dev/null
    rm -f "$W/seed.tar"
    timed "docker push" docker_fresh docker push -q "$HOST/docker/bench:1"
    timed "docker pull" docker_gone docker pull -q "$HOST/docker/bench:1"
    # From the engine's image store: `docker save` as the source (the engine's own cost).
    timed "docker save > /dev/null" true docker save "$HOST/docker/bench:1"
    timed "myrmex push (from the engine)" docker_fresh "$MX" bench/registry/push.lua "$HOST" \
      "$HOST/docker/bench:1" bench/engine:1
    docker_gone
  fi
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)"
  rm -rf "$W/pull"
done
