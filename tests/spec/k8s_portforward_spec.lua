-- needs: k8s
-- port_forward through the real API server to a node's kubelet API. The test bed's kwok
-- serves no port-forwards, so this spec runs a kwok of its own for one node of its own
-- (--manage-single-node), whose ClusterPortForward sends the pod's port 8080 to a TCP echo
-- server on this machine (tests/k8s/echo.py): bytes go client -> myrmex's listener ->
-- WebSocket (v4.channel.k8s.io) -> kube-apiserver -> kwok -> echo server, and back; also through a
-- CONNECT proxy (tests/k8s/connect_proxy.py) named by the kubeconfig's proxy-url.
local K = require("tests.k8s.support")
local T = require("tests.k8s.target")
local k8s = require("myrmex.k8s")
local errors = require("myrmex.errors")
local http = require("myrmex.http")
local json = require("myrmex.json")
local server = require("tests.support.server")
local sh = require("tests.support.sh")

local KWOK = (os.getenv("MYRMEX_TEST_BIN") or "/usr/local/lib/myrmex-test/bin") .. "/kwok"

local function write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
  return p
end

local function free_port()
  return tonumber(sh.run({ "/usr/bin/python3", "-c",
    "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" }).stdout)
end

-- One request/answer over a plain TCP connection to 127.0.0.1:port, through bash's /dev/tcp.
local function talk(port, line)
  return sh.run({ "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/" .. port .. "; printf '%s\\n' \"$1\" >&3; "
    .. "IFS= read -r -t 20 reply <&3; printf '%s' \"$reply\"", "talk", line }).stdout
end

describe("k8s port_forward", function()
  local t, c, echo, kwok, node
  setup(function()
    t = T.open("pf", { real_only = true })
    c = k8s.connect({ kubeconfig = t.kubeconfig })
    echo = server.start("exec /usr/bin/python3 " .. sh.q(sh.src .. "/tests/k8s/echo.py"), 20)
    assert(sh.run({ "bash", sh.src .. "/tests/support/tlsgen.sh", t.dir }).code == 0)
    node = t.namespace .. "-node"
    local kport = free_port()
    -- Stages: the node Ready with kwok's kubelet endpoint, its pods Running, deleted pods gone.
    write(t.dir .. "/kwok.yaml", ([[
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata: {name: %s}
spec:
  forwards:
  - ports: [8080]
    target: {port: %d, address: 127.0.0.1}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: %s-node-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: "kwok node", lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      addresses:
      - {type: InternalIP, address: {{ NodeIP | Quote }}}
      daemonEndpoints:
        kubeletEndpoint: {Port: {{ NodePort }}}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: %s-pod-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: .metadata.deletionTimestamp, operator: DoesNotExist}
    - {key: .status.phase, operator: In, values: [Pending]}
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: %s-pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: .metadata.deletionTimestamp, operator: Exists}
  next:
    delete: true
]]):format(node, echo.port, node, node, node))
    c:apply({ apiVersion = "v1", kind = "Node", metadata = { name = node,
      labels = { ["kubernetes.io/hostname"] = node, ["myrmex.test/spec"] = "portforward" } } })
    -- kwok prints no port: "READY 0" once it runs (server.start wants a line), its pid kept by exec.
    kwok = server.start(("echo READY 0; exec %s --kubeconfig %s --config %s --manage-single-node %s"
      .. " --node-ip 127.0.0.1 --node-port %d --server-address 127.0.0.1:%d --tls-cert-file %s"
      .. " --tls-private-key-file %s"):format(KWOK, sh.q(t.kubeconfig), t.dir .. "/kwok.yaml", node, kport,
      kport, t.dir .. "/server.pem", t.dir .. "/server.key"), 20)
    K.running_pod(c, "web", { nodeName = node,
      containers = { { name = "web", image = "busybox", ports = { { containerPort = 8080 } } } } })
  end)
  teardown(function()
    if kwok then kwok.stop() end
    if echo then echo.stop() end
    if node then pcall(c.delete, c, "nodes", node) end
    t.stop()
  end)

  it("returns a loopback port whose connections reach the pod's port, both ways", function()
    local pf <close> = c:port_forward("web", 8080)
    local port = pf:port()
    assert.is_true(port > 0)
    assert.are.equal("echo: hello", talk(port, "hello"))
    -- a second connection gets a WebSocket of its own
    assert.are.equal("echo: again", talk(port, "again"))
    local info = pf:info()
    assert.are.equal(2, info.accepted)
  end)

  it("stops listening when closed", function()
    local port
    do
      local pf <close> = c:port_forward("web", 8080)
      port = pf:port()
      assert.are.equal("echo: x", talk(port, "x"))
    end
    local r = sh.run({ "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/" .. port })
    assert.are_not.equal(0, r.code)
  end)

  it("reports the kubelet's error for a port the pod does not forward", function()
    local pf <close> = c:port_forward("web", 9999)
    assert.are.equal("", talk(pf:port(), "nobody"))
    local info
    for _ = 1, 100 do
      info = pf:info()
      if info.error then break end
      http.sleep(0.05)
    end
    assert.truthy(tostring(info.error):find("9999", 1, true), tostring(info.error))
  end)

  it("raises NotFound for a pod that does not exist and Invalid for one not running", function()
    local ok, err = pcall(c.port_forward, c, "no-such-pod", 80)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    c:apply({ apiVersion = "v1", kind = "Pod", metadata = { name = "pending" },
      spec = { nodeName = "no-such-node", containers = { { name = "c", image = "busybox" } } } })
    ok, err = pcall(c.port_forward, c, "pending", 80)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.truthy(tostring(err):find("not running", 1, true), tostring(err))
  end)

  it("carries each connection through the kubeconfig's proxy-url (CONNECT)", function()
    local proxy = server.start("exec /usr/bin/python3 " .. sh.q(sh.src .. "/tests/k8s/connect_proxy.py"), 20)
    local cfg = json.decode(assert(io.open(t.kubeconfig)):read("a"))
    cfg.clusters[1].cluster["proxy-url"] = "http://127.0.0.1:" .. proxy.port
    local pc = k8s.connect({ kubeconfig = write(t.dir .. "/kc-proxy", json.encode(cfg)) })
    local ok, err = pcall(function()
      local pf <close> = pc:port_forward("web", 8080)
      assert.are.equal("echo: one", talk(pf:port(), "one"))
      assert.are.equal("echo: two", talk(pf:port(), "two"))
    end)
    local log = json.decode(http.request({ url = "http://127.0.0.1:" .. proxy.port .. "/_log" }).body)
    proxy.stop()
    assert.is_true(ok, tostring(err))
    -- The pod's lookup (libcurl) and one tunnel per forwarded connection.
    assert.are.equal(3, #log, json.encode(log))
  end)

  it("checks its arguments", function()
    assert.has_error(function() c:port_forward("web", 0) end, "k8s.port_forward: port must be an integer from 1 to 65535")
    assert.has_error(function() c:port_forward("web", 80, { ns = "x" }) end, "k8s.port_forward: unknown option 'ns'")
  end)
end)
