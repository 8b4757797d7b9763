--- Spec helper: a namespace of its own on the test bed's real control plane (.ci/services
--- start kubernetes), or, for specs that can also run there, on tests/k8s/apiserver.py when no
--- control plane runs. `t.kubeconfig` has the namespace as its context's default; `t.kubectl(...)`
--- runs kubectl on it; `t.stop()` deletes the namespace (or stops the server).
local sh = require("tests.support.sh")
local json = require("myrmex.json")
local yaml = require("myrmex.yaml")

local M = {}

--- The real control plane's admin kubeconfig, or nil and why there is none.
function M.real_kubeconfig()
  local state = os.getenv("MYRMEX_CI_STATE")
  local candidates = { os.getenv("MYRMEX_KUBECONFIG"), state and (state .. "/kubeconfig"),
    "/tmp/myrmex-kube/kubeconfig", "/tmp/myrmex-ci/kubeconfig" }
  for _, p in pairs(candidates) do
    local f = p and io.open(p)
    if f then
      f:close()
      local r = sh.run({ "kubectl", "--kubeconfig", p, "--request-timeout", "5s", "get", "--raw", "/readyz" })
      if r.code == 0 then return p end
      return nil, "control plane of " .. p .. " does not answer /readyz: " .. r.stderr
    end
  end
  return nil, "no control plane (bash .ci/services start kubernetes)"
end

local function slurp(p) return assert(sh.read(p)) end

local function write(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
  return p
end

--- A target for a spec. opts.real_only: fail when no control plane runs instead of using the
--- Python server.
function M.open(prefix, opts)
  opts = opts or {}
  local admin, why = M.real_kubeconfig()
  local dir = sh.run("mktemp -d /tmp/myrmex-k8s-target-XXXXXX").stdout:gsub("%s+$", "")
  local t = { dir = dir, real = admin ~= nil }
  local stop_server
  if not admin then
    assert(not opts.real_only, why)
    local F = require("tests.k8s.faults")
    local srv = F.start()
    admin, stop_server = srv.kubeconfig, srv.stop
    t.why = why
  end
  t.namespace = (prefix or "t") .. "-" .. sh.run("od -An -N4 -tx4 /dev/urandom").stdout:gsub("%s", "")
  -- The admin kubeconfig, with the namespace as the current context's default.
  local cfg = yaml.load(slurp(admin))
  for _, c in ipairs(cfg.contexts) do
    if c.name == cfg["current-context"] then c.context.namespace = t.namespace end
  end
  t.kubeconfig = write(dir .. "/kubeconfig", json.encode(cfg))
  function t.kubectl(...)
    return sh.run({ "kubectl", "--kubeconfig", t.kubeconfig, "--request-timeout", "30s", "-n", t.namespace, ... },
      { env = { KUBECTL_APPLYSET = "true" } })
  end
  -- Namespaces are made by myrmex: kubectl's typed `create namespace` sends protobuf, which
  -- the Python server does not read.
  local k8s = require("myrmex.k8s")
  local c = k8s.connect({ kubeconfig = t.kubeconfig })
  --- Create a namespace (deleted by t.stop()).
  function t.namespace_create(name)
    c:apply({ apiVersion = "v1", kind = "Namespace", metadata = { name = name } })
    t.namespaces[#t.namespaces + 1] = name
  end
  t.namespaces = {}
  local ok, err = pcall(t.namespace_create, t.namespace)
  if not ok then
    -- Nothing is left running when setup fails: the spec's teardown never sees `t`.
    if stop_server then stop_server() end
    os.execute("rm -rf " .. sh.q(dir))
    error(err, 0)
  end
  function t.stop()
    for _, ns in ipairs(t.namespaces) do pcall(c.delete, c, "namespaces", ns) end
    if stop_server then stop_server() end
    os.execute("rm -rf " .. sh.q(dir))
  end
  return t
end

return M
