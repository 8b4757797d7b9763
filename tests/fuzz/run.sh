#!/usr/bin/env bash
# Build the libFuzzer harnesses with clang (ASan + UBSan) and run each target for a bounded
# time on seed corpora made from the test fixtures. Any crash, leak or oracle failure fails.
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
shift || true
FIX=${MYRMEX_FIXTURES:-../shared/fixtures}
BUILD=${MYRMEX_FUZZ_BUILD:-build-fuzz}
CC=clang cmake -B "$BUILD" -S . -DMYRMEX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(json yaml tar dockerignore dockerfile scan_report)
fi
cmake --build "$BUILD" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

seed() { # seed TARGET FILES...
  local dir="$work/corpus/$1"
  mkdir -p "$dir"
  shift
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$dir/" || true; done
}
seed json "$FIX"/scanners/*/*.json "$FIX"/kubernetes/samples/discovery/*.json
seed scan_report "$FIX"/scanners/*/*.json "$FIX"/sarif/trivy-alpine-310.sarif.json
seed yaml $(find "$FIX/kubernetes/samples" -name '*.yaml' | head -50)
mkdir -p "$work/corpus/tar" "$work/t/d"
echo hi >"$work/t/d/a.txt"; ln -s a.txt "$work/t/d/l"
tar -C "$work/t" -cf "$work/corpus/tar/plain.tar" d
tar -C "$work/t" -czf "$work/corpus/tar/gz.tar" d
seed dockerignore
printf '**/*.o\n!keep.o\nsrc/keep.o\n' >"$work/corpus/dockerignore/1"
printf '/build\n.git\nbuild/x\n' >"$work/corpus/dockerignore/2"
seed dockerfile $(find tests examples -name 'Dockerfile*' 2>/dev/null | head -50)
printf 'FROM scratch\nCOPY busybox /bin/\nRUN <<EOF\necho hi\nEOF\nCMD ["/bin/sh"]\n' >"$work/corpus/dockerfile/1"

status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  [ -d "tests/fuzz/regressions/$t" ] && cp tests/fuzz/regressions/$t/* "$work/corpus/$t/"
  echo "fuzz: $t for ${SECS}s"
  if ! "$BUILD/fuzz_$t" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 \
      -timeout=10 -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 \
      "$work/corpus/$t" 2>"$work/$t.log"; then
    echo "fuzz: $t FAILED; last lines:" >&2
    tail -n 40 "$work/$t.log" >&2
    mkdir -p "${MYRMEX_FUZZ_ARTIFACTS:-/tmp/myrmex-fuzz-artifacts}"
    cp -r "$work/artifacts/$t" "${MYRMEX_FUZZ_ARTIFACTS:-/tmp/myrmex-fuzz-artifacts}/" || true
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$work/$t.log" | tr '\n' ' '
    grep -E "cov: [0-9]+" "$work/$t.log" | tail -n 1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+).*/ \1/'
    echo
  fi
done
exit $status
