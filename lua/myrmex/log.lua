--- Structured logging: text on a terminal, JSON lines in CI, secrets redacted everywhere.
--- See docs/log.md.
local rt = require("myrmex.core.runtime")

local M = {}

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
M.levels = LEVELS

local CI = os.getenv("CI") or ""
local state = {
  level = LEVELS.info,
  format = (CI ~= "" and CI ~= "false" or os.getenv("GITHUB_ACTIONS") == "true")
    and "json" or "text",
  color = rt.isatty(2) and not os.getenv("NO_COLOR") and os.getenv("TERM") ~= "dumb",
  quiet = false,
  out = io.stderr,
  secrets = {}, -- list of strings, longest first
  hooks = {},   -- functions(record) called for every emitted record (junit, reports)
}

--- Field names whose values are always hidden, whatever they hold.
local SENSITIVE = { "password", "passwd", "token", "secret", "auth", "key", "credential",
  "cookie", "bearer" }

local function sensitive_key(k)
  k = tostring(k):lower()
  for _, s in ipairs(SENSITIVE) do
    if k:find(s, 1, true) then return true end
  end
  return false
end

--- Register a secret value: every later log line, error message, plan and report shows
--- `***` in its place. Values shorter than 4 bytes are ignored (they would mask ordinary text).
---@param value string|nil
function M.secret(value)
  if type(value) ~= "string" or #value < 4 then return end
  for _, s in ipairs(state.secrets) do
    if s == value then return end
  end
  table.insert(state.secrets, value)
  table.sort(state.secrets, function(a, b) return #a > #b end)
end

local function plain_gsub(s, needle, repl)
  local out, i = {}, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = repl
    i = b + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

--- Hide registered secrets and credential-shaped text (Authorization headers, basic auth in
--- URLs, bearer tokens, JWTs) in a string.
---@param s string
---@return string
function M.redact(s)
  if type(s) ~= "string" then return s end
  for _, secret in ipairs(state.secrets) do
    if s:find(secret, 1, true) then s = plain_gsub(s, secret, "***") end
  end
  s = s:gsub("([Aa]uthorization[\"']?%s*[:=]%s*[\"']?)[^\"',}\r\n]+", "%1***")
  s = s:gsub("([Bb]earer%s+)[%w%-%._~%+/]+=*", "%1***")
  s = s:gsub("([Bb]asic%s+)[%w%+/]+=*", "%1***")
  s = s:gsub("(%a[%w+.-]*://)[^/@%s:]+:[^/@%s]+@", "%1***:***@")
  s = s:gsub("eyJ[%w_-]+%.[%w_-]+%.[%w_-]+", "***")
  return s
end

--- A copy of a fields table with sensitive keys hidden and strings redacted (deeply).
---@param v any
---@return any
function M.redact_value(v, depth)
  depth = depth or 0
  if type(v) == "string" then return M.redact(v) end
  if type(v) ~= "table" or depth > 8 then return v end
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "string" and sensitive_key(k) and x ~= nil and type(x) ~= "boolean" then
      out[k] = "***"
    else
      out[k] = M.redact_value(x, depth + 1)
    end
  end
  return setmetatable(out, getmetatable(v))
end

--- Configure the logger (the host calls this from the command line options).
---@param opts {level?:string, format?:"text"|"json", color?:boolean, quiet?:boolean, out?:file*}
function M.configure(opts)
  if opts.level then
    local l = LEVELS[opts.level]
    if not l then error("log.configure: unknown level '" .. tostring(opts.level) .. "'", 2) end
    state.level = l
  end
  if opts.format then
    if opts.format ~= "text" and opts.format ~= "json" then
      error("log.configure: unknown format '" .. tostring(opts.format) .. "'", 2)
    end
    state.format = opts.format
  end
  if opts.color ~= nil then state.color = opts.color end
  if opts.quiet ~= nil then state.quiet = opts.quiet end
  if opts.out then state.out = opts.out end
end

--- The current settings (a copy: change them with configure), `out` included so a caller that
--- redirects the log for a while can put it back.
---@return {level:string, format:string, color:boolean, quiet:boolean, out:file*}
function M.settings()
  local name
  for k, v in pairs(LEVELS) do
    if v == state.level then name = k end
  end
  return { level = name, format = state.format, color = state.color, quiet = state.quiet,
    out = state.out }
end

--- True when messages at `level` are emitted.
---@param level string
function M.enabled(level)
  return LEVELS[level] >= state.level and not (state.quiet and LEVELS[level] < LEVELS.warn)
end

--- Add a function called with every record ({level, msg, fields, time}); returns a remover.
---@param fn fun(record:table)
---@return fun()
function M.add_hook(fn)
  table.insert(state.hooks, fn)
  return function()
    for i, h in ipairs(state.hooks) do
      if h == fn then table.remove(state.hooks, i) return end
    end
  end
end

local function text_value(v)
  if type(v) == "table" then
    local ok, s = pcall(require("myrmex.json").encode, v, { sort_keys = true })
    v = ok and s or tostring(v)
  end
  v = tostring(v)
  if v == "" or v:find("[%s\"=]") then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  return v
end

local COLORS = { debug = "\27[2m", info = "\27[36m", warn = "\27[33m", error = "\27[31m" }

local function format_text(rec)
  local t = os.date("%H:%M:%S", math.floor(rec.time))
  local ms = string.format(".%03d", math.floor((rec.time % 1) * 1000))
  local lvl = string.format("%-5s", rec.level:upper())
  if state.color then lvl = COLORS[rec.level] .. lvl .. "\27[0m" end
  local parts = { t .. ms, lvl, rec.msg }
  local keys = {}
  for k in pairs(rec.fields) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = k .. "=" .. text_value(rec.fields[k])
  end
  return table.concat(parts, " ")
end

local function format_json(rec)
  local json = require("myrmex.json")
  local obj = {}
  for k, v in pairs(rec.fields) do obj[k] = v end
  obj.time = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(rec.time))
    .. string.format(".%03dZ", math.floor((rec.time % 1) * 1000))
  obj.level = rec.level
  obj.msg = rec.msg
  local ok, line = pcall(json.encode, obj, { sort_keys = true })
  if not ok then
    line = json.encode({ time = obj.time, level = rec.level, msg = rec.msg,
      fields_error = tostring(line) }, { sort_keys = true })
  end
  return line
end

local function emit(level, msg, fields)
  if LEVELS[level] < state.level then return end
  local rec = {
    level = level,
    msg = M.redact(tostring(msg)),
    fields = M.redact_value(fields or {}),
    time = rt.time(),
  }
  for _, h in ipairs(state.hooks) do pcall(h, rec) end
  if state.quiet and LEVELS[level] < LEVELS.warn then return end
  local line = state.format == "json" and format_json(rec) or format_text(rec)
  -- A bar drawn in place is cleared first and drawn again after the line, so log lines and
  -- the bar never share a terminal row.
  local bar = state.bar
  if bar then state.out:write("\r\27[K") end
  state.out:write(line, "\n")
  if bar then bar:_draw(false, true) end
  state.out:flush()
end

---@param msg string
---@param fields? table
function M.debug(msg, fields) emit("debug", msg, fields) end
---@param msg string
---@param fields? table
function M.info(msg, fields) emit("info", msg, fields) end
---@param msg string
---@param fields? table
function M.warn(msg, fields) emit("warn", msg, fields) end
---@param msg string
---@param fields? table
function M.error(msg, fields) emit("error", msg, fields) end

--- Run fn(...) as one engine call: logs engine, op, target, duration_ms and outcome, and
--- returns fn's results (re-raising its error after logging it).
---@param engine string
---@param op string
---@param target string|nil
---@param fn function
---@return any ...
function M.span(engine, op, target, fn, ...)
  local t0 = rt.monotonic()
  local res = table.pack(xpcall(fn, function(e) return e end, ...))
  local fields = { engine = engine, op = op, target = target,
    duration_ms = math.floor((rt.monotonic() - t0) * 1000 + 0.5) }
  if res[1] then
    fields.outcome = "ok"
    emit("debug", engine .. " " .. op, fields)
    return table.unpack(res, 2, res.n)
  end
  local err = res[2]
  fields.outcome = type(err) == "table" and err.code or "error"
  fields.error = require("myrmex.errors").message(err)
  emit("debug", engine .. " " .. op, fields)
  error(err, 0)
end

-- Progress -----------------------------------------------------------------------------

local Progress = {}
Progress.__index = Progress

local function amount(n, unit)
  if unit ~= "bytes" then return tostring(math.floor(n)) end
  return require("myrmex.report").human_bytes(n)
end

function Progress:_line()
  local pct = self.total and self.total > 0 and math.floor(self.done / self.total * 100) or nil
  local of = self.total and ("/" .. amount(self.total, self.unit)) or ""
  return pct, amount(self.done, self.unit) .. of
end

function Progress:_draw(final, force)
  local now = rt.monotonic()
  if self.tty then
    if not final and not force and now - self.drawn < 0.1 then return end
    state.bar = not final and self or nil
    local pct, text = self:_line()
    local width = 24
    local fill = pct and math.floor(pct / 100 * width) or 0
    local bar = pct and ("[" .. string.rep("=", fill) .. string.rep(" ", width - fill) .. "] "
      .. string.format("%3d%% ", pct)) or ""
    local current = not final and self.label and (" " .. self.label) or ""
    state.out:write("\r\27[K", bar, text, " ", self.name, current, final and "\n" or "")
    state.out:flush()
  elseif final or now - self.drawn >= self.every then
    local pct, text = self:_line()
    local suffix = final and (" " .. (self.outcome or "done")) or ""
    emit("info", self.name .. suffix, { progress = pct and (pct .. "%") or nil,
      amount = text, current = not final and self.label or nil })
  else
    return
  end
  self.drawn = now
end

--- Set the amount done so far; `label`, if given, names the item being worked on (a layer),
--- shown after the name until the next label or the end.
---@param done number
---@param label? string
function Progress:update(done, label)
  self.done = done
  if label then self.label = M.redact(label) end
  self:_draw(false)
end

--- Add to the amount done.
---@param n number
function Progress:add(n)
  self:update(self.done + n)
end

--- Finish: the bar is completed (or a final line logged). `outcome` replaces "done" in that
--- line, e.g. "failed".
---@param outcome? string
function Progress:finish(outcome)
  if self.finished then return end
  if type(outcome) == "string" then self.outcome = outcome end
  self.finished = true
  if state.bar == self then state.bar = nil end
  -- A failed run is not drawn as complete: the bar stays where the work stopped.
  if self.total and self.done < self.total and self.outcome ~= "failed" then self.done = self.total end
  self:_draw(true)
end
Progress.__close = function(self, err) self:finish(err ~= nil and "failed" or nil) end

--- A progress indicator for long work (build, push, pull, layer analysis, rollout wait): a bar
--- redrawn in place on a terminal, a plain line every few seconds otherwise (or in JSON mode),
--- nothing under --quiet. `local p <close> = log.progress("push app:1", {total=n, unit="bytes"})`.
---@param name string
---@param opts? {total?:number, unit?:"bytes"|"items", every?:number}
---@return table progress with :update(done), :add(n), :finish()
function M.progress(name, opts)
  opts = opts or {}
  local self = setmetatable({ name = M.redact(name), total = opts.total, unit = opts.unit or "items",
    done = 0, drawn = -math.huge, every = opts.every or 5, finished = false }, Progress)
  self.tty = state.format == "text" and rt.isatty(2) and state.out == io.stderr
  if state.quiet or state.level > LEVELS.info then
    self._draw = function() end
  end
  return self
end

return M
