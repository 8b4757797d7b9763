--- BuildKit's build session (POST /session, upgraded to h2c). The engine becomes a gRPC client
--- of myrmex on that connection and calls back for what only the client has: build secrets
--- (moby.buildkit.secrets.v1.Secrets/GetSecret), registry credentials
--- (moby.filesync.v1.Auth/Credentials, from myrmex's own credential lookup) and health checks
--- (grpc.health.v1.Health/Check), SSH agents (moby.sshforward.v1.SSH, relayed to a local agent
--- socket), and the build context itself
--- (moby.filesync.v1.FileSync/DiffCopy: the engine asks for a directory, myrmex sends the stat
--- of every entry and then the files the engine does not have yet). HTTP/2 and the gRPC framing are nghttp2's, in
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
local DIFFCOPY = "/moby.filesync.v1.FileSync/DiffCopy"
local CHECK_AGENT = "/moby.sshforward.v1.SSH/CheckAgent"
local FORWARD_AGENT = "/moby.sshforward.v1.SSH/ForwardAgent"
-- Response bytes kept queued per file sync stream: more is produced only below this, so a
-- 300 MiB context costs this much memory, not its size.
local SYNC_QUEUE = 256 * 1024

-- gRPC metadata values are sent %-escaped when they hold non-ASCII bytes ("<key>-encoded").
local function unescape(v)
  return (v:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

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
---@param o {secrets?:table<string,string>, ssh?:table<string,string>, dirs?:table<string,string>,
---  shared_key?:string, name?:string}
---@return table session
function M.open(client, o)
  local id = random_id(16)
  local headers = {
    ["X-Docker-Expose-Session-Uuid"] = id,
    ["X-Docker-Expose-Session-Name"] = o.name or "myrmex",
    -- Stable for a context directory: the engine keeps its copy of the context under it, which
    -- is what lets the next build send only the files that changed.
    ["X-Docker-Expose-Session-Sharedkey"] = o.shared_key or random_id(16),
  }
  method_headers(headers, { SECRETS, CREDENTIALS, HEALTH, DIFFCOPY, CHECK_AGENT, FORWARD_AGENT })
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
    dirs = o.dirs or {}, syncs = {}, ssh = o.ssh or {}, agents = {}, served = {}, sent_files = 0,
    sent_bytes = 0, done = false }, Session)
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
  elseif path == CHECK_AGENT then
    local req = bk.decode_message("CheckAgentRequest", message or "")
    local id = req and req.id ~= "" and req.id or "default"
    if self.ssh[id] then
      g:send_message(stream, "")
      g:finish(stream, OK)
    else
      g:finish(stream, NOT_FOUND, ("no SSH agent %q given to the build (ssh = {%s = SOCKET})"):format(id, id))
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

-- A DiffCopy call: walk the directory the engine names, with its patterns.
function Session:start_sync(stream, headers)
  local function values(name)
    local vals = headers[name] or {}
    if headers[name .. "-encoded"] then
      local out = {}
      for i, v in ipairs(vals) do out[i] = unescape(v) end
      return out
    end
    return vals
  end
  self.served[DIFFCOPY] = (self.served[DIFFCOPY] or 0) + 1
  local name = values("dir-name")[1]
  local dir = name and self.dirs[name]
  if not dir then
    self.grpc:finish(stream, NOT_FOUND, ("no access allowed to dir %q"):format(tostring(name)))
    return
  end
  local inc, exc = values("include-patterns"), values("exclude-patterns")
  -- Paths the engine wants whatever the patterns say (the Dockerfile, .dockerignore); alone,
  -- they are all it wants.
  local follow = values("followpaths")
  if #inc == 0 and #follow > 0 then
    -- A followed path that is a symlink brings its target along (inside the directory only),
    -- as fsutil's FollowPaths does: a Dockerfile may be a link to the real one.
    local rt = require("myrmex.core.runtime")
    local root = rt.realpath(dir) or dir
    inc = {}
    for _, p in ipairs(follow) do
      inc[#inc + 1] = p
      local real = rt.realpath(dir .. "/" .. p)
      if real and real ~= dir .. "/" .. p and real:sub(1, #root + 1) == root .. "/" then
        inc[#inc + 1] = real:sub(#root + 2)
      end
    end
  end
  local walker = require("myrmex.core.archive").sync_walk { dir = dir,
    include = #inc > 0 and inc or nil, exclude = #exc > 0 and exc or nil }
  log.debug("build session: the engine asks for a directory", { engine = "docker", op = "build",
    dir = name, path = dir, include = #inc, exclude = #exc })
  self.syncs[stream] = { walker = walker, name = name, queue = {}, stats_done = false }
end

function Session:end_sync(stream, status, msg)
  local sync = self.syncs[stream]
  if not sync then return end
  self.syncs[stream] = nil
  sync.walker:close()
  if status then self.grpc:finish(stream, status, msg) end
end

-- A packet from the engine on a DiffCopy stream.
function Session:sync_packet(stream, data)
  local archive = require("myrmex.core.archive")
  local sync = self.syncs[stream]
  local p, why = archive.decode_sync_packet(data)
  if not p then
    self:end_sync(stream, 3, why) -- INVALID_ARGUMENT
  elseif p.type == "req" then
    sync.queue[#sync.queue + 1] = p.id
  elseif p.type == "fin" then
    self.grpc:send_message(stream, archive.sync_packet("fin"))
    self:end_sync(stream, OK)
  elseif p.type == "err" then
    log.warn("build session: the engine failed receiving the context: " .. p.data,
      { engine = "docker", op = "build", dir = sync.name })
    self:end_sync(stream, OK)
  end
end

-- Produce file sync packets while there is room; true when a stream has more to send.
function Session:pump()
  local archive = require("myrmex.core.archive")
  local g, more = self.grpc, false
  for stream, sync in pairs(self.syncs) do
    -- A call the engine dropped takes no more: its walker is closed and the loop ends.
    local function send(pkt)
      if g:send_message(stream, pkt) then return true end
      self:end_sync(stream)
      return false
    end
    while self.syncs[stream] and g:queued(stream) < SYNC_QUEUE do
      if not sync.stats_done then
        local list, why = sync.walker:next(256)
        if not list then
          g:send_message(stream, archive.sync_packet("err", why))
          self:end_sync(stream, 2, why) -- UNKNOWN
          break
        end
        for _, pkt in ipairs(list) do
          if not send(pkt) then break end
        end
        if #list == 0 and send(archive.sync_packet("stat")) then -- the empty STAT ends the list
          sync.stats_done = true
        end
      elseif sync.current then
        local pkt, last = sync.walker:read(sync.current)
        if not pkt then
          g:send_message(stream, archive.sync_packet("err", last))
          self:end_sync(stream, 2, last)
          break
        end
        if send(pkt) then
          self.sent_bytes = self.sent_bytes + #pkt
          if last then sync.current = nil end
        end
      elseif #sync.queue > 0 then
        sync.current = table.remove(sync.queue, 1)
        self.sent_files = self.sent_files + 1
      else
        break
      end
    end
    if self.syncs[stream] and (not sync.stats_done or sync.current or #sync.queue > 0) then more = true end
  end
  return more
end

-- A ForwardAgent call: one connection to the agent, relayed both ways as BytesMessages.
function Session:start_agent(stream, headers)
  self.served[FORWARD_AGENT] = (self.served[FORWARD_AGENT] or 0) + 1
  local id = (headers["buildkit.ssh.id"] or {})[1] or "default"
  local path = self.ssh[id]
  if not path then
    self.grpc:finish(stream, NOT_FOUND, ("no SSH agent %q given to the build"):format(id))
    return
  end
  local sock, why = require("myrmex.core.unixsock").connect(path)
  if not sock then
    log.warn("build session: cannot reach the SSH agent: " .. why, { engine = "docker", op = "build", ssh_id = id })
    self.grpc:finish(stream, 14, "SSH agent: " .. why) -- UNAVAILABLE
    return
  end
  log.debug("build session: SSH agent forwarded", { engine = "docker", op = "build", ssh_id = id })
  self.agents[stream] = { sock = sock, out = "", from = 1, peer_done = false }
end

function Session:end_agent(stream, status, msg)
  local a = self.agents[stream]
  if not a then return end
  self.agents[stream] = nil
  a.sock:close()
  if status then self.grpc:finish(stream, status, msg) end
end

-- Move bytes between the agents and their streams; true when something moved.
function Session:relay_agents()
  local bk = require("myrmex.core.buildkit")
  local moved = false
  for stream, a in pairs(self.agents) do
    if a.from <= #a.out then
      local n, why = a.sock:write(a.out, a.from)
      if not n then
        self:end_agent(stream, 14, "SSH agent: " .. why)
        goto next
      end
      a.from, moved = a.from + n, moved or n > 0
      if a.from > #a.out then a.out, a.from = "", 1 end
    end
    if a.peer_done and a.from > #a.out and not a.write_closed then
      a.sock:close_write()
      a.write_closed = true
    end
    while self.agents[stream] and self.grpc:queued(stream) < SYNC_QUEUE do
      local data, why = a.sock:read(65536)
      if data == false then break end
      if data == nil then
        if why then log.warn("build session: SSH agent: " .. why, { engine = "docker", op = "build" }) end
        self:end_agent(stream, OK)
        break
      end
      moved = true
      if not self.grpc:send_message(stream, bk.encode_message("BytesMessage", { data = data })) then
        self:end_agent(stream)
      end
    end
    ::next::
  end
  return moved
end

function Session:handle(events)
  for _, ev in ipairs(events) do
    local c = self.calls[ev.stream]
    if ev.kind == "call" and ev.path == DIFFCOPY then
      self:start_sync(ev.stream, ev.headers or {})
    elseif ev.kind == "call" and ev.path == FORWARD_AGENT then
      self:start_agent(ev.stream, ev.headers or {})
    elseif self.agents[ev.stream] then
      local a = self.agents[ev.stream]
      if ev.kind == "message" then
        local m = require("myrmex.core.buildkit").decode_message("BytesMessage", ev.data)
        if m then a.out = a.out:sub(a.from) .. m.data; a.from = 1 end
      elseif ev.kind == "end" then
        a.peer_done = true
      elseif ev.kind == "reset" then
        self:end_agent(ev.stream)
      end
    elseif self.syncs[ev.stream] then
      if ev.kind == "message" then
        self:sync_packet(ev.stream, ev.data)
      elseif ev.kind == "end" then
        self:end_sync(ev.stream, OK)
      elseif ev.kind == "reset" then
        self:end_sync(ev.stream)
      end
    elseif ev.kind == "call" then
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
    return #out
  end
  flush()
  while not self.done do
    local chunk = table.remove(pending, 1)
    if not chunk then chunk = s:read_nowait() end
    if chunk == nil then break end
    if chunk == false then
      -- Nothing came: send more of the context if the peer's window has room, else wait
      -- (which also lets the transport read the peer's window updates and the build run).
      self:pump()
      local moved = self:relay_agents()
      if flush() == 0 and not moved then http.wait() end
    else
      local events, why = g:feed(chunk)
      if not events then
        errors.raise({ code = "Invalid", engine = "docker", message = "build session: " .. why }, 0)
      end
      self:handle(events)
      self:pump()
      self:relay_agents()
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
  for stream in pairs(self.syncs) do self:end_sync(stream) end
  for stream in pairs(self.agents) do self:end_agent(stream) end
  if self.grpc then self.grpc:close() end
  if self.stream then self.stream:close() end
end
Session.__close = Session.close

return M
