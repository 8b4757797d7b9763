--- myrmex.docker: the Docker Engine over its HTTP API, through the shared transport.
--- See docs/docker.md for the reference; this file holds the connection, the request
--- plumbing shared by the areas, and the system calls (ping, version, info, events).
local http = require("myrmex.http")
local json = require("myrmex.json")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local plan = require("myrmex.plan")
local check = require("myrmex.check")

local M = {}

--- The newest Engine API version this module speaks; older engines are spoken to in theirs.
M.api_version = "1.45"
--- Below this the module refuses to talk (fields it relies on are missing).
M.min_api_version = "1.40"

local DEFAULT_SOCKET = "/var/run/docker.sock"

---@class myrmex.docker.Client
---@field host string the engine address ("unix:///var/run/docker.sock", "tcp://h:2376")
---@field api_version string the negotiated API version
---@field offline boolean true in plan mode when the engine could not be reached
local Client = {}
Client.__name = "myrmex.docker.Client"

-- The area files (images, containers, networks) add their methods on first use: a recipe that
-- only pings or inspects does not pay for compiling them at start-up.
local areas_loaded = false
local load_areas

-- Client fields that may be nil on an instance; looking them up must not load the areas.
local FIELDS = { host = true, api_version = true, offline = true, timeout = true, tls = true,
  socket = true, base = true, builder_version = true }

function Client.__index(_, k)
  local v = rawget(Client, k)
  if v == nil and not areas_loaded and not FIELDS[k] then
    load_areas()
    v = rawget(Client, k)
  end
  return v
end

function Client:__tostring()
  return ("docker client %s (API %s%s)"):format(self.host, self.api_version,
    self.offline and ", offline" or "")
end

-- ---------------------------------------------------------------------------------------
-- Shared helpers, also handed to the area files (docker/images.lua, ...).

local H = {}

--- Raise a misuse error naming the public function.
function H.misuse(fname, msg)
  error(("docker.%s: %s"):format(fname, msg), 3)
end

--- Check that `opts` is nil or a table whose keys are all in `allowed` (catches typos).
function H.options(fname, opts, allowed)
  return check.options("docker", fname, opts, allowed)
end

--- A set from a list of names.
H.set = check.set

local MULTI = {}

--- Mark a list as a repeated query parameter (?t=a&t=b).
function H.multi(list) return setmetatable({ list = list }, MULTI) end

local function escape_component(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Escape a path parameter (an image reference keeps its "/" and ":").
function H.path(s)
  return (tostring(s):gsub("[^%w%-%._~/:@]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- A query string from a map; booleans become 1/0, tables JSON, nils are left out. Keys are
--- sorted so that the same call gives the same URL.
function H.query(q)
  if not q then return "" end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  local function add(k, v)
    if type(v) == "boolean" then v = v and "1" or "0" end
    if type(v) == "table" then v = json.encode(v, { sort_keys = true }) end
    parts[#parts + 1] = escape_component(k) .. "=" .. escape_component(v)
  end
  for _, k in ipairs(keys) do
    local v = q[k]
    if getmetatable(v) == MULTI then
      for _, item in ipairs(v.list) do add(k, item) end
    elseif v ~= nil then
      add(k, v)
    end
  end
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

--- Filters for list/prune calls: {label={"a=b"}, dangling=true} -> {"label":["a=b"],...}.
function H.filters(f)
  if f == nil then return nil end
  local out = {}
  for k, v in pairs(f) do
    if type(v) == "table" then
      out[k] = json.array {}
      for i, item in ipairs(v) do out[k][i] = tostring(item) end
    else
      out[k] = json.array { tostring(v) }
    end
  end
  return out
end

--- The error object for an Engine error reply.
function H.api_error(status, body, what)
  local msg = body or ""
  local obj = json.safe_decode(msg)
  if type(obj) == "table" and type(obj.message) == "string" then msg = obj.message end
  msg = msg:gsub("%s+$", "")
  if msg == "" then msg = "HTTP " .. status end
  -- Engines of the 20.10 line wrap some errors in themselves: "no such image: x: No such
  -- image: x". Said once is enough.
  local half = (#msg - 2) // 2
  if msg:sub(half + 1, half + 2) == ": " and msg:sub(1, half):lower() == msg:sub(half + 3):lower() then
    msg = msg:sub(half + 3)
  end
  local code = errors.from_status(status) or "Engine"
  -- A reference the engine cannot parse is the caller's input, not the engine failing: it
  -- answers 500 for it (tag, commit, create), which would read as an engine fault.
  if status == 500 and (msg:find("^invalid reference format") or msg:find("invalid tag format", 1, true)) then
    code = "Invalid"
  end
  return errors.new {
    code = code,
    status = status,
    engine = "docker",
    message = what and (what .. ": " .. msg) or msg,
  }
end

function Client:_url(path, q)
  return self.base .. "/v" .. self.api_version .. path .. H.query(q)
end

function Client:_check_online(op)
  if self.offline then
    errors.raise({
      code = "Unreachable",
      engine = "docker",
      message = ("%s needs the engine at %s, which is not reachable (dry run)"):format(op, self.host),
    }, 3)
  end
end

function Client:_request_table(t)
  local req = {
    method = t.method or "GET",
    url = self:_url(t.path, t.query),
    unix_socket = self.socket,
    tls = self.tls,
    engine = "docker",
    headers = t.headers or {},
    timeout = t.timeout == nil and self.timeout or t.timeout or nil,
    body = t.body,
    to_file = t.to_file,
    finish_on_cancel = t.finish_on_cancel,
  }
  if t.json ~= nil then
    req.body = json.encode(t.json)
    req.headers["Content-Type"] = "application/json"
  end
  return req
end

--- One request with a bounded reply. Returns the decoded JSON (or the text when the reply is
--- not JSON) and the response; an error status raises the mapped error object.
--- t: {method, path, query, json, body, headers, timeout, to_file, ok={[304]=true}}
function Client:_call(op, target, t)
  self:_check_online(op)
  return log.span("docker", op, target, function()
    local res = http.request(self:_request_table(t))
    if res.status >= 400 and not (t.ok and t.ok[res.status]) then
      error(H.api_error(res.status, res.body, t.what), 0)
    end
    local body = res.body or ""
    if body == "" then return nil, res end
    local ctype = res.headers and res.headers["content-type"] or ""
    if ctype:find("json", 1, true) then return json.decode(body), res end
    return body, res
  end)
end

--- A streamed request: `on_chunk(chunk)` for every piece of the body (return false to stop).
--- Error statuses raise before anything reaches on_chunk. Returns the response head.
function Client:_stream(op, target, t, on_chunk)
  self:_check_online(op)
  return log.span("docker", op, target, function()
    local req = self:_request_table(t)
    local s <close> = http.open(req)
    if s.status >= 400 then
      local parts, size = {}, 0
      for chunk in function() return s:read() end do
        if size < 65536 then parts[#parts + 1] = chunk end
        size = size + #chunk
      end
      error(H.api_error(s.status, table.concat(parts), t.what), 0)
    end
    while true do
      local chunk = s:read()
      if not chunk then break end
      if on_chunk(chunk) == false then break end
    end
    return { status = s.status, headers = s.headers }
  end)
end

--- "repo/name:tag" -> "repo/name", "tag" (a port in the registry host is not a tag).
function H.split_ref(ref)
  local repo, tag = ref:match("^(.+):([%w_][%w_.-]*)$")
  if repo and not tag:find("/", 1, true) then return repo, tag end
  return ref, nil
end

--- A streamed download into the file `to` (written to `to`.part, renamed once complete) or to
--- a function called with each chunk. An error status raises with the engine's message (a
--- transport-level to_file would have thrown that body away). Returns the byte count.
function Client:_download(op, target, t, to)
  local n, out, part = 0, nil, nil
  if type(to) == "string" then
    require("myrmex.sandbox").check_write(to, "writing")
    part = to .. ".part"
    local err
    out, err = io.open(part, "wb")
    if not out then
      errors.raise({ code = "Invalid", engine = "docker", message = ("%s: cannot write %s"):format(op, err) }, 3)
    end
  end
  local ok, err = pcall(self._stream, self, op, target, t, function(chunk)
    n = n + #chunk
    if out then
      local wok, werr = out:write(chunk)
      if not wok then error(errors.new { code = "Invalid", engine = "docker",
        message = ("%s: writing %s: %s"):format(op, part, werr) }, 0) end
    else
      return to(chunk)
    end
  end)
  if out then
    out:close()
    if ok then
      local rok, rerr = os.rename(part, to)
      if not rok then ok, err = false, errors.new { code = "Invalid", engine = "docker",
        message = ("%s: moving %s into place: %s"):format(op, part, rerr) } end
    end
    if not ok then os.remove(part) end
  end
  if not ok then error(err, 0) end
  return n
end

--- A hijacked request (attach, exec start): the connection is upgraded and carries the
--- process's output one way and its stdin the other. Error statuses raise with the engine's
--- message. Returns the open stream (myrmex.http: read, read_nowait, send, close_write, close).
--- t: the request table of _call.
function Client:_upgrade(op, target, t)
  self:_check_online(op)
  return log.span("docker", op, target, function()
    local req = self:_request_table(t)
    req.upgrade = "tcp"
    local s = http.open(req)
    if s.status >= 400 then
      local ok, text = pcall(s.read_all, s, 65536)
      s:close()
      error(H.api_error(s.status, ok and text or "", t.what), 0)
    end
    return s
  end)
end

--- A streamed JSON-lines request: `on_json(obj)` per message (return false to stop).
function Client:_stream_json(op, target, t, on_json)
  local stop = false
  local lines = require("myrmex.docker.stream").lines(function(line)
    if stop or line:match("^%s*$") then return end
    local obj = json.safe_decode(line)
    if obj ~= nil and on_json(obj) == false then stop = true end
  end)
  local head = self:_stream(op, target, t, function(chunk)
    lines:feed(chunk)
    if stop then return false end
  end)
  if not stop then lines:finish() end
  return head
end

--- Run `fn` unless plan mode is on; then record the call and return the planned result.
function Client:_mutate(op, target, args, fn, planned) -- luacheck: no unused args
  if plan.active() then
    return plan.record { engine = "docker", op = op, target = target, args = args,
      result = planned }
  end
  return fn()
end

-- ---------------------------------------------------------------------------------------
-- Finding the engine: explicit host, DOCKER_HOST, the current Docker context, the default.

local function read_json_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return json.safe_decode(text)
end

local function docker_config_dir()
  local dir = os.getenv("DOCKER_CONFIG")
  if dir and dir ~= "" then return dir end
  return (os.getenv("HOME") or "/root") .. "/.docker"
end

-- The endpoint of a named context, found by scanning the meta store (no need to hash names).
local function context_endpoint(name)
  local rt = require("myrmex.core.runtime")
  local base = docker_config_dir() .. "/contexts/meta"
  for _, dir in ipairs(rt.listdir(base) or {}) do
    local meta = read_json_file(base .. "/" .. dir .. "/meta.json")
    if type(meta) == "table" and meta.Name == name then
      local ep = meta.Endpoints and meta.Endpoints.docker or {}
      local tlsdir = docker_config_dir() .. "/contexts/tls/" .. dir .. "/docker"
      local tls
      if rt.stat(tlsdir .. "/ca.pem") then
        tls = { ca = tlsdir .. "/ca.pem", cert = tlsdir .. "/cert.pem", key = tlsdir .. "/key.pem",
          insecure = ep.SkipTLSVerify or nil }
      end
      return ep.Host, tls
    end
  end
  return nil
end

local function current_context()
  local name = os.getenv("DOCKER_CONTEXT")
  if not name or name == "" then
    local cfg = read_json_file(docker_config_dir() .. "/config.json")
    name = type(cfg) == "table" and cfg.currentContext or nil
  end
  if not name or name == "" or name == "default" then return nil end
  local host, tls = context_endpoint(name)
  if not host then
    -- level 4: the caller of connect (current_context < resolve_host < connect)
    error(("docker.connect: Docker context %q not found under %s"):format(name,
      docker_config_dir()), 4)
  end
  return host, tls
end

-- DOCKER_TLS_VERIFY: TLS verified against DOCKER_CERT_PATH/ca.pem with the client pair there.
-- DOCKER_TLS alone (as the docker CLI reads it): TLS without verifying the engine, the client
-- pair sent when DOCKER_CERT_PATH has one.
local function env_tls()
  local dir = os.getenv("DOCKER_CERT_PATH")
  if not dir or dir == "" then dir = docker_config_dir() end
  local verify = os.getenv("DOCKER_TLS_VERIFY")
  if verify and verify ~= "" then
    return { ca = dir .. "/ca.pem", cert = dir .. "/cert.pem", key = dir .. "/key.pem" }
  end
  local plain = os.getenv("DOCKER_TLS")
  if not plain or plain == "" then return nil end
  local rt = require("myrmex.core.runtime")
  local tls = { insecure = true }
  if rt.stat(dir .. "/cert.pem") and rt.stat(dir .. "/key.pem") then
    tls.cert, tls.key = dir .. "/cert.pem", dir .. "/key.pem"
  end
  return tls
end

--- Where to connect: returns host, tls (a transport tls table or nil).
local function resolve_host(opts)
  if opts.host then return opts.host, opts.tls end
  local env = os.getenv("DOCKER_HOST")
  if env and env ~= "" then return env, opts.tls or env_tls() end
  local host, tls = current_context()
  if host then return host, opts.tls or tls end
  return "unix://" .. DEFAULT_SOCKET, opts.tls
end

-- Fill client.base / socket / tls from a host address.
local function set_address(c, host, tls)
  local path = host:match("^unix://(.+)$")
  if path then
    c.socket, c.base = path, "http://docker"
  elseif host:match("^tcp://") or host:match("^https?://") then
    local hp = host:gsub("^%a+://", ""):gsub("/+$", "")
    if not hp:find(":", 1, true) then hp = hp .. (tls and ":2376" or ":2375") end
    c.base = (tls and "https://" or "http://") .. hp
    c.tls = tls
  else
    error(("docker.connect: unsupported host %q (use unix:// or tcp://)"):format(host), 3)
  end
end

local function version_number(v)
  local major, minor = tostring(v):match("^(%d+)%.(%d+)")
  return major and (tonumber(major) * 1000 + tonumber(minor)) or 0
end

--- The lower of two API versions.
function M.min_version(a, b)
  return version_number(a) <= version_number(b) and a or b
end

local CONNECT_OPTS = H.set { "host", "tls", "timeout", "version", "connect_timeout" }

--- Connect to a Docker engine: `host` (default: DOCKER_HOST, then the current Docker context,
--- then unix:///var/run/docker.sock), `tls = {ca=, cert=, key=, insecure=}` (default from
--- DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), `timeout` in seconds for ordinary calls, `version`
--- to pin the API version instead of negotiating it. Pings the engine; an unreachable engine
--- raises Unreachable within about a second (in plan mode the client is returned offline).
---@param opts? {host?:string, tls?:table, timeout?:number, version?:string, connect_timeout?:number}
---@return myrmex.docker.Client
function M.connect(opts)
  opts = H.options("connect", opts, CONNECT_OPTS)
  local host, tls = resolve_host(opts)
  local c = setmetatable({ host = host, timeout = opts.timeout, offline = false,
    api_version = opts.version or M.api_version }, Client)
  set_address(c, host, tls)
  local ok, err = pcall(http.request, {
    method = "GET", url = c.base .. "/_ping", unix_socket = c.socket, tls = c.tls,
    engine = "docker", timeout = opts.connect_timeout or 1,
    connect_timeout = opts.connect_timeout or 1,
  })
  if not ok then
    if not errors.is(err) then error(err, 0) end
    if plan.active() then
      c.offline = true
      log.warn("docker: engine not reachable, planning offline", { host = host })
      return c
    end
    errors.raise {
      code = err.code == "Timeout" and "Unreachable" or err.code,
      engine = "docker",
      message = ("cannot reach the Docker engine at %s (%s); start it, set DOCKER_HOST, or use --dry-run")
        :format(host, err.message),
    }
  end
  local res = err
  if res.status >= 400 then error(H.api_error(res.status, res.body, "ping"), 0) end
  -- The engine's default builder ("1" classic, "2" BuildKit), when it announces one.
  c.builder_version = res.headers and res.headers["builder-version"]
  local server = res.headers and res.headers["api-version"]
  if server and not opts.version then
    c.api_version = M.min_version(server, M.api_version)
  end
  if version_number(c.api_version) < version_number(M.min_api_version) then
    errors.raise { code = "Engine", engine = "docker",
      message = ("engine API %s is older than the minimum %s"):format(c.api_version,
        M.min_api_version) }
  end
  return c
end

-- ---------------------------------------------------------------------------------------
-- System

--- True when the engine answers /_ping with "OK".
---@return boolean
function Client:ping()
  if self.offline then return false end
  local ok, body = pcall(self._call, self, "ping", nil, { path = "/_ping" })
  return ok and body == "OK"
end

--- The engine's /version document (Version, ApiVersion, Os, Arch, ...).
---@return table
function Client:version()
  return (self:_call("version", nil, { path = "/version" }))
end

--- The engine's /info document (Containers, Images, Driver, MemTotal, ...).
---@return table
function Client:info()
  return (self:_call("info", nil, { path = "/info" }))
end

local EVENTS_OPTS = H.set { "filters", "since", "until", "on_event", "timeout" }

--- Stream engine events to `on_event(ev)` (return false to stop). `since`/`until` are Unix
--- times or Docker time strings; without `until` the stream runs until on_event stops it.
--- Returns the number of events delivered.
---@param opts {on_event:fun(ev:table):boolean?, filters?:table, since?:number|string, until?:number|string}
---@return integer
function Client:events(opts)
  opts = H.options("events", opts, EVENTS_OPTS)
  if type(opts.on_event) ~= "function" then H.misuse("events", "on_event function required") end
  local n = 0
  self:_stream_json("events", nil, {
    path = "/events",
    query = { since = opts.since, ["until"] = opts["until"], filters = H.filters(opts.filters) },
    timeout = opts.timeout or false,
  }, function(ev)
    n = n + 1
    return opts.on_event(ev)
  end)
  return n
end

M.Client = Client
M._helpers = H

function load_areas()
  areas_loaded = true
  require("myrmex.docker.images")(Client, H)
  require("myrmex.docker.build")(Client, H)
  require("myrmex.docker.containers")(Client, H)
  require("myrmex.docker.networks")(Client, H)
  require("myrmex.docker.system")(Client, H)
end

return M
