#!/usr/bin/env bash
# kubectl: server-side apply of the directory, then wait for every Deployment to be Available
# (KUBECTL_NO_WAIT=1: the apply alone).
set -euo pipefail
kc=$1 dir=$2 ns=$3
export KUBECONFIG=$kc
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n' "$ns" | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -f "$dir" >/dev/null
[ -n "${KUBECTL_NO_WAIT:-}" ] && exit 0 # the apply alone
kubectl wait -n "$ns" --for=condition=Available deployment --all --timeout=120s >/dev/null
