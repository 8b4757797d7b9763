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
    contexts = { { name = "test", context = { cluster = "test", user = "u", namespace = "default" } } },
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
