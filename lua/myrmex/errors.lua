--- The one error convention of myrmex (see docs/errors.md).
--- Misuse of an API raises a plain string naming the function; failures of the world
--- (an engine said no, a network was down, a digest did not match) raise an error object
--- made here, with a stable `code` a recipe can test.
---@class myrmex.Error
---@field code string one of errors.codes
---@field message string one readable line, secrets redacted
---@field engine string|nil "docker", "registry", "k8s", "scan", ...
---@field status integer|nil the HTTP status when there was one
---@field details table|nil engine-specific extra data (k8s causes, registry error list)
local M = {}

---@type table<string, string> code -> what it means
M.codes = {
  NotFound = "the thing named does not exist",
  Conflict = "it exists already, or changed under us (name in use, stale version)",
  Unauthorized = "credentials missing, wrong or expired",
  Forbidden = "credentials valid but not allowed",
  Unreachable = "the engine could not be reached (connection, DNS, TLS)",
  Invalid = "the request or the input was rejected as malformed",
  DigestMismatch = "content did not match its digest",
  Timeout = "the operation did not finish in time",
  Interrupted = "stopped by SIGINT or SIGTERM",
  Engine = "the engine failed for another reason",
}

local Error = {}
Error.__index = Error
Error.__name = "myrmex.error"

function Error.__tostring(e)
  local head = e.engine and (e.engine .. ": ") or ""
  local status = e.status and (" (" .. tostring(e.status) .. ")") or ""
  return head .. e.code .. status .. ": " .. e.message
end

local function redact(s)
  local ok, log = pcall(require, "myrmex.log")
  if ok and log.redact then return log.redact(s) end
  return s
end

--- Make an error object.
---@param t {code:string, message:string, engine?:string, status?:integer, details?:table}
---@return myrmex.Error
function M.new(t)
  if type(t) ~= "table" then error("errors.new: table expected, got " .. type(t), 2) end
  if not M.codes[t.code] then error("errors.new: unknown code " .. tostring(t.code), 2) end
  local msg = tostring(t.message or t.code):gsub("[\r\n]+", " ")
  return setmetatable({
    code = t.code,
    message = redact(msg),
    engine = t.engine,
    status = t.status,
    details = t.details,
  }, Error)
end

--- Raise an error object (never returns).
---@param t {code:string, message:string, engine?:string, status?:integer, details?:table}
---@param level? integer
function M.raise(t, level)
  error(M.new(t), level or 2)
end

--- True when `e` is a myrmex error object, and of `code` when given.
---@param e any
---@param code? string
---@return boolean
function M.is(e, code)
  return getmetatable(e) == Error and (code == nil or e.code == code)
end

local by_status = {
  [400] = "Invalid", [401] = "Unauthorized", [403] = "Forbidden", [404] = "NotFound",
  [405] = "Invalid", [408] = "Timeout", [409] = "Conflict", [410] = "NotFound",
  [412] = "Conflict", [413] = "Invalid", [415] = "Invalid", [416] = "Invalid",
  [422] = "Invalid", [504] = "Timeout",
}

--- The code for an HTTP status (2xx/3xx give nil).
---@param status integer
---@return string|nil
function M.from_status(status)
  if status < 400 then return nil end
  return by_status[status] or "Engine"
end

--- A readable one-line text for any error value (object, string or other).
---@param e any
---@return string
function M.message(e)
  if M.is(e) then return tostring(e) end
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return "(error object is a " .. type(e) .. " value)"
end

return M
