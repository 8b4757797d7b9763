--- `--sandbox`: run a recipe that is not fully trusted. The recipe gets its own environment
--- built from an allow-list (as Redis does for scripts): no os.execute, io.popen, os.remove or
--- os.rename outside the work folder, no file writes outside the work folder, no
--- package.loadlib or C modules, no debug library, text-only load; reading an undefined global
--- raises. The Lua heap is capped by the host's counting allocator and the wall time by its
--- count hook. The myrmex modules a recipe requires are trusted code and keep the real globals;
--- those that write to a caller-given path check it with sandbox.check_write.
local rt = require("myrmex.core.runtime")

local M = {}

local state = { root = nil }

--- True while a sandboxed recipe runs.
---@return boolean
function M.active() return state.root ~= nil end

local function parent_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return (rt.realpath(".") or ".") .. "/" .. path
end

--- Where `path` really is: the real path of its folder plus its last component.
local function resolve_target(path)
  local dir = rt.realpath(parent_of(absolute(path)))
  if not dir then return nil end
  local leaf = path:match("([^/]*)$")
  if leaf == ".." or leaf == "." then return nil end
  local full = dir .. "/" .. leaf
  local st = rt.stat(full, false)
  if st and st.type == "link" then return rt.realpath(full) end
  return full
end

--- True outside the sandbox, or when `path` (its folder's real path, symlinks resolved) is in the
--- work folder.
---@param path string
---@return boolean
function M.inside(path)
  if not state.root then return true end
  local full = resolve_target(tostring(path))
  return full ~= nil and (full == state.root or full:sub(1, #state.root + 1) == state.root .. "/")
end

--- Raise unless `path` may be written: always true outside the sandbox; inside, only paths in
--- the work folder (symlinks resolved, so a link cannot point out of it).
---@param path string
---@param what? string the operation, for the message
function M.check_write(path, what)
  if M.inside(path) then return true end
  error(string.format("sandbox: %s '%s' is outside the work folder %s", what or "writing",
    tostring(path), state.root), 3)
end

-- Modules that would hand a recipe what the sandbox takes away: starting programs, or turning
-- the sandbox itself off.
local DENIED = { ["myrmex.process"] = true, ["myrmex.sandbox"] = true, ["myrmex.cli"] = true }

local function denied(name)
  return function() error("sandbox: " .. name .. " is not allowed", 2) end
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local CONCAT = "sandbox: __concat metamethods are not allowed (a liblua 5.4.4 defect; docs/recipes.md)"

-- Every table the recipe made a metatable (weak keys) -> the metatable the recipe gave that
-- table itself, or false. Such a table really wears a guard (see wear), which getmetatable hides.
local own = setmetatable({}, { __mode = "k" })
-- One read-only view per trusted table (weak keys, so a view lives as long as its table).
local views = setmetatable({}, { __mode = "k" })
local is_view = setmetatable({}, { __mode = "k" })

-- A read-only view of a trusted table, and of every table reached through it: the string
-- metatable's __index is the real `string` table the trusted modules call, and the metatables
-- of handles and error objects are shared with them, so a recipe that could write to one
-- could make sandbox.check_write or the log's redaction do what it likes.
local function readonly(t)
  if type(t) ~= "table" then return t end
  local v = views[t]
  if v then return v end
  v = setmetatable({}, {
    __index = function(_, k) return readonly(rawget(t, k)) end,
    __newindex = function(_, k)
      error("sandbox: '" .. tostring(k) .. "' cannot be set: this table belongs to trusted code", 2)
    end,
    __pairs = function()
      return function(_, k)
        local nk, nv = next(t, k)
        return nk, readonly(nv)
      end, v, nil
    end,
    __len = function() return rawlen(t) end,
    __metatable = false,
  })
  views[t], is_view[v] = v, true
  return v
end

-- liblua 5.4.4 corrupts the heap when a __concat metamethod makes the stack grow
-- (docs/recipes.md), which a recipe could aim. A metatable holding one is refused, and every
-- metatable wears a guard the recipe never holds, so cannot take off: a copy of what the
-- recipe set as that table's own metatable, whose __newindex refuses the key, and whose
-- __index and __newindex follow that metatable as it changes (a class's parent set later).
local function follow(t, event)
  local shown = own[t]
  if shown then return rawget(shown, event) end
end

local GUARD_INDEX = function(t, k)
  local h = follow(t, "__index")
  if type(h) == "function" then return h(t, k) end
  if h ~= nil then return h[k] end
end

local GUARD_NEWINDEX = function(t, k, v)
  if k == "__concat" then error(CONCAT, 2) end
  local h = follow(t, "__newindex")
  if h == nil then
    rawset(t, k, v)
  elseif type(h) == "function" then
    h(t, k, v)
  else
    h[k] = v
  end
end

local function wear(mt, shown)
  local g = {}
  if shown then
    for k, v in next, shown do g[k] = v end
  end
  g.__index, g.__newindex = GUARD_INDEX, GUARD_NEWINDEX
  debug.setmetatable(mt, g)
end

local function safe_setmetatable(t, mt)
  if type(mt) == "table" and not is_view[mt] then
    if rawget(mt, "__concat") ~= nil then error(CONCAT, 2) end
    if own[mt] == nil then
      own[mt] = debug.getmetatable(mt) or false
      wear(mt, own[mt])
    end
  end
  if type(t) == "table" and own[t] ~= nil and (mt == nil or type(mt) == "table") then
    local shown = own[t]
    if shown and rawget(shown, "__metatable") ~= nil then
      error("cannot change a protected metatable", 2)
    end
    own[t] = mt or false
    wear(t, mt)
    return t
  end
  return setmetatable(t, mt)
end

local function safe_getmetatable(v)
  local shown = own[v]
  if shown ~= nil then
    if shown and rawget(shown, "__metatable") ~= nil then return rawget(shown, "__metatable") end
    return shown or nil
  end
  local mt = getmetatable(v)
  if type(mt) ~= "table" or own[mt] ~= nil or is_view[mt] then return mt end
  return readonly(mt)
end

local function safe_rawset(t, k, v)
  if k == "__concat" then error(CONCAT, 2) end
  return rawset(t, k, v)
end

local function safe_io()
  local sio = {
    write = io.write, read = io.read, lines = function(path, ...)
      if path == nil then return io.lines() end
      return io.lines(path, ...)
    end,
    stdout = io.stdout, stderr = io.stderr, stdin = io.stdin, type = io.type,
    popen = denied("io.popen"), tmpfile = io.tmpfile,
  }
  sio.open = function(path, mode)
    mode = mode or "r"
    if mode:find("[wa+]") then M.check_write(path, "opening for write") end
    return io.open(path, mode)
  end
  sio.output = function(f)
    if type(f) == "string" then M.check_write(f, "io.output") end
    return io.output(f)
  end
  sio.input = io.input
  return sio
end

local function safe_os()
  return {
    time = os.time, clock = os.clock, date = os.date, difftime = os.difftime,
    getenv = os.getenv, tmpname = os.tmpname,
    exit = denied("os.exit"), execute = denied("os.execute"),
    remove = function(path)
      M.check_write(path, "removing")
      return os.remove(path)
    end,
    rename = function(a, b)
      M.check_write(a, "renaming")
      M.check_write(b, "renaming")
      return os.rename(a, b)
    end,
    setlocale = denied("os.setlocale"),
  }
end

--- The environment a sandboxed recipe runs in.
---@param recipe_dir string folder of the recipe, for its own helper modules
---@return table env
function M.environment(recipe_dir)
  local env = {}
  for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
    "tonumber", "tostring", "type", "xpcall", "print", "rawequal", "rawget", "rawlen",
    "_VERSION" }) do
    env[name] = _G[name]
  end
  env.setmetatable, env.getmetatable, env.rawset = safe_setmetatable, safe_getmetatable, safe_rawset
  env.string, env.table, env.math = copy(string), copy(table), copy(math)
  env.string.dump = nil -- bytecode can break out of the VM's checks
  env.utf8, env.coroutine = copy(utf8), copy(coroutine)
  env.io, env.os = safe_io(), safe_os()
  env.collectgarbage = function(opt, ...)
    if opt == nil or opt == "collect" or opt == "count" or opt == "step" then
      return collectgarbage(opt, ...)
    end
    error("sandbox: collectgarbage('" .. tostring(opt) .. "') is not allowed", 2)
  end
  env.load = function(chunk, name, mode, e)
    if mode ~= nil and mode ~= "t" then error("sandbox: only text chunks may be loaded", 2) end
    return load(chunk, name, "t", e or env)
  end
  env.loadstring = nil
  env.dofile, env.loadfile = denied("dofile"), denied("loadfile")
  local loaded = {}
  env.require = function(name)
    if type(name) ~= "string" then error("bad argument #1 to 'require' (string expected)", 2) end
    if name:match("^myrmex%.") and not name:match("^myrmex%.core%.") and not DENIED[name] then
      return require(name)
    end
    if loaded[name] ~= nil then return loaded[name] end
    if not name:match("^[%w_]+$") then
      error("sandbox: module '" .. name .. "' is not allowed (only myrmex.* and the recipe's own folder)", 2)
    end
    local path = recipe_dir .. "/" .. name .. ".lua"
    local f = io.open(path, "r")
    if not f then error("sandbox: module '" .. name .. "' not found in " .. recipe_dir, 2) end
    local text = f:read("a")
    f:close()
    local chunk, err = load(text, "@" .. path, "t", env)
    if not chunk then error(err, 2) end
    local v = chunk(name)
    loaded[name] = v == nil and true or v
    return loaded[name]
  end
  env.package = { loaded = loaded, loadlib = denied("package.loadlib") }
  env._G = env
  return setmetatable(env, {
    __index = function(_, k)
      error("sandbox: attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
    end,
  })
end

--- Compile a recipe file for the sandbox (text only, in a sandbox environment).
---@param path string
---@return function|nil chunk, string|nil err
function M.loadfile(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local dir = parent_of(path)
  return load(text, "@" .. path, "t", M.environment(dir))
end

--- Turn the sandbox on: writes confined to `root`, heap capped at `memory` bytes, wall time
--- at `seconds`.
---@param opts {root:string, memory?:integer, seconds?:number}
function M.enter(opts)
  local root = rt.realpath(opts.root)
  if not root then error("sandbox: work folder '" .. tostring(opts.root) .. "' does not exist", 2) end
  state.root = root
  -- Relative paths in the recipe then land in the work folder.
  assert(rt.chdir(root))
  rt.set_limits({ memory = opts.memory, seconds = opts.seconds })
end

return M
