#!/usr/bin/env bash
# ctest "testbed:versions": every engine and peer of the test bed answers its version command
# from /usr/local/lib/myrmex-test/bin with the version its go.mod pins.
set -uo pipefail
cd "$(dirname "$0")"
BIN=${MYRMEX_TEST_BIN:-/usr/local/lib/myrmex-test/bin}
# The version go.mod requires of module $2, in a require block or on a one-line require.
pin() { awk -v m="$2" '$1 == "require" { $1 = ""; $0 = $0 } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1/go.mod"; }
fail=0
check() { # check BINARY EXPECTED-SUBSTRING ARGS...
  local bin=$1 want=$2 out
  shift 2
  local rc=0
  out=$("$BIN/$bin" "$@" 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then
    echo "FAIL $bin $*: exit $rc: $out"; fail=1; return
  fi
  case $out in
  *"$want"*) echo "ok   $bin $want" ;;
  *) echo "FAIL $bin $*: wanted '$want' in: $(echo "$out" | head -3)"; fail=1 ;;
  esac
}
kv=$(pin kubernetes k8s.io/kubernetes)
for b in kube-apiserver kube-controller-manager kube-scheduler; do check "$b" "Kubernetes $kv" --version; done
ev=$(pin etcd go.etcd.io/etcd/server/v3)
check etcd "etcd Version: ${ev#v}" --version
check etcdctl "etcdctl version: ${ev#v}" version
check kwok "kwok version $(pin kwok sigs.k8s.io/kwok)" --version
tv=$(pin trivy github.com/aquasecurity/trivy)
check trivy "Version: ${tv#v}" --version
check trivy-db "trivy-db version" --version
check grype "$(pin grype github.com/anchore/grype | sed 's/^v//')" version
check crane "$(pin crane github.com/google/go-containerregistry)" version
check ggcr-registry "$(pin registry github.com/google/go-containerregistry)" -version
check kubelet-stub "k8s.io/kubelet $(pin kubelet k8s.io/kubelet)" -version
ov=$(pin oras oras.land/oras)
check oras "${ov#v}" version
check cosign "$(pin cosign github.com/sigstore/cosign/v2)" version
check dive "$(pin dive github.com/wagoodman/dive | sed 's/^v//')" --version
exit $fail
