--- Spec helper: tests/k8s/apiserver.py with tests/k8s/faults.py in front of it (injected
--- statuses, Retry-After, line-by-line streams), for the retry, log and watch specs. These
--- faults are what the Python server exists for: a real API server cannot be made to answer
--- 429 or 503 on demand.
local server = require("tests.support.server")
local sh = require("tests.support.sh")
local json = require("myrmex.json")
local http = require("myrmex.http")

local M = {}
local SRC = os.getenv("MYRMEX_SOURCE_DIR") or "."

--- Start the API server and the fault proxy; returns {url=, api=, port=, kubeconfig=, stop=,
--- ...}. opts.tokens: bearer tokens the API server accepts (it accepts anything without);
--- opts.tls: the API server speaks TLS (certificate for 127.0.0.1 by `s.ca`), as clients send
--- bearer tokens only over TLS.
function M.start(opts)
  opts = opts or {}
  local dir = sh.run("mktemp -d /tmp/myrmex-k8s-faults-XXXXXX").stdout:gsub("%s+$", "")
  local cmd = "exec /usr/bin/python3 " .. sh.q(SRC .. "/tests/k8s/apiserver.py") .. " --delay 0.1"
  for _, t in ipairs(opts.tokens or {}) do cmd = cmd .. " --token " .. sh.q(t) end
  if opts.tls then
    assert(sh.run({ "bash", SRC .. "/tests/support/tlsgen.sh", dir }).code == 0)
    cmd = cmd .. " --cert " .. dir .. "/server.pem --key " .. dir .. "/server.key"
  end
  local api = server.start(cmd, 20)
  local api_url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. api.port
  local proxy = server.start("exec /usr/bin/python3 " .. sh.q(SRC .. "/tests/k8s/faults.py") .. " " .. api_url, 20)
  local s = { dir = dir, api = api_url, api_port = api.port, port = proxy.port, ca = opts.tls and (dir .. "/ca.pem"),
    url = "http://127.0.0.1:" .. proxy.port }
  local cfg = { apiVersion = "v1", kind = "Config", ["current-context"] = "test",
    clusters = { { name = "test", cluster = { server = s.url } } },
    contexts = { { name = "test", context = { cluster = "test", user = "u", namespace = "default" } } },
    users = { { name = "u", user = json.object() } } }
  s.kubeconfig = dir .. "/kubeconfig"
  local f = assert(io.open(s.kubeconfig, "wb"))
  f:write(json.encode(cfg))
  f:close()
  function s.stop()
    proxy.stop()
    api.stop()
    os.execute("rm -rf " .. sh.q(dir))
  end
  return setmetatable(s, { __index = M })
end

local function post(url, body)
  local res = http.request({ method = "POST", url = url, body = json.encode(body or json.object()) })
  assert(res.status == 200, res.body)
  return json.decode(res.body)
end

--- Make the next `rule.count` requests matching rule.method / rule.path (a Python regex) fail
--- with rule.status (and Retry-After rule.retry_after).
function M:inject(rule) return post(self.url .. "/_faults/inject", rule) end

--- Serve the next request matching `path` as a stream of `lines`, each sent only after the
--- previous one was acknowledged (M:ack) or `ack_timeout` seconds (default 15) passed.
function M:stream(path, lines, ack_timeout)
  return post(self.url .. "/_faults/stream", { path = path, lines = lines, ack_timeout = ack_timeout or 15 })
end

--- Acknowledge the streamed line last sent.
function M:ack() return post(self.url .. "/_faults/ack") end

--- {requests = {{method, path, status, injected}...}, stream = {{line, acked_while_streaming}...}}
function M:log()
  local res = http.request({ url = self.url .. "/_faults/log" })
  return json.decode(res.body)
end

--- Write a kubeconfig in the server's directory: `cluster` and `user` sections, named `name`.
function M:kubeconfig_with(name, cluster, user)
  local cfg = { apiVersion = "v1", kind = "Config", ["current-context"] = "test",
    clusters = { { name = "test", cluster = cluster } },
    contexts = { { name = "test", context = { cluster = "test", user = "u", namespace = "default" } } },
    users = { { name = "u", user = user or json.object() } } }
  local path = self.dir .. "/" .. name
  local f = assert(io.open(path, "wb"))
  f:write(json.encode(cfg))
  f:close()
  return path
end

--- The logged requests whose method is `method` and whose path contains `text`.
function M:requests(method, text)
  local out = {}
  for _, r in ipairs(self:log().requests) do
    if r.method == method and r.path:find(text, 1, true) then out[#out + 1] = r end
  end
  return out
end

--- POST a control of the API server itself (/_test/<what>).
function M:control(what, body) return post(self.api .. "/_test/" .. what, body) end

return M
