-- The command line: every path, every usage error, exit codes, params typing, signals.
local sh = require("tests.support.sh")
local json = require("myrmex.json")

local R = "tests/fixtures/recipes/"
local ENV = { MYRMEX_PATH = R, CI = "" }

local function run(args, env)
  local e = {}
  for k, v in pairs(ENV) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = v end
  return sh.myrmex(args, { env = e })
end

describe("myrmex command line", function()
  it("prints help and version", function()
    local r = run({ "--help" })
    assert.are.equal(0, r.code)
    assert.truthy(r.stdout:find("myrmex run RECIPE", 1, true))
    r = run({ "version" })
    assert.are.equal(0, r.code)
    assert.truthy(r.stdout:match("^myrmex %d+%.%d+%.%d+ %(Lua 5%.4%)"))
  end)

  it("exits 2 with usage when run without arguments", function()
    local r = run({})
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("Usage:", 1, true))
  end)

  local usage_cases = {
    { { "frobnicate" }, "unknown command or file 'frobnicate'" },
    { { "--frob" }, "unknown option '--frob'" },
    { { "run" }, "run needs a RECIPE" },
    { { "plan" }, "plan needs a RECIPE" },
    { { "run", "nosuch" }, "no recipe 'nosuch'" },
    { { "run", R .. "typed.lua" }, "missing required parameter 'name'" },
    { { "run", R .. "typed.lua", "--set", "name" }, "--set expects KEY=VALUE, got 'name'" },
    { { "run", R .. "typed.lua", "--set" }, "--set needs a value" },
    { { "run", R .. "typed.lua", "--set", "name=x", "--set", "count=1.5" },
      "parameter 'count': expected an integer, got '1.5' (--set count)" },
    { { "run", R .. "typed.lua", "--set", "name=x", "--set", "ratio=abc" },
      "parameter 'ratio': expected a number, got 'abc'" },
    { { "run", R .. "typed.lua", "--set", "name=x", "--set", "force=maybe" },
      "parameter 'force': expected true or false, got 'maybe'" },
    { { "run", R .. "typed.lua", "--set", "name=x", "--set", "mode=medium" },
      "parameter 'mode': 'medium' is not one of fast, slow" },
    { { "run", R .. "typed.lua", "--set", "nmae=x" }, "unknown parameter 'nmae' (--set nmae); known: count, force, mode, name, ratio, tags" },
    { { "run", R .. "typed.lua", "--log-format", "xml" }, "--log-format must be text or json, got 'xml'" },
    { { "run", R .. "typed.lua", "--log-level", "loud" }, "--log-level must be debug, info, warn or error" },
    { { "run", R .. "typed.lua", "--plan-format", "yaml" }, "--plan-format must be text or json" },
    { { "run", R .. "typed.lua", "--bogus" }, "unknown option '--bogus'" },
    { { "run", R .. "typed.lua", "extra", "args" }, "unexpected argument 'extra'" },
    { { "run", R .. "bad_syntax.lua" }, "bad_syntax.lua:3:" },
    { { "run", R .. "plain.lua", "--set", "a=1" }, "declares no parameters, so --set a is not accepted" },
    { { "describe" }, "describe needs a RECIPE" },
    { { "list", "x" }, "unexpected argument 'x'" },
    { { "-e" }, "-e needs a chunk" },
    { { "typed" }, "'typed' is a recipe: run it with 'myrmex run typed'" },
  }
  for _, c in ipairs(usage_cases) do
    it("usage error: " .. table.concat(c[1], " "), function()
      local r = run(c[1])
      assert.are.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find(c[2], 1, true), "stderr was: " .. r.stderr)
      assert.are.equal(1, select(2, r.stderr:gsub("\n", "")), "one line: " .. r.stderr)
      assert.falsy(r.stderr:find("traceback", 1, true))
    end)
  end

  it("converts --set and MYRMEX_PARAM_ values to the declared types", function()
    local r = run({ "run", R .. "typed.lua", "--set", "name=web", "--set", "count=7",
      "--set", "ratio=2.25", "--set=force=yes", "--set", "tags=a, b,c", "--quiet" },
      { MYRMEX_PARAM_MODE = "slow" })
    assert.are.equal(0, r.code, r.stderr)
    local p = json.decode(r.stdout)
    assert.are.same({ name = "web", count = 7, ratio = 2.25, force = true,
      tags = { "a", "b", "c" }, mode = "slow" }, p)
    assert.are.equal("integer", math.type(p.count))
  end)

  it("applies defaults and lets --set win over the environment", function()
    local r = run({ "run", "typed", "--set", "mode=fast", "--set", "name=x", "--quiet" },
      { MYRMEX_PARAM_MODE = "slow", MYRMEX_PARAM_NAME = "env" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ name = "x", count = 3, ratio = 0.5, force = false, tags = { "latest" },
      mode = "fast" }, json.decode(r.stdout))
  end)

  it("names a bad MYRMEX_PARAM_ variable as the source", function()
    local r = run({ "run", "typed", "--set", "name=x" }, { MYRMEX_PARAM_COUNT = "many" })
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("(MYRMEX_PARAM_COUNT)", 1, true), r.stderr)
  end)

  it("fails a recipe with one line naming the error and the recipe line, exit 1", function()
    local r = run({ "run", R .. "fail.lua" })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("recipe failed: the thing broke", 1, true), r.stderr)
    assert.truthy(r.stderr:find("at=" .. R .. "fail.lua:5", 1, true), r.stderr)
    assert.falsy(r.stderr:find("stack traceback", 1, true))
  end)

  it("shows the traceback only at debug level", function()
    local r = run({ "run", R .. "fail.lua", "--log-level", "debug" })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("stack traceback", 1, true), r.stderr)
  end)

  it("reports error objects with code, engine and failing step", function()
    local r = run({ "run", R .. "fail_obj.lua", "--log-format", "json" })
    assert.are.equal(1, r.code)
    local last
    for line in r.stderr:gmatch("[^\n]+") do last = json.decode(line) end
    assert.are.equal("error", last.level)
    assert.are.equal("recipe failed: docker: NotFound (404): No such image: nothere:latest", last.msg)
    assert.are.equal("NotFound", last.code)
    assert.are.equal("fetch", last.step)
    assert.are.equal(R .. "fail_obj.lua:6", last.at)
  end)

  it("exits 1 when run returns false", function()
    assert.are.equal(1, run({ "run", R .. "exitcode.lua" }).code)
  end)

  it("lists recipes with their descriptions", function()
    local r = run({ "list" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("typed%s+Echo typed parameters as JSON"), r.stdout)
    assert.truthy(r.stdout:find("child%s+Doubles n"), r.stdout)
    assert.falsy(r.stdout:find("\nplain%s"), "plain scripts are not recipes")
  end)

  it("describes a recipe by name, path and RECIPE --help", function()
    for _, args in ipairs({ { "describe", "typed" }, { "typed", "--help" },
      { R .. "typed.lua", "--help" }, { "run", "typed", "--help" } }) do
      local r = run(args)
      assert.are.equal(0, r.code, table.concat(args, " ") .. ": " .. r.stderr)
      assert.truthy(r.stdout:find("name%s+string%s+a required string %(required%)"), r.stdout)
      assert.truthy(r.stdout:find("mode%s+string%s+%(default fast; one of fast, slow%)"), r.stdout)
    end
  end)

  it("runs plain Lua files and -e chunks with arg set, like lua", function()
    local r = run({ R .. "plain.lua", "one", "two" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("plain\ttrue\tone\ttwo\n", r.stdout)
    r = run({ "-e", "print(require('myrmex.json').encode({1,2}))" })
    assert.are.equal("[1,2]\n", r.stdout)
    r = run({ "-e", "error('x')" })
    assert.are.equal(1, r.code)
  end)

  it("calls a recipe from another recipe", function()
    local r = run({ "run", "calls", "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("child returned 40\n", r.stdout)
  end)

  it("prints a plan under --dry-run and plan, with secrets redacted", function()
    local r = run({ "plan", "planned", "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("dry=true", 1, true))
    assert.truthy(r.stdout:find("Plan: 2 actions", 1, true), r.stdout)
    assert.truthy(r.stdout:find("1. docker create_container web", 1, true))
    assert.truthy(r.stdout:find("2. docker start_container planned-1", 1, true))
    assert.falsy(r.stdout:find("hunter22", 1, true))
    r = run({ "run", "planned", "--dry-run", "--plan-format", "json", "--quiet" })
    local plan = json.decode(r.stdout:match("\n(%{.*)$"))
    assert.are.equal(2, #plan.actions)
    assert.are.equal("***", plan.actions[1].args.password)
    r = run({ "run", "planned", "--quiet" })
    assert.are.equal("dry=false\n", r.stdout)
  end)

  it("writes JSON lines logs in CI and text otherwise", function()
    local r = run({ "run", "typed", "--set", "name=x" }, { CI = "true" })
    for line in r.stderr:gmatch("[^\n]+") do
      local rec = json.decode(line)
      assert.truthy(rec.time and rec.level and rec.msg)
    end
    r = run({ "run", R .. "fail.lua" })
    assert.truthy(r.stderr:match("^%d%d:%d%d:%d%d%.%d%d%d ERROR recipe failed"), r.stderr)
  end)

  -- Runs RECIPE (it loops until interrupted), sends SIGINT after a second (SIGKILL 5 s later,
  -- so a signal that never arrives fails the test instead of hanging it) and checks the exit
  -- status, the error and that the recipe's <close> handler wrote its marker.
  local function interrupted_with_cleanup(recipe)
    local marker = os.tmpname()
    os.remove(marker)
    local r = sh.run("MYRMEX_PATH=" .. R .. " timeout -k 5 --preserve-status -s INT 1 " .. sh.bin
      .. " run " .. recipe .. " --set marker=" .. marker)
    assert.are.equal(130, r.code, r.stderr)
    local f = assert(io.open(marker), "cleanup did not run")
    assert.are.equal("cleaned up", f:read("a"))
    f:close()
    os.remove(marker)
    assert.truthy(r.stderr:find("Interrupted", 1, true), r.stderr)
  end

  it("stops on SIGINT, runs <close> cleanup, exits 130", function()
    interrupted_with_cleanup("loop")
  end)

  it("stops a parallel branch spinning in Lua on SIGINT, with its cleanup", function()
    interrupted_with_cleanup("loop_branch")
  end)

  it("stops on SIGTERM too, with its cleanup, and exits 143", function()
    local marker = os.tmpname()
    os.remove(marker)
    local r = sh.run("MYRMEX_PATH=" .. R .. " timeout -k 5 --preserve-status -s TERM 1 " .. sh.bin
      .. " run loop --set marker=" .. marker)
    assert.are.equal(143, r.code, r.stderr)
    assert.truthy(r.stderr:find("Interrupted: terminated", 1, true), r.stderr)
    local f = assert(io.open(marker), "cleanup did not run")
    assert.are.equal("cleaned up", f:read("a"))
    f:close()
    os.remove(marker)
  end)
end)

describe("cmake --install", function()
  it("installs the binary with the recipe library it finds next to itself", function()
    local build = os.getenv("MYRMEX_BUILD_DIR")
    if not build then pending("MYRMEX_BUILD_DIR not set (run through ctest)") return end
    local prefix = os.tmpname()
    os.remove(prefix)
    local r = sh.run({ "cmake", "--install", build, "--prefix", prefix })
    assert.are.equal(0, r.code, r.stderr)
    r = sh.run({ prefix .. "/bin/myrmex", "list" }, { cwd = "/", env = { MYRMEX_PATH = "" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("release%s+Build, analyze, scan, push, verify and deploy"), r.stdout)
    os.execute("rm -rf " .. prefix)
  end)
end)

describe("log redaction", function()
  it("never prints a secret, in text or JSON, in logs or errors", function()
    local secret = "s3cr3t-Pa55word"
    for _, fmt in ipairs({ "text", "json" }) do
      local r = run({ "run", R .. "secret.lua", "--set", "password=" .. secret, "--log-format", fmt,
        "--log-level", "debug" })
      assert.are.equal(1, r.code)
      local all = r.stdout .. r.stderr
      assert.falsy(all:find(secret, 1, true), all)
      assert.falsy(all:find("Y2k6aHVudGVyMg", 1, true), all)
      assert.truthy(all:find("Unauthorized", 1, true))
      assert.truthy(all:find("***", 1, true))
    end
  end)
end)
