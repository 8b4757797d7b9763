-- How a kubeconfig reaches the wire, compared with kubectl on the same file: tokenFile over
-- token, HTTP(S)_PROXY / NO_PROXY from the environment, and the cluster information an exec
-- plugin gets (provideClusterInfo). tests/k8s/apiserver.py checks the bearer tokens and
-- tests/k8s/faults.py is the forward proxy (hosts under .myrmex.test go to the API server).
local F = require("tests.k8s.faults")
local k8s = require("myrmex.k8s")
local kubeconfig = require("myrmex.k8s.kubeconfig")
local errors = require("myrmex.errors")
local json = require("myrmex.json")
local sh = require("tests.support.sh")

local function write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. path) end
  return path
end

-- Set while a case sends a client straight at a name that must not resolve: it then runs in a
-- network namespace of its own, so the lookup never reaches the machine's resolver.
local offline = false

local function kubectl(cfg, env, ...)
  local e = { KUBECONFIG = cfg, HOME = "/nonexistent", HTTP_PROXY = "", HTTPS_PROXY = "", NO_PROXY = "",
    http_proxy = "", https_proxy = "", no_proxy = "" }
  for k, v in pairs(env or {}) do e[k] = v end
  local argv = { "kubectl", "--request-timeout", "20s", ... }
  return sh.run(offline and sh.offline(argv) or argv, { env = e })
end

-- myrmex in a child process, so the environment (proxies) is its own.
local function myrmex_get(cfg, env)
  local code = [[
local k8s = require("myrmex.k8s")
local ok, err = pcall(function() return k8s.connect():request("GET", "/api/v1/namespaces/default/configmaps") end)
io.write(ok and "ok" or tostring(err))
]]
  local e = { KUBECONFIG = cfg, HOME = "/nonexistent", HTTP_PROXY = "", HTTPS_PROXY = "", NO_PROXY = "",
    http_proxy = "", https_proxy = "", no_proxy = "", MYRMEX_LUA_PATH = sh.src .. "/lua" }
  for k, v in pairs(env or {}) do e[k] = v end
  local argv = { os.getenv("MYRMEX_BIN") or (sh.src .. "/build/myrmex"), "-e", code }
  return sh.run(offline and sh.offline(argv) or argv, { env = e })
end

describe("k8s client configuration, as kubectl reads it", function()
  -- srv: plain HTTP, no authentication (the proxy cases); tls: TLS and bearer tokens (kubectl
  -- sends no token over plain HTTP).
  local srv, tls
  setup(function()
    srv = F.start()
    tls = F.start({ tls = true, tokens = { "file-token", "exec-token" } })
  end)
  teardown(function()
    srv.stop()
    tls.stop()
  end)

  it("uses tokenFile over token when a user has both", function()
    local tf = write(tls.dir .. "/token", "file-token\n")
    local cfg = tls:kubeconfig_with("kc-tokens", { server = tls.api, ["certificate-authority"] = tls.ca },
      { token = "inline-stale", tokenFile = tf })
    local r = kubectl(cfg, nil, "get", "--raw", "/api/v1/namespaces/default/configmaps")
    assert.are.equal(0, r.code, r.stderr)
    local c = k8s.connect({ kubeconfig = cfg })
    assert.are.equal("file-token", c:_auth().Authorization:match("^Bearer (.*)$"))
    assert.is_table(c:request("GET", "/api/v1/namespaces/default/configmaps").items)
  end)

  it("goes through HTTP_PROXY for a non-loopback server, and not when NO_PROXY names it", function()
    local cfg = srv:kubeconfig_with("kc-proxy", { server = "http://api.myrmex.test:" .. srv.api_port })
    local env = { HTTP_PROXY = "127.0.0.1:" .. srv.port }
    local function proxied()
      local n = 0
      for _, q in ipairs(srv:log().requests) do if q.proxied then n = n + 1 end end
      return n
    end
    local before = proxied()
    local r = kubectl(cfg, env, "get", "--raw", "/api/v1/namespaces/default/configmaps")
    assert.are.equal(0, r.code, r.stderr)
    local by_kubectl = proxied() - before
    assert.is_true(by_kubectl >= 1)
    r = myrmex_get(cfg, env)
    assert.are.equal("ok", r.stdout, r.stderr)
    assert.are.equal(before + by_kubectl + 1, proxied())

    -- NO_PROXY: both go direct, and api.myrmex.test does not resolve.
    env.NO_PROXY = "127.0.0.1,myrmex.test"
    before = proxied()
    offline = true
    r = kubectl(cfg, env, "get", "--raw", "/api/v1/namespaces/default/configmaps")
    local mr = myrmex_get(cfg, env)
    offline = false
    assert.are_not.equal(0, r.code)
    r = mr
    assert.truthy(r.stdout:find("Unreachable", 1, true), r.stdout .. r.stderr)
    assert.are.equal(before, proxied())
  end)

  it("sends an https server's requests to HTTPS_PROXY (CONNECT), as kubectl does", function()
    local cfg = srv:kubeconfig_with("kc-sproxy", { server = "https://api.myrmex.test:" .. srv.api_port })
    local env = { HTTPS_PROXY = "http://127.0.0.1:" .. srv.port, HTTP_PROXY = "http://127.0.0.1:1" }
    local function connects()
      local n = 0
      for _, q in ipairs(srv:log().requests) do
        if q.method == "CONNECT" and q.path == "api.myrmex.test:" .. srv.api_port then n = n + 1 end
      end
      return n
    end
    local before = connects()
    kubectl(cfg, env, "get", "--raw", "/version")
    assert.is_true(connects() > before)
    before = connects()
    local r = myrmex_get(cfg, env)
    assert.truthy(r.stdout:find("Unreachable", 1, true), r.stdout .. r.stderr)
    assert.are.equal(before + 1, connects())
  end)

  it("reads proxies as Go does: loopback never proxied, NO_PROXY domains, CIDRs and ports", function()
    local function via(server, env)
      return kubeconfig.env_proxy(server, function(n) return env[n] end)
    end
    local P = { HTTPS_PROXY = "proxy:3128" }
    assert.are.equal("http://proxy:3128", via("https://api.example.com:6443", P))
    assert.is_nil(via("https://127.0.0.1:6443", P))
    assert.is_nil(via("https://[::1]:6443", P))
    assert.is_nil(via("https://localhost:6443", P))
    assert.is_nil(via("http://api.example.com", P))
    assert.are.equal("http://p:1", via("http://api.example.com", { http_proxy = "http://p:1" }))
    P.NO_PROXY = "example.com"
    assert.is_nil(via("https://api.example.com", P))
    assert.is_nil(via("https://example.com", P))
    assert.is_not_nil(via("https://notexample.com", P))
    P.NO_PROXY = ".example.com"
    assert.is_not_nil(via("https://example.com", P))
    assert.is_nil(via("https://a.example.com", P))
    P.NO_PROXY = "10.0.0.0/8, foo:443"
    assert.is_nil(via("https://10.2.3.4", P))
    assert.is_not_nil(via("https://11.2.3.4", P))
    assert.is_nil(via("https://foo", P))
    assert.is_not_nil(via("https://foo:6443", P))
    P.NO_PROXY = "*"
    assert.is_nil(via("https://x", P))
  end)

  it("gives an exec plugin the cluster kubectl gives it, CA bytes included when the CA is a file", function()
    local plugin = write(tls.dir .. "/plugin.sh", [[#!/bin/sh
printf '%s' "$KUBERNETES_EXEC_INFO" > "$INFO_OUT"
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"exec-token"}}'
]], "+x")
    local function cfg_for(out)
      return tls:kubeconfig_with("kc-exec-" .. out, { server = tls.api, ["certificate-authority"] = tls.ca,
        ["tls-server-name"] = "myrmex.test",
        extensions = { { name = "client.authentication.k8s.io/exec", extension = { audience = "myrmex" } } } },
        { exec = { apiVersion = "client.authentication.k8s.io/v1", command = plugin, provideClusterInfo = true,
          interactiveMode = "Never", env = { { name = "INFO_OUT", value = tls.dir .. "/" .. out } } } })
    end
    local r = kubectl(cfg_for("kubectl.json"), nil, "get", "--raw", "/api/v1/namespaces/default/configmaps")
    assert.are.equal(0, r.code, r.stderr)
    kubeconfig.reset_cache()
    local c = k8s.connect({ kubeconfig = cfg_for("myrmex.json") })
    assert.is_table(c:request("GET", "/api/v1/namespaces/default/configmaps").items)
    local function read(p)
      local f = assert(io.open(p))
      local s = f:read("a")
      f:close()
      return json.decode(s)
    end
    local want, got = read(tls.dir .. "/kubectl.json").spec.cluster, read(tls.dir .. "/myrmex.json").spec.cluster
    assert.is_string(want["certificate-authority-data"])
    assert.are.same(want, got)
  end)

  it("falls back to the inline token when the token file cannot be read", function()
    local ca = { server = tls.api, ["certificate-authority"] = tls.ca }
    local cfg = tls:kubeconfig_with("kc-fallback", ca, { token = "file-token", tokenFile = tls.dir .. "/missing-token" })
    local c = k8s.connect({ kubeconfig = cfg })
    assert.are.equal("Bearer file-token", c:_auth().Authorization)
    assert.is_table(c:request("GET", "/api/v1/namespaces/default/configmaps").items)
    local only = k8s.connect({ kubeconfig = tls:kubeconfig_with("kc-missing", ca,
      { tokenFile = tls.dir .. "/missing-token" }) })
    local ok, err = pcall(only.request, only, "GET", "/api")
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Unauthorized"), tostring(err))
  end)
end)
