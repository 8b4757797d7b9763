#!/usr/bin/env bash
# BuildKit builds (issue 16), myrmex beside the docker CLI's own BuildKit client (Debian's
# 20.10 /usr/bin/docker, DOCKER_BUILDKIT=1), same engine, runs interleaved:
#   cold   a multi-stage build of two independent 3 s stages, no cache
#   warm   a rebuild after one file of the context changed (the steps before it cached)
#   big    a first build of a context holding a 300 MiB file (a new directory each run, so
#          neither client's engine-side copy of it exists yet), then big2: the same build again.
#          The Dockerfile copies only a small file, and the engine asks for COPY sources only:
#          neither client sends the 300 MiB file.
#   bigcopy  a first build that does COPY the 300 MiB file (both clients send all of it; the
#          engine's layer commit dominates)
# Prints each run's wall seconds and client peak RSS (KiB, /usr/bin/time), then the medians.
# Usage: bench/docker/build.sh [build/myrmex] [RUNS]
#   PARTS="cold warm big bigcopy" (the default) picks the builds measured
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-build/myrmex}
RUNS=${2:-3}
PARTS=${PARTS:-cold warm big bigcopy}
part() { [[ " $PARTS " == *" $1 "* ]]; }
B=bench/docker
IMAGE=$(MYRMEX_LUA_PATH=lua "$BIN" -e 'package.path = "./?.lua;" .. package.path
  io.write(require("tests.support.docker").image())')
work=$(mktemp -d /tmp/mx-bench-build-XXXXXX)
trap 'docker images -q --filter label=myrmex.bench=1 | sort -u | xargs -r docker rmi -f >/dev/null 2>&1; rm -rf "$work"' EXIT
echo "image $IMAGE, $(docker version --format 'engine {{.Server.Version}} API {{.Server.APIVersion}}'), load $(cut -d' ' -f1-3 /proc/loadavg), myrmex $(git rev-parse --short HEAD)"

mkdir -p "$work/multi/src" "$work/big" "$work/bigcopy"
for i in $(seq 1 200); do echo "file $i" > "$work/multi/src/f$i.txt"; done
cat > "$work/multi/Dockerfile" <<DF
FROM $IMAGE AS left
RUN sleep 3 && echo left > /left
FROM $IMAGE AS right
RUN sleep 3 && echo right > /right
FROM $IMAGE
COPY --from=left /left /left
COPY --from=right /right /right
COPY src /src
RUN cat /src/*.txt | wc -l > /count
DF
printf 'FROM %s\nCOPY small /small\n' "$IMAGE" > "$work/big/Dockerfile"
echo s > "$work/big/small"
head -c 314572800 /dev/urandom > "$work/big/big.bin"
ln "$work/big/big.bin" "$work/bigcopy/big.bin"
printf 'FROM %s\nCOPY big.bin /big.bin\n' "$IMAGE" > "$work/bigcopy/Dockerfile"

declare -A T R
measure() { # name kind cmd...
  local name=$1 kind=$2; shift 2
  local tf="$work/time"
  /usr/bin/time -f "%e %M" -o "$tf" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs rss < "$tf"
  printf '%-6s %-7s %6.2f s %7d KiB\n' "$kind" "$name" "$secs" "$rss"
  T[$kind.$name]+="$secs "
  R[$kind.$name]+="$rss "
}
cli=(env DOCKER_BUILDKIT=1 /usr/bin/docker build -q --network=none --label myrmex.bench=1)

for run in $(seq 1 "$RUNS"); do
  if part cold; then
    measure cli cold "${cli[@]}" --no-cache -t mx-bench-build:cli "$work/multi"
    measure myrmex cold "$BIN" $B/build.lua "$work/multi" mx-bench-build:mx nocache
  fi
  if part warm; then
    echo "changed $run" >> "$work/multi/src/f1.txt"
    measure cli warm "${cli[@]}" -t mx-bench-build:cli "$work/multi"
    echo "changed again $run" >> "$work/multi/src/f2.txt"
    measure myrmex warm "$BIN" $B/build.lua "$work/multi" mx-bench-build:mx
  fi
  if part big; then
    cp -al "$work/big" "$work/big-cli-$run" && cp -al "$work/big" "$work/big-mx-$run"
    measure cli big "${cli[@]}" -t mx-bench-build:clibig "$work/big-cli-$run"
    measure myrmex big "$BIN" $B/build.lua "$work/big-mx-$run" mx-bench-build:mxbig
    measure cli big2 "${cli[@]}" -t mx-bench-build:clibig "$work/big-cli-$run"
    measure myrmex big2 "$BIN" $B/build.lua "$work/big-mx-$run" mx-bench-build:mxbig
  fi
  if part bigcopy; then
    cp -al "$work/bigcopy" "$work/bigcopy-cli-$run" && cp -al "$work/bigcopy" "$work/bigcopy-mx-$run"
    measure cli bigcopy "${cli[@]}" -t mx-bench-build:clicopy "$work/bigcopy-cli-$run"
    measure myrmex bigcopy "$BIN" $B/build.lua "$work/bigcopy-mx-$run" mx-bench-build:mxcopy
  fi
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "== medians of $RUNS runs: wall s (client peak RSS KiB)"
for kind in cold warm big big2 bigcopy; do
  [ -n "${T[$kind.cli]:-}" ] || continue
  c=$(echo "${T[$kind.cli]}" | median); m=$(echo "${T[$kind.myrmex]}" | median)
  cr=$(echo "${R[$kind.cli]}" | median); mr=$(echo "${R[$kind.myrmex]}" | median)
  printf '%-5s cli %6.2f (%6d)   myrmex %6.2f (%6d)   myrmex/cli %.2fx\n' "$kind" "$c" "$cr" "$m" "$mr" \
    "$(awk -v a="$m" -v b="$c" 'BEGIN {print a / b}')"
done
