#!/bin/sh
# image.analyze against dive itself, side by side: the same 1 GiB, 20-layer saved image
# (gen.py: 500 files per layer, some overwritten and deleted by the next layer) analysed by
# `myrmex bench/image/analyze.lua IMG` and by `dive --source docker-archive IMG --json OUT`
# (the test bed's dive). Both read the tar from the page cache. Before timing, the two
# results are compared: efficiency, wasted bytes and the per-path inefficiencies must be
# equal, or the script stops. Wall time by hyperfine, CPU time and peak RSS by GNU time.
#
# usage: bench/image/dive.sh [BUILD_DIR] [SIZE_MB] [LAYERS] [FILES_PER_LAYER]
#        (image and results in $OUT, default /tmp/mx-bench-image; dive from $DIVE)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-$src/build}
size=${2:-1024}
layers=${3:-20}
files=${4:-500}
out=${OUT:-/tmp/mx-bench-image}
dive=${DIVE:-/usr/local/lib/myrmex-test/bin/dive}
mkdir -p "$out"
img="$out/img-${size}m-${layers}l-${files}f.tar"
[ -f "$img" ] || python3 "$here/gen.py" "$img" "$size" "$layers" "$files"
cat "$img" >/dev/null

# Same answers first: a faster wrong analysis is worth nothing.
"$dive" --source docker-archive "$img" --json "$out/dive.json" >/dev/null
"$build/myrmex" "$here/compare_dive.lua" "$img" "$out/dive.json"

myrmex="$build/myrmex $here/analyze.lua $img"
divecmd="$dive --source docker-archive $img --json $out/dive-run.json"
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$out/hyperfine-dive.json" \
  --command-name myrmex "$myrmex" \
  --command-name "dive --json" "$divecmd"

printf '\nimage: %s bytes, %s layers x %s files\n' "$(stat -c %s "$img")" "$layers" "$files"
for cmd in "$myrmex" "$divecmd"; do
  /usr/bin/time -v sh -c "exec $cmd >/dev/null" 2>"$out/time.txt"
  printf '%-60s user %ss sys %ss peak RSS %s KiB\n' "$(echo "$cmd" | sed "s|$out/||g; s|$src/||g")" \
    "$(sed -n 's/.*User time (seconds): //p' "$out/time.txt")" \
    "$(sed -n 's/.*System time (seconds): //p' "$out/time.txt")" \
    "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$out/time.txt")"
done
