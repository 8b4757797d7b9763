#!/usr/bin/env bash
# The docker CLI doing the same: `docker run --rm` N times sequentially.
image=$1
n=${2:-100}
for ((i = 0; i < n; i++)); do docker run --rm --network none "$image" true; done
