#!/bin/sh
# Installs the JSON-schema validator the SARIF specs use (npm's ajv-cli with ajv-formats)
# into tests/support/node_modules, once. Prints the path of the ajv command.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin="$here/node_modules/.bin/ajv"
if [ ! -x "$bin" ] || [ ! -d "$here/node_modules/ajv-formats" ]; then
  npm install --silent --no-audit --no-fund --no-save --prefix "$here" \
    ajv-cli@5 ajv-formats@2 >&2
fi
echo "$bin"
