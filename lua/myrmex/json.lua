--- JSON encode and decode (cJSON underneath). See docs/json.md.
local core = require("myrmex.core.json")

local M = {}

--- The JSON null sentinel: decode gives it for `null`, encode writes it as `null`.
M.null = core.null

--- Decode JSON text. Arrays and objects come back with marker metatables so that `[]` and
--- `{}` round-trip. Raises "json.decode: ... at byte N" on bad input.
---@param text string
---@return any
M.decode = core.decode

--- Decode, returning nil and the message instead of raising.
---@param text string
---@return any value, string|nil err
function M.safe_decode(text)
  local ok, v = pcall(core.decode, text)
  if ok then return v end
  return nil, v
end

--- Encode a Lua value. Tables with keys 1..n are arrays, other tables objects; mark an empty
--- table with json.array() or json.object() to choose. Raises on cycles, functions, NaN.
---@param value any
---@param opts? {sort_keys?:boolean, indent?:boolean}
---@return string
M.encode = core.encode

--- Mark a table (or a new one) as a JSON array.
---@param t? table
---@return table
M.array = core.array

--- Mark a table (or a new one) as a JSON object.
---@param t? table
---@return table
M.object = core.object

--- True for the null sentinel.
---@param v any
---@return boolean
M.isnull = core.isnull

return M
