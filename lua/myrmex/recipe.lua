--- Recipes: discovery on the recipe path, typed parameters, steps and calls between recipes.
--- See docs/recipes.md.
---
--- A recipe file returns a declaration:
---   return {
---     description = "Build an image",
---     params = { image = {type="string", required=true, doc="name:tag to build"} },
---     run = function(params, ctx) ... end,
---   }
--- A plain Lua script (returning nothing) also runs.
local rt = require("myrmex.core.runtime")
local log = require("myrmex.log")

local M = {}

local TYPES = { string = true, number = true, integer = true, boolean = true, list = true }
local PARAM_KEYS = { type = true, required = true, default = true, doc = true, choices = true,
  secret = true }

--- A usage error: the host reports it and exits 2.
local UsageError = { __name = "myrmex.usage_error" }
UsageError.__index = UsageError
UsageError.__tostring = function(e) return e.message end

local function usage_error(fmt, ...)
  error(setmetatable({ message = string.format(fmt, ...) }, UsageError), 0)
end
M.usage_error = usage_error

---@param e any
---@return boolean
function M.is_usage_error(e) return getmetatable(e) == UsageError end

--- The folders searched for recipes, in order: ./recipes, $MYRMEX_PATH (colon-separated),
--- then the installed recipe library.
---@return string[]
function M.search_path()
  local dirs = { "recipes" }
  for d in (os.getenv("MYRMEX_PATH") or ""):gmatch("[^:]+") do dirs[#dirs + 1] = d end
  dirs[#dirs + 1] = (os.getenv("MYRMEX_DATADIR") or M.datadir or "/usr/local/share/myrmex")
    .. "/recipes"
  return dirs
end

local function is_file(path)
  local st = rt.stat(path)
  return st ~= nil and st.type == "file"
end

--- Resolve a recipe given as a path or a name on the search path.
---@param name string
---@return string|nil path
function M.find(name)
  if name:find("/") or name:match("%.lua$") then
    return is_file(name) and name or nil
  end
  for _, dir in ipairs(M.search_path()) do
    local p = dir .. "/" .. name .. ".lua"
    if is_file(p) then return p end
    p = dir .. "/" .. name .. "/init.lua"
    if is_file(p) then return p end
  end
  return nil
end

local function check_decl(decl, path)
  if type(decl.run) ~= "function" then
    usage_error("%s: a recipe declaration needs a run function", path)
  end
  for name, p in pairs(decl.params or {}) do
    if type(p) ~= "table" then usage_error("%s: param '%s' must be a table", path, name) end
    for k in pairs(p) do
      if not PARAM_KEYS[k] then usage_error("%s: param '%s': unknown key '%s'", path, name, k) end
    end
    if not TYPES[p.type or "string"] then
      usage_error("%s: param '%s': unknown type '%s'", path, name, tostring(p.type))
    end
  end
end

--- Compile a recipe file (a syntax error is a usage error naming file and line).
---@param path string
---@return function chunk
function M.load(path)
  local chunk, err = loadfile(path)
  if not chunk then usage_error("%s", err) end
  M.add_to_path(path:match("^(.*)/[^/]*$") or ".")
  return chunk
end

local added = {}

--- Let recipes in `dir` require their shared helpers (`require("_common")` finds
--- dir/_common.lua).
---@param dir string
function M.add_to_path(dir)
  if added[dir] then return end
  added[dir] = true
  package.path = dir .. "/?.lua;" .. package.path
end

--- Execute a recipe chunk's top level: declared recipes only define themselves there.
---@param path string
---@param chunk function
---@param ... any arguments for a plain script
---@return table|nil decl
function M.declaration(path, chunk, ...)
  local decl = chunk(...)
  if type(decl) == "table" and (decl.run or decl.params or decl.description) then
    check_decl(decl, path)
    decl.path = path
    return decl
  end
  return nil
end

--- The innermost frame of user code (not a myrmex module, not C): "file:line" or nil.
---@param level integer
---@return string|nil
local DEV_LUA = os.getenv("MYRMEX_LUA_PATH")

local function is_myrmex_source(src)
  if src:sub(1, 8) == "@myrmex/" then return true end
  return DEV_LUA ~= nil and DEV_LUA ~= "" and src:sub(2, #DEV_LUA + 8) == DEV_LUA .. "/myrmex"
end

function M.locate(level)
  for l = level + 1, 80 do
    local info = debug.getinfo(l, "Sl")
    if not info then break end
    local src = info.source
    if src:sub(1, 1) == "@" and not is_myrmex_source(src) and info.currentline > 0
      and not src:find("/busted/", 1, true) then
      return src:sub(2) .. ":" .. info.currentline
    end
  end
end

--- Quick static test: does this file look like a declared recipe (for `list`)?
function M.looks_declared(path)
  local f = io.open(path, "r")
  if not f then return false end
  local text = f:read("a")
  f:close()
  return text:find("description%s*=") ~= nil and text:find("run%s*=") ~= nil
end

--- Every recipe on the search path: {name=, path=, description=}; the first of a name wins.
---@return {name:string, path:string, description:string}[]
function M.discover()
  local seen, out = {}, {}
  for _, dir in ipairs(M.search_path()) do
    for _, f in ipairs(rt.listdir(dir) or {}) do
      local name = f:match("^(.-)%.lua$")
      local path = dir .. "/" .. f
      if name and not seen[name] and name:sub(1, 1) ~= "_" and M.looks_declared(path) then
        seen[name] = true
        local ok, decl = pcall(function()
          return M.declaration(path, M.load(path))
        end)
        out[#out + 1] = { name = name, path = path,
          description = ok and decl and decl.description or ("(cannot load: " ..
            tostring(ok and "not a recipe" or (getmetatable(decl) and tostring(decl) or decl)) .. ")") }
      end
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function convert(name, spec, raw, from)
  local t = spec.type or "string"
  if type(raw) ~= "string" then
    -- values given from Lua (recipe.call) are checked, not parsed
    local ok = (t == "list" and type(raw) == "table") or (t == "integer" and math.type(raw) == "integer")
      or (t ~= "list" and t ~= "integer" and type(raw) == t)
    if not ok then
      usage_error("parameter '%s': expected %s, got %s (%s)", name, t, type(raw), from)
    end
    return raw
  end
  if t == "string" then return raw end
  if t == "number" or t == "integer" then
    local n = tonumber(raw)
    if n == nil or (t == "integer" and math.type(n) ~= "integer") then
      usage_error("parameter '%s': expected %s, got '%s' (%s)", name,
        t == "integer" and "an integer" or "a number", raw, from)
    end
    return n
  end
  if t == "boolean" then
    local v = ({ ["true"] = true, yes = true, ["1"] = true, on = true,
      ["false"] = false, no = false, ["0"] = false, off = false })[raw:lower()]
    if v == nil then
      usage_error("parameter '%s': expected true or false, got '%s' (%s)", name, raw, from)
    end
    return v
  end
  local list = {}
  for item in raw:gmatch("[^,]+") do list[#list + 1] = item:match("^%s*(.-)%s*$") end
  return list
end

--- Turn raw values (strings from --set and MYRMEX_PARAM_*, or Lua values from recipe.call)
--- into typed params; raises a usage error naming the parameter on anything wrong.
---@param decl table
---@param given table<string, any> name -> raw value
---@param sources? table<string, string> name -> where the value came from
---@return table params
function M.resolve_params(decl, given, sources)
  local specs = decl.params or {}
  local out = {}
  for name in pairs(given) do
    if not specs[name] then
      local known = {}
      for k in pairs(specs) do known[#known + 1] = k end
      table.sort(known)
      usage_error("unknown parameter '%s' (%s); known: %s", name,
        (sources or {})[name] or "given", #known > 0 and table.concat(known, ", ") or "none")
    end
  end
  for name, spec in pairs(specs) do
    local raw = given[name]
    if raw == nil then
      raw = os.getenv("MYRMEX_PARAM_" .. name:upper():gsub("[^%w]", "_"))
      if raw ~= nil then sources = sources or {}; sources[name] = "MYRMEX_PARAM_" .. name:upper() end
    end
    if raw ~= nil then
      out[name] = convert(name, spec, raw, (sources or {})[name] or "given")
      if spec.choices then
        local ok = false
        for _, c in ipairs(spec.choices) do ok = ok or c == out[name] end
        if not ok then
          usage_error("parameter '%s': '%s' is not one of %s", name, tostring(out[name]),
            table.concat(spec.choices, ", "))
        end
      end
      if spec.secret then log.secret(tostring(out[name])) end
    elseif spec.default ~= nil then
      out[name] = spec.default
    elseif spec.required then
      usage_error("missing required parameter '%s' (--set %s=... or MYRMEX_PARAM_%s)", name,
        name, name:upper())
    end
  end
  return out
end

-- Steps -----------------------------------------------------------------------------------

local steps = {}
local stack = {}

--- The steps run so far: {name=, ok=, duration=, error=}.
---@return table[]
function M.steps() return steps end

--- Run fn as a named step: a log span, a timing, a line in the final summary. A failing
--- step re-raises its error with the step's name in front.
---@param name string
---@param fn fun(): any
---@return any ...
function M.step(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("recipe.step: (name, function) expected", 2)
  end
  -- Steps inside steps (a recipe calling another) are named parent/child.
  local full = #stack > 0 and (stack[#stack] .. "/" .. name) or name
  local entry = { name = full, depth = #stack + 1, started = rt.time() }
  steps[#steps + 1] = entry
  stack[#stack + 1] = full
  log.info("step " .. full .. " started", { step = full })
  local t0 = rt.monotonic()
  local res = table.pack(xpcall(fn, function(e)
    if type(e) == "table" and e.where == nil then e.where = M.locate(2) end
    return e
  end))
  stack[#stack] = nil
  entry.duration = rt.monotonic() - t0
  entry.ok = res[1]
  if res[1] then
    log.info("step " .. full .. " done", { step = full,
      duration_ms = math.floor(entry.duration * 1000 + 0.5) })
    return table.unpack(res, 2, res.n)
  end
  local err = res[2]
  entry.error = require("myrmex.errors").message(err):match("^[^\n]*")
  entry.code = type(err) == "table" and err.code or nil
  log.error("step " .. full .. " failed", { step = full, error = entry.error })
  if type(err) == "table" then
    err.step = err.step or full
    error(err, 0)
  end
  if err:match("^step '") then error(err, 0) end
  error(string.format("step '%s' failed: %s", full, err:match("^[^\n]*")), 0)
end

--- Call another recipe by name or path with Lua values for its params; returns what its run
--- function returns.
---@param name string
---@param params? table
---@return any ...
function M.call(name, params)
  local path = M.find(name)
  if not path then error("recipe.call: no recipe '" .. name .. "' on the recipe path", 2) end
  local decl = M.declaration(path, M.load(path))
  if not decl then error("recipe.call: " .. path .. " is not a declared recipe", 2) end
  local p = M.resolve_params(decl, params or {})
  return decl.run(p, M.context(decl))
end

--- The second argument of a run function.
---@param decl table
---@return table
function M.context(decl)
  return {
    recipe = decl.path,
    dry_run = require("myrmex.plan").active(),
    step = M.step,
    call = M.call,
    log = log,
  }
end

return M
