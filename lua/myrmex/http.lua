--- The shared HTTP transport (internal: engine modules use it, recipes should not need it).
--- One curl multi handle for the process, connections reused, bodies streamed both ways.
--- See docs/http.md.
local core = require("myrmex.core.transport")
local errors = require("myrmex.errors")
local log = require("myrmex.log")
local rt = require("myrmex.core.runtime")

local M = {}

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }
local DEFAULT_MAX_BODY = 64 << 20
local SECRET_HEADERS = { authorization = true, ["proxy-authorization"] = true, ["x-registry-auth"] = true,
  ["x-registry-config"] = true }
local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }
local KNOWN = { method = true, url = true, unix_socket = true, query = true, headers = true,
  body = true, body_size = true, timeout = true, connect_timeout = true, low_speed_time = true,
  tls = true, basic_auth = true, retries = true, max_body = true, engine = true, to_file = true,
  digest = true, hash = true, on_data = true, on_line = true, on_json = true, proxy = true,
  follow = true, hash_sent = true, upgrade = true, finish_on_cancel = true }

-- The scheduler of myrmex.parallel registers its branch coroutines here, so that a request made
-- in a branch yields instead of blocking the other branches.
M._branches = setmetatable({}, { __mode = "k" })
M.WAIT = setmetatable({}, { __name = "myrmex.http.wait" })

-- Cancelling a branch (another branch failed, or Ctrl-C reached the scheduler): the scheduler
-- resumes it once with a Cancel carrying the error, and the branch's wait raises that error
-- there, so the branch unwinds through its own pcalls and <close> handlers, which may still
-- make requests. A request made with finish_on_cancel (a container create: its reply names
-- what there is to undo) is finished first; the error then waits in _cancelled until the
-- branch's next request or wait.
local Cancel = { __name = "myrmex.http.cancel" }
M._holding = setmetatable({}, { __mode = "k" }) -- branch -> finish_on_cancel requests in flight
M._cancelled = setmetatable({}, { __mode = "k" }) -- branch -> the cancellation it has yet to raise

--- The value the scheduler resumes a branch with to cancel it (internal: myrmex.parallel).
---@param err any the error the branch is to raise
---@return table
function M._cancel(err)
  return setmetatable({ err = err }, Cancel)
end

-- Raise a cancellation this branch has been holding, unless a request still holds it.
local function raise_cancelled(co)
  local err = M._cancelled[co]
  if err ~= nil and not M._holding[co] then
    M._cancelled[co] = nil
    error(err, 0)
  end
end

--- Yield to the scheduler from a branch (internal: myrmex.parallel uses it when it is itself
--- a branch); raises the branch's cancellation.
---@param co thread the running branch
function M._yield(co)
  raise_cancelled(co)
  local r = coroutine.yield(M.WAIT)
  if getmetatable(r) == Cancel then
    M._cancelled[co] = r.err
    raise_cancelled(co)
  end
end

--- Wait for transfers to progress: yield to the scheduler inside a parallel branch, drive the
--- multi handle here otherwise.
function M.wait()
  local co = coroutine.running()
  if M._branches[co] then
    M._yield(co)
  else
    core.perform(100)
  end
end

--- Sleep without blocking other parallel branches.
---@param seconds number
function M.sleep(seconds)
  local deadline = rt.monotonic() + seconds
  local co = coroutine.running()
  if not M._branches[co] then
    rt.sleep(seconds)
    return
  end
  while rt.monotonic() < deadline do M._yield(co) end
end

--- URL-encode a string for use in a path component or a query value.
---@param s string
---@return string
function M.escape(s)
  return core.escape(tostring(s))
end

local function encode_query(q)
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" then
      for _, item in ipairs(v) do parts[#parts + 1] = M.escape(k) .. "=" .. M.escape(tostring(item)) end
    elseif v ~= nil and v ~= false then
      parts[#parts + 1] = M.escape(k) .. "=" .. M.escape(v == true and "1" or tostring(v))
    end
  end
  return table.concat(parts, "&")
end
M.encode_query = encode_query

--- Parse raw header text into (lower-case map, ordered list).
---@param raw string
---@return table<string,string> headers, {name:string, value:string}[] list
function M.parse_headers(raw)
  return core.parse_headers(raw)
end

local function address_of(t)
  if t.unix_socket then return "unix://" .. t.unix_socket end
  return (t.url:match("^(%a+://[^/]+)") or t.url)
end

local function fail(t, kind, msg)
  local engine = t.engine or "http"
  local addr = address_of(t)
  if kind == "connect" then
    errors.raise({ code = "Unreachable", engine = engine, message = "cannot connect to " .. addr .. ": " .. msg }, 3)
  elseif kind == "timeout" then
    errors.raise({ code = "Timeout", engine = engine, message = "request to " .. addr .. " timed out: " .. msg }, 3)
  elseif kind == "tls" then
    errors.raise({ code = "Unreachable", engine = engine, message = "TLS: " .. msg .. " (" .. addr .. ")" }, 3)
  elseif kind == "connection" then
    errors.raise({ code = "Unreachable", engine = engine, message = "connection to " .. addr .. " lost: " .. msg }, 3)
  elseif kind == "digest" then
    errors.raise({ code = "DigestMismatch", engine = engine,
      message = "content from " .. t.url .. " does not match " .. tostring(t.digest) }, 3)
  elseif kind == "limit" or kind == "protocol" then
    errors.raise({ code = "Invalid", engine = engine, message = msg .. " (" .. t.url .. ")" }, 3)
  end
  errors.raise({ code = "Engine", engine = engine, message = msg .. " (" .. t.url .. ")" }, 3)
end

--- Validate a request table and turn it into the core's options.
local function prepare(t, fname)
  if type(t) ~= "table" then error(fname .. ": request table expected", 3) end
  for k in pairs(t) do
    if not KNOWN[k] then error(fname .. ": unknown option '" .. tostring(k) .. "'", 3) end
  end
  if type(t.url) ~= "string" then error(fname .. ": url (string) required", 3) end
  local url = t.url
  if t.query then
    local q = encode_query(t.query)
    if q ~= "" then url = url .. (url:find("?", 1, true) and "&" or "?") .. q end
  end
  local headers = {}
  local names = {}
  for k in pairs(t.headers or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = tostring(t.headers[k])
    if SECRET_HEADERS[k:lower()] then
      -- Redact the credential however a log or error quotes it: whole, or after its scheme.
      log.secret(v)
      log.secret(v:match("^%a+%s+(.+)$"))
    end
    headers[#headers + 1] = k .. ": " .. v
  end
  local userinfo = url:match("^%a+://([^/@]+)@")
  if userinfo then log.secret(userinfo:match(":(.*)$")) end
  local o = {
    url = url, method = (t.method or "GET"):upper(), unix_socket = t.unix_socket,
    headers = headers, body = t.body, body_size = t.body_size, proxy = t.proxy,
    timeout_ms = t.timeout and math.floor(t.timeout * 1000) or 0,
    connect_timeout_ms = math.floor((t.connect_timeout or 5) * 1000),
    low_speed_time = t.low_speed_time, follow = t.follow, to_file = t.to_file,
    digest = t.digest, hash = t.hash, hash_sent = t.hash_sent, max_body = t.max_body,
    upgrade = t.upgrade and true or nil,
    upgrade_protocol = type(t.upgrade) == "string" and t.upgrade or nil,
    sink = (t.on_data or t.on_line or t.on_json) and "pull" or nil,
  }
  if t.to_file then require("myrmex.sandbox").check_write(t.to_file, "downloading to") end
  if getmetatable(t.body) == M.Stream then o.body = t.body._x end
  if t.basic_auth then
    o.username, o.password = t.basic_auth[1] or t.basic_auth.username, t.basic_auth[2] or t.basic_auth.password
    log.secret(o.password)
  end
  if t.tls then
    o.tls = t.tls
    if t.tls.key_data then log.secret(t.tls.key_data) end
    if t.tls.insecure then
      log.warn("TLS verification is off for this target", { target = address_of(t) })
    end
    if t.tls.server_name then
      -- Verify the certificate against server_name while connecting to the URL's address.
      local scheme, host, port, rest = url:match("^(https?)://([^/:]+):?(%d*)(.*)$")
      if host then
        port = port ~= "" and port or (scheme == "https" and "443" or "80")
        o.url = scheme .. "://" .. t.tls.server_name .. ":" .. port .. rest
        o.connect_to = t.tls.server_name .. ":" .. port .. ":" .. host .. ":" .. port
      end
    end
  end
  return o
end

-- finish_on_cancel in a branch: hold its cancellation while the request is in flight.
local function hold(co)
  M._holding[co] = (M._holding[co] or 0) + 1
  return setmetatable({}, { __close = function()
    local n = M._holding[co] - 1
    M._holding[co] = n > 0 and n or nil
  end })
end

-- finish_on_cancel: an Interrupted error or a cancellation while the transfer is in flight is
-- taken, the transfer driven to its end, and the error raised again by the branch's next
-- request or wait, or, outside a branch, by the next wait in C. There is one Interrupted per
-- run, so the second drive is not cut short (a third signal still exits).
local function wait_to_end(x, co, branch)
  local function drive()
    while not x:done() do M.wait() end
  end
  local ok, err = pcall(drive)
  if ok then return end
  if not errors.is(err, "Interrupted") then error(err, 0) end
  drive()
  if branch then
    M._cancelled[co] = M._cancelled[co] or err
  else
    rt.interrupt_later()
  end
end

local function run_once(t, o)
  local co = coroutine.running()
  local branch = M._branches[co]
  if branch then raise_cancelled(co) end -- a cancelled branch starts nothing new
  local _ <close> = t.finish_on_cancel and branch and hold(co) or nil
  local x <close> = core.start(o)
  local pull = t.on_data or t.on_line or t.on_json
  if pull then
    local pending = ""
    local function deliver(chunk)
      if t.on_data and chunk ~= "" then
        if t.on_data(chunk) == false then return false end
      end
      if t.on_line or t.on_json then
        pending = pending .. chunk
        -- Walk the lines by position: cutting `pending` after each line would copy the rest
        -- of the chunk once per line.
        local pos = 1
        while true do
          local nl = pending:find("\n", pos, true)
          if not nl then break end
          local line = pending:sub(pos, nl - 1):gsub("\r$", "")
          pos = nl + 1
          if line ~= "" then
            if t.on_line and t.on_line(line) == false then return false end
            if t.on_json then
              local ok, obj = pcall(require("myrmex.json").decode, line)
              if not ok then
                errors.raise({ code = "Invalid", engine = t.engine or "http",
                  message = "bad JSON line in the stream from " .. t.url .. ": " .. obj }, 0)
              end
              if t.on_json(obj) == false then return false end
            end
          end
        end
        pending = pending:sub(pos)
        if #pending > (t.max_body or DEFAULT_MAX_BODY) then
          errors.raise({ code = "Invalid", engine = t.engine or "http",
            message = ("a line in the stream from %s is longer than max_body (%d bytes)"):format(
              t.url, t.max_body or DEFAULT_MAX_BODY) }, 0)
        end
      end
      return true
    end
    while true do
      local chunk = x:read()
      if chunk then
        if not deliver(chunk) then
          x:abort()
          local status, map, list = x:head()
          return { status = status, headers = map, header_list = list, stopped = true }
        end
      elseif chunk == nil then
        break
      else
        M.wait()
      end
    end
    if pending ~= "" and (t.on_line or t.on_json) then
      pending = pending .. "\n"
      deliver("")
    end
  elseif t.finish_on_cancel then
    wait_to_end(x, co, branch)
  else
    while not x:done() do M.wait() end
  end
  local res, kind, msg = x:result()
  if not res then return nil, kind, msg end
  return res
end

---@class myrmex.http.response
---@field status integer
---@field headers table<string,string> lower-case names, last value wins
---@field header_list table[] every header in order, as {name=, value=}
---@field body string|nil nil when the body was streamed
---@field digest string|nil "sha256:..." when hashed or checked
---@field size integer body bytes received
---@field url string effective URL

--- Make a request and wait for it. HTTP error statuses are returned; transport failures
--- raise error objects (Unreachable, Timeout, DigestMismatch, Invalid). See docs/http.md for
--- every option.
---@param t table
---@return myrmex.http.response
function M.request(t)
  local o = prepare(t, "http.request")
  local retries = t.retries or 0
  local can_retry = IDEMPOTENT[o.method] and (t.body == nil or type(t.body) == "string")
    and not t.to_file and not (t.on_data or t.on_line or t.on_json)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local res, kind, msg = run_once(t, o)
    local retry_after
    if res and RETRY_STATUS[res.status] then
      retry_after = tonumber(res.headers["retry-after"])
    end
    local transient = (not res and kind == "connect") or (res and RETRY_STATUS[res.status])
    if not (transient and can_retry and attempt <= retries) then
      if not res then fail(t, kind, msg) end
      return res
    end
    local delay = math.min(retry_after or (0.2 * 2 ^ (attempt - 1)), 10)
    log.debug("retrying request", { url = o.url, attempt = attempt, delay = delay,
      reason = res and res.status or kind })
    M.sleep(delay)
  end
end

--- A streaming response: `s.status`, `s.headers` once open returns; `s:read()` gives the next
--- chunk or nil at the end; `s:lines()` iterates lines. It is a to-be-closed value, and it can
--- be the `body` of another request (bytes flow from one to the other with bounded memory).
---@param t table the request table of http.request, without the on_* callbacks
---@return table stream
function M.open(t)
  return M._open(t, "http.open", false)
end

--- Like http.open, but for a C consumer: `s:source()` is a source (myrmex.core.source) over
--- the body, for `archive.open` or as another request's body. The transfer runs on its own
--- curl handle, driven by the source's reads, so the consumer may itself sit inside another
--- transfer (a tar entry of this response uploaded as a request body). Reads block.
---@param t table the request table of http.request, without the on_* callbacks
---@return table stream with :source()
function M.open_source(t)
  return M._open(t, "http.open_source", true)
end

function M._open(t, fname, own)
  local o = prepare(t, fname)
  o.sink, o.own = "pull", own or nil
  local x = core.start(o)
  while not x:headers_ready() do
    if own then x:pump(100) else M.wait() end
  end
  local status, headers, header_list = x:head()
  -- A transfer that failed before any response raises here; one that failed after its
  -- headers (a stream cut mid-body) still hands over the bytes that came, and its reader
  -- meets the error after them, where it can say how far the body got.
  if x:done() and (status or 0) == 0 then
    local res, kind, msg = x:result()
    if not res then
      x:close()
      fail(t, kind, msg)
    end
  end
  local s = { status = status, headers = headers, header_list = header_list, _x = x, _t = t, _own = own }
  return setmetatable(s, M.Stream)
end

local Stream = {}
Stream.__index = Stream
M.Stream = Stream

--- Next chunk of the body, or nil at its end.
function Stream:read()
  local x = self._x
  while true do
    local chunk = x:read()
    if chunk then return chunk end
    if chunk == nil then
      local res, kind, msg = x:result()
      if not res then fail(self._t, kind, msg) end
      return nil
    end
    if self._own then x:pump(100) else M.wait() end
  end
end

--- The next chunk if one is there: a string, false when none has come yet, nil at the end.
--- Never waits (a caller that also writes drains the reply with it between writes).
---@return string|false|nil
function Stream:read_nowait()
  local chunk = self._x:read()
  if chunk == nil then
    local res, kind, msg = self._x:result()
    if not res then fail(self._t, kind, msg) end
  end
  return chunk
end

--- Write to an upgraded connection (a stream opened with `upgrade`): all of `data`, waiting
--- while the peer is not reading. `on_wait()` is called each time the socket is full, so the
--- caller can drain the reply meanwhile (a peer that writes before it reads more); it returns
--- false when it took nothing, and the writer then waits for the peer instead. Raises
--- Unreachable when the connection is gone.
---@param data string
---@param on_wait? fun():boolean?
function Stream:send(data, on_wait)
  local from, drains = 1, on_wait ~= nil
  while from <= #data do
    local n, err = self._x:send(data, from, drains)
    if not n then
      errors.raise({ code = "Unreachable", engine = self._t.engine or "http",
        message = "connection to " .. address_of(self._t) .. " lost while writing: " .. err }, 2)
    end
    from = from + n
    if n == 0 then
      if on_wait then drains = on_wait() ~= false end
      -- Inside a parallel branch, let the others run while the peer catches up.
      if M._branches[coroutine.running()] then coroutine.yield(M.WAIT) end
    end
  end
end

--- End the writing direction of an upgraded connection: the peer reads end-of-file.
function Stream:close_write()
  self._x:close_write()
end

--- The rest of the body as a source (streams from http.open_source only).
function Stream:source()
  if not self._own then error("http: stream:source() needs a stream from http.open_source", 2) end
  return self._x:source()
end

--- Iterate over lines (without the line end).
function Stream:lines()
  local pending, ended = "", false
  return function()
    while true do
      local nl = pending:find("\n", 1, true)
      if nl then
        local line = pending:sub(1, nl - 1):gsub("\r$", "")
        pending = pending:sub(nl + 1)
        return line
      end
      if ended then
        if pending ~= "" then
          local last = pending
          pending = ""
          return last
        end
        return nil
      end
      local chunk = self:read()
      if chunk then pending = pending .. chunk else ended = true end
    end
  end
end

--- Read the whole remaining body (bounded by max bytes, default 64 MiB).
function Stream:read_all(max)
  max = max or 64 * 1048576
  local parts, n = {}, 0
  for chunk in self.read, self do
    n = n + #chunk
    if n > max then
      errors.raise({ code = "Invalid", engine = self._t.engine or "http",
        message = "response larger than " .. max .. " bytes (" .. self._t.url .. ")" })
    end
    parts[#parts + 1] = chunk
  end
  return table.concat(parts)
end

--- Abort the transfer (also done by <close> and garbage collection).
function Stream:close()
  if self._x then
    self._x:abort()
    self._x:close()
  end
end
Stream.__close = Stream.close

--- The transfer handle, for passing as another request's body.
function Stream:transfer() return self._x end

--- curl's version string.
---@return string
function M.curl_version() return core.version() end

return M
