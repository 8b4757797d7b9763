-- Helpers shared by the recipe library (files starting with _ are not recipes).
local log = require("myrmex.log")

local M = {}

--- Read a whole file, or nil.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Write a file whole (temporary + rename), so nothing half-written is left behind.
function M.write(path, text)
  require("myrmex.ci").write_atomic(path, text)
end

--- The registry host of an image reference ("127.0.0.1:5000/app:1" -> "127.0.0.1:5000").
function M.registry_host(ref)
  return require("myrmex.registry.reference").parse(ref).registry
end

--- A module if it is part of this build, else nil (the recipe says what it skips).
function M.optional(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  log.debug("module not available", { module = name })
  return nil
end

--- Parse KEY=VALUE items into a table.
function M.pairs_to_table(list, what)
  local t = {}
  for _, item in ipairs(list or {}) do
    local k, v = item:match("^([^=]+)=(.*)$")
    if not k then error(what .. ": expected KEY=VALUE, got '" .. item .. "'", 0) end
    t[k] = v
  end
  return t
end

return M
