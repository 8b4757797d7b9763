#!/bin/sh
# Instructions per stage of the scan pipeline (start-up, load, compliance, SARIF, CSV), on
# the C fast path and on the Lua readers and writer, counted by callgrind: repeatable on a
# shared machine, unlike times. Each stage is the difference between two runs of stages.lua.
#
# usage: bench/scan/stages.sh [BUILD_DIR] [SIZE_MB]   (default: build 5; files in $OUT,
#        default /tmp/mx-bench-scan)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-$src/build}
size=${2:-5}
out=${OUT:-/tmp/mx-bench-scan}
mkdir -p "$out"
report="$out/trivy-${size}mb.json"
[ -f "$report" ] || MYRMEX_FIXTURES="$src/tests/fixtures" python3 "$here/make_report.py" "$report" "$size"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$build/myrmex" "$here/stages.lua" \
    "$report" "$out" "$1" "$2" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-8s %14s %14s %8s\n' stage "Lua path" "C fast path" ratio
for fast in 0 1; do
  prev=0
  for upto in 0 1 2 3 4; do
    n=$(count "$fast" "$upto")
    eval "d_${fast}_${upto}=$((n - prev))"
    prev=$n
  done
  eval "t_${fast}=$prev"
done
for upto in 0 1 2 3 4; do
  name=$(echo "start-up load compliance SARIF CSV" | cut -d' ' -f$((upto + 1)))
  eval "a=\$d_0_${upto} b=\$d_1_${upto}"
  printf '%-8s %14d %14d %7.2fx\n' "$name" "$a" "$b" "$(awk "BEGIN { print $a / $b }")"
done
printf '%-8s %14d %14d %7.2fx\n' total "$t_0" "$t_1" "$(awk "BEGIN { print $t_0 / $t_1 }")"
