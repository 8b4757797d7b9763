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

--- Decode a JSON file (a leading UTF-8 byte-order mark is skipped). The text is freed as soon
--- as it is parsed, so a large document costs about its Lua tables, not text + tables.
--- Raises "json.decode_file: PATH: ... at byte N" on bad input, "cannot open" when unreadable.
---@param path string
---@return any
M.decode_file = core.decode_file

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

--- A string as a JSON string literal (quotes and escapes added), for writing a large document
--- piece by piece. Raises on invalid UTF-8, as encode does; a NUL byte is written \u0000.
---@param s string
---@return string
M.quote = core.quote

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
