-- needs: k8s
-- The WebSocket streams (exec, attach, port-forward) on the real API server, by the routes a
-- cluster can put in between: a server that speaks only v4.channel.k8s.io (the recorder in
-- front strips v5 from Sec-WebSocket-Protocol: the real server speaks both, so the fallback is
-- otherwise never taken), and HTTP proxies (kubeconfig proxy-url, HTTPS_PROXY less NO_PROXY)
-- that tunnel the WebSocket with CONNECT (tests/k8s/connect_proxy.py). The pod runs on a kwok
-- node, whose exec runs the command on this machine (tests/README.md).
local K = require("tests.k8s.support")
local k8s = require("myrmex.k8s")
local stream = require("myrmex.k8s.stream")
local errors = require("myrmex.errors")
local http = require("myrmex.http")
local json = require("myrmex.json")
local yaml = require("myrmex.yaml")
local server = require("tests.support.server")
local sh = require("tests.support.sh")

local function slurp(p) return assert(sh.read(p)) end

-- The admin kubeconfig with the spec's namespace and the cluster's fields replaced by `cluster`.
local function kubeconfig_with(cl, name, cluster)
  local cfg = yaml.load(slurp(cl.admin))
  for k, v in pairs(cluster) do cfg.clusters[1].cluster[k] = v end
  cfg.contexts[1].context.namespace = cl.namespace
  return K.write(cl.dir .. "/" .. name, json.encode(cfg))
end

local function connects(proxy)
  local res = http.request({ url = "http://127.0.0.1:" .. proxy.port .. "/_log" })
  return json.decode(res.body)
end

-- An exec from a child process, so that the proxy variables are its own environment.
-- `offline`: in a network namespace of its own (a client going straight at a name that must
-- not resolve would ask the machine's resolver).
local function child_exec(cfg, env, offline)
  local code = [[
local ok, r = pcall(function()
  return require("myrmex.k8s").connect():exec("shell", { cmd = { "echo", "via" }, timeout = 30 })
end)
io.write(ok and (r.exit_code .. " " .. r.stdout) or tostring(r))
]]
  local e = { KUBECONFIG = cfg, HOME = "/nonexistent", HTTP_PROXY = "", HTTPS_PROXY = "", NO_PROXY = "",
    http_proxy = "", https_proxy = "", no_proxy = "" }
  for k, v in pairs(env) do e[k] = v end
  local argv = { os.getenv("MYRMEX_BIN") or (sh.src .. "/build/myrmex"), "-e", code }
  return sh.run(offline and sh.offline(argv) or argv, { env = e })
end

describe("k8s streams through what stands between", function()
  local cl, c, proxy, authed
  setup(function()
    cl = K.cluster("stream")
    c = k8s.connect({ kubeconfig = cl.kubeconfig_path })
    K.running_pod(c, "shell")
    proxy = server.start("exec /usr/bin/python3 " .. sh.q(sh.src .. "/tests/k8s/connect_proxy.py"), 20)
    authed = server.start("exec /usr/bin/python3 " .. sh.q(sh.src .. "/tests/k8s/connect_proxy.py")
      .. " --auth 'ops:p@ss w'", 20)
  end)
  teardown(function()
    if proxy then proxy.stop() end
    if authed then authed.stop() end
    cl.stop()
  end)

  it("takes v5.channel.k8s.io when the server offers it", function()
    cl:control("strip-protocols", { protocols = {} })
    local r = c:exec("shell", { cmd = { "sh", "-c", "echo out; echo err >&2" }, timeout = 60 })
    assert.are.same({ 0, "out\n", "err\n", "v5.channel.k8s.io" }, { r.exit_code, r.stdout, r.stderr, r.protocol })
  end)

  it("falls back to v4.channel.k8s.io: stdin, stdout, stderr and the status channel still work", function()
    cl:control("strip-protocols", { protocols = { "v5.channel.k8s.io" } })
    local r = c:exec("shell", { cmd = { "sh", "-c", "read x; echo got $x; echo oops >&2" }, stdin = "hello\n",
      timeout = 60 })
    assert.are.same({ 0, "got hello\n", "oops\n", "v4.channel.k8s.io" },
      { r.exit_code, r.stdout, r.stderr, r.protocol })
    -- What the client offered, and what the server was left to choose from.
    local up
    for _, q in ipairs(cl:control("requests")) do
      if q.upgrade and q.path:find("/pods/shell/exec", 1, true) then up = q end
    end
    assert.are.same({ "v5.channel.k8s.io", "v4.channel.k8s.io" }, up.protocols)
    assert.are.same({ "v4.channel.k8s.io" }, up.forwarded_protocols)
    -- A failing command: the error channel's Status, as over v5.
    local ok, err = pcall(c.exec, c, "shell", { cmd = { "sh", "-c", "exit 3" }, timeout = 60 })
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.truthy(tostring(err):find("exit status 3", 1, true), tostring(err))
    cl:control("strip-protocols", { protocols = {} })
  end)

  it("goes through the kubeconfig's proxy-url (CONNECT), with the proxy's credentials", function()
    local api = yaml.load(slurp(cl.admin)).clusters[1].cluster.server
    local target = api:match("^https://(.*)$")
    local cfg = kubeconfig_with(cl, "kc-proxy", { ["proxy-url"] = "http://127.0.0.1:" .. proxy.port })
    local pc = k8s.connect({ kubeconfig = cfg })
    local before = #connects(proxy)
    local r = pc:exec("shell", { cmd = { "echo", "tunnelled" }, timeout = 60 })
    assert.are.equal("tunnelled\n", r.stdout)
    local log = connects(proxy)
    assert.are.equal(before + 1, #log) -- the exec's WebSocket, and nothing else
    assert.are.same({ target = target, status = 200 }, { target = log[#log].target, status = log[#log].status })

    -- user:password in the URL (percent-decoded) become Proxy-Authorization: Basic.
    cfg = kubeconfig_with(cl, "kc-authed", { ["proxy-url"] = "http://ops:p%40ss%20w@127.0.0.1:" .. authed.port })
    r = k8s.connect({ kubeconfig = cfg }):exec("shell", { cmd = { "echo", "authed" }, timeout = 60 })
    assert.are.equal("authed\n", r.stdout)
    log = connects(authed)
    assert.are.same({ "ops:p@ss w", 200 }, { log[#log].auth, log[#log].status })
  end)

  it("goes through HTTPS_PROXY for a server that is not loopback, and not when NO_PROXY names it", function()
    -- A name that resolves nowhere: the server is reachable only through the proxy, which sends
    -- every tunnel to 127.0.0.1. The certificate is checked for "kubernetes" (tls-server-name).
    local port = yaml.load(slurp(cl.admin)).clusters[1].cluster.server:match(":(%d+)$")
    local cfg = kubeconfig_with(cl, "kc-env", { server = "https://api.myrmex.invalid:" .. port,
      ["tls-server-name"] = "kubernetes" })
    local before = #connects(proxy)
    local r = child_exec(cfg, { HTTPS_PROXY = "127.0.0.1:" .. proxy.port })
    assert.are.equal("0 via\n", r.stdout, r.stderr)
    local log = connects(proxy)
    assert.are.equal(before + 1, #log)
    assert.are.equal("api.myrmex.invalid:" .. port, log[#log].target)

    r = child_exec(cfg, { HTTPS_PROXY = "127.0.0.1:" .. proxy.port, NO_PROXY = ".invalid" }, true)
    assert.truthy(r.stdout:find("Unreachable", 1, true), r.stdout .. r.stderr)
    assert.are.equal(before + 1, #connects(proxy))

    -- libwebsockets would go through $http_proxy on its own, for every host: a loopback server
    -- is never proxied (Go's rule, kubectl's), whatever the variables say.
    local direct = kubeconfig_with(cl, "kc-direct", {})
    r = child_exec(direct, { http_proxy = "http://127.0.0.1:" .. proxy.port,
      https_proxy = "http://127.0.0.1:" .. proxy.port })
    assert.are.equal("0 via\n", r.stdout, r.stderr)
    assert.are.equal(before + 1, #connects(proxy))
  end)

  it("refuses a proxy that cannot carry a WebSocket, naming it", function()
    assert.are.equal("proxy:3128", stream._ws_proxy("exec", "proxy:3128"))
    assert.are.equal("proxy:80", stream._ws_proxy("exec", "http://proxy"))
    assert.are.equal("u:p@s@proxy:8080", stream._ws_proxy("exec", "http://u:p%40s@proxy:8080/"))
    local cfg = kubeconfig_with(cl, "kc-socks", { ["proxy-url"] = "socks5://127.0.0.1:1080" })
    local ok, err = pcall(function() return k8s.connect({ kubeconfig = cfg }):exec("shell", { cmd = { "true" } }) end)
    assert.is_false(ok)
    assert.is_true(errors.is(err, "Invalid"), tostring(err))
    assert.truthy(tostring(err):find("proxy socks5://127.0.0.1:1080: only http:// proxies", 1, true), tostring(err))
  end)
end)
