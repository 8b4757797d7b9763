#!/usr/bin/env bash
# The floor: one curl process fetching GET /containers/json?all=1 N times over one kept-alive
# unix-socket connection (curl reuses the connection for every URL on its command line).
n=${1:-1000}
v=${DOCKER_API_VERSION:-1.41}
urls=()
for ((i = 0; i < n; i++)); do urls+=("http://docker/v$v/containers/json?all=1"); done
exec curl -sf --unix-socket /var/run/docker.sock "${urls[@]}" >/dev/null
