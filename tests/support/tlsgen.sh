#!/usr/bin/env bash
# Make a throw-away PKI for tests in DIR: ca.pem/ca.key, server.pem/server.key (for 127.0.0.1,
# localhost and myrmex.test), client.pem/client.key (CN=myrmex-client), and other-ca.pem
# (an unrelated CA, to check that verification refuses it).
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
q() { "$@" >/dev/null 2>&1; }
q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=myrmex test CA"
q openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj "/CN=another CA"
cat >server.ext <<EXT
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:myrmex.test
extendedKeyUsage=serverAuth
EXT
q openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
printf 'extendedKeyUsage=clientAuth\n' >client.ext
q openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=myrmex-client"
q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext
