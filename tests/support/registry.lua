--- Test helper: Debian's docker-registry (distribution 2.8) on a free 127.0.0.1 port, in three
--- setups — plain HTTP, TLS with an openssl test CA plus htpasswd Basic auth, and token auth
--- with tests/support/token_server.py signing JWTs the registry trusts. Each instance has its
--- own directory (config, storage, certificates, logs) and is stopped by `stop()`.
local sh = require("tests.support.sh")

local M = {}

local q = sh.q
local SUPPORT = (os.getenv("MYRMEX_SOURCE_DIR") or ".") .. "/tests/support"

local function run(cmd)
  local r = sh.run(cmd)
  if r.code ~= 0 then error(("registry helper: %s failed (%d): %s"):format(cmd, r.code, r.stderr), 2) end
  return r.stdout
end

local write = sh.write

local read = sh.read

--- A port nobody listens on right now (the kernel picks it; the race is harmless in tests).
function M.free_port()
  return tonumber(run([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']]))
end

--- A CA and a server certificate for 127.0.0.1 / localhost, made by openssl now.
--- Returns {ca=, cert=, key=} paths inside `dir`.
function M.make_tls(dir, name)
  name = name or "server"
  local ca, cakey = dir .. "/ca.pem", dir .. "/ca.key"
  if not read(ca) then
    run(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=myrmex-test-ca -keyout %s -out %s 2>/dev/null")
      :format(q(cakey), q(ca)))
  end
  local key, csr, cert = dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".csr", dir .. "/" .. name .. ".pem"
  local ext = dir .. "/" .. name .. ".ext"
  write(ext, "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
  run(("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout %s -out %s 2>/dev/null")
    :format(q(key), q(csr)))
  run(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 2 -extfile %s -out %s 2>/dev/null")
    :format(q(csr), q(ca), q(cakey), q(ext), q(cert)))
  return { ca = ca, cert = cert, key = key }
end

local Registry = {}
Registry.__index = Registry

local function config_text(self)
  local lines = {
    "version: 0.1",
    "log:",
    "  level: info",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    "    rootdirectory: " .. self.root,
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    "  addr: 127.0.0.1:" .. self.port,
    "  secret: myrmex-test-secret",
  }
  if self.mode == "tls" then
    lines[#lines + 1] = "  tls:"
    lines[#lines + 1] = "    certificate: " .. self.tls.cert
    lines[#lines + 1] = "    key: " .. self.tls.key
    lines[#lines + 1] = "auth:"
    lines[#lines + 1] = "  htpasswd:"
    lines[#lines + 1] = "    realm: myrmex-test"
    lines[#lines + 1] = "    path: " .. self.dir .. "/htpasswd"
  elseif self.mode == "token" then
    lines[#lines + 1] = "auth:"
    lines[#lines + 1] = "  token:"
    lines[#lines + 1] = ("    realm: http://127.0.0.1:%d/token"):format(self.token_port)
    lines[#lines + 1] = "    service: myrmex-test-registry"
    lines[#lines + 1] = "    issuer: myrmex-test-issuer"
    lines[#lines + 1] = "    rootcertbundle: " .. self.dir .. "/token.pem"
  end
  return table.concat(lines, "\n") .. "\n"
end

local function wait_for(self, url, extra)
  for _ = 1, 100 do
    local r = sh.run(("curl -s -o /dev/null -w '%%{http_code}' %s %s"):format(extra or "", q(url)))
    if r.stdout ~= "000" and r.stdout ~= "" then return end
    os.execute("sleep 0.05")
  end
  error("registry helper: nothing answered on " .. url .. "\n" .. (read(self.dir .. "/registry.log") or ""))
end

local function start_token_server(self)
  run(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=myrmex-token-signer -keyout %s -out %s 2>/dev/null")
    :format(q(self.dir .. "/token.key"), q(self.dir .. "/token.pem")))
  local users = {}
  for u, p in pairs(self.users) do users[#users + 1] = ("%q: %q"):format(u, p) end
  write(self.dir .. "/users.json", "{" .. table.concat(users, ", ") .. "}")
  local portfile = self.dir .. "/token.port"
  os.remove(portfile)
  local pid = run(("python3 %s %s %s %s myrmex-test-issuer %s %d >%s 2>&1 & echo $!"):format(
    q(SUPPORT .. "/token_server.py"), q(portfile), q(self.dir .. "/token.key"), q(self.dir .. "/token.pem"),
    q(self.dir .. "/users.json"), self.token_expires or 300, q(self.dir .. "/token.log")))
  self.token_pid = tonumber(pid)
  for _ = 1, 200 do
    local p = read(portfile)
    if p then
      self.token_port = tonumber(p)
      self.token_url = ("http://127.0.0.1:%d"):format(self.token_port)
      return
    end
    os.execute("sleep 0.05")
  end
  error("registry helper: token server did not start\n" .. (read(self.dir .. "/token.log") or ""))
end

--- Start (or restart) the registry process on the same port and storage.
function Registry:start_process()
  local pid = run(("docker-registry serve %s >>%s 2>&1 & echo $!"):format(
    q(self.dir .. "/config.yml"), q(self.dir .. "/registry.log")))
  self.pid = tonumber(pid)
  local scheme = self.mode == "tls" and "https" or "http"
  wait_for(self, ("%s://127.0.0.1:%d/v2/"):format(scheme, self.port),
    self.mode == "tls" and ("--cacert " .. q(self.tls.ca)) or "")
end

--- Kill the registry process only (storage and port kept), as a crash would.
function Registry:kill()
  if self.pid then
    os.execute(("kill -9 %d 2>/dev/null; while kill -0 %d 2>/dev/null; do sleep 0.02; done"):format(self.pid, self.pid))
    self.pid = nil
  end
end

--- Stop everything and remove the directory.
function Registry:stop()
  self:kill()
  if self.token_pid then
    os.execute(("kill %d 2>/dev/null"):format(self.token_pid))
    self.token_pid = nil
  end
  if self.dir and not os.getenv("MYRMEX_KEEP_REGISTRY") then os.execute("rm -rf " .. q(self.dir)) end
end

--- Path of a blob's data file in the registry's storage.
function Registry:blob_path(digest)
  local hex = digest:match("^sha256:(%x+)$")
  return ("%s/docker/registry/v2/blobs/sha256/%s/%s/data"):format(self.root, hex:sub(1, 2), hex)
end

--- Token issue counts per scope from the token server (token mode only).
function Registry:token_stats()
  return run(("curl -s %s/stats"):format(q(self.token_url)))
end

--- The registry's own log so far.
function Registry:log() return read(self.dir .. "/registry.log") or "" end

--- Restart the registry process after `seconds`, in the background (for crash tests).
function Registry:restart_later(seconds)
  local pid = run(("(sleep %s; exec docker-registry serve %s >>%s 2>&1) & echo $!"):format(
    tostring(seconds), q(self.dir .. "/config.yml"), q(self.dir .. "/registry.log")))
  self.pid = tonumber(pid)
end

--- Start a registry. opts: mode = "plain" (default) | "tls" | "token";
--- users = {name = password} (tls and token modes; default {tester = "s3cret-pass"});
--- token_expires = seconds (token mode).
--- Returns a handle: host ("127.0.0.1:PORT"), port, dir, root (storage), tls ({ca,cert,key}),
--- users, token_url, and methods stop, kill, start_process, blob_path, token_stats, log.
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({ mode = opts.mode or "plain", users = opts.users or { tester = "s3cret-pass" },
    token_expires = opts.token_expires }, Registry)
  self.dir = run("mktemp -d /tmp/myrmex-registry.XXXXXX"):gsub("%s+$", "")
  self.root = self.dir .. "/storage"
  self.port = M.free_port()
  self.host = "127.0.0.1:" .. self.port
  if self.mode == "tls" then
    self.tls = M.make_tls(self.dir)
    local f = self.dir .. "/htpasswd"
    write(f, "")
    for u, p in pairs(self.users) do run(("htpasswd -bB %s %s %s 2>/dev/null"):format(q(f), q(u), q(p))) end
  elseif self.mode == "token" then
    start_token_server(self)
  end
  write(self.dir .. "/config.yml", config_text(self))
  local ok, err = pcall(self.start_process, self)
  if not ok then
    self:stop()
    error(err, 2)
  end
  return self
end

--- Write an OCI image layout at `dir` holding one image FROM scratch: layer 1 is
--- /bin/busybox from busybox-static, further layers hold `files` ({path = content}) and
--- `random` bytes of /dev/urandom in /data/<n> per extra layer. Returns
--- {digest=manifest digest, manifest=bytes, config=bytes, layers={digest...}, tag=}.
---@param dir string
---@param opts? {tag?:string, files?:table<string,string>, random?:integer[], labels?:table, gzip?:boolean}
function M.make_layout(dir, opts)
  opts = opts or {}
  local archive = require("myrmex.core.archive")
  local digest = require("myrmex.digest")
  local json = require("myrmex.json")
  run("mkdir -p " .. q(dir .. "/blobs/sha256"))
  local function store(path)
    local d, size = digest.file(path)
    os.rename(path, dir .. "/blobs/sha256/" .. d:sub(8))
    return d, size
  end
  local layers, diff_ids = {}, {}
  local function layer(add)
    local tmp = dir .. "/layer.tmp"
    local w = archive.writer(tmp, { format = "pax" })
    add(w)
    w:close()
    local d, size = store(tmp)
    layers[#layers + 1] = { mediaType = "application/vnd.oci.image.layer.v1.tar", digest = d, size = size }
    diff_ids[#diff_ids + 1] = d
  end
  layer(function(w)
    w:add({ path = "bin", type = "dir", mode = 493 })
    w:add({ path = "bin/busybox", data = { file = "/bin/busybox" }, mode = 493 })
    w:add({ path = "bin/sh", type = "symlink", linkname = "busybox", mode = 511 })
  end)
  if opts.files then
    layer(function(w)
      for path, content in pairs(opts.files) do w:add({ path = path, data = content, mode = 420 }) end
    end)
  end
  for i, n in ipairs(opts.random or {}) do
    run("sh -c " .. q(("head -c %d /dev/urandom > %s"):format(n, q(dir .. "/random.tmp"))))
    layer(function(w)
      w:add({ path = "data", type = "dir", mode = 493 })
      w:add({ path = "data/" .. i, data = { file = dir .. "/random.tmp" }, mode = 420 })
    end)
    os.remove(dir .. "/random.tmp")
  end
  local config = json.encode({ architecture = "amd64", os = "linux", created = "2026-01-02T03:04:05Z",
    config = { Cmd = json.array({ "/bin/busybox", "echo", "hello from myrmex" }), Labels = opts.labels or { ["org.example.test"] = "yes" } },
    rootfs = { type = "layers", diff_ids = json.array(diff_ids) } })
  local cd = digest.string(config)
  write(dir .. "/blobs/sha256/" .. cd:sub(8), config)
  local manifest = json.encode({ schemaVersion = 2, mediaType = "application/vnd.oci.image.manifest.v1+json",
    config = { mediaType = "application/vnd.oci.image.config.v1+json", digest = cd, size = #config },
    layers = json.array(layers) })
  local md = digest.string(manifest)
  write(dir .. "/blobs/sha256/" .. md:sub(8), manifest)
  local tag = opts.tag or "latest"
  write(dir .. "/oci-layout", '{"imageLayoutVersion":"1.0.0"}')
  write(dir .. "/index.json", json.encode({ schemaVersion = 2, manifests = json.array({ {
    mediaType = "application/vnd.oci.image.manifest.v1+json", digest = md, size = #manifest,
    annotations = { ["org.opencontainers.image.ref.name"] = tag } } }) }))
  local list = {}
  for i, l in ipairs(layers) do list[i] = l.digest end
  return { digest = md, manifest = manifest, config = config, config_digest = cd, layers = list, tag = tag }
end

--- A new empty temporary directory.
function M.tmpdir()
  return (run("mktemp -d /tmp/myrmex-regtest.XXXXXX"):gsub("%s+$", ""))
end

return M
