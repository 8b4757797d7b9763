#!/usr/bin/env bash
# Build the libFuzzer harnesses with clang (ASan + UBSan) and run each target for a bounded
# time on seed corpora made from the test fixtures. Any crash or oracle failure fails.
# libFuzzer's per-input leak check is off: Lua's garbage collector frees an input's memory during
# later inputs, so the check ran LeakSanitizer on nearly every input (60 times slower) without
# ever finding a leak. Leaks are checked by c:alloc_torture under valgrind and by the ASan pass
# replaying tests/fuzz/regressions (spec:fuzz_regressions).
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-20}
shift || true
FIX=${MYRMEX_FIXTURES:-tests/fixtures}
BUILD=${MYRMEX_FUZZ_BUILD:-build-fuzz}
CC=clang cmake -B "$BUILD" -S . -DMYRMEX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(json yaml tar dockerignore dockerfile scan_report scan_trivy scan_grype scan_sarif scan_scout
    reference challenges link demux jsonl kubeconfig image_tar)
fi
# Every fuzz binary lists the generated embedded.c as a source; building the host first makes
# it once, instead of several parallel jobs writing it at the same time.
cmake --build "$BUILD" -j"$(nproc)" --target myrmex >/dev/null
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
mkdir -p "$work/corpus/image_tar"
if command -v docker >/dev/null && docker image inspect myrmex-test/busybox:1 >/dev/null 2>&1; then
  docker save myrmex-test/busybox:1 -o "$work/corpus/image_tar/busybox.tar" 2>/dev/null || true
fi
cp "$work/corpus/tar/plain.tar" "$work/corpus/image_tar/" 2>/dev/null || true
seed kubeconfig $(find "$FIX/kubernetes/samples" -name '*kubeconfig*' 2>/dev/null | head -20)
printf 'apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: "bXlybWV4"}\ncontexts:\n- name: c\n  context: {cluster: k, user: u, namespace: ns}\nusers:\n- name: u\n  user: {token: "t", client-certificate: rel/c.pem}\n' >"$work/corpus/kubeconfig/1"
seed dockerfile $(find tests examples -name 'Dockerfile*' 2>/dev/null | head -50)
printf 'FROM scratch\nCOPY busybox /bin/\nRUN <<EOF\necho hi\nEOF\nCMD ["/bin/sh"]\n' >"$work/corpus/dockerfile/1"
seed scan_trivy "$FIX"/scanners/trivy/*.json
seed scan_grype "$FIX"/scanners/grype/*.json
seed scan_sarif "$FIX"/sarif/trivy-alpine-310.sarif.json "$FIX"/scanners/scout/*.json
seed scan_scout "$FIX"/scanners/scout/*.json
# one-line seeds: "TARGET<TAB>text" (printf escapes allowed in the text)
while IFS=$'\t' read -r t text; do
  seed "$t"
  printf "$text" >"$work/corpus/$t/$(printf '%s' "$text" | md5sum | cut -c1-12)"
done <<'SEEDS'
reference	busybox
reference	localhost:5000/a/b-c__d.e:v1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
reference	[::1]:5000/x/y:latest
reference	Docker.IO/library/alpine:3
challenges	Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull"
challenges	Basic realm="Registry Realm", Bearer realm="http://127.0.0.1/t", error="insufficient_scope"
challenges	Bearer realm="a\\"b", x=y,, Newauth
link	</v2/a/tags/list?last=t1&n=1>; rel="next"
link	<https://127.0.0.1:5000/v2/_catalog?n=2>;rel=next, </x>; rel="prev"
jsonl	{"status":"Pulling fs layer","id":"a"}\n{"status":"Downloading","progressDetail":{"current":1,"total":2}}\n
jsonl	{"stream":"Step 1/2 : FROM scratch\\n"}\n{"aux":{"ID":"sha256:ab"}}\n{"errorDetail":{"code":1,"message":"x"}}
demux	\001\000\000\000\000\000\000\005hello\002\000\000\000\000\000\000\003err
demux	\000\000\000\000\000\000\000\000\001\000\000\000\377\377\377\377x
SEEDS

status=0
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  [ -d "tests/fuzz/regressions/$t" ] && cp tests/fuzz/regressions/$t/* "$work/corpus/$t/"
  echo "fuzz: $t for ${SECS}s"
  if ! "$BUILD/fuzz_$t" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 \
      -timeout=10 -detect_leaks=0 -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 \
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
