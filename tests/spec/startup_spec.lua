-- Start-up: what the binary loads when (docs/internals.md, "Start-up"). No timing here (that is
-- bench/startup); these check the properties the start-up time rests on: libcurl, libarchive
-- and libcrypto are not linked and are mapped only once a binding needing them is required,
-- a library that cannot be loaded is a clear one-line error, and the embedded bytecode keeps
-- its chunk names and line numbers.
local sh = require("tests.support.sh")

local HEAVY = { "libcurl", "libarchive", "libcrypto" }

-- Lua run inside the binary under test: prints the heavy libraries mapped in its own process.
local MAPPED = [[
local seen = {}
for line in io.lines("/proc/self/maps") do
  local lib = line:match("/(lib[%w_]+)%.so[%.%d]*$")
  if lib then seen[lib] = true end
end
local out = {}
for _, l in ipairs({ "libcurl", "libarchive", "libcrypto" }) do
  if seen[l] then out[#out + 1] = l end
end
print("mapped:" .. table.concat(out, ","))
]]

local function mapped_after(prelude)
  local r = sh.myrmex({ "-e", prelude .. "\n" .. MAPPED })
  assert.are.equal(0, r.code, r.stderr)
  return assert(r.stdout:match("mapped:([^\n]*)"), r.stdout)
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(sh.run({ "mkdir", "-p", d }).code == 0)
  return d
end

local function cc(args)
  local r = sh.run(args)
  assert(r.code == 0, "cc failed: " .. r.stderr)
end

describe("start-up", function()
  it("the executable does not link libcurl, libarchive or libcrypto", function()
    local r = sh.run({ "readelf", "-d", sh.bin })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("liblua5.4", 1, true), "readelf output unexpected: " .. r.stdout)
    for _, lib in ipairs(HEAVY) do
      assert.falsy(r.stdout:find(lib, 1, true), lib .. " is linked:\n" .. r.stdout)
    end
  end)

  it("a trivial recipe maps none of them", function()
    local dir = tmpdir()
    local recipe = dir .. "/trivial.lua"
    local f = assert(io.open(recipe, "w"))
    f:write("return { description = 'maps', run = function()\n", MAPPED, "\nend }\n")
    f:close()
    local r = sh.myrmex({ "run", recipe }, { env = { CI = "" } })
    sh.run({ "rm", "-rf", dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("mapped:", r.stdout:match("mapped:[^\n]*"))
    assert.are.equal("", mapped_after(""))
  end)

  it("each is mapped once a binding that needs it is required", function()
    assert.are.equal("libcurl,libcrypto", mapped_after('require("myrmex.core.transport")'))
    -- The archive binding hashes entries as it reads them, so it needs libcrypto too.
    assert.are.equal("libarchive,libcrypto", mapped_after('require("myrmex.core.archive")'))
    assert.are.equal("libcrypto", mapped_after('require("myrmex.digest")'))
    assert.are.equal("libcurl,libarchive,libcrypto",
      mapped_after('require("myrmex.core.transport") require("myrmex.core.archive")'))
  end)

  describe("a library that cannot be loaded", function()
    local dir
    setup(function()
      -- Fake libcurl.so.4 found first through LD_LIBRARY_PATH: one without curl's symbols, one
      -- needing a library that is gone.
      dir = tmpdir()
      local f = assert(io.open(dir .. "/fake.c", "w"))
      f:write("int mx_fake(void);\nint mx_fake(void) { return 0; }\n")
      f:close()
      assert(sh.run({ "mkdir", dir .. "/nosym", dir .. "/nodep" }).code == 0)
      cc({ "cc", "-shared", "-fPIC", "-o", dir .. "/libmxgone.so", "-Wl,-soname,libmxgone.so",
        dir .. "/fake.c" })
      cc({ "cc", "-shared", "-fPIC", "-o", dir .. "/nosym/libcurl.so.4",
        "-Wl,-soname,libcurl.so.4", dir .. "/fake.c" })
      cc({ "cc", "-shared", "-fPIC", "-o", dir .. "/nodep/libcurl.so.4",
        "-Wl,-soname,libcurl.so.4", dir .. "/fake.c", "-Wl,--no-as-needed", "-L" .. dir,
        "-lmxgone" })
      os.remove(dir .. "/libmxgone.so")
    end)
    teardown(function()
      sh.run({ "rm", "-rf", dir })
    end)

    local function require_transport(libdir)
      return sh.myrmex({ "-e", 'require("myrmex.http")' }, { env = { LD_LIBRARY_PATH = libdir } })
    end

    it("names the missing symbol", function()
      local r = require_transport(dir .. "/nosym")
      assert.are.equal(1, r.code)
      assert.are.equal("myrmex: libcurl.so.4 has no symbol curl_easy_cleanup (library too old?)\n",
        r.stderr)
    end)

    it("names the library and the loader's reason", function()
      local r = require_transport(dir .. "/nodep")
      assert.are.equal(1, r.code)
      assert.are.equal("myrmex: cannot load libcurl.so.4: libmxgone.so: cannot open shared "
        .. "object file: No such file or directory\n", r.stderr)
    end)

    it("does not affect a recipe that does not need it", function()
      local r = sh.myrmex({ "-e", "print('ok')" }, { env = { LD_LIBRARY_PATH = dir .. "/nodep" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("ok\n", r.stdout)
    end)
  end)

  it("embedded modules keep their chunk names and line numbers", function()
    -- Unset MYRMEX_LUA_PATH: with it the modules come from disk, named by their path there.
    local r = sh.run("env -u MYRMEX_LUA_PATH " .. sh.q(sh.bin) .. " -e " .. sh.q([[
      local i = debug.getinfo(require("myrmex.log").info, "S")
      print(i.source, i.linedefined > 0)
      local tb
      require("myrmex.parallel")({ function() tb = debug.traceback("x") end })
      print(tb:match("myrmex/parallel%.lua:%d+:") ~= nil)
    ]]))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("@myrmex/log.lua\ttrue\ntrue\n", r.stdout)
  end)
end)
