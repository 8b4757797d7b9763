--- Argument checks shared by the engine modules, so every API rejects a misspelt option the
--- same way. See docs/internals.md.
local M = {}

--- A set from a list: `check.set{"a", "b"}` -> {a=true, b=true}.
---@param list string[]
---@return table<string, boolean>
function M.set(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

--- Validate an options table: nil gives {}, anything but a table or an unknown key raises
--- "<area>.<fname>: option k: unknown key" at the caller of the API function.
---@param area string "registry", "image", ...
---@param fname string the API function's name
---@param opts table|nil
---@param allowed table<string, boolean>
---@return table
function M.options(area, fname, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s.%s: options table expected, got %s"):format(area, fname, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      error(("%s.%s: option %s: unknown key"):format(area, fname, tostring(k)), 3)
    end
  end
  return opts
end

return M
