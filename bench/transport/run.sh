#!/usr/bin/env bash
# The transport against the curl command line, both talking to Debian's docker-registry (a Go
# server, so the server is not the bottleneck) on 127.0.0.1, in one hyperfine run per scenario:
#   small    N GETs of /v2/ one after the other (curl: one process, URLs on its command line,
#            one kept-alive connection; myrmex: http.request in a loop)
#   parallel the same N GETs, 8 at once (curl -Z --parallel-max 8; myrmex.parallel.map max=8)
#   tls      the small scenario over HTTPS with a test CA made by openssl now
#   blob     one MIB-MiB random blob written to a file with its sha256 checked (curl | tee |
#            sha256sum; myrmex http.request{to_file=, digest=}), then curl -o alone (the floor);
#            peak RSS of each from GNU time.
# usage: bench/transport/run.sh [BUILD_DIR]     env: N (default 500), MIB (default 1024), RUNS
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
N=${N:-500}
MIB=${MIB:-1024}
RUNS=${RUNS:-10}
MX="$PWD/$BUILD/myrmex"
export MYRMEX_LUA_PATH="$PWD/lua"
for tool in hyperfine docker-registry curl openssl; do
  command -v "$tool" >/dev/null || { echo "$tool missing: bash .ci/install-deps" >&2; exit 1; }
done
W=$(mktemp -d /tmp/myrmex-bench-transport.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry NAME PORT [TLS-YAML]: one registry on 127.0.0.1:PORT, storage shared.
start_registry() {
  cat >"$W/$1.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/storage}}
http: {addr: "127.0.0.1:$2", secret: bench${3:+, tls: $3}}
CFG
  docker-registry serve "$W/$1.yml" >>"$W/$1.log" 2>&1 &
  PIDS+=($!)
}

wait_up() {
  for _ in $(seq 1 100); do curl -fs "$@" >/dev/null && return; sleep 0.05; done
  echo "registry did not start: $*" >&2; exit 1
}

bash tests/support/tlsgen.sh "$W/pki"
PORT=$(free_port)
TPORT=$(free_port)
start_registry plain "$PORT"
start_registry tls "$TPORT" "{certificate: $W/pki/server.pem, key: $W/pki/server.key}"
H=http://127.0.0.1:$PORT
TH=https://127.0.0.1:$TPORT
wait_up "$H/v2/"
wait_up --cacert "$W/pki/ca.pem" "$TH/v2/"

head -c "$((MIB << 20))" /dev/urandom >"$W/blob"
DIGEST=sha256:$(sha256sum "$W/blob" | cut -d' ' -f1)
loc=$(curl -fsS -X POST -D - -o /dev/null "$H/v2/bench/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location" {print $2}')
case $loc in http*) ;; *) loc=$H$loc ;; esac
sep='?'; case $loc in *\?*) sep='&' ;; esac
curl -fsS -H 'Content-Type: application/octet-stream' -T "$W/blob" \
  "$loc${sep}digest=$DIGEST" -o /dev/null
rm -f "$W/blob"
BLOB=$H/v2/bench/blobs/$DIGEST

# bench NAME RUNS hyperfine-args...: one hyperfine run, summarised as wall mean ± σ and the CPU
# time (user + sys) of each command; the load average is printed because the machine is shared.
bench() {
  local name=$1 runs=$2; shift 2
  echo "== $name (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  hyperfine -N --warmup 1 --runs "$runs" --style none --export-json "$W/$name.json" "$@" >/dev/null
  python3 - "$W/$name.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"  {r['command']:<34} wall {r['mean']*1000:9.1f} ms ± {r['stddev']*1000:7.1f}"
          f"   median {r['median']*1000:9.1f} ms   cpu {(r['user']+r['system'])*1000:8.1f} ms")
PY
}

bench small "$RUNS" -n "curl, $N URLs" "curl -sf $H/v2/?n=[1-$N]" \
  -n "myrmex, http.request x$N" "$MX bench/transport/get.lua $H/v2/ $N"

bench parallel "$RUNS" -n "curl -Z --parallel-max 8" "curl -sf -Z --parallel-max 8 $H/v2/?n=[1-$N]" \
  -n "myrmex, parallel.map max=8" "$MX bench/transport/get.lua $H/v2/ $N 8"

bench tls "$RUNS" -n "curl https, $N URLs" "curl -sf --cacert $W/pki/ca.pem $TH/v2/?n=[1-$N]" \
  -n "myrmex https x$N" "$MX bench/transport/get.lua $TH/v2/ $N 1 $W/pki/ca.pem"

bench blob "$(( RUNS < 5 ? RUNS : 5 ))" --prepare "rm -f $W/out" \
  -n "curl | tee | sha256sum" "sh -c 'curl -sf $BLOB | tee $W/out | sha256sum'" \
  -n "myrmex to_file+digest" "$MX bench/transport/blob.lua $BLOB $DIGEST $W/out" \
  -n "curl -o (no digest, floor)" "curl -sf -o $W/out $BLOB"

echo "== peak RSS (KiB, GNU time), blob"
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }
echo "curl -o:            $(rss curl -sf -o "$W/out" "$BLOB")"
echo "sha256sum of file:  $(rss sha256sum "$W/out")"
echo "myrmex:             $(rss "$MX" bench/transport/blob.lua "$BLOB" "$DIGEST" "$W/out")"
