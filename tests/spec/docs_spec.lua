-- Every public function of every public module has a reference entry in docs/, and a LuaLS
-- annotation in its source.
local sh = require("tests.support.sh")
local rt = require("myrmex.core.runtime")

-- Modules that are the host's own plumbing, not an API for recipes.
local INTERNAL = { cli = true, doctor = true }

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function public_modules()
  local mods = {}
  for _, f in ipairs(rt.listdir(sh.src .. "/lua/myrmex")) do
    local name = f:match("^(.-)%.lua$")
    if name and not INTERNAL[name] then mods[#mods + 1] = name end
  end
  return mods
end

describe("documentation", function()
  for _, name in ipairs(public_modules()) do
    it("documents every function of myrmex." .. name, function()
      local doc = read(sh.src .. "/docs/" .. name .. ".md")
        or (name == "recipe" and read(sh.src .. "/docs/recipes.md"))
        or (name == "sandbox" and read(sh.src .. "/docs/security.md"))
      assert.truthy(doc, "docs/" .. name .. ".md is missing")
      local mod = require("myrmex." .. name)
      local missing = {}
      if type(mod) == "table" then
        for k, v in pairs(mod) do
          if type(v) == "function" and type(k) == "string" and k:sub(1, 1) ~= "_" then
            local found = doc:find(name .. "." .. k, 1, true) or doc:find("### " .. k, 1, true)
              or doc:find(":" .. k .. "(", 1, true) or doc:find("." .. k .. "(", 1, true)
            if not found then missing[#missing + 1] = k end
          end
        end
      end
      table.sort(missing)
      assert.are.same({}, missing)
    end)

    it("annotates myrmex." .. name .. " for LuaLS", function()
      local src = read(sh.src .. "/lua/myrmex/" .. name .. ".lua")
      assert.truthy(src:find("\n%-%-%-@") or src:find("^%-%-%-@") or src:find("\n%-%-%- "),
        "no ---@ annotations in lua/myrmex/" .. name .. ".lua")
    end)
  end

  it("has a man page that names every command", function()
    local man = assert(read(sh.src .. "/docs/myrmex.1"))
    for _, cmd in ipairs({ "run", "plan", "list", "describe", "doctor", "version" }) do
      assert.truthy(man:find("\n.B " .. cmd, 1, true) or man:find("\\fB" .. cmd, 1, true), cmd)
    end
  end)
end)
