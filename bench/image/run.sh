#!/bin/sh
# The image benchmark: analysis of a 1 GiB, 20-layer saved image (gen.py: 500 files per
# layer, some overwritten and deleted by the next layer) by myrmex, against GNU tar listing
# the same file — `tar -tvf` as is (GNU tar seeks over member data in a regular file, so
# it reads only the headers) and `tar --no-seek -tvf` (reads every byte: the read floor).
# The file is read once first so every command runs from the page cache. Wall time by
# hyperfine, CPU time and peak RSS by GNU time.
#
# usage: bench/image/run.sh [BUILD_DIR] [SIZE_MB] [LAYERS] [FILES_PER_LAYER]
#        (image and results in $OUT, default /tmp/mx-bench-image)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${1:-$src/build}
size=${2:-1024}
layers=${3:-20}
files=${4:-500}
out=${OUT:-/tmp/mx-bench-image}
mkdir -p "$out"
img="$out/img-${size}m-${layers}l-${files}f.tar"
[ -f "$img" ] || python3 "$here/gen.py" "$img" "$size" "$layers" "$files"
cat "$img" >/dev/null

myrmex="$build/myrmex $here/analyze.lua $img"
hyperfine --warmup 1 --runs "${RUNS:-7}" --export-json "$out/hyperfine.json" \
  --command-name myrmex "$myrmex" \
  --command-name "tar --no-seek -tvf" "tar --no-seek -tvf $img" \
  --command-name "tar -tvf" "tar -tvf $img"

printf '\nimage: %s bytes, %s layers x %s files\n' "$(stat -c %s "$img")" "$layers" "$files"
$myrmex
for cmd in "$myrmex" "tar --no-seek -tvf $img"; do
  /usr/bin/time -v sh -c "exec $cmd >/dev/null" 2>"$out/time.txt"
  printf '%-60s user %ss sys %ss peak RSS %s KiB\n' "$(echo "$cmd" | sed "s|$out/||; s|$src/||g")" \
    "$(sed -n 's/.*User time (seconds): //p' "$out/time.txt")" \
    "$(sed -n 's/.*System time (seconds): //p' "$out/time.txt")" \
    "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$out/time.txt")"
done
