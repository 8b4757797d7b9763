#!/usr/bin/env bash
# kubectl: server-side apply of the directory, then wait for every Deployment to be Available.
set -euo pipefail
kc=$1 dir=$2 ns=$3
export KUBECONFIG=$kc
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n' "$ns" | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -f "$dir" >/dev/null
kubectl wait -n "$ns" --for=condition=Available deployment --all --timeout=120s >/dev/null
