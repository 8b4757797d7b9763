-- CI ergonomics: JUnit XML (checked by a real XML parser), GitHub Actions annotations and the
-- job summary, checked line by line.
local sh = require("tests.support.sh")
local ci = require("myrmex.ci")

local R = sh.src .. "/tests/fixtures/recipes/"

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

describe("--junit", function()
  it("writes one test case per step, valid XML, failure message and code", function()
    local out = os.tmpname()
    local r = sh.myrmex({ "run", R .. "fail_obj.lua", "--junit", out })
    assert.are.equal(1, r.code)
    assert.are.equal(0, sh.run({ "xmllint", "--noout", out }).code, "xmllint rejected it")
    local xml = read(out)
    assert.truthy(xml:find('<testcase classname="fail_obj.lua" name="fetch" time="', 1, true)
      or xml:find('name="fetch"', 1, true), xml)
    assert.truthy(xml:find('<failure message="docker: NotFound (404): No such image: nothere:latest" type="NotFound">', 1, true), xml)
    local count = sh.run({ "xmllint", "--xpath", "count(//testcase)", out }).stdout:match("^%s*(.-)%s*$")
    assert.are.equal("1", count)
    os.remove(out)
  end)

  it("reports success with the step's time", function()
    local out = os.tmpname()
    local r = sh.myrmex({ "run", sh.src .. "/examples/hello.lua", "--junit", out, "--quiet" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("0", sh.run({ "xmllint", "--xpath", "count(//failure)", out }).stdout:match("^%s*(.-)%s*$"))
    assert.are.equal("greet", sh.run({ "xmllint", "--xpath", "string(//testcase/@name)", out }).stdout:match("^%s*(.-)%s*$"))
    os.remove(out)
  end)

  it("escapes markup and control characters and redacts secrets", function()
    require("myrmex.log").secret("topsecret-value")
    local xml = ci.junit_xml({ name = "a<b>", duration = 1, error = "bad \"x\" & topsecret-value\1",
      steps = { { name = "s&1", ok = false, duration = 0.5, error = "<boom>" } } })
    local path = sh.tmpfile(xml)
    assert.are.equal(0, sh.run({ "xmllint", "--noout", path }).code, xml)
    assert.falsy(xml:find("topsecret", 1, true))
    os.remove(path)
  end)
end)

describe("GitHub Actions", function()
  it("annotates the failure with file and line, and writes a job summary", function()
    local summary = os.tmpname()
    local r = sh.myrmex({ "run", R .. "fail_obj.lua" },
      { env = { GITHUB_ACTIONS = "true", GITHUB_STEP_SUMMARY = summary } })
    assert.are.equal(1, r.code)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.same({
      "::error file=" .. R .. "fail_obj.lua,line=6,title=step fetch::recipe failed: docker: NotFound (404): No such image: nothere:latest",
    }, lines)
    local md = read(summary)
    assert.truthy(md:find("## myrmex: " .. R .. "fail_obj.lua failed", 1, true), md)
    assert.truthy(md:find("| fetch | **failed** |", 1, true), md)
    os.remove(summary)
  end)

  it("escapes workflow command data", function()
    assert.are.equal("::warning file=a%3Ab.lua,line=3::50%25 done%0Anext",
      ci.annotation("warning", "50% done\nnext", { file = "a:b.lua", line = 3 }))
  end)

  it("prints nothing of the kind outside GitHub Actions", function()
    local r = sh.myrmex({ "run", R .. "fail_obj.lua" }, { env = { GITHUB_ACTIONS = "" } })
    assert.falsy(r.stdout:find("::error", 1, true))
  end)
end)
