#!/usr/bin/env bash
# Issue 22: stdin through the hijacked exec connection. SIZE MiB of random bytes go into
# `cat` in a running busybox container and come back: myrmex's exec{stdin = {file=}} (output
# counted as it streams) against `docker exec -i` with the same file on its stdin. One
# hyperfine run, RUNS runs each, then myrmex's peak RSS.
# Usage: bench/docker/stdin.sh [build/myrmex] [SIZE_MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build/myrmex}
SIZE=${2:-256}
RUNS=${3:-5}
command -v hyperfine >/dev/null || { echo "hyperfine missing: bash .ci/install-deps" >&2; exit 1; }
out=$(mktemp -d)
name=mxb-stdin-$$
trap 'docker rm -f "$name" >/dev/null 2>&1; rm -rf "$out"' EXIT
IMAGE=$(MYRMEX_LUA_PATH=lua "$BIN" -e 'package.path = "./?.lua;" .. package.path
  io.write(require("tests.support.docker").image())')
docker run -d --name "$name" --label myrmex.bench=1 --network none "$IMAGE" sleep 3600 >/dev/null
head -c $((SIZE << 20)) /dev/urandom >"$out/in"
echo "image $IMAGE, $SIZE MiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine -N --warmup 1 --runs "$RUNS" \
  -n myrmex "$BIN bench/docker/stdin.lua $name $out/in" \
  -n "docker exec -i" "bash -c 'docker exec -i $name cat <$out/in >/dev/null'"
/usr/bin/time -f "myrmex peak RSS %M KiB" "$BIN" bench/docker/stdin.lua "$name" "$out/in"
