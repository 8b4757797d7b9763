--- BuildKit's build session (POST /session, upgraded to h2c). The engine becomes a gRPC client
--- of myrmex on that connection and calls back for what only the client has: build secrets
--- (moby.buildkit.secrets.v1.Secrets/GetSecret), registry credentials
--- (moby.filesync.v1.Auth/Credentials, from myrmex's own credential lookup) and health checks
--- (grpc.health.v1.Health/Check). HTTP/2 and the gRPC framing are nghttp2's, in
--- myrmex.core.grpc; the messages are protobuf-c's, in myrmex.core.buildkit; the bytes go
--- through the shared transport's upgraded connection. Internal to docker/build.lua.
local http = require("myrmex.http")
local errors = require("myrmex.errors")
local log = require("myrmex.log")

local M = {}

-- gRPC status codes used here.
local OK, NOT_FOUND, UNIMPLEMENTED = 0, 5, 12

local SECRETS = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
local CREDENTIALS = "/moby.filesync.v1.Auth/Credentials"
local HEALTH = "/grpc.health.v1.Health/Check"

-- A random hex id (the session's name on the engine, and its shared key).
local function random_id(bytes)
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(bytes)
  f:close()
  return (raw:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- The values of `secrets = {id = {file = PATH} | {env = NAME}}`, read now and registered with
--- log.secret. A missing file or variable raises NotFound naming the secret.
---@param spec table<string, {file?:string, env?:string}>
---@param fname string the public function, for misuse errors
---@return table<string,string>
function M.read_secrets(spec, fname)
  if type(spec) ~= "table" then error(("docker.%s: secrets: table {id = {file=}|{env=}} expected"):format(fname), 4) end
  local out = {}
  for id, src in pairs(spec) do
    if type(id) ~= "string" or id == "" then error(("docker.%s: secrets: ids must be strings"):format(fname), 4) end
    if type(src) ~= "table" or (src.file == nil) == (src.env == nil) then
      error(("docker.%s: secrets.%s: give exactly one of file = PATH or env = NAME"):format(fname, id), 4)
    end
    for k in pairs(src) do
      if k ~= "file" and k ~= "env" then
        error(("docker.%s: secrets.%s.%s: unknown key"):format(fname, id, tostring(k)), 4)
      end
    end
    local value
    if src.file then
      local f = io.open(src.file, "rb")
      if not f then
        errors.raise({ code = "NotFound", engine = "docker",
          message = ("build secret %q: no readable file %s"):format(id, src.file) }, 0)
      end
      value = f:read("a")
      f:close()
    else
      value = os.getenv(src.env)
      if value == nil then
        errors.raise({ code = "NotFound", engine = "docker",
          message = ("build secret %q: environment variable %s is not set"):format(id, src.env) }, 0)
      end
    end
    log.secret(value)
    out[id] = value
  end
  return out
end

-- The session's header names, each method once. The transport takes a header map, one value
-- per key; header names are case-insensitive and the engine (Go's net/http) gathers every
-- spelling under one name, so each method goes under its own spelling of the header.
local function method_headers(h, methods)
  local name = "X-Docker-Expose-Session-Grpc-Method"
  for i, m in ipairs(methods) do
    local n, k = name, i
    -- Spelling number i: the binary digits of i pick which letters are lower case.
    local pos = 0
    n = n:gsub("%a", function(c)
      pos = pos + 1
      local bit = (k >> (pos - 1)) & 1
      return bit == 1 and c:lower() or c:upper()
    end)
    h[n] = m
  end
end

local Session = {}
Session.__index = Session

--- Open a session on the engine: returns the session, whose `id` goes to /build?session=.
---@param client table the docker client
---@param o {secrets?:table<string,string>, name?:string}
---@return table session
function M.open(client, o)
  local id = random_id(16)
  local headers = {
    ["X-Docker-Expose-Session-Uuid"] = id,
    ["X-Docker-Expose-Session-Name"] = o.name or "myrmex",
    ["X-Docker-Expose-Session-Sharedkey"] = random_id(16),
  }
  method_headers(headers, { SECRETS, CREDENTIALS, HEALTH })
  local req = client:_request_table({ method = "POST", path = "/session", headers = headers, timeout = false })
  req.upgrade = "h2c"
  local s = http.open(req)
  if s.status ~= 101 and s.status ~= 200 then
    local body = s:read_all(65536)
    s:close()
    errors.raise({ code = "Engine", engine = "docker", status = s.status,
      message = ("the engine refused a build session (HTTP %d): %s"):format(s.status, body:gsub("%s+$", "")) }, 0)
  end
  local grpc = require("myrmex.core.grpc").server()
  return setmetatable({ id = id, stream = s, grpc = grpc, secrets = o.secrets or {}, calls = {},
    served = {}, done = false }, Session)
end

-- Answer one complete unary call.
function Session:answer(stream, path, message)
  local bk = require("myrmex.core.buildkit")
  local g = self.grpc
  self.served[path] = (self.served[path] or 0) + 1
  if path == HEALTH then
    g:send_message(stream, bk.encode_message("HealthCheckResponse", { status = 1 }))
    g:finish(stream, OK)
  elseif path == SECRETS then
    local req = bk.decode_message("GetSecretRequest", message or "")
    local value = req and self.secrets[req.id]
    if value then
      log.debug("build session: secret handed to the engine", { engine = "docker", op = "build", secret_id = req.id })
      g:send_message(stream, bk.encode_message("GetSecretResponse", { data = value }))
      g:finish(stream, OK)
    else
      g:finish(stream, NOT_FOUND, ("secret %s not found"):format(req and req.id or "?"))
    end
  elseif path == CREDENTIALS then
    local req = bk.decode_message("CredentialsRequest", message or "")
    local host = req and req.host or ""
    local creds = host ~= "" and require("myrmex.registry.credentials").lookup(host) or nil
    local reply = {}
    if creds then
      reply.username = creds.username or ""
      reply.secret = creds.password or creds.identity_token or ""
      log.secret(reply.secret)
    end
    log.debug("build session: registry credentials asked for", { engine = "docker", op = "build",
      registry = host, found = creds ~= nil })
    g:send_message(stream, bk.encode_message("CredentialsResponse", reply))
    g:finish(stream, OK)
  else
    g:finish(stream, UNIMPLEMENTED, "myrmex does not serve " .. path)
  end
end

function Session:handle(events)
  for _, ev in ipairs(events) do
    local c = self.calls[ev.stream]
    if ev.kind == "call" then
      self.calls[ev.stream] = { path = ev.path }
    elseif ev.kind == "message" and c then
      c.message = ev.data
    elseif ev.kind == "end" and c then
      self.calls[ev.stream] = nil
      self:answer(ev.stream, c.path, c.message)
    elseif ev.kind == "reset" then
      self.calls[ev.stream] = nil
    end
  end
end

--- Serve the engine's calls until stop() or the connection ends. Runs as a branch of
--- myrmex.parallel beside the build: it waits by yielding.
function Session:serve()
  local s, g = self.stream, self.grpc
  local pending = {}
  local function flush()
    local out = g:output()
    if #out > 0 then
      s:send(out, function()
        local c = s:read_nowait()
        if c then pending[#pending + 1] = c end
      end)
    end
  end
  flush()
  while not self.done do
    local chunk = table.remove(pending, 1)
    if not chunk then chunk = s:read_nowait() end
    if chunk == nil then break end
    if chunk == false then
      http.wait()
    else
      local events, why = g:feed(chunk)
      if not events then
        errors.raise({ code = "Invalid", engine = "docker", message = "build session: " .. why }, 0)
      end
      self:handle(events)
      flush()
    end
  end
end

--- End the session: the serving loop returns and the connection is closed.
function Session:stop()
  self.done = true
end

function Session:close()
  self.done = true
  if self.grpc then self.grpc:close() end
  if self.stream then self.stream:close() end
end
Session.__close = Session.close

return M
