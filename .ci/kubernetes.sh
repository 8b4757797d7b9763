# Sourced by .ci/services: a real Kubernetes control plane on loopback for the tests.
#   etcd, kube-apiserver (TLS, client certificates, a static bearer token, RBAC, service-account
#   token signing, the default admission plugins), kube-controller-manager, kube-scheduler, and
#   kwok, which runs the lifecycle of pods on fake nodes (see tests/README.md for why kwok).
# Everything listens on 127.0.0.1 ports picked free at start; state and logs in $KSTATE.
# Written for the specs into $STATE ($MYRMEX_CI_STATE): kubeconfig (admin, CA/cert/key embedded),
# kube-token (a bearer token of user "tester", group myrmex-testers, bound to nothing: RBAC denies
# it until a spec grants), and registry (host:port of a registry on loopback the nodes pull from).

KBIN=${MYRMEX_TEST_BIN:-/usr/local/lib/myrmex-test/bin}
KSTATE="$STATE/kubernetes"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# kpki: a CA and the certificates every component needs, made with openssl.
kpki() {
  local d=$KSTATE/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=myrmex-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  # name CN O [SAN]
  kcert() {
    local name=$1 cn=$2 o=$3 san=${4:-} ext
    ext=$(mktemp)
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=digitalSignature,keyEncipherment"
      if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
      else echo "extendedKeyUsage=clientAuth"; fi; } >"$ext"
    local subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
    openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3 -extfile "$ext" -out "$d/$name.crt" 2>/dev/null
    rm -f "$ext" "$d/$name.csr"
  }
  kcert apiserver kube-apiserver "" "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  kcert admin kubernetes-admin system:masters
  kcert controller-manager system:kube-controller-manager ""
  kcert scheduler system:kube-scheduler ""
  kcert kwok kwok system:masters
  # kwok serves the kubelet API of its nodes (logs, exec) on 127.0.0.1.
  kcert kubelet kwok-kubelet "" "IP:127.0.0.1,DNS:localhost"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

# kkubeconfig NAME CERT: a kubeconfig with everything embedded (*-data), as kubeadm writes.
kkubeconfig() {
  local name=$1 cert=$2 d=$KSTATE/pki
  cat >"$KSTATE/$name" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: myrmex-test
  cluster:
    server: https://127.0.0.1:$(cat "$KSTATE/apiserver.port")
    certificate-authority-data: $(base64 -w0 "$d/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 "$d/$cert.crt")
    client-key-data: $(base64 -w0 "$d/$cert.key")
contexts:
- name: myrmex-test
  context:
    cluster: myrmex-test
    user: $cert
    namespace: default
current-context: myrmex-test
EOF
}

# kstart NAME ARGV...: start one component in the background, its pid and log in $KSTATE.
kstart() {
  local name=$1; shift
  nohup "$@" >"$KSTATE/$name.log" 2>&1 &
  echo $! >"$KSTATE/$name.pid"
}

# kwait WHAT SECONDS COMPONENT COMMAND...: until COMMAND succeeds; fails at once when the
# component (a name kstart started, or -) has exited.
kwait() {
  local what=$1 secs=$2 comp=$3 i
  shift 3
  for i in $(seq 1 $((secs * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ "$comp" != - ] && ! kill -0 "$(cat "$KSTATE/$comp.pid")" 2>/dev/null; then
      echo "services: $what exited; the end of $KSTATE/$comp.log:" >&2
      return 1
    fi
    sleep 0.25
  done
  echo "services: $what did not come up within $secs s" >&2
  return 1
}

kubernetes_running() {
  [ -f "$STATE/kubeconfig" ] && [ -f "$KSTATE/apiserver.pid" ] && kill -0 "$(cat "$KSTATE/apiserver.pid")" 2>/dev/null &&
    kubectl --kubeconfig "$STATE/kubeconfig" get --raw /readyz >/dev/null 2>&1
}

kubernetes_start() {
  local t0 c
  t0=$(date +%s)
  if kubernetes_running; then echo "services: kubernetes already running"; return 0; fi
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    [ -x "$KBIN/$c" ] || { echo "services: $KBIN/$c missing (run .ci/install-test-tools)" >&2; return 1; }
  done
  command -v kubectl >/dev/null || { echo "services: kubectl missing (run .ci/install-deps)" >&2; return 1; }
  rm -rf "$KSTATE"; mkdir -p "$KSTATE"
  kpki
  local etcd_port peer_port api_port reg_port kubelet_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); reg_port=$(free_port)
  kubelet_port=$(free_port)
  echo "$api_port" >"$KSTATE/apiserver.port"
  # Tests need no durability: no fsync keeps etcd off the disk's latency.
  kstart etcd "$KBIN/etcd" --name test --data-dir "$KSTATE/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" --listen-metrics-urls "" --log-level warn
  kwait etcd 30 etcd curl -fsS "http://127.0.0.1:$etcd_port/health" || { tail -n 20 "$KSTATE/etcd.log" >&2; return 1; }
  local token; token=$(openssl rand -hex 16)
  echo "$token" >"$STATE/kube-token"
  echo "$token,tester,tester-uid,myrmex-testers" >"$KSTATE/tokens.csv"
  local p=$KSTATE/pki
  echo "http://127.0.0.1:$etcd_port" >"$STATE/etcd-endpoint"
  # ConfigMaps are watched from etcd itself (no watch cache), so that a spec can compact etcd and
  # get the real 410 Gone for an old resourceVersion. The service range is only a setting: nothing listens there and no test sends to it (kwok
  # runs no proxy).
  kstart apiserver "$KBIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --token-auth-file "$KSTATE/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --kubelet-preferred-address-types InternalIP \
    --kubelet-client-certificate "$p/admin.crt" --kubelet-client-key "$p/admin.key" \
    --profiling=false --watch-cache-sizes configmaps#0 --v=1
  kkubeconfig kubeconfig admin
  kkubeconfig controller-manager.conf controller-manager
  kkubeconfig scheduler.conf scheduler
  kkubeconfig kwok.conf kwok
  kwait kube-apiserver 90 apiserver kubectl --kubeconfig "$KSTATE/kubeconfig" get --raw /readyz ||
    { tail -n 30 "$KSTATE/apiserver.log" >&2; return 1; }
  # The controllers' and the scheduler's client-side limits (20 requests/s by default) are
  # raised: on a test bed of its own the specs should wait for the controllers' work, not for
  # their throttle.
  kstart controller-manager "$KBIN/kube-controller-manager" --kubeconfig "$KSTATE/controller-manager.conf" \
    --authentication-kubeconfig "$KSTATE/controller-manager.conf" --authorization-kubeconfig "$KSTATE/controller-manager.conf" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --use-service-account-credentials=true \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route' --concurrent-deployment-syncs 10 \
    --concurrent-replicaset-syncs 10 --kube-api-qps 300 --kube-api-burst 600 --v=1
  kstart scheduler "$KBIN/kube-scheduler" --kubeconfig "$KSTATE/scheduler.conf" \
    --authentication-kubeconfig "$KSTATE/scheduler.conf" --authorization-kubeconfig "$KSTATE/scheduler.conf" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --kube-api-qps 300 --kube-api-burst 600 --v=1
  # No node lifecycle controller runs, so the nodes need no heartbeat to stay Ready.
  sed "s#@STATE@#$KSTATE#g" tests/k8s/kwok.yaml >"$KSTATE/kwok.yaml"
  : >"$KSTATE/pod.log"
  : >"$KSTATE/attach.log"
  kstart kwok "$KBIN/kwok" --kubeconfig "$KSTATE/kwok.conf" --config "$KSTATE/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-port "$kubelet_port" --cidr 127.16.0.0/16 \
    --server-address "127.0.0.1:$kubelet_port" --tls-cert-file "$p/kubelet.crt" --tls-private-key-file "$p/kubelet.key"
  kubernetes_nodes || return 1
  kubernetes_registry "$reg_port" || return 1
  cp "$KSTATE/kubeconfig" "$STATE/kubeconfig"
  echo "services: kubernetes ready in $(( $(date +%s) - t0 )) s (apiserver https://127.0.0.1:$api_port, kwok nodes, kubeconfig $STATE/kubeconfig)"
}

# Two fake nodes kwok keeps Ready; pods scheduled to them go Running (and Jobs' pods Succeeded).
kubernetes_nodes() {
  local n
  for n in kwok-node-0 kwok-node-1; do
    kubectl --kubeconfig "$KSTATE/kubeconfig" apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
  done
  kwait "kwok nodes" 60 kwok kubectl --kubeconfig "$KSTATE/kubeconfig" wait --for=condition=Ready node --all --timeout=1s ||
    { tail -n 30 "$KSTATE/kwok.log" >&2; return 1; }
  # The admission plugin taints new nodes not-ready; the node lifecycle controller, which would
  # lift that, does not run here (it would want kubelet heartbeats), so it is lifted once.
  kubectl --kubeconfig "$KSTATE/kubeconfig" taint nodes --all node.kubernetes.io/not-ready:NoSchedule- >/dev/null ||
    return 1
  # The default service account exists once the controller manager's token controller ran.
  kwait "default service account" 60 controller-manager kubectl --kubeconfig "$KSTATE/kubeconfig" get serviceaccount default -n default
}

# A registry on loopback for images the nodes pull (kwok nodes pull nothing; the address is
# what a recipe pushes to and puts in its pod specs).
kubernetes_registry() {
  local port=$1
  mkdir -p "$KSTATE/registry-data"
  cat >"$KSTATE/registry.yml" <<EOF
version: 0.1
storage: {filesystem: {rootdirectory: $KSTATE/registry-data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
log: {level: warn}
EOF
  kstart registry docker-registry serve "$KSTATE/registry.yml"
  kwait registry 20 registry curl -fsS "http://127.0.0.1:$port/v2/" || { tail -n 20 "$KSTATE/registry.log" >&2; return 1; }
  echo "127.0.0.1:$port" >"$STATE/registry"
}

kubernetes_stop() {
  local c pid
  for c in kwok scheduler controller-manager apiserver registry etcd; do
    [ -f "$KSTATE/$c.pid" ] || continue
    pid=$(cat "$KSTATE/$c.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$KSTATE/$c.pid"
  done
  rm -f "$STATE/kubeconfig" "$STATE/kube-token" "$STATE/registry" "$STATE/etcd-endpoint"
  [ -d "$KSTATE" ] && echo "services: kubernetes stopped"
  return 0
}
