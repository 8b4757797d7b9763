--- Argument checks shared by the engine modules, so every API rejects a misspelt option or a
--- value of the wrong type the same way. See docs/check.md.
local M = {}

--- A set from a list: `check.set{"a", "b"}` -> {a=true, b=true}.
---@param list string[]
---@return table<string, boolean>
function M.set(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

-- Does v have one of the types in want ("string", "integer", "number|string", ...)?
local function has_type(v, want)
  local t = type(v)
  for w in want:gmatch("[^|]+") do
    if w == t or (w == "integer" and math.type(v) == "integer") then return true end
  end
  return false
end

-- Raise "<area>.<fname>: <key>: <msg>" at the caller of the API function (level 5: this
-- function, check_keys, options/fields, the API function, its caller).
local function fail(area, fname, key, msg)
  error(("%s.%s: %s: %s"):format(area, fname, key, msg), 5)
end

-- Each key of t must be in allowed; a string value there names the types it may have.
local function check_keys(area, fname, t, allowed, name_of)
  for k, v in pairs(t) do
    local want = allowed[k]
    if not want then fail(area, fname, name_of(k), "unknown key") end
    if type(want) == "string" and not has_type(v, want) then
      fail(area, fname, name_of(k), ("%s expected, got %s"):format(want, math.type(v) or type(v)))
    end
  end
end

local function option_name(k) return "option " .. tostring(k) end

--- Validate an options table: nil gives {}, anything but a table, an unknown key or a value
--- of the wrong type raises "<area>.<fname>: option k: unknown key" (or "option k: integer
--- expected, got string") at the caller of the API function. `allowed` maps each key to
--- true (any value) or to the type names it accepts ("string", "integer", "number|string").
---@param area string "registry", "image", ...
---@param fname string the API function's name
---@param opts table|nil
---@param allowed table<string, boolean|string>
---@return table
function M.options(area, fname, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s.%s: options table expected, got %s"):format(area, fname, type(opts)), 3)
  end
  check_keys(area, fname, opts, allowed, option_name)
  return opts
end

--- Validate a table argument that is not an options table (a spec, a config): as options,
--- but required, and a key is named `<what>.<k>` ("dockerfile.generate: spec.prots: unknown
--- key").
---@param area string
---@param fname string
---@param what string the argument's name in messages
---@param t any
---@param allowed table<string, boolean|string>
---@return table
function M.fields(area, fname, what, t, allowed)
  if type(t) ~= "table" then
    error(("%s.%s: %s must be a table, got %s"):format(area, fname, what, type(t)), 3)
  end
  check_keys(area, fname, t, allowed, function(k) return what .. "." .. tostring(k) end)
  return t
end

return M
