#!/bin/sh
# The scan benchmark: Trivy reports of 5 MB (what most users have: start-up and parse
# dominate) and ~100 MB (real fixture entries replicated) loaded, normalized, judged and
# exported as SARIF and CSV, by myrmex and by a straightforward Python implementation
# (baseline.py), with `jq -c .` over the same file as the floor for "just parse and print the
# JSON". Wall time by hyperfine, peak RSS by GNU time.
#
# usage: bench/scan/run.sh [BUILD_DIR] [SIZE_MB...]   (default sizes: 5 100; results in $OUT,
#        default /tmp/mx-bench-scan)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-$src/build}
[ $# -gt 0 ] && shift
sizes=${*:-5 100}
out=${OUT:-/tmp/mx-bench-scan}
mkdir -p "$out"
for size in $sizes; do
printf '\n== %s MB report\n' "$size"
report="$out/trivy-${size}mb.json"
[ -f "$report" ] || MYRMEX_FIXTURES="$src/tests/fixtures" python3 "$here/make_report.py" "$report" "$size"
bytes=$(stat -c %s "$report")

myrmex="$build/myrmex $here/pipeline.lua $report $out"
python="python3 $here/baseline.py $report $out"
jq="jq -c . $report"

hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$out/hyperfine-${size}mb.json" \
  --command-name myrmex "$myrmex" \
  --command-name python "$python" \
  --command-name "jq -c ." "$jq >/dev/null"

printf '\n%-8s %14s %10s\n' command "wall (mean±σ)" "CPU (u+s)"
jq -r '.results[] | [.command, .mean, .stddev, .user + .system] | @tsv' "$out/hyperfine-${size}mb.json" |
  while IFS="$(printf '\t')" read -r name mean sd cpu; do
    printf '%-8s %7.3f s ± %.3f %8.3f s\n' "$name" "$mean" "$sd" "$cpu"
  done
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"

rss() { /usr/bin/time -f %M sh -c "$1 >/dev/null" 2>&1 | tail -n 1; }
printf '\nreport: %s bytes\n' "$bytes"
for name in myrmex python jq; do
  eval "cmd=\$$name"
  kb=$(rss "$cmd")
  printf '%-7s peak RSS %7d KiB = %.2fx the report\n' "$name" "$kb" "$(echo "$kb * 1024 / $bytes" | bc -l)"
done
done
