--- Spec helper: start tests/k8s/apiserver.py (optionally with TLS, tokens), write kubeconfigs,
--- drive its /_test/ controls, validate objects against the official OpenAPI schemas.
local server = require("tests.support.server")
local sh = require("tests.support.sh")
local json = require("myrmex.json")

local M = {}
local SRC = os.getenv("MYRMEX_SOURCE_DIR") or "."
local FIXTURES = (os.getenv("MYRMEX_FIXTURES") or (SRC .. "/tests/fixtures")) .. "/kubernetes"
M.FIXTURES = FIXTURES

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end
M.write = write

--- The test bed's real control plane (.ci/services start kubernetes): its admin kubeconfig,
--- from $MYRMEX_KUBECONFIG or $MYRMEX_CI_STATE/kubeconfig; nil and the reason when none runs.
function M.real_kubeconfig()
  local path = os.getenv("MYRMEX_KUBECONFIG")
    or ((os.getenv("MYRMEX_CI_STATE") or "/tmp/myrmex-ci") .. "/kubeconfig")
  local f = io.open(path)
  if not f then return nil, "no control plane: " .. path .. " missing (bash .ci/services start kubernetes)" end
  f:close()
  return path
end

-- The services' state directory: the files the control plane wrote (tokens, etcd's address,
-- kwok's pod log) sit beside its kubeconfig.
local function state_dir()
  return os.getenv("MYRMEX_CI_STATE") or assert(M.real_kubeconfig()):match("^(.*)/[^/]+$")
end

--- A namespace of its own on the real control plane, with a recording proxy in front of the
--- server (tests/k8s/recorder.py): `cl.kubeconfig` talks to the proxy with the namespace as
--- the context's default, `cl.admin` to the server directly. `cl:control(what, body)` drives
--- the proxy as `srv:control` drives the Python server; `cl.stop()` deletes the namespace.
--- `others` names cluster-wide namespaces the spec's manifests create: they are deleted (and
--- waited for) before and after, so a rerun or the sanitizer pass finds none left.
function M.cluster(prefix, others)
  local admin = assert(M.real_kubeconfig())
  local function drop_others()
    if not others or #others == 0 then return end
    local argv = { "kubectl", "--kubeconfig", admin, "delete", "namespace", "--ignore-not-found", "--wait=true",
      "--timeout=120s" }
    for _, n in ipairs(others) do argv[#argv + 1] = n end
    local r = sh.run(argv)
    assert(r.code == 0, r.stderr)
  end
  drop_others()
  local ns = (prefix or "t") .. "-" .. sh.run("od -An -N4 -tx4 /dev/urandom").stdout:gsub("%s", "")
  local dir = sh.run("mktemp -d /tmp/myrmex-k8s-XXXXXX").stdout:gsub("%s+$", "")
  local r = sh.run({ "kubectl", "--kubeconfig", admin, "create", "namespace", ns })
  assert(r.code == 0, r.stderr)
  local s = server.start("exec /usr/bin/python3 " .. sh.q(SRC .. "/tests/k8s/recorder.py") .. " " .. sh.q(admin), 20)
  s.dir, s.admin, s.namespace = dir, admin, ns
  s.url = "http://127.0.0.1:" .. s.port
  local stop = s.stop
  s.stop = function()
    stop()
    sh.run({ "kubectl", "--kubeconfig", admin, "delete", "namespace", ns, "--wait=false" })
    drop_others()
    os.execute("rm -rf " .. sh.q(dir))
  end
  setmetatable(s, { __index = M })
  s.kubeconfig_path = s:kubeconfig()
  return s
end

--- Compact the real cluster's etcd up to its current revision: a watch from an older
--- resourceVersion then gets the server's own 410 Gone (configmaps have no watch cache there).
function M.compact_etcd()
  local state = state_dir()
  local ep = assert(io.open(state .. "/etcd-endpoint")):read("a"):gsub("%s+$", "")
  local bin = (os.getenv("MYRMEX_TEST_BIN") or "/usr/local/lib/myrmex-test/bin") .. "/etcdctl"
  local st = sh.run({ bin, "--endpoints", ep, "endpoint", "status", "-w", "json" })
  assert(st.code == 0, st.stderr)
  local rev = assert(st.stdout:match('"revision":(%d+)'), st.stdout)
  local r = sh.run({ bin, "--endpoints", ep, "compact", rev })
  assert(r.code == 0, r.stderr)
end

--- Apply a pod named `name` (one busybox container "main"; `spec` fields replace the pod
--- spec's) through client `c`, and wait until it is Running (raises after 60 s).
function M.running_pod(c, name, spec)
  local pod_spec = { containers = { { name = "main", image = "busybox" } } }
  for k, v in pairs(spec or {}) do pod_spec[k] = v end
  c:apply({ apiVersion = "v1", kind = "Pod", metadata = { name = name }, spec = pod_spec })
  for _ = 1, 600 do
    if (c:get("pods", name).status or {}).phase == "Running" then return end
    require("myrmex.http").sleep(0.1)
  end
  error("pod " .. name .. " is not Running after 60 s", 2)
end

--- The file kwok serves as the log of every pod on its nodes (tests/k8s/kwok.yaml).
function M.kwok_log()
  local state = state_dir()
  return state .. "/kubernetes/pod.log"
end

--- The file kwok follows, from its end, for an attach to any pod on its nodes (tests/k8s/kwok.yaml).
function M.kwok_attach_log()
  return state_dir() .. "/kubernetes/attach.log"
end

--- One line in the CRI log format kwok reads ("<RFC 3339 time> stdout F <text>"), appended to `path`.
function M.cri_append(path, text, stream)
  local f = assert(io.open(path, "ab"))
  f:write(os.date("!%Y-%m-%dT%H:%M:%S.000000000Z"), " ", stream or "stdout", " F ", text, "\n")
  f:close()
end

--- The real API server spoken to directly over TLS, for the credential specs: `dir` holds its
--- CA (ca.pem), the admin's certificate and key (client.pem, client.key) and a CA that did not
--- sign it (other-ca.pem); `token` is the static bearer token of user "tester" (group
--- myrmex-testers). `kubeconfig(user, name, extra)` as for the Python server.
function M.real_tls()
  local admin = assert(M.real_kubeconfig())
  local cfg = require("myrmex.yaml").load(assert(io.open(admin)):read("a"))
  local dir = sh.run("mktemp -d /tmp/myrmex-k8s-XXXXXX").stdout:gsub("%s+$", "")
  local function unb64(field, file)
    local r = sh.run({ "sh", "-c", "printf %s \"$1\" | base64 -d > \"$2\"", "sh", field, dir .. "/" .. file })
    assert(r.code == 0, r.stderr)
  end
  unb64(cfg.clusters[1].cluster["certificate-authority-data"], "ca.pem")
  unb64(cfg.users[1].user["client-certificate-data"], "client.pem")
  unb64(cfg.users[1].user["client-key-data"], "client.key")
  assert(sh.run({ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
    "-keyout", dir .. "/other-ca.key", "-out", dir .. "/other-ca.pem" }).code == 0)
  local state = state_dir()
  local s = { dir = dir, admin = admin, url = cfg.clusters[1].cluster.server, tls = true,
    token = (assert(io.open(state .. "/kube-token")):read("a"):gsub("%s+$", "")) }
  s.stop = function() os.execute("rm -rf " .. sh.q(dir)) end
  return setmetatable(s, { __index = M })
end

--- Start a server. opts: tls (bool), token (string), delay (seconds).
function M.start(opts)
  opts = opts or {}
  local dir = sh.run("mktemp -d /tmp/myrmex-k8s-XXXXXX").stdout:gsub("%s+$", "")
  local cmd = "exec /usr/bin/python3 " .. sh.q(SRC .. "/tests/k8s/apiserver.py") .. " --delay " .. (opts.delay or 0.1)
  if opts.tls then
    assert(sh.run({ "bash", SRC .. "/tests/support/tlsgen.sh", dir }).code == 0)
    cmd = cmd .. " --cert " .. dir .. "/server.pem --key " .. dir .. "/server.key --client-ca " .. dir .. "/ca.pem"
  end
  for _, t in ipairs(opts.tokens or {}) do cmd = cmd .. " --token " .. sh.q(t) end
  if opts.basic then cmd = cmd .. " --basic " .. sh.q(opts.basic) end
  local s = server.start(cmd, 20)
  s.dir = dir
  s.url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. s.port
  s.tls = opts.tls
  local stop = s.stop
  s.stop = function()
    stop()
    os.execute("rm -rf " .. sh.q(dir))
  end
  return setmetatable(s, { __index = M })
end

--- Write a kubeconfig for this server with `user` (a kubeconfig user section) and return its path.
function M:kubeconfig(user, name, extra_cluster)
  local cluster = { server = self.url }
  if self.tls then cluster["certificate-authority"] = self.dir .. "/ca.pem" end
  for k, v in pairs(extra_cluster or {}) do cluster[k] = v end
  local cfg = { apiVersion = "v1", kind = "Config", ["current-context"] = "test",
    clusters = { { name = "test", cluster = cluster } },
    contexts = { { name = "test", context = { cluster = "test", user = "u", namespace = self.namespace or "default" } } },
    users = { { name = "u", user = user or json.object() } } }
  return write(self.dir .. "/" .. (name or "kubeconfig"), json.encode(cfg))
end

--- POST a control to /_test/<what> (no credentials needed).
function M:control(what, body)
  local http = require("myrmex.http")
  local res = http.request({ method = what == "requests" and "POST" or "POST", url = self.url .. "/_test/" .. what,
    body = json.encode(body or json.object()), tls = self.tls and { ca = self.dir .. "/ca.pem" } or nil })
  assert(res.status == 200, res.body)
  return json.decode(res.body)
end

--- Errors of the official schema validator for `obj` ("" when valid), in --strict mode.
function M.schema_errors(obj)
  local path = os.tmpname() .. ".json"
  write(path, json.encode(obj))
  local r = sh.run({ "/usr/bin/python3", FIXTURES .. "/openapi/validate_openapi.py", "--strict", path })
  os.remove(path)
  if r.code == 0 then return "" end
  return r.stdout .. r.stderr
end

--- The same for many objects in one validator run: {index -> errors} for the invalid ones.
function M.schema_errors_all(objs)
  local paths = {}
  local argv = { "/usr/bin/python3", FIXTURES .. "/openapi/validate_openapi.py", "--strict" }
  for i, o in ipairs(objs) do
    paths[i] = os.tmpname() .. "-" .. i .. ".json"
    write(paths[i], json.encode(o))
    argv[#argv + 1] = paths[i]
  end
  local r = sh.run(argv)
  for _, p in ipairs(paths) do os.remove(p) end
  return r.code == 0 and "" or (r.stdout .. r.stderr)
end

return M
