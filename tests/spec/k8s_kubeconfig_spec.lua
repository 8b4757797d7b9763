-- needs: k8s
-- Kubeconfig loading checked against kubectl (`config view --minify --raw -o json`) and the
-- official Python client's loader on the same files: merged lists where the first file wins,
-- current-context, relative paths, *-data, token files; and the in-cluster service account.
local kubeconfig = require("myrmex.k8s.kubeconfig")
local json = require("myrmex.json")
local sh = require("tests.support.sh")
local K = require("tests.k8s.support")

local dir

local function write(rel, text)
  return K.write(dir .. "/" .. rel, text)
end

local function slurp(path)
  if not path then return nil end
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function decoded(b64)
  return b64 and kubeconfig.b64decode(b64) or nil
end

local function kubectl_view(files, context)
  -- offline: kubectl resolves the servers it shows (one.example, two.example)
  local r = sh.run(sh.offline({ "kubectl", "config", "view", "--minify", "--raw", "--flatten", "-o", "json",
    "--context", context }), { env = { KUBECONFIG = table.concat(files, ":"), HOME = dir } })
  assert(r.code == 0, r.stderr)
  return json.decode(r.stdout)
end

local PY = [[
import json, os, sys
from kubernetes import config
from kubernetes.client import Configuration
out = {}
for ctx in sys.argv[1:]:
    c = Configuration()
    config.load_kube_config(context=ctx, client_configuration=c)
    loader = config.kube_config._get_kube_config_loader(filename=os.environ["KUBECONFIG"], active_context=ctx)
    out[ctx] = {"host": c.host, "token": (c.api_key or {}).get("authorization"), "ca": c.ssl_ca_cert,
                "cert": c.cert_file, "key": c.key_file, "verify": c.verify_ssl,
                "namespace": loader.current_context["context"].get("namespace")}
    if c.cert_file:
        out[ctx]["cert_pem"] = open(c.cert_file).read()
print(json.dumps(out))
]]

local function python_view(files, contexts)
  local script = write("view.py", PY)
  local argv = { "/usr/bin/python3", script }
  for _, c in ipairs(contexts) do argv[#argv + 1] = c end
  local r = sh.run(sh.offline(argv), { env = { KUBECONFIG = table.concat(files, ":"), HOME = dir } })
  assert(r.code == 0, r.stderr)
  return json.decode(r.stdout)
end

describe("k8s kubeconfig", function()
  local files

  setup(function()
    dir = sh.run("mktemp -d /tmp/myrmex-kc-XXXXXX").stdout:gsub("%s+$", "")
    os.execute("mkdir -p " .. dir .. "/a/certs " .. dir .. "/b/keys")
    assert(sh.run({ "bash", (os.getenv("MYRMEX_SOURCE_DIR") or ".") .. "/tests/support/tlsgen.sh", dir .. "/pki" }).code == 0)
    os.execute("cp " .. dir .. "/pki/ca.pem " .. dir .. "/a/certs/ca.pem")
    os.execute("cp " .. dir .. "/pki/client.pem " .. dir .. "/pki/client.key " .. dir .. "/b/keys/")
    local ca_b64 = sh.run("base64 -w0 " .. dir .. "/pki/ca.pem").stdout
    write("a/config", [[
apiVersion: v1
kind: Config
current-context: alpha
clusters:
- name: one
  cluster: {server: "https://one.example:6443", certificate-authority: certs/ca.pem}
users:
- name: ua
  user: {token: tok-a}
contexts:
- name: alpha
  context: {cluster: one, user: ua, namespace: team-a}
]])
    write("b/config", [[
apiVersion: v1
kind: Config
current-context: beta
clusters:
- name: one
  cluster: {server: "https://ignored.example:1"}
- name: two
  cluster: {server: "https://two.example:443", certificate-authority-data: ]] .. ca_b64 .. [[, tls-server-name: api.two}
users:
- name: ua
  user: {token: ignored}
- name: ub
  user: {client-certificate: keys/client.pem, client-key: keys/client.key}
contexts:
- name: beta
  context: {cluster: two, user: ub}
- name: gamma
  context: {cluster: one, user: ub, namespace: gam}
]])
    files = { dir .. "/a/config", dir .. "/missing", dir .. "/b/config" }
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("merges like kubectl: first file wins, relative paths resolved against their own file", function()
    local cfg = kubeconfig.load(files)
    assert.are.equal("alpha", cfg.current_context)
    for _, ctx in ipairs({ "alpha", "beta", "gamma" }) do
      local mine = kubeconfig.resolve(cfg, { context = ctx })
      local kc = kubectl_view(files, ctx)
      local cluster, user = kc.clusters[1].cluster, kc.users[1].user
      assert.are.equal(cluster.server, mine.server, ctx)
      assert.are.equal(kc.contexts[1].context.namespace or "default", mine.namespace, ctx)
      -- --flatten makes kubectl read every referenced file and inline it as *-data.
      assert.are.equal(cluster["tls-server-name"], mine.tls.server_name, ctx)
      assert.are.equal(decoded(cluster["certificate-authority-data"]), mine.tls.ca_data or slurp(mine.tls.ca), ctx)
      assert.are.equal(user.token, mine.auth.token, ctx)
      assert.are.equal(decoded(user["client-certificate-data"]), mine.tls.cert_data or slurp(mine.tls.cert), ctx)
      assert.are.equal(decoded(user["client-key-data"]), mine.tls.key_data or slurp(mine.tls.key), ctx)
    end
    assert.are.equal(dir .. "/a/certs/ca.pem", kubeconfig.resolve(cfg).tls.ca)
    assert.are.equal(dir .. "/b/keys/client.pem", kubeconfig.resolve(cfg, { context = "beta" }).tls.cert)
  end)

  it("agrees with the Python client's loader", function()
    -- Not "gamma" (cluster from a/config, user and context from b/config): python3-kubernetes
    -- 22.6 looks for user ub's relative client-certificate under a/, kubectl under b/ where
    -- the user is defined; myrmex follows kubectl (checked above).
    local py = python_view(files, { "alpha", "beta" })
    local cfg = kubeconfig.load(files)
    for ctx, want in pairs(py) do
      local mine = kubeconfig.resolve(cfg, { context = ctx })
      assert.are.equal(want.host, mine.server, ctx)
      assert.are.equal(json.isnull(want.namespace) and "default" or want.namespace, mine.namespace, ctx)
      if not json.isnull(want.token) then assert.are.equal(want.token, "Bearer " .. mine.auth.token, ctx) end
      if not json.isnull(want.cert) then
        local f = assert(io.open(mine.tls.cert))
        assert.are.equal(want.cert_pem, f:read("a"), ctx)
        f:close()
      end
    end
  end)

  it("honours context and namespace overrides and reports what is missing", function()
    local cfg = kubeconfig.load(files)
    assert.are.equal("other", kubeconfig.resolve(cfg, { context = "beta", namespace = "other" }).namespace)
    local ok, err = pcall(kubeconfig.resolve, cfg, { context = "nope" })
    assert.is_false(ok)
    assert.are.equal("NotFound", err.code)
    ok, err = pcall(kubeconfig.load, dir .. "/missing")
    assert.is_false(ok)
    assert.matches("does not exist", err.message)
  end)

  it("uses the pod's service account when running in a cluster", function()
    local sa = dir .. "/sa"
    os.execute("mkdir -p " .. sa)
    K.write(sa .. "/token", "sa-token\n")
    K.write(sa .. "/namespace", "jobs")
    os.execute("cp " .. dir .. "/pki/ca.pem " .. sa .. "/ca.crt")
    local r = sh.run({ os.getenv("MYRMEX_BIN") or "build/myrmex", "-e", [[
      local k = require("myrmex.k8s").connect({ serviceaccount_dir = arg and arg[1] or os.getenv("SA") })
      print(k.server, k.namespace, k.settings.tls.ca, k.settings.auth.kind)
    ]] }, { env = { SA = sa, KUBERNETES_SERVICE_HOST = "10.0.0.1", KUBERNETES_SERVICE_PORT = "443",
      KUBECONFIG = dir .. "/none", HOME = dir } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("https://10.0.0.1:443\tjobs\t" .. sa .. "/ca.crt\ttoken_file\n", r.stdout)
  end)
end)
